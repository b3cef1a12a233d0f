"""The ASGI application: routes, JSON errors and the request guard."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from host import api, proxy, routing_api, task_api
from host.auth import is_loopback, token_matches
from host.errors import ApiError, error_response, on_api_error, on_http_exception, on_unexpected
from host.service import Host
from mcp_server.http import McpEndpoint

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestGuard:
    """Blocks DNS rebinding and, off loopback, unauthenticated state changes.

    A browser page on evil.example that resolves its name to 127.0.0.1 still sends
    `Host: evil.example`, so on a loopback bind only loopback host names are served and
    cross-site `Origin`s are refused. When the daemon listens beyond loopback, every
    request that may change state (anything but GET/HEAD/OPTIONS) needs the bearer token.
    """

    def __init__(
        self,
        app: ASGIApp,
        bind_host: str,
        token: str | None,
        extra_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.loopback_only = is_loopback(bind_host)
        self.token = token
        self.allowed = {"127.0.0.1", "localhost", "::1", bind_host} | extra_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self._check(scope, headers)
        if problem is not None:
            await problem(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope, headers: dict[str, str]) -> ASGIApp | None:
        if self.loopback_only:
            host_name = urlsplit("//" + headers.get("host", "")).hostname or ""
            if host_name not in self.allowed:
                return error_response(
                    421,
                    "bad_host",
                    f"Host {headers.get('host')!r} is not served here (DNS rebinding guard); "
                    "use http://127.0.0.1 or http://localhost",
                )
            origin = headers.get("origin")
            if origin and origin != "null":
                origin_host = urlsplit(origin).hostname or ""
                if origin_host not in self.allowed and not origin.startswith("vscode-"):
                    return error_response(
                        403, "bad_origin", f"cross-site requests from {origin} are refused"
                    )
        if self.token is not None and scope["method"] not in _SAFE_METHODS:
            auth = headers.get("authorization", "")
            presented = auth[7:].strip() if auth.lower().startswith("bearer ") else None
            if not token_matches(presented, self.token):
                return error_response(
                    401,
                    "unauthorized",
                    "this host listens beyond loopback: send `Authorization: Bearer <token>` "
                    "(see `tierhost token`)",
                    {"WWW-Authenticate": "Bearer"},
                )
        return None


def create_app(host: Host) -> Starlette:
    mcp = McpEndpoint(host.config.host.host, host.config.host.port, host.token)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await host.start()
        try:
            async with mcp.running():
                yield
        finally:
            await host.close()

    app = Starlette(
        routes=[*api.routes, *task_api.routes, *routing_api.routes, *proxy.routes, *mcp.routes],
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_exception,
            Exception: on_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.host = host
    app.add_middleware(RequestGuard, bind_host=host.config.host.host, token=host.token)
    return app
