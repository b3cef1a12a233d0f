"""Noticing that the client that made a tool call has gone away.

Over stdio a client that leaves closes the server's stdin, which ends the session
and cancels every handler; one that gives up sends `notifications/cancelled`, which
cancels its handler. Over streamable HTTP with the handshake protocol (2025 revisions,
what most MCP hosts speak), a call's handler runs in the session, not in the POST that
carries the call: when that connection drops, nothing reaches the handler, and a
`submit_task` with `wait` would keep its task queued or running for nobody. The
daemon's `/mcp` keeps no event store, so a dropped response stream can never be
resumed: the answer is lost for good, and the handler may as well stop. (The 2026
single-exchange protocol cancels on disconnect by itself; watching there too is
harmless.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from mcp.server.mcpserver import Context
from starlette.requests import Request
from starlette.types import Receive

T = TypeVar("T")


def _receive_of(ctx: Context[Any, Any]) -> Receive | None:
    """The ASGI `receive` of the HTTP request that carried this call; None on stdio
    and in process, where the SDK itself cancels a call whose client is gone."""
    request = ctx.request_context.request
    return request.receive if isinstance(request, Request) else None


async def _disconnected(receive: Receive) -> None:
    """Return once the client has closed the connection (its body is already read, so
    the only message left to come is `http.disconnect`)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_caller_leaves(
    ctx: Context[Any, Any], work: Callable[[], Awaitable[T]]
) -> tuple[T] | None:
    """`(work(),)`, or None when the HTTP client that made this call disconnects first;
    `work` is then cancelled, so its own cleanup (`except` on cancellation) runs.

    `work` runs in the calling task and its errors come out as they are (not in an
    exception group), so `tool_errors` around this still sees the daemon's errors.
    """
    receive = _receive_of(ctx)
    if receive is None:
        return (await work(),)
    outcome: list[T] = []
    failure: Exception | None = None

    async def watch(receive: Receive) -> None:
        await _disconnected(receive)
        group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(watch, receive)
        try:
            outcome.append(await work())
        except Exception as exc:
            failure = exc
        finally:
            group.cancel_scope.cancel()  # stop watching (or: the watcher stopped the work)
    if failure is not None:
        raise failure
    return (outcome[0],) if outcome else None
