"""A client that goes away is no longer served, and SIGTERM stops the daemon whatever is
in flight: against the real daemon, the real llama-server and SmolLM2.

Generations are made long with `ignore_eos` and a large `max_tokens` (SmolLM2 makes
~115 tokens/s here: 2,000 tokens outlast every wait below), so a slot still processing
after the client left can only be an orphan.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import (
    Daemon,
    model_status,
    start_daemon,
    wait_for,
    wait_for_models,
    wait_until_gone,
)

pytestmark = pytest.mark.real

STORY = [{"role": "user", "content": "Tell me a very long story about a lighthouse keeper."}]
LONG = {"max_tokens": 2000, "ignore_eos": True}

ABANDONED_FREED_WITHIN_S = 8.0
"""A bound on the wait, not a speed target: far under the 2,000 tokens' ~17 s, so a slot
still busy after it is an orphan, yet loose enough for a loaded 2-core machine (the
issue's one second is for a benchmark to show, never a timed assertion here)."""


def slots_processing(port: int) -> int:
    """How many of llama-server's own slots are generating (its `GET /slots`)."""
    slots = httpx.get(f"http://127.0.0.1:{port}/slots", timeout=5).json()
    return sum(1 for s in slots if s["is_processing"])


def warm(daemon: Daemon, model: str) -> int:
    """Load a model with a one-token request; its llama-server's port."""
    with daemon.client() as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": STORY, "max_tokens": 1},
        )
    assert response.status_code == 200, response.text
    port: int = model_status(daemon, model)["port"]
    return port


def assert_freed_then_swappable(daemon: Daemon, port: int) -> None:
    """No slot of architect-demo generates and nothing is in flight within a second; then
    builder-demo (same device, only one fits) is served and architect-demo evicted."""
    wait_for(
        lambda: (
            slots_processing(port) == 0 and model_status(daemon, "architect-demo")["in_flight"] == 0
        ),
        "architect-demo's slot idle and its lease released",
        ABANDONED_FREED_WITHIN_S,
    )
    with daemon.client() as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": "builder-demo", "messages": STORY, "max_tokens": 2},
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-tierhost-model"] == "builder-demo"
    gpu0 = next(d for d in daemon.status()["devices"] if d["name"] == "gpu0")
    assert gpu0["residents"] == ["builder-demo"]
    assert model_status(daemon, "architect-demo")["state"] == "stopped"


def raw_post(daemon: Daemon, path: str, body: dict[str, Any]) -> socket.socket:
    """Send a request on a bare socket and leave it unread: closing it is the client leaving."""
    payload = json.dumps(body).encode()
    host, port = daemon.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def test_an_abandoned_non_streamed_request_stops_generating(demo_daemon: Daemon) -> None:
    port = warm(demo_daemon, "architect-demo")
    sock = raw_post(
        demo_daemon,
        "/v1/chat/completions",
        {"model": "architect-demo", "messages": STORY, **LONG},
    )
    wait_for(lambda: slots_processing(port) == 1, "the generation to start", 30)
    assert model_status(demo_daemon, "architect-demo")["in_flight"] == 1
    sock.close()
    assert_freed_then_swappable(demo_daemon, port)


def test_a_client_timing_out_with_retries_leaves_no_orphan(demo_daemon: Daemon) -> None:
    # The openai SDK's way: a read timeout, then retries; each try is abandoned in turn.
    port = warm(demo_daemon, "architect-demo")
    client = openai.OpenAI(
        base_url=f"{demo_daemon.url}/v1", api_key="unused", timeout=1.0, max_retries=2
    )
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(
            model="architect-demo",
            messages=STORY,
            max_tokens=2000,
            extra_body={"ignore_eos": True},
        )
    assert_freed_then_swappable(demo_daemon, port)


def test_a_stream_closed_mid_way_stops_generating(demo_daemon: Daemon) -> None:
    port = warm(demo_daemon, "architect-demo")
    body = {"model": "architect-demo", "messages": STORY, "stream": True, **LONG}
    with (
        demo_daemon.client() as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        events = (line for line in response.iter_lines() if line.startswith("data: "))
        for _ in range(5):
            next(events)
        assert slots_processing(port) == 1
    assert_freed_then_swappable(demo_daemon, port)


def test_a_stream_whose_socket_closes_unread_stops_generating(demo_daemon: Daemon) -> None:
    # The client never reads a byte of the stream: its leaving is seen all the same.
    port = warm(demo_daemon, "architect-demo")
    sock = raw_post(
        demo_daemon,
        "/v1/chat/completions",
        {"model": "architect-demo", "messages": STORY, "stream": True, **LONG},
    )
    wait_for(lambda: slots_processing(port) == 1, "the generation to start", 30)
    sock.close()
    assert_freed_then_swappable(demo_daemon, port)


GRACE_S = 4.0
EXIT_MARGIN_S = 3.0
"""Past the grace: the model servers' own stop and the interpreter's exit."""


def config_with_grace(grace_s: float) -> str:
    text = (resources.files("host") / "data" / "demo.toml").read_text()
    assert "[host]\n" in text
    return text.replace("[host]\n", f"[host]\nstop_grace_s = {grace_s}\n", 1)


def test_sigterm_during_long_generations_exits_within_the_grace(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    daemon = start_daemon(tmp_path, config_with_grace(GRACE_S))
    daemon_factory.append(daemon)
    wait_for_models(daemon, {"operator-demo", "validator-demo"}, "ready")
    architect = warm(daemon, "architect-demo")
    operator = model_status(daemon, "operator-demo")["port"]
    outcomes: dict[str, Any] = {}

    def stream(name: str) -> None:
        body = {"model": "architect-demo", "messages": STORY, "stream": True, **LONG}
        lines: list[str] = []
        try:
            with (
                httpx.Client(base_url=daemon.url, timeout=60) as http,
                http.stream("POST", "/v1/chat/completions", json=body) as response,
            ):
                lines.extend(line for line in response.iter_lines() if line.startswith("data: "))
        except httpx.TransportError as exc:
            lines.append(f"transport error: {exc!r}")
        outcomes[name] = lines

    def plain() -> None:
        body = {"model": "operator-demo", "messages": STORY, **LONG}
        try:
            with httpx.Client(base_url=daemon.url, timeout=60) as http:
                response = http.post("/v1/chat/completions", json=body)
            outcomes["plain"] = (response.status_code, response.json())
        except httpx.TransportError as exc:
            outcomes["plain"] = exc

    clients = [
        threading.Thread(target=stream, args=("stream-1",)),
        threading.Thread(target=stream, args=("stream-2",)),
        threading.Thread(target=plain),
    ]
    for client in clients:
        client.start()
    wait_for(
        lambda: slots_processing(architect) == 2 and slots_processing(operator) == 1,
        "two streams and one plain request generating",
        60,
    )
    children = daemon.note_children()
    assert len(children) >= 3  # architect, operator, validator

    began = time.monotonic()
    daemon.stop(signal.SIGTERM)
    took = time.monotonic() - began
    for client in clients:
        client.join(timeout=10)
    assert took < GRACE_S + EXIT_MARGIN_S, f"exit took {took:.1f} s\n{daemon.log()[-3000:]}"
    assert not wait_until_gone(children, timeout=5)

    # Every request in flight ended with an error a client can read, not a silent cut.
    for name in ("stream-1", "stream-2"):
        last = json.loads(outcomes[name][-1].removeprefix("data: "))
        assert last["error"]["type"] == "shutting_down", outcomes[name][-3:]
    status, error = outcomes["plain"]
    assert status == 503 and error["error"]["type"] == "shutting_down"


def listening(daemon: Daemon) -> bool:
    host, port = daemon.url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def test_a_second_sigterm_ends_the_requests_at_once(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    # A long grace, so that only the second signal can explain a quick exit.
    daemon = start_daemon(tmp_path, config_with_grace(60.0))
    daemon_factory.append(daemon)
    architect = warm(daemon, "architect-demo")
    outcome: list[str] = []

    def stream() -> None:
        body = {"model": "architect-demo", "messages": STORY, "stream": True, **LONG}
        with (
            httpx.Client(base_url=daemon.url, timeout=60) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            outcome.extend(line for line in response.iter_lines() if line.startswith("data: "))

    client = threading.Thread(target=stream)
    client.start()
    wait_for(lambda: slots_processing(architect) == 1, "the stream generating", 60)
    children = daemon.note_children()
    daemon.process.send_signal(signal.SIGTERM)
    # The first signal is taken once the daemon stops listening (its drain has begun).
    wait_for(lambda: not listening(daemon), "the daemon to stop listening", 10)
    assert client.is_alive()  # the stream is still being served, its drain is 30 s
    began = time.monotonic()
    daemon.stop(signal.SIGTERM)
    took = time.monotonic() - began
    client.join(timeout=10)
    assert took < EXIT_MARGIN_S + 2, f"exit took {took:.1f} s\n{daemon.log()[-3000:]}"
    assert not wait_until_gone(children, timeout=5)
    assert json.loads(outcome[-1].removeprefix("data: "))["error"]["type"] == "shutting_down"
