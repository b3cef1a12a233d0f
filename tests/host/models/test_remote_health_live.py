"""The other box goes away and comes back: a real second llama-server on loopback, stopped
and started again on its port while a daemon probes it. Routing skips it while it is down
(saying why), `/api/status` and `/metrics` show it, and it is taken back when it answers.
Then its owner games: a scripted mode endpoint (what a gaming PC would run) flips between
NORMAL and GAMING and stops answering, and only forced work reaches the box."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, start_daemon, stop_checked
from tests.remote_box import KEY_ENV, REMOTE_ALIAS, REMOTE_KEY, running_remote_box

pytestmark = pytest.mark.real

WAIT_S = 20.0
"""Far more than a probe interval (0.2 s) plus its timeout (1 s) and a box's restart."""


def config(box_url: str, extra: str = "") -> str:
    """The operator on the other box, with a small local model as its fallback (never
    started here: a dry-run decision loads nothing)."""
    return f"""
[devices.cpu]
kind = "cpu"

[models.operator-far]
kind = "remote"
base_url = "{box_url}/v1"
api_key_env = "{KEY_ENV}"
remote_model = "{REMOTE_ALIAS}"
health_interval_s = 0.2
health_timeout_s = 1
{extra}

[models.local-small]
gguf = "demo:smollm2"
device = "cpu"
memory_mb = 200

[tiers.architect]
models = ["local-small"]
[tiers.builder]
models = ["local-small"]
[tiers.operator]
models = ["operator-far"]
fallback_tier = "local"
[tiers.local]
models = ["local-small"]
"""


def far(daemon: Daemon) -> dict[str, Any]:
    return next(m for m in daemon.status()["models"] if m["name"] == "operator-far")


def wait_reachable(daemon: Daemon, reachable: bool) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        entry = far(daemon)
        if entry["probed"] and entry["reachable"] is reachable:
            return entry
        time.sleep(0.05)
    raise AssertionError(f"operator-far not reachable={reachable} within {WAIT_S} s: {entry}")


def route_email(daemon: Daemon) -> dict[str, Any]:
    with daemon.client() as http:
        decision: dict[str, Any] = http.post(
            "/api/route", json={"prompt": "reply to Dana", "type": "email"}
        ).json()
    return decision


def reachable_gauge(daemon: Daemon) -> str:
    with daemon.client() as http:
        text = http.get("/metrics").text
    return next(line for line in text.splitlines() if line.startswith("tierhost_remote_reachable{"))


def test_a_box_that_goes_away_is_skipped_and_taken_back(tmp_path: Path) -> None:
    with running_remote_box(tmp_path) as box:
        port = int(box.url.rsplit(":", 1)[1])
        daemon = start_daemon(tmp_path, config(box.url), extra_env={KEY_ENV: REMOTE_KEY})
        try:
            up = wait_reachable(daemon, True)
            assert up["last_error"] is None and up["probe_ms"] is not None
            assert route_email(daemon)["model"] == "operator-far"
            assert reachable_gauge(daemon).endswith(" 1.0")

            box.process.terminate()
            box.process.wait(timeout=10)
            down = wait_reachable(daemon, False)
            assert down["last_error"].startswith("cannot connect")
            assert down["unreachable_since"] is not None
            decision = route_email(daemon)
            assert decision["model"] == "local-small"
            assert (
                "health: skip operator-far, the remote endpoint is not reachable"
                in (decision["reasons"])
            )
            assert reachable_gauge(daemon).endswith(" 0.0")
            assert "remote model operator-far is not reachable" in daemon.log()

            with running_remote_box(tmp_path, port):
                wait_reachable(daemon, True)
                assert route_email(daemon)["model"] == "operator-far"
            assert "remote model operator-far is reachable again" in daemon.log()
        finally:
            stop_checked(daemon)


class ModeEndpoint:
    """A gaming PC's mode endpoint, scripted: `GET /mode` answers `{"mode": ...}`."""

    def __init__(self) -> None:
        self.mode = "NORMAL"
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"mode": endpoint.mode}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mode"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop answering (idempotent: the test closes it early, the fixture again)."""
        if not self._thread.is_alive():
            return
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def mode_endpoint() -> Iterator[ModeEndpoint]:
    endpoint = ModeEndpoint()
    yield endpoint
    endpoint.close()


def wait_box_mode(daemon: Daemon, gaming: bool, says: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        mode = far(daemon)["box_mode"]
        if mode["gaming"] is gaming and says in mode["reason"]:
            return mode  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"box mode not gaming={gaming} ({says}) within {WAIT_S} s: {mode}")


def chat(daemon: Daemon, model: str, **headers: str) -> tuple[int, dict[str, Any], str]:
    with daemon.client() as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            headers=headers,
        )
    return response.status_code, response.json(), response.headers.get("X-Tierhost-Model", "")


def test_a_gaming_box_takes_only_forced_work(tmp_path: Path, mode_endpoint: ModeEndpoint) -> None:
    extra = f'mode_url = "{mode_endpoint.url}"\nmode_interval_s = 0.2'
    with running_remote_box(tmp_path) as box:
        daemon = start_daemon(tmp_path, config(box.url, extra), extra_env={KEY_ENV: REMOTE_KEY})
        try:
            wait_box_mode(daemon, False, "normal mode")
            assert route_email(daemon)["model"] == "operator-far"

            mode_endpoint.mode = "GAMING"
            held = wait_box_mode(daemon, True, "its box is in gaming mode")
            assert mode_endpoint.url in held["reason"]
            decision = route_email(daemon)
            assert decision["model"] == "local-small"
            assert f"mode gate: skip operator-far, {held['reason']}" in decision["reasons"]
            status, body, _ = chat(daemon, "operator-far")
            assert status == 503 and "its box is in gaming mode" in body["error"]["message"]
            status, _, served = chat(daemon, "operator-far", **{"X-Force-Big": "true"})
            assert (status, served) == (200, "operator-far")  # force-big still goes there

            mode_endpoint.mode = "NORMAL"
            wait_box_mode(daemon, False, "normal mode")
            assert chat(daemon, "operator-far")[0] == 200

            mode_endpoint.close()  # the endpoint stops answering: held back, never surprised
            gone = wait_box_mode(daemon, True, "does not answer")
            assert gone["reason"].endswith("held back as gaming")
            assert route_email(daemon)["model"] == "local-small"
        finally:
            stop_checked(daemon)
