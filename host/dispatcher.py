"""The task dispatcher: runs persisted tasks on their decided model, batched by model.

The loop wakes on every event that can change what should run next (a submission, a
task ending, a mode change), asks the pure `host.batching.pick()` which queued tasks to
start, and runs each as an asyncio task through the same device arbiter as the proxy.
All status changes go through the store, which checks them against `host.tasks`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from host.batching import DeviceState, Policy, QueuedTask, pick
from host.devices import ModelUnavailable, QueueFull, TooManyRequests, WaitTimedOut
from host.store import Store, TaskRow
from host.tasks import TERMINAL, TaskStatus
from host.validation_loop import ValidationLoop, ask_validator

if TYPE_CHECKING:
    from host.service import Host

log = logging.getLogger("tierhost.dispatcher")

TaskListener = Callable[[str], None]


@dataclass
class _Running:
    task: asyncio.Task[None]
    model: str
    tokens: int = 0
    phase: str = "waiting_device"
    started: float = field(default_factory=time.monotonic)


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
    def __init__(self, host: Host, store: Store, policy: Policy) -> None:
        self._host = host
        self._store = store
        self.policy = policy
        self._wake = asyncio.Event()
        self._running: dict[str, _Running] = {}
        self._current: dict[str, tuple[str, float]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._listeners: list[TaskListener] = []
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
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        # Tasks under way stay `running` in the store: the next start requeues them.
        for running in list(self._running.values()):
            running.task.cancel()
        await asyncio.gather(*(r.task for r in self._running.values()), return_exceptions=True)

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
        task = await self._store.get_task(task_id)
        if task.status in TERMINAL:
            return task
        running = self._running.get(task_id)
        if running is not None:
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)
            return await self._store.get_task(task_id)
        task = await self._store.move_task(task_id, TaskStatus.CANCELLED, "cancelled by a client")
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
        queued = await self._store.list_tasks(status=TaskStatus.QUEUED.value, limit=10000)
        if not queued:
            return
        queued.sort(key=lambda t: t.seq)
        now = time.monotonic()
        entries: list[QueuedTask] = []
        rows: dict[str, TaskRow] = {}
        for row in queued:
            model = row.model
            if model is None:
                continue
            self.enqueued_at.setdefault(row.id, now)
            device = self._host.device_of.get(model)
            if device is not None and not self._host.arbiters[device].permits(
                model, bool(row.request.get("force_big"))
            ):
                continue  # the device's mode holds it back; it stays queued
            entries.append(
                QueuedTask(row.id, model, device, row.priority, self.enqueued_at[row.id])
            )
            rows[row.id] = row
        running: dict[str, int] = {}
        for item in self._running.values():
            running[item.model] = running.get(item.model, 0) + 1
        devices = {
            name: DeviceState(
                name,
                contended=info.budget_mb is not None,
                current=self._current.get(name, (None, None))[0],
                current_since=self._current.get(name, (None, None))[1],
            )
            for name, info in self._host.devices.items()
        }
        plan = pick(entries, running, devices, now, self.policy)
        for device, model in plan.current.items():
            if self._current.get(device, (None, 0.0))[0] != model:
                self._current[device] = (model, now)
        for task_id in plan.start:
            self._start(rows[task_id])

    def _start(self, row: TaskRow) -> None:
        assert row.model is not None
        self.enqueued_at.pop(row.id, None)
        job = asyncio.create_task(self._run(row), name=f"task-{row.id}")
        self._running[row.id] = _Running(job, row.model)
        job.add_done_callback(lambda _: self._finished(row.id))

    def _finished(self, task_id: str) -> None:
        self._running.pop(task_id, None)
        self._notify(task_id)
        self.wake()

    async def _run(self, row: TaskRow) -> None:
        assert row.model is not None
        model = row.model
        forced = bool(row.request.get("force_big"))
        lease = None
        try:
            await self._store.move_task(
                row.id, TaskStatus.WAITING_DEVICE, f"waiting for model {model}"
            )
            self._notify(row.id)
            lease = await self._host.acquire(model, forced=forced)
            self._running[row.id].phase = "running"
            fresh = {} if row.validation == "none" else _NO_VALIDATION_YET
            await self._store.move_task(row.id, TaskStatus.RUNNING, f"running on {model}", **fresh)
            self._notify(row.id)
            if row.validation != "none":
                await self._validate(row, lease.base_url, lease.model.http)
                return
            text, tokens = await self._generate_retrying(
                row, build_messages(row), lease.base_url, lease.model.http
            )
            await self._store.move_task(
                row.id,
                TaskStatus.DONE,
                f"{tokens} tokens from {model}",
                result=text,
                tokens=tokens,
            )
        except asyncio.CancelledError:
            if self._host.closing:
                raise  # left as it is: the next start requeues it
            await self._store.move_task(row.id, TaskStatus.CANCELLED, "cancelled by a client")
        except (ModelUnavailable, WaitTimedOut, QueueFull, TooManyRequests) as exc:
            await self._store.move_task(row.id, TaskStatus.FAILED, str(exc), error=str(exc))
        except httpx.HTTPError as exc:
            message = f"model {model} failed while generating: {type(exc).__name__}: {exc}"
            await self._store.move_task(row.id, TaskStatus.FAILED, message, error=message)
        finally:
            if lease is not None:
                lease.release()

    async def _validate(self, row: TaskRow, base_url: str, http: httpx.AsyncClient) -> None:
        """Generate → validate → commit (host.validation_loop). Runs inside `_run`, whose
        builder lease stays held across every attempt, so no swap can come in between."""
        running = self._running[row.id]
        validator = self._host.config.validator_model()
        settings = self._host.config.validation

        async def generate(messages: list[dict[str, str]]) -> tuple[str, int]:
            return await self._generate_retrying(row, messages, base_url, http)

        async def ask(messages: list[dict[str, str]]) -> str:
            assert validator is not None
            return await ask_validator(self._host, validator, messages, settings.verdict_max_tokens)

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
        self, row: TaskRow, messages: list[dict[str, str]], base_url: str, http: httpx.AsyncClient
    ) -> tuple[str, int]:
        """One retry when a pooled connection was closed under us before any reply: the
        server never saw the request, so sending it again cannot duplicate work."""
        before = self._running[row.id].tokens
        try:
            return await self._generate(row, messages, base_url, http)
        except (httpx.RemoteProtocolError, httpx.ConnectError) as exc:
            if self._running[row.id].tokens != before:
                raise
            log.info("task %s: %s before a reply; sending it again once", row.id, exc)
            return await self._generate(row, messages, base_url, http)

    async def _generate(
        self, row: TaskRow, messages: list[dict[str, str]], base_url: str, http: httpx.AsyncClient
    ) -> tuple[str, int]:
        """Stream one answer; the task's live token count carries on across attempts."""
        body = {"messages": messages, "stream": True}
        body.update({k: v for k, v in row.request.get("params", {}).items()})
        pieces: list[str] = []
        before = self._running[row.id].tokens
        tokens = 0
        last_saved = time.monotonic()
        async with http.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
            if response.status_code >= 400:
                detail = (await response.aread()).decode(errors="replace")[:300]
                raise httpx.HTTPStatusError(
                    f"HTTP {response.status_code}: {detail}",
                    request=response.request,
                    response=response,
                )
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices", []):
                    content = choice.get("delta", {}).get("content")
                    if content:
                        pieces.append(content)
                        tokens += 1
                self._running[row.id].tokens = before + tokens
                if time.monotonic() - last_saved > 1.0:
                    last_saved = time.monotonic()
                    await self._store.update_task_progress(row.id, before + tokens)
        return "".join(pieces), tokens
