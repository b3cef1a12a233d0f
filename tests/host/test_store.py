"""The SQLite store: a real file, tasks with their events, settings, the swap log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from host.store import Store, UnknownTask
from host.tasks import IllegalTransition, TaskStatus


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "state.sqlite3")
    yield opened
    await opened.close()


async def new_task(store: Store, prompt: str = "plan it") -> str:
    task = await store.create_task(
        prompt=prompt,
        type="planning",
        context={"files": []},
        request={"tier": None},
        priority=0,
        validation="none",
        tier="architect",
        model="architect-demo",
        decision={"reasons": ["test"]},
    )
    return task.id


async def test_a_task_is_stored_queued_with_its_first_event(store: Store) -> None:
    task = await store.get_task(await new_task(store), with_events=True)
    assert task.status is TaskStatus.QUEUED
    assert (task.tier, task.model, task.decision) == (
        "architect",
        "architect-demo",
        {"reasons": ["test"]},
    )
    assert [e["status"] for e in task.events] == ["queued"]
    assert task.as_json(with_events=True)["events"][0]["reason"] == "submitted"


async def test_every_move_is_an_event_and_illegal_moves_are_refused(store: Store) -> None:
    task_id = await new_task(store)
    await store.move_task(task_id, TaskStatus.WAITING_DEVICE, "waiting for architect-demo")
    await store.move_task(task_id, TaskStatus.RUNNING, "running")
    done = await store.move_task(task_id, TaskStatus.DONE, "finished", result="ok", tokens=3)
    assert (done.result, done.tokens) == ("ok", 3)
    events = await store.task_events(task_id)
    assert [e["status"] for e in events] == ["queued", "waiting_device", "running", "done"]
    with pytest.raises(IllegalTransition, match="is done; it cannot become running"):
        await store.move_task(task_id, TaskStatus.RUNNING, "again")


async def test_interrupted_tasks_go_back_to_the_queue_with_a_reason(store: Store) -> None:
    running, waiting = await new_task(store, "a"), await new_task(store, "b")
    await new_task(store, "c")
    for task_id in (running, waiting):
        await store.move_task(task_id, TaskStatus.WAITING_DEVICE, "dispatched")
    await store.move_task(running, TaskStatus.RUNNING, "running")
    requeued = await store.requeue_interrupted("daemon restarted")
    assert requeued == [running, waiting]
    assert {t.status for t in await store.list_tasks()} == {TaskStatus.QUEUED}
    assert (await store.task_events(running))[-1]["reason"] == "daemon restarted"


async def test_listing_filters_by_status_and_type(store: Store) -> None:
    first = await new_task(store)
    await new_task(store)
    await store.move_task(first, TaskStatus.CANCELLED, "cancelled by a client")
    assert [t.id for t in await store.list_tasks(status="cancelled")] == [first]
    assert len(await store.list_tasks(type="planning")) == 2
    assert await store.list_tasks(type="email") == []
    assert await store.count_tasks() == {"cancelled": 1, "queued": 1}


async def test_unknown_task_ids_are_named(store: Store) -> None:
    with pytest.raises(UnknownTask, match="no task with id 't-nope'"):
        await store.get_task("t-nope")


async def test_settings_round_trip_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = await Store.open(path)
    await store.put_setting("modes", {"gpu0": "gaming"})
    await store.put_setting("modes", {"gpu0": "auto"})
    await store.close()
    reopened = await Store.open(path)
    assert await reopened.get_setting("modes") == {"gpu0": "auto"}
    assert await reopened.get_setting("missing") is None
    await reopened.close()


async def test_the_swap_log_keeps_order_and_durations(store: Store) -> None:
    await store.record_swap(
        model="a",
        device="gpu0",
        started=1.0,
        ready=1.5,
        evicted=[],
        reason="device had room",
        outcome="ready",
    )
    await store.record_swap(
        model="b",
        device="gpu0",
        started=2.0,
        ready=None,
        evicted=["a"],
        reason="evicted a",
        outcome="failed",
    )
    rows = await store.swaps()
    assert [(r.model, r.evicted, r.duration_s) for r in rows] == [
        ("a", [], 0.5),
        ("b", ["a"], None),
    ]
