"""Faults through a real daemon: crashing, stuck and broken model servers, kill -9, bad config.

Every model here is the scripted fake llama-server (`fake_llama_server.py`), pointed to
by `host.llama_server`, so a fault happens exactly when the test wants it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from host.models.process import write_pid_file
from tests.conftest import (
    Daemon,
    alive,
    free_port,
    model_status,
    start_daemon,
    wait_for,
    wait_until_gone,
)
from tests.host.fake_llama_server import config_head, fake_args, model_entry

BOUND_S = 30.0
"""The longest any one request or wait of these tests may take."""
CHAT = [{"role": "user", "content": "Say hello."}]


def config_text(tmp_path: Path) -> str:
    """Models like the demo's, one per fault, on a budget device gpu0 and the cpu."""
    head, gguf = config_head(tmp_path, BOUND_S)

    def model(device: str, memory_mb: int, args: list[str], start_timeout_s: float = 10) -> str:
        return model_entry(gguf, device, memory_mb, args, start_timeout_s=start_timeout_s)

    return f"""
{head}
[models.crashy]
{model("gpu0", 300, fake_args("crash-mid-stream", tmp_path / "crashy.state"))}
[models.stuck]
{model("gpu0", 300, fake_args("never-ready"), start_timeout_s=2)}
[models.broken]
{model("cpu", 100, fake_args("exit-at-start"))}
[models.oom]
{model("gpu0", 300, fake_args("oom-at-start"))}
[models.sigill]
{model("cpu", 100, fake_args("illegal-instruction"))}
[models.squeezed]
{model("gpu0", 300, fake_args("oom-at-start"))}
[[models.squeezed.fallbacks]]
name = "fewer-layers"
args = {json.dumps(fake_args("exit-at-start"))}
[[models.squeezed.fallbacks]]
name = "small-context"
args = {json.dumps(fake_args("ok"))}
[models.steady]
{model("cpu", 100, fake_args("ok"))}
[tiers.architect]
models = ["crashy"]

[tiers.builder]
models = ["stuck"]

[tiers.operator]
models = ["steady"]
"""


def chat(daemon: Daemon, model: str, **extra: Any) -> httpx.Response:
    with daemon.client(timeout=BOUND_S) as client:
        return client.post("/v1/chat/completions", json={"model": model, "messages": CHAT, **extra})


@pytest.fixture
def daemon(tmp_path: Path, daemon_factory: list[Daemon]) -> Daemon:
    started = start_daemon(tmp_path, config_text(tmp_path))
    daemon_factory.append(started)
    return started


# -- a model server that crashes mid-stream --------------------------------------------


def test_a_crash_mid_stream_ends_the_stream_with_an_error_and_the_next_request_restarts(
    daemon: Daemon,
) -> None:
    # Resident first: two words end before the fake's crash, which comes at the third.
    with daemon.client(timeout=BOUND_S) as client:
        warm = client.post(
            "/v1/chat/completions", json={"model": "crashy", "messages": CHAT, "max_tokens": 2}
        )
    assert warm.status_code == 200, warm.text
    crashed_pid = model_status(daemon, "crashy")["pid"]
    assert crashed_pid in daemon.note_children()
    events: list[str] = []
    with (
        daemon.client(timeout=BOUND_S) as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "crashy", "messages": CHAT, "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["x-tierhost-model"] == "crashy"
        events = [line for line in response.iter_lines() if line.startswith("data: ")]

    payloads = [json.loads(line.removeprefix("data: ")) for line in events]
    *chunks, last = payloads
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["Hello", " from", " the"]
    assert last["error"]["type"] == "upstream_failed"
    assert "model crashy" in last["error"]["message"]
    assert str(daemon.data_dir / "logs" / "crashy.log") in last["error"]["message"]

    failed = wait_for(
        lambda: (m := model_status(daemon, "crashy"))["state"] == "failed" and m,
        "crashy to be reported failed",
        BOUND_S,
    )
    assert failed["last_error"].startswith("exited unexpectedly with code 1")
    assert failed["pid"] is None and failed["restarts"] == 0
    assert not alive({crashed_pid})

    response = chat(daemon, "crashy")

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello from the fake server."
    restarted = model_status(daemon, "crashy")
    assert restarted["state"] == "ready" and restarted["restarts"] == 1
    assert restarted["pid"] not in (None, crashed_pid)
    daemon.note_children()


# -- a model server that never becomes ready, or dies while starting ---------------------


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("stuck", "not ready after 2 s"),
        ("broken", "exited with code 1 while starting: error: failed to load model '"),
        ("oom", "cudaMalloc failed: out of memory"),
        ("sigill", "code -4 while starting: illegal instruction: llama-server was built for"),
    ],
)
def test_a_model_that_cannot_start_answers_503_to_every_queued_request(
    daemon: Daemon, model: str, reason: str
) -> None:
    log_path = daemon.data_dir / "logs" / f"{model}.log"
    with ThreadPoolExecutor(max_workers=4) as pool:
        began = time.monotonic()
        pending = [pool.submit(chat, daemon, model) for _ in range(4)]
        if model == "stuck":  # slow enough to see every request wait in the queue
            wait_for(
                lambda: model_status(daemon, model)["queued"] == 4, "4 queued requests", BOUND_S
            )
            daemon.note_children()
        responses = [future.result(timeout=BOUND_S) for future in pending]
    assert time.monotonic() - began < BOUND_S

    for response in responses:
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert set(error) == {"type", "message"}
        assert error["type"] == "model_unavailable"
        assert error["message"].startswith(f"model {model} failed to start: ")
        assert reason in error["message"]
        assert f"(log: {log_path})" in error["message"]
    status = model_status(daemon, model)
    assert status["state"] == "failed"
    assert reason in status["last_error"]
    assert status["pid"] is None and status["queued"] == 0 and status["in_flight"] == 0
    assert status["log"] == str(log_path)


# -- the daemon itself killed ------------------------------------------------------------


def test_no_model_server_outlives_a_daemon_killed_with_sigkill(
    tmp_path: Path, daemon: Daemon, daemon_factory: list[Daemon]
) -> None:
    assert chat(daemon, "steady").status_code == 200
    pid = model_status(daemon, "steady")["pid"]
    assert pid in daemon.note_children()

    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL

    assert not wait_until_gone({pid}), "the model server outlived its daemon (PDEATHSIG)"
    pid_file = daemon.data_dir / "run" / "steady.pid"
    assert pid_file.exists()  # nobody removed it: the next daemon on this data dir will

    again = start_daemon(tmp_path, config_text(tmp_path), data_dir=daemon.data_dir)
    daemon_factory.append(again)
    assert not pid_file.exists()
    assert chat(again, "steady").status_code == 200


def test_a_new_daemon_reaps_servers_left_by_an_earlier_run(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    data_dir = tmp_path / "data"
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    reaper = threading.Thread(target=leftover.wait, daemon=True)  # no zombie left to wait on
    reaper.start()
    try:
        write_pid_file(data_dir / "run" / "steady.pid", leftover.pid)

        daemon_factory.append(start_daemon(tmp_path, config_text(tmp_path), data_dir=data_dir))

        reaper.join(timeout=BOUND_S)
        assert leftover.returncode == -signal.SIGKILL
        assert not (data_dir / "run" / "steady.pid").exists()
        assert "stopped 1 server(s) left by an earlier run" in daemon_factory[0].log()
    finally:
        if leftover.poll() is None:
            leftover.kill()
        reaper.join(timeout=BOUND_S)


# -- a config with a mistake -------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c.replace("[host]\n", "[host]\nprot = 1\n"), r"host\.prot: unknown key"),
        (
            lambda c: c.replace("[models.steady]\n", '[models.steady]\ncolour = "red"\n'),
            r"models\.steady\.(\w+\.)?colour: unknown key",
        ),
        (
            lambda c: c.replace("stop_grace_s = 5", 'stop_grace_s = "soon"'),
            r"host\.stop_grace_s: Input should be a valid number",
        ),
        (
            lambda c: c.replace('device = "cpu"', 'device = "gpu9"', 1),
            r"models\.broken\.device: unknown device 'gpu9' \(known: cpu, gpu0\)",
        ),
        (
            lambda c: c.replace('models = ["steady"]', 'models = ["nope"]'),
            r"tiers\.operator\.models: unknown model 'nope'",
        ),
        (lambda c: c.replace("[devices.cpu]", "[devices.cpu"), r"not valid TOML: .*line \d+"),
        (
            lambda c: c.replace('llama_server = "', 'llama_server = "/nonexistent'),
            r"host\.llama_server: /nonexistent\S+ is not an executable file",
        ),
        (
            lambda c: c.replace("fake.gguf", "missing.gguf", 1),
            r"models\.crashy\.gguf: no such file \S+missing\.gguf",
        ),
    ],
    ids=[
        "unknown-key",
        "unknown-model-key",
        "wrong-type",
        "unknown-device",
        "tier-unknown-model",
        "invalid-toml",
        "llama-server-missing",
        "gguf-missing",
    ],
)
def test_a_bad_config_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, edit: Callable[[str], str], expected: str
) -> None:
    text = config_text(tmp_path)
    bad = edit(text)
    assert bad != text, "the edit did not apply"
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    argv = [sys.executable, "-m", "host", "serve", "--config", str(path)]
    argv += ["--port", str(free_port()), "--data-dir", str(tmp_path / "data")]

    done = subprocess.run(argv, capture_output=True, text=True, timeout=BOUND_S, check=False)

    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tierhost: ")
    assert re.search(expected, lines[0]), lines[0]


# -- fallback profiles ---------------------------------------------------------------


def test_a_failed_start_moves_through_the_fallback_profiles(daemon: Daemon) -> None:
    response = chat(daemon, "squeezed")
    assert response.status_code == 200, response.text
    status = model_status(daemon, "squeezed")
    assert status["state"] == "ready" and status["profile"] == "small-context"
    log = daemon.log()
    assert "trying profile fewer-layers after: exited with code 1 while starting: " in log
    assert "cudaMalloc failed: out of memory" in log
    assert "trying profile small-context after: exited with code 1 while starting: error: " in log
    assert chat(daemon, "squeezed").status_code == 200  # the working profile stays in use
    assert model_status(daemon, "squeezed")["restarts"] == 2
