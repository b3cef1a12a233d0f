"""The task queue: submit, get, list and cancel, as every client sees tasks.

A submission is decided (`Controls.snapshot()` taken here, on the event loop; a long
prompt decided in the offload worker; the classifier model asked when the decision
wants it), stored `queued`, and the dispatcher is woken. What
a client reads of a task is the stored row and, while it runs, the dispatcher's live
token count; a task held back by its device's mode says why (`waiting_because`), and a
queued one where it stands (`queue_position`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from host.config import Config
from host.core import routing
from host.core.task_states import TaskStatus
from host.offload import Offload
from host.store import Store, TaskRow
from host.tasks.dispatcher import Dispatcher


class Holds(Protocol):
    """Why a model is held back now (its device's mode), or None."""

    def hold_reason(self, model: str, forced: bool = False) -> str | None: ...


class Deciding(Protocol):
    """Where a submission's decision comes from (`host.controls.Controls`)."""

    def snapshot(self) -> routing.RoutingSnapshot: ...

    async def decide_asking(
        self,
        request: routing.RouteRequest,
        decide: Callable[[routing.RouteRequest], Awaitable[routing.Decision]],
    ) -> routing.Decision: ...


class TaskQueue:
    def __init__(
        self,
        config: Config,
        store: Store,
        dispatcher: Dispatcher,
        controls: Deciding,
        holds: Holds,
        offload: Offload,
    ) -> None:
        self._config = config
        self._store = store
        self._dispatcher = dispatcher
        self._controls = controls
        self._holds = holds
        self._offload = offload

    async def submit(self, submission: dict[str, Any]) -> dict[str, Any]:
        """Decide where the task goes, store it, then wake the dispatcher. Raises
        `RoutingError` when no model can take it."""
        request = routing.RouteRequest(
            prompt=submission["prompt"],
            type=submission.get("type"),
            tier=submission.get("tier"),
            model=submission.get("model"),
            force_big=bool(submission.get("force_big")),
            context_files=tuple(f["path"] for f in submission["context"]["files"]),
        )

        async def decide(request: routing.RouteRequest) -> routing.Decision:
            snapshot = self._controls.snapshot()
            return await self._offload.run(len(request.prompt), routing.decide, request, snapshot)

        decision = await self._controls.decide_asking(request, decide)
        validation = submission.get("validation") or self._config.validation_default(decision.type)
        task = await self._store.create_task(
            prompt=decision.prompt,
            type=decision.type,
            context=submission["context"],
            request={
                "tier": submission.get("tier"),
                "model": submission.get("model"),
                "force_big": decision.force_big,
                "params": {k: v for k, v in submission["params"].items() if v is not None},
            },
            priority=submission.get("priority", 0),
            validation=validation,
            tier=decision.tier,
            model=decision.model,
            decision=decision.as_json(),
            reason="submitted; " + "; ".join(decision.reasons),
        )
        self._dispatcher.wake()
        return self._json(task)

    async def get(self, task_id: str) -> dict[str, Any]:
        """One task with its events; raises `UnknownTask`."""
        task = await self._store.get_task(task_id, with_events=True)
        data = self._json(task, with_events=True)
        if task.status is TaskStatus.QUEUED:
            data["queue_position"] = await self._store.queue_position(task)
        return data

    async def list(
        self, *, status: str | None, type: str | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = await self._store.list_tasks(status=status, type=type, limit=limit)
        return [self._json(t) for t in rows]

    async def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel wherever the task is (a task already ended stays as it ended)."""
        await self._dispatcher.cancel(task_id)
        return await self.get(task_id)

    async def counts(self) -> dict[str, Any]:
        """For the status document: tasks by status, and how many run now."""
        return {
            "by_status": await self._store.count_tasks(),
            "running": len(self._dispatcher.running_ids()),
        }

    def _json(self, task: TaskRow, *, with_events: bool = False) -> dict[str, Any]:
        data = task.as_json(with_events=with_events)
        progress = self._dispatcher.progress(task.id)
        if progress is not None:
            data["tokens"] = progress["tokens"]
        if task.status is TaskStatus.QUEUED and task.model is not None:
            hold = self._holds.hold_reason(task.model, bool(task.request.get("force_big")))
            if hold is not None:
                data["waiting_because"] = hold
        return data
