"""Prompts `plan` and `implement`: ready-made requests that land on the right tier.

A user picks "plan" or "implement" in their client's prompt menu; the message tells
the agent to hand the work to Tierhost with the matching task type, so the router
sends it to the architect or the builder tier, and names that tier when the daemon
answers (the prompt still works, without the name, when it does not).
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import UserMessage
from pydantic import Field

from host.client import HostError, HostUnreachable
from mcp_server.link import HostLink


async def _where(link: HostLink, prompt: str, task_type: str) -> str:
    try:
        decision = await link.client.route(prompt, type=task_type)
    except (HostError, HostUnreachable):
        return f"Tierhost routes {task_type} tasks by its routing table."
    return (
        f"Tierhost routes this {task_type} task to the {decision.tier} tier "
        f"(model {decision.model})."
    )


def _request(task_type: str, body: str, where: str, extra: str) -> str:
    return (
        f"{where}\n\n"
        f'Call the `submit_task` tool with type "{task_type}", wait true, and the text '
        f"below as the prompt{extra}. Report the result to me as it comes back; if the "
        f"task fails, show me its error.\n\n---\n{body}"
    )


def register(server: MCPServer[Any], link: HostLink) -> None:
    @server.prompt(name="plan", title="Plan with the architect tier")
    async def plan(
        goal: Annotated[str, Field(description="What to plan")],
        constraints: Annotated[str | None, Field(description="Limits, non-goals")] = None,
    ) -> list[UserMessage]:
        """Plan a change with the big architect model (task type planning)."""
        body = goal if not constraints else f"{goal}\n\nConstraints:\n{constraints}"
        where = await _where(link, body, "planning")
        return [UserMessage(_request("planning", body, where, ""))]

    @server.prompt(name="implement", title="Implement with the builder tier")
    async def implement(
        task: Annotated[str, Field(description="What to implement")],
        target_file: Annotated[str | None, Field(description="The file the code is for")] = None,
    ) -> list[UserMessage]:
        """Write code with the builder model (task type implementation)."""
        where = await _where(link, task, "implementation")
        extra = (
            f', and context {{"target_file": "{target_file}"}} with that file\'s content'
            if target_file
            else ""
        )
        return [UserMessage(_request("implementation", task, where, extra))]
