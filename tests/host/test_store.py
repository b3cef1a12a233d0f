"""The SQLite store: a real file, tasks with their events, settings, the swap log."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from host.core.task_states import IllegalTransition, TaskStatus
from host.store import Store, UnknownTask


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


async def test_each_committed_status_change_is_told_and_a_failing_listener_changes_nothing(
    store: Store,
) -> None:
    heard: list[tuple[str, str]] = []

    def broken(task_id: str, status: str) -> None:
        raise RuntimeError("a listener that breaks")

    store.on_task_change(broken)
    store.on_task_change(lambda task_id, status: heard.append((task_id, status)))
    task_id = await new_task(store)
    await store.move_task(task_id, TaskStatus.WAITING_DEVICE, "routed")
    await store.move_task(task_id, TaskStatus.RUNNING, "started")
    await store.move_task(task_id, TaskStatus.DONE, "finished")
    with pytest.raises(IllegalTransition):
        await store.move_task(task_id, TaskStatus.RUNNING, "a done task never runs again")

    statuses = ["queued", "waiting_device", "running", "done"]
    assert heard == [(task_id, status) for status in statuses]
    assert (await store.get_task(task_id)).status is TaskStatus.DONE


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


# -- queue order and claims under concurrency (issue 17) ---------------------------------


async def new_task_for(store: Store, model: str, prompt: str) -> str:
    task = await store.create_task(
        prompt=prompt,
        type=None,
        context={"files": []},
        request={},
        priority=0,
        validation="none",
        model=model,
    )
    return task.id


async def test_two_thousand_concurrent_submissions_get_distinct_seqs_and_right_positions(
    store: Store,
) -> None:
    ids = await asyncio.gather(
        *(new_task_for(store, "a" if i % 2 else "b", f"task {i}") for i in range(2000))
    )
    tasks = [await store.get_task(i) for i in ids]
    assert len({t.seq for t in tasks}) == 2000
    for model in ("a", "b"):
        mine = sorted((t for t in tasks if t.model == model), key=lambda t: t.seq)
        positions = [await store.queue_position(t) for t in mine]
        assert positions == list(range(1, len(mine) + 1))
    first_a = min((t for t in tasks if t.model == "a"), key=lambda t: t.seq)
    second_a = sorted((t for t in tasks if t.model == "a"), key=lambda t: t.seq)[1]
    await store.move_task(first_a.id, TaskStatus.WAITING_DEVICE, "dispatched")
    assert await store.queue_position(second_a) == 1


async def test_a_database_with_duplicate_seqs_is_renumbered_in_order_on_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    store = await Store.open(path)
    late, early, last = [await new_task(store, p) for p in ("late", "early", "last")]
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:  # as an older daemon left it
        db.execute("DROP INDEX tasks_seq")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        for task_id, seq, created in ((late, 1, 10.0), (early, 1, 5.0), (last, 2, 1.0)):
            db.execute(
                "UPDATE tasks SET seq = ?, created = ? WHERE id = ?", (seq, created, task_id)
            )
    reopened = await Store.open(path)
    try:
        seqs = {t: (await reopened.get_task(t)).seq for t in (late, early, last)}
        assert seqs == {early: 1, late: 2, last: 3}
        assert (await reopened.get_task(await new_task(reopened, "new"))).seq == 4
    finally:
        await reopened.close()
    with contextlib.closing(sqlite3.connect(path)) as db, pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE tasks SET seq = 1 WHERE id = ?", (last,))


async def test_of_two_racing_moves_one_wins_and_only_it_is_an_event(store: Store) -> None:
    task_id = await new_task(store)
    results = await asyncio.gather(
        *(store.move_task(task_id, TaskStatus.WAITING_DEVICE, f"job {n}") for n in range(5)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, IllegalTransition) for r in results if r not in winners)
    events = await store.task_events(task_id)
    assert [e["status"] for e in events] == ["queued", "waiting_device"]
