"""The host tools: GPU mode, the routing table and the host's status.

Mode and routing changes are marked destructive: they change what every other client
of the host gets (a gaming mode stops all big-model work), so an agent host should
ask the user before calling them.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server import MCPServer
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from host.wire import Modes, RoutingTable
from mcp_server import text
from mcp_server.link import HostLink, tool_errors
from mcp_server.models import HostStatus
from mcp_server.tools_tasks import READ, result

CHANGE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)


def register(server: MCPServer[Any], link: HostLink) -> None:
    @server.tool(title="Get the GPU mode", annotations=READ)
    async def get_gpu_mode() -> Annotated[CallToolResult, Modes]:
        """The GPU policy of each device: auto, a pinned tier, or gaming."""
        with tool_errors():
            modes = Modes(modes=await link.client.modes())
        return result(modes, text.mapping("GPU modes:", modes.modes))

    @server.tool(title="Set the GPU mode", annotations=CHANGE)
    async def set_gpu_mode(
        mode: Annotated[
            str,
            Field(
                min_length=1,
                description="auto (swap by queue), a tier name such as architect or builder "
                "(pin it), or gaming (release the GPU)",
            ),
        ],
        device: Annotated[
            str | None, Field(description="One GPU device, e.g. gpu0; omitted: every GPU")
        ] = None,
    ) -> Annotated[CallToolResult, Modes]:
        """Change the GPU policy. Gaming stops models on the device and holds big-model
        tasks until the mode changes back."""
        with tool_errors():
            modes = Modes(modes=await link.client.set_mode(mode, device))
        return result(modes, text.mapping("GPU modes now:", modes.modes))

    @server.tool(title="Get the routing table", annotations=READ)
    async def get_routing() -> Annotated[CallToolResult, RoutingTable]:
        """Which tier serves each task type."""
        with tool_errors():
            table = RoutingTable(routes=await link.client.routing())
        return result(table, text.mapping("Routing (task type → tier):", table.routes))

    @server.tool(title="Change the routing table", annotations=CHANGE)
    async def set_routing(
        routes: Annotated[
            dict[str, str],
            Field(description='Task type → tier, e.g. {"review": "builder"}'),
        ],
        replace: Annotated[
            bool,
            Field(description="Replace the whole table; default: change only the types given"),
        ] = False,
    ) -> Annotated[CallToolResult, RoutingTable]:
        """Route task types to other tiers. The change is persisted and applies to new
        tasks at once."""
        with tool_errors():
            current = {} if replace else await link.client.routing()
            table = RoutingTable(routes=await link.client.set_routing({**current, **routes}))
        return result(table, text.mapping("Routing now (task type → tier):", table.routes))

    @server.tool(title="Host status", annotations=READ)
    async def host_status() -> Annotated[CallToolResult, HostStatus]:
        """Devices (mode, memory, residents, queue), every model's state, task counts,
        and whether this MCP server attached to the daemon or started it."""
        with tool_errors():
            seen = await link.client.status()
        status = HostStatus(**dict(seen), url=link.url, daemon=link.daemon)
        return result(status, text.host_status(status))
