"""The Discord bot's commands as plain async functions over an MCP client.

`/plan`, `/build`, `/task`, `/mode` and `/status` each call one Tierhost MCP tool and
turn its result into a `Reply`: text that fits a Discord message, and the full result
as an attachment when it does not. Nothing here imports discord.py, so the commands
are tested against the in-process MCP server; `discord_bot` only wires them to Discord.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mcp.shared.dispatcher import ProgressFnT
from mcp_types import CallToolResult

MESSAGE_LIMIT = 1900
"""Discord allows 2000 characters a message; keep room for a prefix."""

Progress = Callable[[str], Awaitable[None]]


class ToolCaller(Protocol):
    """What the handlers need of an MCP client (`mcp.Client` is one)."""

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        read_timeout_seconds: float | None = None,
        progress_callback: ProgressFnT | None = None,
    ) -> CallToolResult: ...


@dataclass(frozen=True)
class Reply:
    text: str
    attachment: str | None = None
    """The whole result, when it is too long for a message."""
    filename: str = "result.md"
    failed: bool = False


def _text(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content).strip()


def reply_from(result: CallToolResult, filename: str = "result.md") -> Reply:
    text = _text(result)
    if result.is_error:
        return Reply(f"⚠️ {text}"[:MESSAGE_LIMIT], failed=True)
    if len(text) <= MESSAGE_LIMIT:
        return Reply(text)
    head = text[: MESSAGE_LIMIT - 60].rstrip()
    return Reply(f"{head}\n… (full result attached)", attachment=text, filename=filename)


def _forward(report: Progress) -> ProgressFnT:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if message:
            await report(message)

    return on_progress


async def _run_task(
    client: ToolCaller, prompt: str, task_type: str, progress: Progress, max_tokens: int | None
) -> Reply:
    arguments: dict[str, Any] = {"prompt": prompt, "type": task_type, "wait": True}
    if max_tokens is not None:
        arguments["max_tokens"] = max_tokens
    result = await client.call_tool(
        "submit_task",
        arguments,
        progress_callback=_forward(progress),
    )
    task = result.structured_content or {}
    return reply_from(result, filename=f"{task.get('id', task_type)}.md")


async def plan(
    client: ToolCaller, goal: str, progress: Progress, max_tokens: int | None = None
) -> Reply:
    """`/plan <goal>`: a planning task on the architect tier, followed to its end."""
    return await _run_task(client, goal, "planning", progress, max_tokens)


async def build(
    client: ToolCaller, what: str, progress: Progress, max_tokens: int | None = None
) -> Reply:
    """`/build <what>`: an implementation task on the builder tier."""
    return await _run_task(client, what, "implementation", progress, max_tokens)


async def task(client: ToolCaller, task_id: str) -> Reply:
    """`/task <id>`: a task's status and result."""
    return reply_from(await client.call_tool("get_task", {"task_id": task_id}))


async def mode(client: ToolCaller, new_mode: str | None = None) -> Reply:
    """`/mode [auto|gaming|<tier>]`: show the GPU mode, or change it."""
    if new_mode is None:
        return reply_from(await client.call_tool("get_gpu_mode", {}))
    return reply_from(await client.call_tool("set_gpu_mode", {"mode": new_mode}))


async def status(client: ToolCaller) -> Reply:
    """`/status`: devices, residents, queues."""
    return reply_from(await client.call_tool("host_status", {}))
