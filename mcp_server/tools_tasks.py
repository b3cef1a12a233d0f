"""The task tools: route, submit, inspect, list, cancel and wait.

Each tool is one daemon call (or a poll loop of them) plus a text rendering; the
daemon validates everything it owns (task types, tiers, ids) and its message is what
the client sees when an argument is wrong.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from host.client import HostClient
from host.wire import TERMINAL, Decision, Task, TaskContext, TaskList, TaskStatusName
from mcp_server import text
from mcp_server.caller import unless_caller_leaves
from mcp_server.link import HostLink, tool_errors
from mcp_server.progress import cancel_quietly, follow

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WAIT_LIMIT_S = 3600.0

Prompt = Annotated[str, Field(min_length=1, description="What to do, in plain words")]
TaskType = Annotated[
    str | None,
    Field(
        description="planning, design, audit, review, implementation, infra, email, admin "
        "(or a type from the host's config); omitted: inferred from the prompt"
    ),
]
TierOverride = Annotated[
    str | None, Field(description="Run on this tier whatever the routing table says")
]
ModelOverride = Annotated[str | None, Field(description="Run on this model")]
ForceBig = Annotated[
    bool, Field(description="Use the GPU even in gaming mode (an explicit user request only)")
]
TaskId = Annotated[str, Field(min_length=1, description="The task id from submit_task")]
Timeout = Annotated[
    float, Field(gt=0, le=WAIT_LIMIT_S, description="Stop waiting after this many seconds")
]


ECHOED = frozenset({"context"})
"""What a task's answer repeats of its own submission (the files the caller sent, which
can be megabytes): left out of the tools' results, which an agent may read in full."""


def result(model: BaseModel, summary: str) -> CallToolResult:
    """Structured content for programs, the same answer as text for people and models."""
    exclude: Any = None
    if isinstance(model, Task):
        exclude = ECHOED
    elif isinstance(model, TaskList):
        exclude = {"tasks": {"__all__": ECHOED}}
    return CallToolResult(
        content=[TextContent(type="text", text=summary)],
        structured_content=model.model_dump(mode="json", exclude=exclude),
    )


def _reporter(ctx: Context[Any, Any]) -> Any:
    async def report(progress: float, message: str) -> None:
        await ctx.report_progress(round(progress, 3), None, message)

    return report


async def _follow_or_cancel(
    client: HostClient, task_id: str, ctx: Context[Any, Any], timeout_s: float
) -> Task:
    """`submit_task`'s wait: the task at its end, cancelled in the host if the call is
    cancelled (stdio, a client's cancel) or its HTTP client disconnects."""
    try:
        followed = await unless_caller_leaves(
            ctx, lambda: follow(client, task_id, _reporter(ctx), timeout_s=timeout_s)
        )
    except anyio.get_cancelled_exc_class():
        await cancel_quietly(client, task_id)
        raise
    if followed is None:
        await cancel_quietly(client, task_id)
        raise ToolError(f"the client disconnected: task {task_id} was cancelled")
    return followed[0]


def register(server: MCPServer[Any], link: HostLink) -> None:
    @server.tool(
        title="Where would this task go?",
        annotations=READ.model_copy(update={"idempotent_hint": True}),
    )
    async def route_task(
        prompt: Prompt,
        type: TaskType = None,
        tier: TierOverride = None,
        model: ModelOverride = None,
        force_big: ForceBig = False,
        context_files: Annotated[
            list[str] | None, Field(description="Paths of files the task would see")
        ] = None,
    ) -> Annotated[CallToolResult, Decision]:
        """Dry-run the router: the tier, model and device a prompt would get, with the
        ordered reasons. Runs nothing."""
        with tool_errors():
            decision = await link.client.route(
                prompt,
                type=type,
                tier=tier,
                model=model,
                force_big=force_big or None,
                context_files=context_files or None,
            )
        return result(decision, text.decision(decision))

    @server.tool(
        title="Submit a task",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, open_world_hint=False
        ),
    )
    async def submit_task(
        prompt: Prompt,
        ctx: Context[Any, Any],
        type: TaskType = None,
        tier: TierOverride = None,
        model: ModelOverride = None,
        force_big: ForceBig = False,
        context: Annotated[
            TaskContext | None, Field(description="Files and selection from the editor")
        ] = None,
        priority: Annotated[int, Field(ge=-100, le=100, description="Higher runs first")] = 0,
        validation: Annotated[
            Literal["none", "final", "block_by_block"] | None,
            Field(
                description="Validator passes over generated code: none, final (check the "
                "whole answer) or block_by_block (one function/class at a time); default "
                "from the host's config per task type (implementation: final)"
            ),
        ] = None,
        max_tokens: Annotated[
            int | None, Field(ge=1, le=131072, description="Cap on generated tokens")
        ] = None,
        wait: Annotated[
            bool,
            Field(
                description="Wait for the result, with progress; cancelling the call "
                "then cancels the task"
            ),
        ] = False,
        timeout_s: Timeout = 600.0,
    ) -> Annotated[CallToolResult, Task]:
        """Queue a task on the host: it is routed by type to a tier and persisted before
        this returns. With `wait`, follow it to the end and return the result."""
        client = link.client
        with tool_errors():
            task = await client.submit_task(
                prompt,
                type=type,
                tier=tier,
                model=model,
                force_big=force_big or None,
                context=context.model_dump(exclude_none=True) if context else None,
                priority=priority or None,
                validation=validation,
                params={"max_tokens": max_tokens} if max_tokens else None,
            )
            if wait:
                task = await _follow_or_cancel(client, task.id, ctx, timeout_s)
        summary = text.task(task)
        if not wait and task.decision is not None:
            summary += "\n" + text.decision(task.decision)
        return result(task, summary)

    @server.tool(title="Get a task", annotations=READ)
    async def get_task(task_id: TaskId) -> Annotated[CallToolResult, Task]:
        """One task with its status, events, tokens so far and result."""
        with tool_errors():
            task = await link.client.get_task(task_id)
        return result(task, text.task(task))

    @server.tool(title="List tasks", annotations=READ)
    async def list_tasks(
        status: Annotated[TaskStatusName | None, Field(description="Only this status")] = None,
        type: Annotated[str | None, Field(description="Only this task type")] = None,
        limit: Annotated[int, Field(ge=1, le=10000)] = 50,
    ) -> Annotated[CallToolResult, TaskList]:
        """Tasks, newest first, optionally filtered by status and type."""
        with tool_errors():
            listing = TaskList(tasks=await link.client.list_tasks(status, type, limit))
        return result(listing, text.task_list(listing))

    @server.tool(
        title="Cancel a task",
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )
    async def cancel_task(task_id: TaskId) -> Annotated[CallToolResult, Task]:
        """Cancel a queued or running task; its partial output is kept."""
        with tool_errors():
            task = await link.client.cancel_task(task_id)
        return result(task, text.task(task))

    @server.tool(title="Wait for a task", annotations=READ)
    async def wait_task(
        task_id: TaskId, ctx: Context[Any, Any], timeout_s: Timeout = 600.0
    ) -> Annotated[CallToolResult, Task]:
        """Wait until a task ends, reporting progress (queue position, swap, tokens) at
        least every 5 s. Cancelling this call stops the wait, not the task; returns the
        task as it is when it ends or when `timeout_s` passes."""
        client = link.client
        with tool_errors():
            followed = await unless_caller_leaves(
                ctx, lambda: follow(client, task_id, _reporter(ctx), timeout_s=timeout_s)
            )
        if followed is None:
            raise ToolError(f"the client disconnected: stopped waiting; task {task_id} runs on")
        (task,) = followed
        summary = text.task(task)
        if task.status not in TERMINAL:
            summary += f"\n(still {task.status} after {timeout_s:g} s; call wait_task again)"
        return result(task, summary)
