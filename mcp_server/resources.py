"""Resources: a task (`task://{id}`) and the routing table (`routing://table`) as JSON.

Clients that attach resources to a conversation (rather than call tools) get the same
documents the control API serves.
"""

from __future__ import annotations

import json
from typing import Any

from mcp.server import MCPServer

from mcp_server.link import HostLink, resource_errors

JSON = "application/json"


def register(server: MCPServer[Any], link: HostLink) -> None:
    @server.resource(
        "task://{task_id}",
        name="task",
        title="A Tierhost task",
        description="The task with its events and result",
        mime_type=JSON,
    )
    async def task_resource(task_id: str) -> str:
        with resource_errors():
            task = await link.client.get_task(task_id)
        return task.model_dump_json(indent=2, exclude_unset=True)

    @server.resource(
        "routing://table",
        name="routing-table",
        title="Tierhost routing table",
        description="Task type → tier, as `tierhost routing export` writes it",
        mime_type=JSON,
    )
    async def routing_table() -> str:
        with resource_errors():
            routes = await link.client.routing()
        return json.dumps({"version": 1, "routes": routes}, indent=2)
