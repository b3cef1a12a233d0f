"""The dispatcher under concurrent submissions, failures and shutdown.

It runs with a real Store on a temp SQLite file and a real HTTP upstream on loopback (a
small scripted OpenAI-style server in this process, so a test can hold an answer back
or make it hostile), behind a fake of the narrow Host surface the dispatcher uses:
the fleet's `permits`, `lease`, `device_for` and `contended_devices` (the
dispatcher's `Models` protocol). Every wait is on an event, bounded by `asyncio.wait_for`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from host.config import load_config, parse_config
from host.core.batching import Policy
from host.core.task_states import TERMINAL, TaskStatus
from host.daemon import Host
from host.models.arbiter import ModelUnavailable, TooManyRequests, Work
from host.models.leases import ModelLease
from host.models.process import ModelState, Transition
from host.store import Store, TaskRow
from host.tasks.dispatcher import Dispatcher

BOUND_S = 20.0
"""The longest any one wait of these tests may take."""


# -- a scripted upstream, over real HTTP -------------------------------------------------


@dataclass
class Upstream:
    """Answers `/{model}/v1/chat/completions` from a script per model."""

    url: str = ""
    replies: dict[str, str] = field(default_factory=dict)
    raw_events: dict[str, str] = field(default_factory=dict)
    """A model whose stream is this text as it is (hostile or broken SSE)."""
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    """A model whose answers wait until its gate is set."""
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def chat(self, request: Request) -> Response:
        model = request.path_params["model"]
        body = await request.json()
        self.received.append((model, body))
        self.arrived.set()
        gate = self.gates.get(model)
        if gate is not None:
            await gate.wait()
        text = self.replies.get(model, "Hello from the upstream.")
        if not body.get("stream"):
            return JSONResponse({"choices": [{"message": {"role": "assistant", "content": text}}]})
        raw = self.raw_events.get(model)

        async def events() -> AsyncIterator[str]:
            if raw is not None:
                yield raw
                return
            for piece in text.split(" "):
                chunk = {"choices": [{"delta": {"content": piece + " "}}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    def prompts(self, model: str | None = None) -> list[str]:
        return [
            body["messages"][-1]["content"]
            for name, body in self.received
            if model is None or name == model
        ]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    script = Upstream()
    app = Starlette(routes=[Route("/{model}/v1/chat/completions", script.chat, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until the server accepts: no race
    script.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    yield script
    for gate in script.gates.values():
        gate.set()
    server.should_exit = True
    await asyncio.wait_for(serving, BOUND_S)
    sock.close()


# -- the fleet surface the dispatcher uses -----------------------------------------------


class FakeArbiter:
    def __init__(self) -> None:
        self.allowed: set[str] | None = None
        self.broken: set[str] = set()
        """Models whose `permits` raises: a row the loop cannot schedule."""

    def permits(self, model: str, forced: bool = False) -> bool:
        if model in self.broken:
            raise KeyError(f"no such model on this device: {model}")
        return self.allowed is None or forced or model in self.allowed


class FakeFleet:
    """Leases on the scripted upstream; the device's FakeArbiter says what is permitted."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def permits(self, model: str, forced: bool = False) -> bool:
        device = self.host.device_of.get(model)
        return device is None or self.host.arbiters[device].permits(model, forced)

    def device_for(self, model: str) -> str | None:
        return self.host.device_of.get(model)

    def contended_devices(self) -> dict[str, bool]:
        return {"gpu0": True, "cpu": False}

    async def lease(
        self,
        model: str,
        timeout: float | None = None,
        *,
        forced: bool = False,
        priority: int | None = None,
        work: Work = "request",
    ) -> ModelLease:
        host = self.host
        host.endpoints.append(model)
        if model in host.refuse:
            raise host.refuse[model]
        return ModelLease(
            model=model,
            api_base=f"{host.upstream.url}/{model}/v1",
            http=host.http,
            headers={},
            upstream_model=None,
            log_path=None,
            server_url=None,
            _release=lambda: host.released.append(model),
        )


class FakeHost:
    """The demo config's models, each served by the scripted upstream."""

    def __init__(self, upstream: Upstream) -> None:
        self.config = load_config()
        self.upstream = upstream
        self.device_of = {name: m.device for name, m in self.config.managed().items()}
        self.arbiters = {"gpu0": FakeArbiter(), "cpu": FakeArbiter()}
        self.http = httpx.AsyncClient(timeout=BOUND_S)
        self.refuse: dict[str, BaseException] = {}
        """Models whose endpoint raises this instead of answering."""
        self.endpoints: list[str] = []
        """Every model a lease was asked for, in order."""
        self.released: list[str] = []
        self.fleet = FakeFleet(self)


class Watcher:
    """Wakes a waiting test on every task change the dispatcher reports."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.changed = asyncio.Event()
        dispatcher.subscribe(lambda _: self.changed.set())

    async def until(self, predicate: Callable[[], Awaitable[bool]], what: str) -> None:
        async def loop() -> None:
            while True:
                self.changed.clear()
                if await predicate():
                    return
                await self.changed.wait()

        try:
            await asyncio.wait_for(loop(), BOUND_S)
        except TimeoutError:
            raise AssertionError(f"not within {BOUND_S} s: {what}") from None


@dataclass
class Rig:
    store: Store
    host: FakeHost
    dispatcher: Dispatcher
    watcher: Watcher
    upstream: Upstream

    async def submit(
        self,
        model: str,
        prompt: str,
        *,
        validation: str = "none",
        type: str | None = None,
        wake: bool = True,
    ) -> str:
        task = await self.store.create_task(
            prompt=prompt,
            type=type,
            context={"files": []},
            request={"tier": None, "model": None, "force_big": False, "params": {}},
            priority=0,
            validation=validation,
            tier=self.host.config.tier_of(model),
            model=model,
            decision={"reasons": ["test"]},
        )
        if wake:
            self.dispatcher.wake()
        return task.id

    async def tasks(self, ids: list[str]) -> dict[str, TaskRow]:
        return {i: await self.store.get_task(i, with_events=True) for i in ids}

    async def until_status(self, ids: list[str], statuses: set[TaskStatus]) -> dict[str, TaskRow]:
        async def reached() -> bool:
            return all(t.status in statuses for t in (await self.tasks(ids)).values())

        await self.watcher.until(reached, f"tasks {ids} in {sorted(statuses)}")
        return await self.tasks(ids)

    async def finished(self, ids: list[str]) -> dict[str, TaskRow]:
        return await self.until_status(ids, set(TERMINAL))


def statuses(task: TaskRow) -> list[str]:
    return [e["status"] for e in task.events]


POLICY = Policy(max_wait_s=300.0, min_residency_s=0.0, slots_per_model=2, batch=True)


@contextlib.asynccontextmanager
async def started(
    tmp_path: Path, upstream: Upstream, policy: Policy = POLICY, store_class: type[Store] = Store
) -> AsyncIterator[Rig]:
    store = await store_class.open(tmp_path / "tasks.sqlite3")
    host = FakeHost(upstream)
    dispatcher = Dispatcher(
        host.fleet, store, policy, host.config.validation, host.config.validator_model()
    )
    rig = Rig(store, host, dispatcher, Watcher(dispatcher), upstream)
    await dispatcher.start()
    try:
        yield rig
    finally:
        await rig.dispatcher.close()
        await host.http.aclose()
        await store.close()


@pytest.fixture
async def rig(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Rig]:
    async with started(tmp_path, upstream) as running:
        yield running


# -- a task is started once --------------------------------------------------------------


async def test_concurrent_submissions_and_many_wake_ups_start_every_task_exactly_once(
    tmp_path: Path, upstream: Upstream
) -> None:
    # Slots to spare, so a second pass that saw a started task as queued would start it.
    roomy = Policy(max_wait_s=300.0, min_residency_s=0.0, slots_per_model=500, batch=True)
    models = ["architect-demo", "builder-demo", "operator-demo"]
    stop_waking = asyncio.Event()
    async with started(tmp_path, upstream, roomy) as rig:

        async def keep_waking() -> None:
            while not stop_waking.is_set():
                rig.dispatcher.wake()
                await asyncio.sleep(0)  # a yield to the loop, not a wait for anything

        waker = asyncio.create_task(keep_waking())
        ids = await asyncio.gather(
            *(rig.submit(models[i % 3], f"task number {i}") for i in range(150))
        )
        tasks = await rig.finished(list(ids))
        stop_waking.set()
        await waker
        await check_ran_once(rig, tasks)


async def check_ran_once(rig: Rig, tasks: dict[str, TaskRow]) -> None:
    """From the events and from what the upstream was asked: one run per task."""
    for task in tasks.values():
        assert statuses(task) == ["queued", "waiting_device", "running", "done"], task.events
    prompts = rig.upstream.prompts()
    assert sorted(prompts) == sorted(t.prompt for t in tasks.values())
    assert sorted(rig.host.endpoints) == sorted(rig.host.released)  # every lease handed back
    assert len({t.seq for t in tasks.values()}) == len(tasks)


async def test_a_job_that_loses_the_claim_leaves_the_task_alone(rig: Rig) -> None:
    rig.upstream.gates["operator-demo"] = asyncio.Event()
    task_id = await rig.submit("operator-demo", "hold me")
    await rig.until_status([task_id], {TaskStatus.RUNNING})
    row = await rig.store.get_task(task_id)
    # Another job for the same row, as a stale pass would start it: its claim fails.
    await rig.dispatcher._run(row)
    rig.upstream.gates["operator-demo"].set()
    done = (await rig.finished([task_id]))[task_id]
    assert statuses(done) == ["queued", "waiting_device", "running", "done"]
    assert len(rig.upstream.prompts("operator-demo")) == 1


# -- nothing strands a task --------------------------------------------------------------


async def test_an_unexpected_error_fails_the_task_with_the_reason_and_a_trace(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.host.refuse["builder-demo"] = RuntimeError("the fleet is confused")
    rig.upstream.raw_events["architect-demo"] = "data: {this is not json\n\n"
    rig.upstream.raw_events["validator-demo"] = 'data: {"error": {"message": "out of slots"}}\n\n'

    with caplog.at_level(logging.ERROR, logger="tierhost.dispatcher"):
        broken = await rig.submit("builder-demo", "write it")
        garbled = await rig.submit("architect-demo", "plan it")
        erring = await rig.submit("validator-demo", "judge it")
        fine = await rig.submit("operator-demo", "check the disks")
        tasks = await rig.finished([broken, garbled, erring, fine])

    assert tasks[broken].status is TaskStatus.FAILED
    assert "RuntimeError: the fleet is confused" in (tasks[broken].error or "")
    assert tasks[broken].events[-1]["reason"] == tasks[broken].error
    assert tasks[garbled].status is TaskStatus.FAILED
    assert "architect-demo sent a stream event that is not JSON" in (tasks[garbled].error or "")
    assert tasks[erring].error == "model validator-demo reported an error mid-answer: out of slots"
    assert tasks[fine].status is TaskStatus.DONE
    traced = [r for r in caplog.records if r.exc_info and broken in r.getMessage()]
    assert traced and traced[0].exc_info and traced[0].exc_info[0] is RuntimeError
    assert "architect-demo" in rig.host.released  # the lease of the garbled one came back


async def test_one_row_the_loop_cannot_schedule_fails_alone(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.host.arbiters["gpu0"].broken.add("builder-demo")
    with caplog.at_level(logging.ERROR, logger="tierhost.dispatcher"):
        bad = await rig.submit("builder-demo", "write it")
        good = [await rig.submit("architect-demo", f"plan {i}") for i in range(3)]
        tasks = await rig.finished([bad, *good])
    assert tasks[bad].status is TaskStatus.FAILED
    assert "cannot schedule" in (tasks[bad].error or "")
    assert "KeyError" in (tasks[bad].error or "")
    assert {tasks[g].status for g in good} == {TaskStatus.DONE}
    assert any(bad in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_damaged_row_fails_alone_and_reads_again(rig: Rig) -> None:
    damaged = await rig.submit("operator-demo", "check the disks", wake=False)
    with contextlib.closing(sqlite3.connect(rig.store.path)) as db, db:
        db.execute("UPDATE tasks SET request = '{not json' WHERE id = ?", (damaged,))
    good = await rig.submit("operator-demo", "check the fans")
    await rig.finished([good])  # the pass that started it failed the damaged one first
    tasks = await rig.tasks([damaged, good])
    assert tasks[good].status is TaskStatus.DONE
    assert tasks[damaged].status is TaskStatus.FAILED
    assert "damaged row" in (tasks[damaged].error or "")
    assert tasks[damaged].events[-1]["data"] == {"damaged": ["request"]}
    assert tasks[damaged].request == {}


async def test_a_model_that_is_unavailable_fails_the_task_with_why(rig: Rig) -> None:
    rig.host.refuse["operator-demo"] = ModelUnavailable("model operator-demo is not in the config")
    task_id = await rig.submit("operator-demo", "check the disks")
    task = (await rig.finished([task_id]))[task_id]
    assert task.status is TaskStatus.FAILED
    assert task.error == "model operator-demo is not in the config"


class StoreThatCannotFail(Store):
    """A store whose write of a failure breaks, as a full disk would."""

    async def move_task(self, task_id: str, new: TaskStatus, reason: str, **kwargs: Any) -> TaskRow:
        if new is TaskStatus.FAILED:
            raise sqlite3.OperationalError("database or disk is full")
        return await super().move_task(task_id, new, reason, **kwargs)


async def test_a_failure_the_store_cannot_record_is_logged_and_requeued_at_close(
    tmp_path: Path, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    async with started(tmp_path, upstream, store_class=StoreThatCannotFail) as rig:
        rig.host.refuse["operator-demo"] = RuntimeError("boom")
        with caplog.at_level(logging.ERROR, logger="tierhost.dispatcher"):
            task_id = await rig.submit("operator-demo", "check the disks")

            async def job_ended() -> bool:
                return "operator-demo" in rig.host.endpoints and not rig.dispatcher.running_ids()

            await rig.watcher.until(job_ended, "the job to end")
        logged = [r.getMessage() for r in caplog.records if r.exc_info]
        assert any(task_id in m and "could not record it as failed" in m for m in logged)
        assert (await rig.store.get_task(task_id)).status is TaskStatus.WAITING_DEVICE
        await rig.dispatcher.close()
        assert (await rig.store.get_task(task_id)).status is TaskStatus.QUEUED


async def test_deeply_nested_json_in_a_validated_answer_fails_the_task_not_strands_it(
    rig: Rig,
) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    rig.upstream.replies["builder-demo"] = f"```json\n{deep}\n```"
    task_id = await rig.submit(
        "builder-demo", "write the data file", validation="final", type="implementation"
    )
    task = (await rig.finished([task_id]))[task_id]
    assert task.status is TaskStatus.FAILED
    assert "JSON nested deeper than" in (task.error or "")
    assert "validating" in statuses(task)
    assert task.validated is False
    assert rig.upstream.prompts("validator-demo") == []  # the checks decided it alone


async def test_a_validated_task_passes_on_the_validators_verdict(rig: Rig) -> None:
    rig.upstream.replies["builder-demo"] = '```json\n{"a": [1, 2]}\n```'
    rig.upstream.replies["validator-demo"] = "PASS"
    task_id = await rig.submit(
        "builder-demo", "write the data file", validation="final", type="implementation"
    )
    task = (await rig.finished([task_id]))[task_id]
    assert task.status is TaskStatus.DONE and task.validated is True
    assert len(rig.upstream.prompts("validator-demo")) == 1


# -- shutdown -----------------------------------------------------------------------------


async def test_closing_requeues_tasks_under_way_and_the_next_start_runs_them_once(
    tmp_path: Path, rig: Rig
) -> None:
    rig.upstream.gates["architect-demo"] = asyncio.Event()
    running = await rig.submit("architect-demo", "a long plan")
    queued = await rig.submit("architect-demo", "a second plan")
    held = await rig.submit("architect-demo", "a third plan")  # 2 slots: this one waits
    await rig.until_status([running, queued], {TaskStatus.RUNNING})
    await asyncio.wait_for(rig.upstream.arrived.wait(), BOUND_S)

    await rig.dispatcher.close()

    after = await rig.tasks([running, queued, held])
    assert {t.status for t in after.values()} == {TaskStatus.QUEUED}
    for task_id in (running, queued):
        assert "the daemon stopped" in after[task_id].events[-1]["reason"]
    assert statuses(after[held]) == ["queued"]

    rig.upstream.gates["architect-demo"].set()
    again = Dispatcher(
        rig.host.fleet,
        rig.store,
        POLICY,
        rig.host.config.validation,
        rig.host.config.validator_model(),
    )
    rig.dispatcher, rig.watcher = again, Watcher(again)
    await again.start()
    tasks = await rig.finished([running, queued, held])
    assert {t.status for t in tasks.values()} == {TaskStatus.DONE}
    for task_id in (running, queued):
        assert statuses(tasks[task_id]) == [
            "queued",
            "waiting_device",
            "running",
            "queued",
            "waiting_device",
            "running",
            "done",
        ]


async def test_a_cancelled_running_task_is_cancelled_not_requeued(rig: Rig) -> None:
    rig.upstream.gates["operator-demo"] = asyncio.Event()
    task_id = await rig.submit("operator-demo", "hold me")
    await rig.until_status([task_id], {TaskStatus.RUNNING})
    cancelled = await rig.dispatcher.cancel(task_id)
    assert cancelled.status is TaskStatus.CANCELLED
    assert "operator-demo" in rig.host.released


async def test_a_task_cancelled_as_it_starts_stays_cancelled(rig: Rig) -> None:
    """Cancels that race the dispatcher starting the task: each ends cancelled, once, and
    none is started again after. Between the submission (which wakes the dispatcher) and
    the cancel, the loop gets 0 to 5 turns, so the cancel lands before the dispatcher
    reads the queue, while it reads it, and just after it created the job but before
    the job ran a line (the case a cancel of the job alone would lose)."""
    rig.upstream.gates["operator-demo"] = asyncio.Event()  # no answer ends a task first
    ids = []
    for n in range(18):
        task_id = await rig.submit("operator-demo", f"cancel me {n}")
        ids.append(task_id)
        for _ in range(n % 6):
            await asyncio.sleep(0)  # one loop turn: an interleaving, not a wait
        cancelled = await rig.dispatcher.cancel(task_id)
        assert cancelled.status is TaskStatus.CANCELLED, (n, cancelled.status)

    async def settled() -> bool:
        return not rig.dispatcher.running_ids()

    await rig.watcher.until(settled, "no job left running")
    for task_id, task in (await rig.tasks(ids)).items():
        assert task.status is TaskStatus.CANCELLED, (task_id, statuses(task))
        assert statuses(task).count("cancelled") == 1 and "done" not in statuses(task)
    assert sorted(rig.host.endpoints) == sorted(rig.host.released)  # every lease came back


# -- where the dispatcher sends a task: the real Host's endpoints --------------------------


REMOTE_ONLY = """
[devices.cpu]
kind = "cpu"

[models.far]
kind = "remote"
base_url = "http://10.1.2.3:8080/v1"
api_key_env = "TIERHOST_TEST_FAR_KEY"
remote_model = "big-coder"
max_concurrency = 1

[tiers.architect]
models = ["far"]

[tiers.builder]
models = ["far"]

[tiers.operator]
models = ["far"]
"""


async def test_a_remote_model_is_reached_at_its_url_with_its_key_and_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERHOST_TEST_FAR_KEY", "sekrit")
    host = Host(parse_config(REMOTE_ONLY), tmp_path)
    host.build()
    try:
        endpoint = await host.fleet.lease("far")
        assert endpoint.chat_url == "http://10.1.2.3:8080/v1/chat/completions"
        assert endpoint.headers == {"authorization": "Bearer sekrit"}
        assert endpoint.body({"messages": []}) == {"messages": [], "model": "big-coder"}
        assert host.fleet.remote_in_flight["far"] == 1
        with pytest.raises(TooManyRequests, match="max_concurrency"):
            await host.fleet.lease("far")
        endpoint.release()
        assert host.fleet.remote_in_flight["far"] == 0
        with pytest.raises(ModelUnavailable, match="not in the config"):
            await host.fleet.lease("retired-model")
    finally:
        await host.http.aclose()


class WakeCounter:
    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


async def test_the_host_wakes_the_dispatcher_on_mode_route_and_ready_changes(
    tmp_path: Path,
) -> None:
    host = Host(load_config(), tmp_path)
    host.build()  # processes and arbiters only: nothing is started
    host.store = await Store.open(tmp_path / "tasks.sqlite3")
    counter = WakeCounter()
    host._dispatcher = counter  # type: ignore[assignment]
    try:
        await host.controls.restore(host.store)
        await host.controls.set_mode("gaming", "gpu0")
        assert counter.wakes == 1
        await host.controls.set_routes({**host.controls.routes, "review": "builder"})
        assert counter.wakes == 2
        now = time.time()
        host._on_transition(
            Transition("builder-demo", ModelState.STOPPED, ModelState.STARTING, "start", now)
        )
        assert counter.wakes == 2  # starting is not ready: nothing can start on it yet
        host._on_transition(
            Transition("builder-demo", ModelState.STARTING, ModelState.READY, "healthy", now)
        )
        assert counter.wakes == 3
        await asyncio.wait_for(asyncio.gather(*host._background), BOUND_S)
    finally:
        await host.http.aclose()
        for process in host.processes.values():
            await process.http.aclose()
        await host.store.close()
