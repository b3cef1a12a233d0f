"""Following a task to its end while telling the MCP client what is happening.

Clients give up on a call after about 60 s without news, and a user wants to see
whether the task waits in the queue, waits for a swap or is generating. So the loop
polls the daemon and reports: at once when the phase changes, at most once a second
while tokens stream in, and a heartbeat every few seconds when nothing changes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from host.client import HostClient, HostError, HostUnreachable
from host.wire import TERMINAL, Task
from mcp_server import text

POLL_S = 0.25
TOKEN_REPORT_S = 1.0
HEARTBEAT_S = 5.0
CANCEL_TIMEOUT_S = 10.0

Report = Callable[[float, str], Awaitable[None]]
"""`(progress, message)`: progress is seconds since the wait began, so it only grows."""


async def _model_state(client: HostClient, model: str | None) -> str | None:
    """The model's supervisor state: `starting` while a swap brings it in."""
    if model is None:
        return None
    status = await client.status()
    return next((m.state for m in status.models if m.name == model), None)


async def follow(
    client: HostClient,
    task_id: str,
    report: Report,
    *,
    timeout_s: float,
    poll_s: float = POLL_S,
    heartbeat_s: float = HEARTBEAT_S,
) -> Task:
    """Poll until the task ends or `timeout_s` passes; return its last state."""
    start = time.monotonic()
    last_at = -heartbeat_s
    last_key: tuple[Any, ...] | None = None
    last_message = ""
    while True:
        task = await client.get_task(task_id)
        if task.status in TERMINAL:
            return task
        state = await _model_state(client, task.model) if task.status == "waiting_device" else None
        now = time.monotonic() - start
        message = text.phase(task, state)
        key = (task.status, task.queue_position, task.waiting_because, state)
        due = (
            key != last_key
            or (message != last_message and now - last_at >= TOKEN_REPORT_S)
            or now - last_at >= heartbeat_s
        )
        if due:
            await report(now, message)
            last_at, last_key, last_message = now, key, message
        if now >= timeout_s:
            return task
        await anyio.sleep(min(poll_s, max(timeout_s - now, 0.0)))


async def cancel_quietly(client: HostClient, task_id: str) -> None:
    """Cancel a task from inside a cancelled scope, or for a caller that left: shielded,
    bounded, best effort."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_TIMEOUT_S):
        # the task may have ended meanwhile, and the caller is gone: nothing to tell
        with contextlib.suppress(HostError, HostUnreachable):
            await client.cancel_task(task_id)
