"""`build_server`: the Tierhost MCP server, over whichever daemon the caller names.

The server holds no state of its own: every tool, resource and prompt is a thin layer
over the daemon's HTTP API, so stdio, streamable HTTP and in-process tests all serve
exactly the same thing and differ only in the `HostClient` they are given.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from mcp.server import MCPServer

from host.client import HostClient
from mcp_server import prompts, resources, tools_host, tools_tasks
from mcp_server.link import ClientFactory, HostLink

INSTRUCTIONS = (
    "Tierhost runs local models by tier on this machine's GPU. Send work with submit_task "
    "(the task type picks the tier: planning/design/audit/review → architect, implementation "
    "→ builder, infra/email/admin → operator); route_task shows where a prompt would go "
    "without running it. Long tasks: submit_task with wait=true, or wait_task. Never change "
    "the GPU mode or the routing table unless the user asks."
)


def _version() -> str:
    try:
        return metadata.version("tierhost")
    except metadata.PackageNotFoundError:
        return "0"


def build_server(
    connect: ClientFactory | str | None = None,
    *,
    token: str | None = None,
    daemon: str | None = None,
) -> MCPServer[Any]:
    """The MCP server over the daemon at a URL (default `$TIERHOST_URL`), or over the
    clients a factory makes (tests, and the daemon's own `/mcp` mount).

    `daemon` says how this server came to that daemon (`host_status` reports it): by
    default "attached <url>"; `tierhost mcp` says when it started the daemon itself."""
    if connect is None or isinstance(connect, str):
        url = connect

        def connect_url() -> HostClient:
            return HostClient(url, token=token)

        factory: ClientFactory = connect_url
    else:
        factory = connect
    link = HostLink(factory, daemon)
    server: MCPServer[Any] = MCPServer(
        "tierhost",
        title="Tierhost",
        instructions=INSTRUCTIONS,
        version=_version(),
        log_level="WARNING",  # stderr is the user's terminal or the editor's log
        lifespan=lambda _server: link.running(),
    )
    tools_tasks.register(server, link)
    tools_host.register(server, link)
    resources.register(server, link)
    prompts.register(server, link)
    return server
