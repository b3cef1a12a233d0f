"""MCP clients of a Tierhost daemon, for programs that talk MCP to it (the bot, tests).

The SDK's URL shortcut (`Client("http://…/mcp")`) sends no headers, and a daemon bound
beyond loopback refuses `/mcp` without the bearer token, so the HTTP client is built
here with the token header and owns (and closes) its connection pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx2
from mcp import Client
from mcp.client._transport import TransportStreams
from mcp.client.streamable_http import streamable_http_client

from host.client import auth_headers, discover_token
from mcp_server.http import PATH

CONNECT_TIMEOUT_S = 30.0
STREAM_TIMEOUT_S = 300.0
"""A tool's response stream may stay open for a long task; progress keeps it busy."""


@contextlib.asynccontextmanager
async def _http_transport(url: str, token: str | None) -> AsyncIterator[TransportStreams]:
    headers = auth_headers(token)
    timeout = httpx2.Timeout(CONNECT_TIMEOUT_S, read=STREAM_TIMEOUT_S)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


def http_client(
    daemon_url: str,
    token: str | None = None,
    *,
    read_timeout_s: float | None = None,
    mode: str = "auto",
) -> Client:
    """An unopened MCP client of the daemon's `/mcp` (use `async with`). No token given:
    the one every client finds (`host.client.find_token`); `""` sends none. `mode` is the
    SDK's: `auto` speaks the newest protocol the server offers, `legacy` the 2025
    handshake that most MCP hosts speak."""
    endpoint = daemon_url.rstrip("/") + PATH
    secret = discover_token() if token is None else token
    return Client(_http_transport(endpoint, secret), read_timeout_seconds=read_timeout_s, mode=mode)
