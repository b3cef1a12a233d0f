"""The daemon's `/mcp` endpoint: the same MCP server over streamable HTTP.

Mounted inside the daemon's own Starlette app, behind its RequestGuard: the same
Host, Origin, Content-Type and body-size rules as every other route, so the SDK's own
DNS-rebinding list (loopback names only) is switched off rather than kept as a second
list that would refuse the names `host.allowed_hosts` adds. The tools reach the
daemon's API over loopback HTTP with the same `HostClient` the stdio server uses: one
code path for both transports. When the daemon listens beyond loopback, every `/mcp`
request, reads included, needs the bearer token: an MCP session can change the GPU mode
and the routing table, and even its GET stream carries task results. The guard asks
for it already; `BearerRequired` asks again here, with the same rules, so `/mcp` stays
closed even if it is ever mounted without the guard.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator

from mcp.server.transport_security import TransportSecuritySettings
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from host.auth import bearer_value, token_matches
from host.errors import error_response
from mcp_server.server import build_server

PATH = "/mcp"


def loopback_url(bind_host: str, port: int) -> str:
    """Where this process can reach its own API: the bind address, or loopback for a
    wildcard bind."""
    host = bind_host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a name such as localhost
    return f"http://{host}:{port}"


class BearerRequired:
    """Refuses every request without `Authorization: Bearer <token>`: exact, constant-time
    (host.auth), one Authorization header only."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"]
            presented = bearer_value(values[0]) if len(values) == 1 else None
            if not token_matches(presented, self.token):
                refusal = error_response(
                    401,
                    "unauthorized",
                    "this host listens beyond loopback: send `Authorization: Bearer <token>` "
                    "(see `tierhost token`)",
                    {"WWW-Authenticate": "Bearer"},
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


class McpEndpoint:
    """The `/mcp` route plus the session manager the app's lifespan must run."""

    def __init__(
        self, bind_host: str, port: int, token: str | None, *, max_body_bytes: int = 8 << 20
    ) -> None:
        # `""`, not None: the daemon's own tools send the daemon's token or none, never
        # a token file that the daemon's environment happens to point at.
        self.server = build_server(loopback_url(bind_host, port), token=token or "")
        # Built for its side effect: it creates the session manager that handles /mcp.
        sub_app = self.server.streamable_http_app(
            streamable_http_path=PATH,
            host=bind_host,
            max_request_body_size=max_body_bytes,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        endpoint: ASGIApp = next(
            r.app for r in sub_app.routes if isinstance(r, Route) and r.path == PATH
        )
        if token is not None:
            endpoint = BearerRequired(endpoint, token)
        self.routes = [Route(PATH, endpoint)]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.server.session_manager.run():
            yield
