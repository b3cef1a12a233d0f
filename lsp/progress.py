"""Following a task in the host as LSP work-done progress that the user can cancel.

The editor shows one progress item per task: begin when it is submitted, a report at
each change of phase (queue position, a swap bringing the model in, tokens so far),
end with the outcome. Pressing cancel in the editor (`window/workDoneProgress/cancel`)
or cancelling the request (`$/cancelRequest`) cancels the task in the host — a task
the user gave up on must not keep the GPU busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from host.client import HostClient, HostError, HostUnreachable
from host.wire import TERMINAL, Task

POLL_S = 0.2
FIRST_POLL_S = 0.025
CANCEL_TIMEOUT_S = 10.0

Report = Callable[[str, int | None], None]
"""`(message, percentage or None)`."""


def phase(task: Task, model_state: str | None = None) -> str:
    """One line that says where a task is: queue position, swap, tokens so far."""
    status = task.status
    model = task.model or "its model"
    tokens = task.tokens
    if status == "queued":
        line = f"queued (position {task.queue_position or '?'})"
        return line + (f" — {task.waiting_because}" if task.waiting_because else "")
    if status == "waiting_device":
        if model_state == "starting":
            return f"swapping in {model}"
        return f"waiting for {model} to get its device"
    if status == "running":
        return f"running on {model}: {tokens} tokens"
    if status == "validating":
        return f"validating: {tokens} tokens generated"
    if status == "done":
        return f"done: {tokens} tokens from {model}"
    if status == "failed":
        return f"failed: {task.error or 'no reason given'}"
    return str(status)


def percentage(task: Task, max_tokens: int | None) -> int | None:
    """Tokens against the requested maximum, when there is one (never 100 before the end)."""
    if max_tokens is None:
        return None
    if task.status in TERMINAL:
        return 100
    return min(99, int(100 * task.tokens / max_tokens))


async def _model_state(client: HostClient, model: str | None) -> str | None:
    """The model's supervisor state: `starting` while a swap brings it in."""
    if model is None:
        return None
    models = (await client.status()).models
    return next((m.state for m in models if m.name == model), None)


async def cancel_in_host(client: HostClient, task_id: str) -> Task | None:
    """Cancel a task, even from inside a cancelled handler: shielded, bounded, best effort
    (the task may have ended meanwhile, which is fine)."""

    async def cancel() -> Task | None:
        with contextlib.suppress(HostError, HostUnreachable):
            return await client.cancel_task(task_id)
        return None

    try:
        return await asyncio.wait_for(asyncio.shield(cancel()), CANCEL_TIMEOUT_S)
    except (TimeoutError, asyncio.CancelledError):
        return None


async def follow(
    client: HostClient,
    task: Task,
    report: Report,
    cancel_requested: asyncio.Event,
    *,
    max_tokens: int | None = None,
    poll_s: float = POLL_S,
) -> tuple[Task, bool]:
    """Poll the task until it ends, reporting each new phase; cancel it in the host when
    `cancel_requested` is set. Returns the last state and whether the user cancelled."""
    task_id = task.id
    last = ""
    polls = 0
    try:
        while True:
            state = None
            if task.status == "waiting_device":
                state = await _model_state(client, task.model)
            message = phase(task, state)
            if message != last:
                report(message, percentage(task, max_tokens))
                last = message
            if task.status in TERMINAL:
                return task, False
            # 25, 50, 100 ms, then every poll_s: a short task is seen to start (and end)
            # soon after it does, a long one costs five small GETs a second
            delay = min(poll_s, FIRST_POLL_S * 2**polls)
            polls += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel_requested.wait(), delay)
            if cancel_requested.is_set():
                await cancel_in_host(client, task_id)
                return await client.get_task(task_id), True
            task = await client.get_task(task_id)
    except asyncio.CancelledError:
        await cancel_in_host(client, task_id)  # the request was cancelled: so is the task
        raise


class WorkDone:
    """One server-initiated work-done progress: created, begun, reported, ended once.

    `cancel_requested` is set when the user presses cancel on it (the caller may pass
    an event it also sets on `$/cancelRequest`). Without client
    support for work-done progress every call is a no-op, so callers need no branches.
    """

    def __init__(
        self, ls: LanguageServer, title: str, cancel_requested: asyncio.Event | None = None
    ) -> None:
        self._ls = ls
        self._title = title
        self.token = f"tierhost-{uuid.uuid4().hex[:12]}"
        self.cancel_requested = cancel_requested or asyncio.Event()
        self._active = False
        self._ended = False

    def _supported(self) -> bool:
        window = self._ls.client_capabilities.window
        return bool(window and window.work_done_progress)

    async def begin(self, message: str, percent: int | None = None) -> None:
        if not self._supported():
            return
        progress = self._ls.work_done_progress
        await progress.create_async(self.token)
        progress.begin(
            self.token,
            types.WorkDoneProgressBegin(
                title=self._title, message=message, cancellable=True, percentage=percent
            ),
        )
        loop = asyncio.get_running_loop()
        future: Future[Any] | None = progress.tokens.get(self.token)

        def on_done(done: Future[Any]) -> None:
            if done.cancelled():  # pygls cancels the token's future on the client's cancel
                loop.call_soon_threadsafe(self.cancel_requested.set)

        if future is not None:
            future.add_done_callback(on_done)
        self._active = True

    def report(self, message: str, percent: int | None = None) -> None:
        if self._active and not self._ended:
            self._ls.work_done_progress.report(
                self.token, types.WorkDoneProgressReport(message=message, percentage=percent)
            )

    def end(self, message: str) -> None:
        if self._active and not self._ended:
            self._ended = True
            self._ls.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
            self._ls.work_done_progress.tokens.pop(self.token, None)


def on_request_cancelled(ls: LanguageServer) -> asyncio.Event:
    """An event set when the client cancels the request being handled (`$/cancelRequest`).

    pygls runs a command inside its own `workspace/executeCommand` handler and cancels
    only that outer future on `$/cancelRequest`; the command's coroutine never sees it.
    So the outer future (found by the request id pygls keeps in a context variable) is
    watched here, and the command treats its cancellation like the progress cancel.
    """
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    request_id = ls.protocol.msg_id
    futures = ls.protocol._request_futures  # private: pygls has no public way to this
    request = futures.get(request_id) if request_id is not None else None
    if request is not None:

        def on_done(done: Any) -> None:
            if done.cancelled():
                loop.call_soon_threadsafe(event.set)

        request.add_done_callback(on_done)
    return event
