"""The dispatcher in a real daemon: wake-ups that start held tasks, and remote models.

A remote model here is a second real llama-server with the demo GGUF on loopback, "the
other box", started by the test with its own API key (`tests.remote_box`); a remote that
is down is a port nothing listens on.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import Daemon
from tests.remote_box import RemoteBox

pytestmark = pytest.mark.real

BOUND_S = 60.0
"""The longest any one wait of these tests may take."""
TERMINAL = {"done", "failed", "cancelled"}


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
