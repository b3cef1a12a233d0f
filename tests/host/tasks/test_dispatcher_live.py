"""The dispatcher in a real daemon: wake-ups that start held tasks, and remote models.

A remote model here is a second real llama-server with the demo GGUF on loopback, "the
other box", started by the test with its own API key; a remote that is down is a port
nothing listens on.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from host.config import DEMO_MODEL_REF
from host.paths import find_llama_server, resolve_gguf
from tests.conftest import Daemon, free_port, start_daemon

pytestmark = pytest.mark.real

BOUND_S = 60.0
"""The longest any one wait of these tests may take."""
TERMINAL = {"done", "failed", "cancelled"}
REMOTE_KEY = "remote-box-key-for-the-test-0123456789"


def submit(http: httpx.Client, prompt: str, **fields: Any) -> dict[str, Any]:
    response = http.post("/api/tasks", json={"prompt": prompt, **fields})
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


def wait_terminal(daemon: Daemon, task_id: str, timeout: float = BOUND_S) -> dict[str, Any]:
    """Poll (reads only: a GET wakes nothing) until the task ends, bounded."""
    deadline = time.monotonic() + timeout
    with daemon.client() as http:
        while time.monotonic() < deadline:
            task: dict[str, Any] = http.get(f"/api/tasks/{task_id}").json()
            if task["status"] in TERMINAL:
                return task
            time.sleep(0.05)
    raise AssertionError(f"task {task_id} not finished within {timeout} s: {task['status']}")


def statuses(task: dict[str, Any]) -> list[str]:
    return [e["status"] for e in task["events"]]


# -- a task held back by the mode starts as soon as the mode allows it -------------------


def test_a_task_held_by_gaming_mode_starts_when_the_mode_goes_back_to_auto(
    demo_daemon: Daemon,
) -> None:
    with demo_daemon.client() as http:
        assert http.put("/api/mode", json={"mode": "gaming", "device": "gpu0"}).is_success
        held = submit(http, "Plan a tiny tool.", model="architect-demo", params={"max_tokens": 8})
        # A task that runs meanwhile: the dispatcher has passed over the held one since.
        other = submit(http, "Check the disks.", model="operator-demo", params={"max_tokens": 4})
    assert wait_terminal(demo_daemon, other["id"])["status"] == "done"
    with demo_daemon.client() as http:
        still = http.get(f"/api/tasks/{held['id']}").json()
        assert still["status"] == "queued"
        assert "gaming" in still["waiting_because"]
        assert http.put("/api/mode", json={"mode": "auto", "device": "gpu0"}).is_success
    # No other request: the mode change alone starts it.
    done = wait_terminal(demo_daemon, held["id"])
    assert done["status"] == "done" and done["result"]
    assert statuses(done) == ["queued", "waiting_device", "running", "done"]


# -- remote models --------------------------------------------------------------------------


@dataclass
class RemoteBox:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


@pytest.fixture
def remote_box(tmp_path: Path) -> Iterator[RemoteBox]:
    """A real llama-server with the demo model, as another box on the LAN would run it."""
    port = free_port()
    log_path = tmp_path / "remote-box.log"
    argv = [
        str(find_llama_server(None)),
        "--model",
        str(resolve_gguf(DEMO_MODEL_REF, "remote-box")),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--alias",
        "smol-on-the-other-box",
        "--api-key",
        REMOTE_KEY,
        "--ctx-size",
        "2048",
        "--parallel",
        "2",
        "--no-warmup",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    box = RemoteBox(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + BOUND_S
        with httpx.Client(timeout=2.0) as client:
            while True:
                assert process.poll() is None, log_path.read_text(errors="replace")
                try:
                    if client.get(f"{box.url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the remote box did not get ready"
                time.sleep(0.05)
        yield box
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def remote_config(box_url: str, dead_port: int) -> str:
    """Every tier on remote models: the daemon itself starts no model server."""
    return f"""
[host]
queue_timeout_s = 30

[devices.cpu]
kind = "cpu"

[models.operator-far]
kind = "remote"
base_url = "{box_url}/v1"
api_key_env = "TIERHOST_TEST_REMOTE_KEY"
remote_model = "smol-on-the-other-box"

[models.operator-gone]
kind = "remote"
base_url = "http://127.0.0.1:{dead_port}/v1"

[tiers.architect]
models = ["operator-far"]

[tiers.builder]
models = ["operator-far"]

[tiers.operator]
models = ["operator-far"]

[tiers.gone]
models = ["operator-gone"]
"""


@pytest.fixture
def remote_daemon(tmp_path: Path, daemon_factory: list[Daemon], remote_box: RemoteBox) -> Daemon:
    daemon = start_daemon(
        tmp_path,
        remote_config(remote_box.url, free_port()),
        extra_env={"TIERHOST_TEST_REMOTE_KEY": REMOTE_KEY},
    )
    daemon_factory.append(daemon)
    return daemon


def test_an_infra_task_on_a_remote_model_runs_there_and_finishes(
    remote_daemon: Daemon, remote_box: RemoteBox
) -> None:
    with remote_daemon.client() as http:
        task = submit(http, "Check the disks on the NAS.", type="infra", params={"max_tokens": 8})
    assert task["model"] == "operator-far"
    done = wait_terminal(remote_daemon, task["id"])
    assert done["status"] == "done", done["events"]
    assert done["result"] and done["tokens"] > 0
    assert statuses(done) == ["queued", "waiting_device", "running", "done"]
    with remote_daemon.client() as http:
        models = http.get("/api/status").json()["models"]
    far = next(m for m in models if m["name"] == "operator-far")
    assert far["in_flight"] == 0  # the remote's count was handed back


def test_a_validated_task_on_a_remote_builder_ends_and_is_never_stranded(
    remote_daemon: Daemon,
) -> None:
    with remote_daemon.client() as http:
        task = submit(
            http,
            "Write a Python function that adds two numbers.",
            type="implementation",
            validation="final",
            params={"max_tokens": 24},
        )
    ended = wait_terminal(remote_daemon, task["id"], timeout=2 * BOUND_S)
    assert ended["status"] in {"done", "failed"}, ended["events"]
    assert "validating" in statuses(ended)
    assert ended["attempts"] >= 1 and ended["scratchpad"]


def test_a_remote_that_is_down_fails_the_task_with_a_clear_reason_in_bounded_time(
    remote_daemon: Daemon,
) -> None:
    with remote_daemon.client() as http:
        task = submit(http, "Check the disks.", model="operator-gone", params={"max_tokens": 4})
    failed = wait_terminal(remote_daemon, task["id"], timeout=30)
    assert failed["status"] == "failed"
    assert "operator-gone" in failed["error"] and "ConnectError" in failed["error"]
    assert "remote endpoint http://127.0.0.1:" in failed["error"]
