"""The other box goes away and comes back: a real second llama-server on loopback, stopped
and started again on its port while a daemon probes it. Routing skips it while it is down
(saying why), `/api/status` and `/metrics` show it, and it is taken back when it answers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, start_daemon, stop_checked
from tests.remote_box import KEY_ENV, REMOTE_ALIAS, REMOTE_KEY, running_remote_box

pytestmark = pytest.mark.real

WAIT_S = 20.0
"""Far more than a probe interval (0.2 s) plus its timeout (1 s) and a box's restart."""


def config(box_url: str) -> str:
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
    return next(
        line for line in text.splitlines() if line.startswith("tierhost_remote_reachable{")
    )


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
            assert "health: skip operator-far, the remote endpoint is not reachable" in (
                decision["reasons"]
            )
            assert reachable_gauge(daemon).endswith(" 0.0")
            assert "remote model operator-far is not reachable" in daemon.log()

            with running_remote_box(tmp_path, port):
                wait_reachable(daemon, True)
                assert route_email(daemon)["model"] == "operator-far"
            assert "remote model operator-far is reachable again" in daemon.log()
        finally:
            stop_checked(daemon)
