"""The server's one connection to the daemon, and how daemon errors become tool errors.

Every MCP transport (stdio, streamable HTTP, in-process) reaches the daemon through the
same `HostClient`. One client is shared by all calls while the server runs: opening an
HTTP client per call costs more than the call itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError

from host.client import HostClient, HostError, HostUnreachable

ClientFactory = Callable[[], HostClient]


class HostLink:
    """Hands out the shared `HostClient` while at least one server session runs."""

    def __init__(self, connect: ClientFactory, daemon: str | None = None) -> None:
        self._connect = connect
        self._daemon = daemon
        self._client: HostClient | None = None
        self._users = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HostClient]:
        """The server's lifespan: open the client on first use, close it after the last."""
        if self._client is None:
            self._client = self._connect()
        client = self._client
        self._users += 1
        try:
            yield client
        finally:
            self._users -= 1
            if self._users == 0:
                self._client = None
                await client.aclose()

    @property
    def client(self) -> HostClient:
        if self._client is None:
            raise ToolError("the Tierhost MCP server is not running (no session is open)")
        return self._client

    @property
    def url(self) -> str:
        return self.client.base_url

    @property
    def daemon(self) -> str:
        """How this server came to its daemon: "attached <url>", or what started it."""
        return self._daemon or f"attached {self.url}"


def describe(exc: HostError) -> str:
    """The daemon's own message, plus the kind and status a script may branch on."""
    return f"{exc} ({exc.kind}, HTTP {exc.status})"


@contextlib.contextmanager
def tool_errors() -> Iterator[None]:
    """Turn daemon errors into MCP tool errors (`is_error` with the daemon's message)."""
    try:
        yield
    except HostError as exc:
        raise ToolError(describe(exc)) from None
    except HostUnreachable as exc:
        raise ToolError(str(exc)) from None


@contextlib.contextmanager
def resource_errors() -> Iterator[None]:
    """The same for resources, which report failures as protocol errors."""
    try:
        yield
    except HostError as exc:
        if exc.status == 404:
            raise ResourceNotFoundError(describe(exc)) from None
        raise ResourceError(describe(exc)) from None
    except HostUnreachable as exc:
        raise ResourceError(str(exc)) from None
