"""Pass-through endpoints against a real daemon running two command models.

Both models are `tests/host/fake_command_server.py`, 300 MiB each on a 400 MiB
budget-only gpu0, so only one is resident at a time: a request for the other swaps it
in. Speech, transcription and embeddings go through byte for byte; a server that dies
mid-request is restarted on the next request; hostile bodies get a 4xx naming what is
wrong; the daemon's stop leaves no server behind.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Daemon, model_status, start_daemon, stop_checked, wait_for
from tests.host.fake_command_server import command, embedding_of, speech_bytes

BOUND_S = 30.0


def config(tmp: Path) -> str:
    speaker = command(
        "--name", "speaker", "--health-path", "/ready", "--crash-on", "/v1/rerank",
        "--state", str(tmp / "speaker-crashed"),
    )  # fmt: skip
    listener = command("--name", "listener", "--hang-on", "/v1/images/generations")
    return f"""
[host]
queue_timeout_s = {BOUND_S}
stop_grace_s = 5
max_body_mb = 1

[devices.gpu0]
kind = "gpu"
memory_mb = 400

[models.speaker]
kind = "command"
device = "gpu0"
memory_mb = 300
command = {json.dumps(speaker)}
health_path = "/ready"
env = {{ FAKE_VOICE_DIR = "{tmp}/voices", TIERHOST_TEST_MARK = "speaker" }}
start_timeout_s = {BOUND_S}

[models.listener]
kind = "command"
device = "gpu0"
memory_mb = 300
command = {json.dumps(listener)}
start_timeout_s = {BOUND_S}

[tiers.architect]
models = ["speaker"]

[tiers.builder]
models = ["listener"]

[tiers.operator]
models = ["listener"]
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("passthrough")
    running = start_daemon(tmp, config(tmp))
    try:
        yield running
    finally:
        stop_checked(running)


def speak(client: httpx.Client, model: str, text: str) -> httpx.Response:
    return client.post("/v1/audio/speech", json={"model": model, "input": text, "voice": "alto"})


def transcribe(
    client: httpx.Client, model: str | None, audio: bytes, name: str = "clip.wav"
) -> httpx.Response:
    data = {"model": model} if model is not None else {"language": "en"}
    files = {"file": (name, audio, "audio/wav")}
    return client.post("/v1/audio/transcriptions", data=data, files=files)


def test_speech_starts_its_server_on_first_request_and_comes_back_byte_for_byte(
    daemon: Daemon,
) -> None:
    with daemon.client(timeout=BOUND_S) as client:
        answer = speak(client, "speaker", "good morning")
    assert answer.status_code == 200, answer.text
    assert answer.content == speech_bytes("good morning", "alto")
    assert answer.headers["content-type"] == "audio/wav"
    assert answer.headers["x-tierhost-model"] == "speaker"
    assert answer.headers["x-tierhost-tier"] == "architect"
    assert "x-tierhost-wait-ms" in answer.headers
    status = model_status(daemon, "speaker")
    assert status["state"] == "ready"
    assert status["kind"] == "command"
    assert status["memory_mb"] == 300


def test_the_server_gets_its_env_and_substituted_argv_and_the_configured_health_path(
    daemon: Daemon,
) -> None:
    with daemon.client(timeout=BOUND_S) as client:
        assert speak(client, "speaker", "x").status_code == 200
    port = model_status(daemon, "speaker")["port"]
    with httpx.Client(timeout=BOUND_S) as direct:
        seen = direct.get(f"http://127.0.0.1:{port}/debug/env").json()
        # The fake answers 404 on /health: the host polled /ready, as configured.
        assert direct.get(f"http://127.0.0.1:{port}/health").status_code == 404
    assert seen["env"]["TIERHOST_TEST_MARK"] == "speaker"
    assert seen["env"]["FAKE_VOICE_DIR"].endswith("/voices")
    assert "PATH" in seen["env"]  # merged over the host's environment
    argv = seen["argv"]
    assert argv[argv.index("--port") + 1] == str(port)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_a_multipart_transcription_goes_through_unchanged(daemon: Daemon) -> None:
    audio = bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n"
    with daemon.client(timeout=BOUND_S) as client:
        answer = transcribe(client, "listener", audio, "meeting.wav")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "text": f"listener heard meeting.wav of {len(audio)} bytes",
        "model": "listener",
    }
    assert answer.headers["x-tierhost-model"] == "listener"


def test_embeddings_go_through_and_a_tier_name_routes_them(daemon: Daemon) -> None:
    with daemon.client(timeout=BOUND_S) as client:
        answer = client.post("/v1/embeddings", json={"model": "builder", "input": ["a", "héllo"]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [d["embedding"] for d in body["data"]] == [embedding_of("a"), embedding_of("héllo")]
    assert body["model"] == "builder"  # the body went as it came
    assert answer.headers["x-tierhost-model"] == "listener"
    assert answer.headers["x-tierhost-tier"] == "builder"


def test_a_request_for_the_other_model_swaps_it_in(daemon: Daemon) -> None:
    with daemon.client(timeout=BOUND_S) as client:
        assert speak(client, "speaker", "one").status_code == 200
        states = {m["name"]: m["state"] for m in daemon.status()["models"]}
        assert states == {"speaker": "ready", "listener": "stopped"}
        answer = transcribe(client, "listener", b"RIFF....")
        assert answer.status_code == 200, answer.text
    states = {m["name"]: m["state"] for m in daemon.status()["models"]}
    assert states == {"speaker": "stopped", "listener": "ready"}
    device = daemon.status()["devices"][0]
    assert device["residents"] == ["listener"]
    assert device["used_mb"] == 300


def test_a_client_that_leaves_mid_request_releases_the_lease(daemon: Daemon) -> None:
    body = json.dumps({"model": "listener", "prompt": "a cat"}).encode()
    port = int(daemon.url.rsplit(":", 1)[1])
    request = (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND_S) as leaving:
        leaving.sendall(request)
        wait_for(lambda: model_status(daemon, "listener")["in_flight"] == 1, "it in flight")
    wait_for(lambda: model_status(daemon, "listener")["in_flight"] == 0, "the lease released")
    with daemon.client(timeout=BOUND_S) as client:
        answer = speak(client, "speaker", "next")  # the device is free to swap
    assert answer.status_code == 200, answer.text


def test_pass_through_requests_are_counted_in_the_metrics(daemon: Daemon) -> None:
    def count() -> float:
        with daemon.client(timeout=BOUND_S) as client:
            text = client.get("/metrics").text
        for line in text.splitlines():
            if line.startswith("tierhost_passthrough_requests_total{") and all(
                label in line
                for label in ('endpoint="/v1/audio/speech"', 'model="speaker"', 'outcome="ok"')
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count()
    with daemon.client(timeout=BOUND_S) as client:
        assert speak(client, "speaker", "counted").status_code == 200
        text = client.get("/metrics").text
    assert count() == before + 1
    assert 'tierhost_model_ready{model="speaker"} 1.0' in text  # a command model's state too


def test_chat_reaches_a_command_model_too(daemon: Daemon) -> None:
    with daemon.client(timeout=BOUND_S) as client:
        answer = client.post(
            "/v1/chat/completions",
            json={"model": "listener", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "Hello from listener."


def test_a_crash_mid_request_is_a_502_and_the_next_request_restarts_it(daemon: Daemon) -> None:
    with daemon.client(timeout=BOUND_S) as client:
        assert speak(client, "speaker", "before").status_code == 200
        first_pid = model_status(daemon, "speaker")["pid"]
        crashed = client.post("/v1/rerank", json={"model": "speaker", "query": "q"})
        assert crashed.status_code == 502, crashed.text
        assert crashed.json()["error"]["type"] == "upstream_failed"
        wait_for(lambda: model_status(daemon, "speaker")["state"] == "failed", "the crash seen")
        again = speak(client, "speaker", "after")
    assert again.status_code == 200, again.text
    assert again.content == speech_bytes("after", "alto")
    status = model_status(daemon, "speaker")
    assert status["restarts"] == 1
    assert status["pid"] != first_pid


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/embeddings", {"input": "x"}, "needs a `model` field"),
        ("/v1/audio/speech", {"model": 7, "input": "x"}, "must be a model or tier name"),
        ("/v1/embeddings", {"model": "", "input": "x"}, "not an empty string"),
        ("/v1/embeddings", {"model": "auto", "input": "x"}, "routes by a prompt"),
    ],
)
def test_a_json_body_without_a_usable_model_is_a_400_naming_it(
    daemon: Daemon, path: str, body: dict[str, Any], expected: str
) -> None:
    with daemon.client(timeout=BOUND_S) as client:
        answer = client.post(path, json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request"
    assert expected in error["message"]
    assert "`model`" in error["message"]


def test_a_multipart_form_without_a_model_field_is_a_400(daemon: Daemon) -> None:
    with daemon.client(timeout=BOUND_S) as client:
        answer = transcribe(client, None, b"RIFF")
    assert answer.status_code == 400, answer.text
    assert "needs a `model` field" in answer.json()["error"]["message"]


def test_a_multipart_body_with_no_boundary_is_a_400(daemon: Daemon) -> None:
    with daemon.client(timeout=BOUND_S) as client:
        answer = client.post(
            "/v1/audio/transcriptions",
            content=b"model=speaker",
            headers={"content-type": "multipart/form-data"},
        )
    assert answer.status_code == 400, answer.text
    assert "boundary" in answer.json()["error"]["message"]


def test_an_unknown_model_is_the_usual_404(daemon: Daemon) -> None:
    with daemon.client(timeout=BOUND_S) as client:
        answer = transcribe(client, "whisper-9", b"RIFF")
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert error["type"] == "model_not_found"
    assert "whisper-9" in error["message"]


def test_a_body_over_the_limit_is_a_413(daemon: Daemon) -> None:
    with daemon.client(timeout=BOUND_S) as client:
        answer = transcribe(client, "listener", b"\0" * (1024 * 1024 + 1))
    assert answer.status_code == 413, answer.text
    assert "max_body_mb" in answer.json()["error"]["message"]


def test_another_content_type_is_a_415_and_multipart_stays_off_chat(daemon: Daemon) -> None:
    with daemon.client(timeout=BOUND_S) as client:
        plain = client.post(
            "/v1/embeddings", content=b"model=listener", headers={"content-type": "text/plain"}
        )
        form = client.post(
            "/v1/chat/completions", data={"model": "listener"}, files={"f": ("a", b"b")}
        )
    assert plain.status_code == 415, plain.text
    assert "multipart/form-data" in plain.json()["error"]["message"]
    assert form.status_code == 415, form.text


def test_a_server_that_never_gets_healthy_fails_clearly_and_stop_leaves_nothing(
    tmp_path: Path,
) -> None:
    never = command("--never-healthy")
    text = f"""
[devices.gpu0]
kind = "gpu"
memory_mb = 400

[models.stuck]
kind = "command"
device = "gpu0"
memory_mb = 300
command = {json.dumps(never)}
start_timeout_s = 1
stop_timeout_s = 2

[models.fine]
kind = "command"
device = "gpu0"
memory_mb = 100
command = {json.dumps(command("--name", "fine"))}

[tiers.architect]
models = ["stuck"]

[tiers.builder]
models = ["fine"]

[tiers.operator]
models = ["fine"]
"""
    daemon = start_daemon(tmp_path, text)
    try:
        with daemon.client(timeout=BOUND_S) as client:
            stuck = client.post("/v1/embeddings", json={"model": "stuck", "input": "x"})
            fine = client.post("/v1/embeddings", json={"model": "fine", "input": "x"})
        assert stuck.status_code == 503, stuck.text
        assert "not ready after 1 s" in stuck.json()["error"]["message"]
        assert fine.status_code == 200, fine.text
        daemon.note_children()
        pid = model_status(daemon, "fine")["pid"]
        assert pid in daemon.children_seen
        log = Path(model_status(daemon, "fine")["log"]).read_text()
        assert "fake-command fine listening" in log
    finally:
        stop_checked(daemon)


def test_a_command_whose_program_is_missing_stops_the_daemon_at_start(tmp_path: Path) -> None:
    text = config(tmp_path).replace(
        json.dumps(command("--name", "listener", "--hang-on", "/v1/images/generations")),
        json.dumps(["tierhost-no-such-server", "--port", "{port}"]),
    )
    with pytest.raises(AssertionError, match="daemon exited at start") as caught:
        start_daemon(tmp_path, text)
    assert "models.listener.command: 'tierhost-no-such-server' is not on PATH" in str(caught.value)
