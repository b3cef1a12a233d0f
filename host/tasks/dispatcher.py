"""The task dispatcher: runs persisted tasks on their decided model, batched by model.

The loop wakes on every event that can change what should run next (a submission, a
task ending, a mode or route change, a model becoming ready), asks the pure
`host.core.batching.pick()` which queued tasks to start, and runs each as an asyncio task
through the same device arbiter as the proxy (or on its remote endpoint). All status
changes go through the store, which checks them against `host.core.task_states`.

Two promises hold whatever happens. A task is started once: a task already under way is
never picked again, and a job only proceeds after its own move out of `queued` succeeded
in the store (the move is the claim). And no task is stranded: any exception in a task's
run ends it `failed` with the reason (the trace goes to the log), a row the loop cannot
schedule fails alone, and tasks under way when the daemon stops go back to the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from host.config import ValidationSettings
from host.core.batching import DeviceState, Policy, QueuedTask, pick
from host.core.routing import Decision
from host.core.task_states import TERMINAL, IllegalTransition, TaskStatus
from host.models.arbiter import ModelUnavailable, QueueFull, TooManyRequests, WaitTimedOut, Work
from host.models.chat import ChatFailed, stream_chat
from host.models.leases import ModelLease
from host.store import Store, TaskRow
from host.tasks.validation import ValidationLoop, ask_validator

log = logging.getLogger("tierhost.dispatcher")

TaskListener = Callable[[str], None]

Reroute = Callable[[TaskRow, str, str], Awaitable[Decision | None]]
"""After a remote model failed a task before its first token (why): the task's route
decided again with that model counted as unreachable; None when nothing else can take it."""

MAX_FAILOVERS = 3
"""The most times one task moves on to another model: a fallback chain, not a loop."""


class Models(Protocol):
    """What the dispatcher needs of the fleet: whether a model may run now, a lease on
    it, and where it runs (to batch by device)."""

    def permits(self, model: str, forced: bool = False) -> bool: ...

    async def lease(
        self,
        model: str,
        timeout: float | None = None,
        *,
        forced: bool = False,
        priority: int | None = None,
        work: Work = "request",
    ) -> ModelLease: ...

    def device_for(self, model: str) -> str | None: ...

    def contended_devices(self) -> Mapping[str, bool]: ...


@dataclass
class _Running:
    task: asyncio.Task[None]
    model: str
    tokens: int = 0
    phase: str = "waiting_device"
    started: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    """Set by `Dispatcher.cancel`, which has already recorded the end."""


def build_messages(task: TaskRow) -> list[dict[str, str]]:
    """The chat messages for a task: its context files and selection, then the prompt."""
    parts: list[str] = []
    for item in task.context.get("files", []):
        path = item.get("path", "file")
        parts.append(f"File `{path}`:\n```\n{item.get('content', '')}\n```")
    selection = task.context.get("selection")
    if selection:
        parts.append(f"Selected text:\n```\n{selection}\n```")
    parts.append(task.prompt)
    system = f"You are the {task.tier or 'assistant'} tier of a local agent host."
    if task.type:
        system += f" This is a {task.type} task."
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


_NO_VALIDATION_YET: dict[str, Any] = {
    "validated": None,
    "findings": [],
    "patch": None,
    "scratchpad": [],
    "attempts": 0,
}
"""A validated task that starts (again, after a restart) starts with a clean record."""


class Dispatcher:
    def __init__(
        self,
        models: Models,
        store: Store,
        policy: Policy,
        validation: ValidationSettings,
        validator: str | None,
        reroute: Reroute | None = None,
    ) -> None:
        self._models = models
        self._reroute = reroute
        self._failovers: dict[str, int] = {}
        self._store = store
        self.policy = policy
        self._validation = validation
        self._validator = validator
        """The validator model's name; None when validation is by the checks alone."""
        self._wake = asyncio.Event()
        self._running: dict[str, _Running] = {}
        self._current: dict[str, tuple[str, float]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._listeners: list[TaskListener] = []
        self._closing = False
        self.enqueued_at: dict[str, float] = {}

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        requeued = await self._store.requeue_interrupted(
            "the daemon restarted while this task was under way; it runs again from the start"
        )
        if requeued:
            log.warning("requeued %d interrupted task(s): %s", len(requeued), requeued)
        self._loop_task = asyncio.create_task(self._loop(), name="dispatcher")
        self.wake()

    async def close(self) -> None:
        """Stop the loop and every task under way, and put those tasks back in the queue
        now, each with an event saying why (the next start requeues whatever a kill -9
        left behind)."""
        self._closing = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        jobs = [running.task for running in self._running.values()]
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        try:
            requeued = await self._store.requeue_interrupted(
                "the daemon stopped while this task was under way; it runs again from the "
                "start when the daemon starts"
            )
        except Exception:
            log.exception("could not requeue the tasks under way; the next start requeues them")
            return
        if requeued:
            log.warning("the daemon stops: requeued %d task(s): %s", len(requeued), requeued)

    def wake(self) -> None:
        self._wake.set()

    def subscribe(self, listener: TaskListener) -> None:
        self._listeners.append(listener)

    def _notify(self, task_id: str) -> None:
        for listener in self._listeners:
            listener(task_id)

    # -- observation -------------------------------------------------------------

    def running_ids(self) -> list[str]:
        return list(self._running)

    def progress(self, task_id: str) -> dict[str, Any] | None:
        running = self._running.get(task_id)
        if running is None:
            return None
        return {"phase": running.phase, "tokens": running.tokens, "model": running.model}

    # -- commands ----------------------------------------------------------------

    async def cancel(self, task_id: str) -> TaskRow:
        """Cancel a task wherever it is: the store first, then its job.

        The move to CANCELLED is a claim like every move, so once it is made no job can
        start the task or record another end for it, and the dispatcher will not pick it
        again. Cancelling the job alone would not do: a job cancelled before it ran its
        first line records nothing, and the task would stay queued and be started again.
        A job under way is then cancelled too, and waited for, so its lease is back
        before this returns."""
        while True:
            task = await self._store.get_task(task_id)
            if task.status in TERMINAL:
                return task
            try:
                task = await self._store.move_task(
                    task_id, TaskStatus.CANCELLED, "cancelled by a client"
                )
            except IllegalTransition:
                continue  # moved (or ended) between the read and the move: look again
            break
        running = self._running.get(task_id)
        if running is not None:
            running.cancelled = True
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)
        self._notify(task_id)
        return task

    # -- the loop ----------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._dispatch_once()
            except Exception:
                log.exception("dispatch failed; retrying on the next event")

    async def _dispatch_once(self) -> None:
        queued, unreadable = await self._store.queued_tasks()
        for task_id in unreadable:
            log.error("task %s: its stored row cannot be read; it fails", task_id)
            try:
                await self._store.fail_unreadable(
                    task_id, "the stored task cannot be read (a damaged row); submit it again"
                )
            except Exception:
                log.exception("task %s: could not record that it fails", task_id)
            self._notify(task_id)
        if not queued:
            return
        now = time.monotonic()
        entries: list[QueuedTask] = []
        rows: dict[Hashable, TaskRow] = {}
        for row in queued:
            if row.id in self._running:
                continue  # started by an earlier pass; its job has not moved it yet
            try:
                entry = self._entry(row, now)
            except Exception as exc:  # one bad row must not keep the others from starting
                log.exception("task %s cannot be scheduled", row.id)
                await self._end(
                    row.id,
                    TaskStatus.FAILED,
                    f"the dispatcher cannot schedule this task: {type(exc).__name__}: {exc}",
                )
                self._notify(row.id)
                continue
            if entry is not None:
                entries.append(entry)
                rows[row.id] = row
        running: dict[str, int] = {}
        for item in self._running.values():
            running[item.model] = running.get(item.model, 0) + 1
        devices = {
            name: DeviceState(
                name,
                contended=contended,
                current=self._current.get(name, (None, None))[0],
                current_since=self._current.get(name, (None, None))[1],
            )
            for name, contended in self._models.contended_devices().items()
        }
        plan = pick(entries, running, devices, now, self.policy)
        for device, model in plan.current.items():
            if self._current.get(device, (None, 0.0))[0] != model:
                self._current[device] = (model, now)
        for started in plan.start:
            self._start(rows[started])

    def _entry(self, row: TaskRow, now: float) -> QueuedTask | None:
        """The batching view of a queued task; None while its device's mode holds it back."""
        model = row.model
        if model is None:
            raise ValueError("the task has no model (its routing decision named none)")
        self.enqueued_at.setdefault(row.id, now)
        if not self._models.permits(model, bool(row.request.get("force_big"))):
            return None  # the device's mode holds it back; it stays queued
        device = self._models.device_for(model)
        return QueuedTask(row.id, model, device, row.priority, self.enqueued_at[row.id])

    def _start(self, row: TaskRow) -> None:
        assert row.model is not None
        if row.id in self._running or self._closing:
            return
        self.enqueued_at.pop(row.id, None)
        job = asyncio.create_task(self._run(row), name=f"task-{row.id}")
        self._running[row.id] = _Running(job, row.model)
        job.add_done_callback(lambda done: self._finished(row.id, done))

    def _finished(self, task_id: str, job: asyncio.Task[None]) -> None:
        running = self._running.get(task_id)
        if running is not None and running.task is job:
            del self._running[task_id]
        if not job.cancelled() and job.exception() is not None:
            # _run catches everything; this is the last line of defence, and a bug
            log.error("task %s: its job ended with an error", task_id, exc_info=job.exception())
        self._notify(task_id)
        self.wake()

    async def _end(self, task_id: str, status: TaskStatus, reason: str, **fields: Any) -> None:
        """Record how a task ended. This never raises: a task that cannot be moved is
        logged, so nothing is stuck silently (the next start requeues an active one)."""
        self._failovers.pop(task_id, None)
        if status is TaskStatus.FAILED:
            fields.setdefault("error", reason)
        try:
            await self._store.move_task(task_id, status, reason, **fields)
        except IllegalTransition as exc:
            log.warning("task %s: not recorded as %s (%s): %s", task_id, status, reason, exc)
        except Exception:
            log.exception(
                "task %s: could not record it as %s (%s); it stays as the store has it "
                "until the next start requeues it",
                task_id,
                status,
                reason,
            )

    async def _run(self, row: TaskRow) -> None:
        assert row.model is not None
        model = row.model
        forced = bool(row.request.get("force_big"))
        endpoint: ModelLease | None = None
        try:
            try:
                await self._store.move_task(
                    row.id, TaskStatus.WAITING_DEVICE, f"waiting for model {model}"
                )
            except IllegalTransition as exc:
                # another job claimed it, or it was cancelled first: it is not ours to run
                log.info("task %s not started: %s", row.id, exc)
                return
            self._notify(row.id)
            endpoint = await self._models.lease(
                model, forced=forced, priority=row.priority, work="task"
            )
            self._running[row.id].phase = "running"
            fresh = {} if row.validation == "none" else _NO_VALIDATION_YET
            await self._store.move_task(row.id, TaskStatus.RUNNING, f"running on {model}", **fresh)
            self._notify(row.id)
            if row.validation != "none":
                await self._validate(row, endpoint)
                return
            text, tokens = await self._generate_retrying(row, build_messages(row), endpoint)
            self._failovers.pop(row.id, None)
            await self._store.move_task(
                row.id,
                TaskStatus.DONE,
                f"{tokens} tokens from {model}",
                result=text,
                tokens=tokens,
            )
        except asyncio.CancelledError:
            if self._closing:
                raise  # close() requeues it
            running = self._running.get(row.id)
            if running is None or not running.cancelled:  # else cancel() recorded it
                await self._end(row.id, TaskStatus.CANCELLED, "cancelled by a client")
        except (
            ModelUnavailable,
            WaitTimedOut,
            QueueFull,
            TooManyRequests,
            ChatFailed,
        ) as exc:
            if not await self._failed_over(row, endpoint, exc, str(exc)):
                await self._end(row.id, TaskStatus.FAILED, str(exc))
        except httpx.HTTPError as exc:
            where = f" ({endpoint.where()})" if endpoint is not None else ""
            message = f"model {model} failed while generating{where}: {type(exc).__name__}: {exc}"
            if not await self._failed_over(row, endpoint, exc, message):
                await self._end(row.id, TaskStatus.FAILED, message)
        except Exception as exc:
            log.exception("task %s failed unexpectedly on %s", row.id, model)
            message = f"internal error while running on {model}: {type(exc).__name__}: {exc}"
            await self._end(row.id, TaskStatus.FAILED, message)
        finally:
            if endpoint is not None:
                endpoint.release()

    async def _failed_over(
        self, row: TaskRow, endpoint: ModelLease | None, exc: Exception, why: str
    ) -> bool:
        """Move a task that a remote model failed before its first token (it could not be
        reached, timed out, dropped the connection, answered a 5xx) on to the next model
        of its route, back in the queue with an event saying from where to where. False
        when this is not such a failure, or nothing else can take it."""
        failed = endpoint is not None and not endpoint.managed
        worth_it = isinstance(exc, httpx.TransportError) or (
            isinstance(exc, ChatFailed) and (exc.status or 0) >= 500
        )
        running = self._running.get(row.id)
        if not (failed and worth_it) or self._reroute is None or running is None:
            return False
        if running.tokens or self._failovers.get(row.id, 0) >= MAX_FAILOVERS:
            return False  # bytes of an answer came, or the chain is spent: it fails
        assert endpoint is not None
        decision = await self._reroute(row, endpoint.model, why)
        if decision is None or decision.model == endpoint.model:
            return False
        self._failovers[row.id] = self._failovers.get(row.id, 0) + 1
        try:
            await self._store.move_task(
                row.id,
                TaskStatus.QUEUED,
                f"failed over from {endpoint.model} ({why}) to {decision.model} ({decision.tier})",
                model=decision.model,
                tier=decision.tier,
                decision=decision.as_json(),
            )
        except IllegalTransition:
            return True  # cancelled meanwhile: its end is recorded
        self.wake()
        return True

    async def _validate(self, row: TaskRow, endpoint: ModelLease) -> None:
        """Generate → validate → commit (host.tasks.validation). Runs inside `_run`, whose
        builder lease stays held across every attempt, so no swap can come in between."""
        running = self._running[row.id]
        validator = self._validator
        settings = self._validation

        async def generate(messages: list[dict[str, str]]) -> tuple[str, int]:
            return await self._generate_retrying(row, messages, endpoint)

        async def ask(messages: list[dict[str, str]]) -> str:
            assert validator is not None
            return await ask_validator(
                self._models, validator, messages, settings.verdict_max_tokens
            )

        def changed(phase: str) -> None:
            running.phase = phase
            self._notify(row.id)

        loop = ValidationLoop(
            self._store,
            row,
            build_messages(row),
            generate,
            ask if validator is not None else None,
            validator,
            settings,
            on_change=changed,
        )
        await loop.run()

    async def _generate_retrying(
        self, row: TaskRow, messages: list[dict[str, str]], endpoint: ModelLease
    ) -> tuple[str, int]:
        """One retry when a pooled connection was closed under us before any reply: the
        server never saw the request, so sending it again cannot duplicate work."""
        before = self._running[row.id].tokens
        try:
            return await self._generate(row, messages, endpoint)
        except (httpx.RemoteProtocolError, httpx.ConnectError) as exc:
            if self._running[row.id].tokens != before:
                raise
            log.info("task %s: %s before a reply; sending it again once", row.id, exc)
            return await self._generate(row, messages, endpoint)

    async def _generate(
        self, row: TaskRow, messages: list[dict[str, str]], endpoint: ModelLease
    ) -> tuple[str, int]:
        """Stream one answer; the task's live token count carries on across attempts,
        and is saved about once a second."""
        body: dict[str, Any] = {"messages": messages}
        body.update({k: v for k, v in row.request.get("params", {}).items()})
        running = self._running[row.id]
        before = running.tokens
        last_saved = time.monotonic()

        async def counted(tokens: int) -> None:
            nonlocal last_saved
            running.tokens = before + tokens
            if time.monotonic() - last_saved > 1.0:
                last_saved = time.monotonic()
                await self._store.update_task_progress(row.id, running.tokens)

        return await stream_chat(endpoint, body, counted)
