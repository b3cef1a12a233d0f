"""The persistent task queue against a real daemon, real llama-server and SmolLM2."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Daemon, start_daemon, wait_for_models

pytestmark = pytest.mark.real

TERMINAL = {"done", "failed", "cancelled"}


def submit(http: httpx.Client, prompt: str, **fields: Any) -> dict[str, Any]:
    response = http.post("/api/tasks", json={"prompt": prompt, **fields})
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


def wait_all_terminal(
    daemon: Daemon, ids: list[str], timeout: float = 240.0
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    with daemon.client() as http:
        while time.monotonic() < deadline:
            tasks = {i: http.get(f"/api/tasks/{i}").json() for i in ids}
            if all(t["status"] in TERMINAL for t in tasks.values()):
                return tasks
            time.sleep(0.1)
    left = {i: t["status"] for i, t in tasks.items() if t["status"] not in TERMINAL}
    raise AssertionError(f"tasks not finished within {timeout} s: {left}")


def test_a_task_runs_on_its_tier_and_records_every_step(demo_daemon: Daemon) -> None:
    with demo_daemon.client() as http:
        task = submit(http, "Plan a tiny CLI tool.", params={"max_tokens": 8})
        assert task["status"] == "queued"
        assert (task["type"], task["tier"], task["model"]) == (
            "planning",
            "architect",
            "architect-demo",
        )
        assert task["decision"]["reasons"]
    done = wait_all_terminal(demo_daemon, [task["id"]])[task["id"]]
    assert done["status"] == "done" and done["result"] and done["tokens"] > 0
    assert [e["status"] for e in done["events"]] == ["queued", "waiting_device", "running", "done"]


def test_thirty_alternating_tasks_swap_far_fewer_times(demo_daemon: Daemon) -> None:
    ids = []
    with demo_daemon.client() as http:
        swaps_before = len(http.get("/api/swaps").json()["swaps"])
        for i in range(30):
            kind = "planning" if i % 2 == 0 else "implementation"
            task = submit(http, f"Task {i}", type=kind, validation="none", params={"max_tokens": 6})
            ids.append(task["id"])
    tasks = wait_all_terminal(demo_daemon, ids)
    assert {t["status"] for t in tasks.values()} == {"done"}
    with demo_daemon.client() as http:
        swaps = http.get("/api/swaps").json()["swaps"][swaps_before:]
    gpu_swaps = [s for s in swaps if s["device"] == "gpu0"]
    assert len(gpu_swaps) <= 6, [(s["model"], s["started"]) for s in gpu_swaps]


def submit_until_one_runs(daemon: Daemon, count: int, *, max_tokens: int) -> list[str]:
    """Submit `count` long planning tasks and wait (bounded) until one of them runs."""
    with daemon.client() as http:
        ids = [
            submit(
                http,
                f"Write a long story number {i}.",
                type="planning",
                params={"max_tokens": max_tokens},
            )["id"]
            for i in range(count)
        ]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            statuses = [http.get(f"/api/tasks/{i}").json()["status"] for i in ids]
            if "running" in statuses:
                return ids
            time.sleep(0.02)
    raise AssertionError(f"none of {count} tasks started within 60 s: {statuses}")


def test_kill_9_then_restart_finishes_every_task_once(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    first = start_daemon(tmp_path)
    daemon_factory.append(first)
    ids = submit_until_one_runs(first, 8, max_tokens=48)
    first.stop(signal.SIGKILL)

    second = start_daemon(tmp_path, data_dir=first.data_dir)
    daemon_factory.append(second)
    tasks = wait_all_terminal(second, ids)
    assert {t["status"] for t in tasks.values()} == {"done"}
    with second.client() as http:
        listed = http.get("/api/tasks", params={"limit": 100}).json()["tasks"]
    assert sorted(t["id"] for t in listed) == sorted(ids)  # nothing duplicated
    requeued = 0
    for task in tasks.values():
        statuses = [e["status"] for e in task["events"]]
        assert statuses.count("done") == 1
        if any("restarted" in e["reason"] for e in task["events"]):
            requeued += 1
    assert requeued >= 1


def test_routing_edits_survive_a_restart(tmp_path: Path, daemon_factory: list[Daemon]) -> None:
    first = start_daemon(tmp_path)
    daemon_factory.append(first)
    with first.client() as http:
        routes = http.get("/api/routing").json()["routes"]
        routes["review"] = "builder"
        assert http.put("/api/routing", json={"routes": routes}).is_success
    first.stop()
    second = start_daemon(tmp_path, data_dir=first.data_dir)
    daemon_factory.append(second)
    with second.client() as http:
        assert http.get("/api/routing").json()["routes"]["review"] == "builder"
        decision = http.post("/api/route", json={"prompt": "x", "type": "review"}).json()
        assert decision["tier"] == "builder"
    wait_for_models(second, {"operator-demo"}, "ready")


def test_cancel_a_queued_task(demo_daemon: Daemon) -> None:
    with demo_daemon.client() as http:
        assert http.put("/api/mode", json={"mode": "gaming"}).is_success
        soft = submit(http, "Plan it.", type="planning")
        assert soft["model"] == "operator-demo"  # gaming: fails soft to the CPU fallback
        assert any("gaming mode" in r for r in soft["decision"]["reasons"])
        task = submit(http, "Plan it.", model="architect-demo")  # no fallback: it waits
        assert task["decision"]["wait_reason"] == "gpu0 is in gaming mode"
        held = http.get(f"/api/tasks/{task['id']}").json()
        assert held["status"] == "queued" and "gaming" in held["waiting_because"]
        cancelled = http.post(f"/api/tasks/{task['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["events"][-1]["reason"] == "cancelled by a client"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/api/tasks", {}, 400, "prompt: required field is missing"),
        ("POST", "/api/tasks", {"prompt": ""}, 400, "prompt: String should have at least"),
        ("POST", "/api/tasks", {"prompt": "x", "priority": "high"}, 400, "priority:"),
        ("POST", "/api/tasks", {"prompt": "x", "validation": "maybe"}, 400, "validation:"),
        ("POST", "/api/tasks", {"prompt": "x", "tier": "wizard"}, 404, "wizard"),
        ("POST", "/api/tasks", {"prompt": "x", "model": "gpt-9"}, 404, "gpt-9"),
        ("POST", "/api/tasks", {"prompt": "x", "bogus": 1}, 400, "bogus: unknown field"),
        ("GET", "/api/tasks/t-nope", None, 404, "no task with id 't-nope'"),
        ("POST", "/api/tasks/t-nope/cancel", None, 404, "no task with id"),
        ("GET", "/api/tasks?status=sleeping", None, 400, "unknown status 'sleeping'"),
        ("PUT", "/api/routing", {"routes": {"planning": "wizard"}}, 404, "wizard"),
        ("PUT", "/api/routing", {"routes": {"dancing": "builder"}}, 400, "dancing"),
        ("PUT", "/api/routing", {"routes": "x"}, 400, "routes:"),
        ("POST", "/api/route", {"type": "planning"}, 400, "prompt: required"),
    ],
)
def test_bad_input_is_a_4xx_json_error(
    demo_daemon: Daemon, method: str, path: str, body: Any, status: int, message: str
) -> None:
    with demo_daemon.client() as http:
        response = http.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("mistake", "status", "requests"),
    [
        (
            "a field of the wrong shape",
            400,
            [
                ("POST", "/v1/chat/completions", {"model": "auto", "messages": "hi"}),
                ("POST", "/api/tasks", {"prompt": 7}),
                ("POST", "/api/route", {"prompt": "x", "force_big": [1]}),
                ("PUT", "/api/mode", {"mode": ["gaming"]}),
            ],
        ),
        (
            "an unknown field",
            400,
            [
                ("POST", "/api/tasks", {"prompt": "x", "colour": 1}),
                ("POST", "/api/route", {"prompt": "x", "colour": 1}),
                ("PUT", "/api/mode", {"mode": "auto", "colour": 1}),
            ],
        ),
        (
            "a model that does not exist",
            404,
            [
                ("POST", "/v1/chat/completions", {"model": "gpt-9", "messages": []}),
                ("POST", "/api/tasks", {"prompt": "x", "model": "gpt-9"}),
                ("POST", "/api/route", {"prompt": "x", "model": "gpt-9"}),
            ],
        ),
        (
            "a task type that does not exist",
            400,
            [
                ("POST", "/api/tasks", {"prompt": "x", "type": "poetry"}),
                ("POST", "/api/route", {"prompt": "x", "type": "poetry"}),
                ("PUT", "/api/routing", {"routes": {"poetry": "builder"}}),
            ],
        ),
    ],
)
def test_the_same_mistake_gets_the_same_status_on_every_endpoint(
    demo_daemon: Daemon, mistake: str, status: int, requests: list[tuple[str, str, Any]]
) -> None:
    with demo_daemon.client() as http:
        answers = {path: http.request(method, path, json=body) for method, path, body in requests}
    assert {path: r.status_code for path, r in answers.items()} == dict.fromkeys(answers, status)
    for response in answers.values():
        assert response.json()["error"]["message"], mistake


def test_sigterm_requeues_tasks_under_way_at_once_and_the_next_start_finishes_them(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    first = start_daemon(tmp_path)
    daemon_factory.append(first)
    ids = submit_until_one_runs(first, 4, max_tokens=64)
    first.stop(signal.SIGTERM)

    # Requeued by the daemon that stopped, not only by the next one: read the file itself.
    with contextlib.closing(sqlite3.connect(first.data_dir / "tierhost.sqlite3")) as db:
        stored = dict(db.execute("SELECT id, status FROM tasks").fetchall())
        stop_events = {
            task_id
            for (task_id,) in db.execute(
                "SELECT task_id FROM task_events WHERE reason LIKE 'the daemon stopped%'"
            )
        }
    assert stop_events, "no task was requeued when the daemon stopped"
    assert {stored[i] for i in stop_events} == {"queued"}
    assert set(stored.values()) <= {"queued", "done"}

    second = start_daemon(tmp_path, data_dir=first.data_dir)
    daemon_factory.append(second)
    tasks = wait_all_terminal(second, ids)
    assert {t["status"] for t in tasks.values()} == {"done"}
    for task in tasks.values():
        events = [e["status"] for e in task["events"]]
        assert events.count("done") == 1
        assert not any("restarted" in e["reason"] for e in task["events"])  # nothing left over
