"""One real daemon for the MCP tests, and one client fixture per MCP transport.

Starting a daemon (with its persistent SmolLM2 servers) takes seconds on two cores, so
the transport-parametrised tests share one and leave its mode and routing
table as they found them. A client is returned unopened: tests open it with
`async with`, because an anyio task group cannot be entered in a fixture's task and
left in the test's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import IO, Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from mcp_server.clients import http_client
from mcp_server.server import build_server
from tests.conftest import Daemon, running_demo, start_daemon, stop_checked

TRANSPORTS = ("in-process", "stdio", "http")
CLIENT_TIMEOUT_S = 240.0

Connect = Callable[[], Client]


def demo_config(bind_host: str = "127.0.0.1") -> str:
    text = (resources.files("host") / "data" / "demo.toml").read_text()
    return text.replace('host = "127.0.0.1"', f'host = "{bind_host}"', 1)


@pytest.fixture(scope="session")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The demo daemon on loopback, shared by the MCP tests."""
    with running_demo(tmp_path_factory.mktemp("daemon")) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def open_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The demo daemon bound to 0.0.0.0: every change, and all of /mcp, needs the token."""
    tmp = tmp_path_factory.mktemp("open-daemon")
    daemon = start_daemon(tmp, demo_config("0.0.0.0"))
    try:
        yield daemon
    finally:
        stop_checked(daemon)


def token_of(daemon: Daemon) -> str:
    return (daemon.data_dir / "token").read_text().strip()


def stdio_client_for(
    url: str, errlog: IO[str], extra_env: dict[str, str] | None = None, *args: str
) -> Client:
    """`python -m mcp_server` as an editor launches it."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server", *args],
        env={"TIERHOST_URL": url, **(extra_env or {})},
        cwd=os.getcwd(),
    )
    return Client(stdio_client(params, errlog=errlog), read_timeout_seconds=CLIENT_TIMEOUT_S)


def http_client_for(url: str, token: str | None = None) -> Client:
    """The daemon's own `/mcp`, with the bearer token when given."""
    return http_client(url, token, read_timeout_s=CLIENT_TIMEOUT_S)


@pytest.fixture(params=TRANSPORTS)
def connect(request: pytest.FixtureRequest, shared_daemon: Daemon, tmp_path: Path) -> Connect:
    """Makes an unopened MCP client of the shared daemon over one transport."""
    transport: str = request.param
    url = shared_daemon.url

    def make() -> Client:
        if transport == "in-process":
            return Client(build_server(url), read_timeout_seconds=CLIENT_TIMEOUT_S)
        if transport == "stdio":
            errlog = (tmp_path / "mcp-stdio.log").open("a")
            request.addfinalizer(errlog.close)
            return stdio_client_for(url, errlog)
        return http_client_for(url)

    return make


def structured(result: Any) -> dict[str, Any]:
    """The structured content of a successful tool result."""
    assert not result.is_error, result.content
    data: dict[str, Any] = result.structured_content
    return data


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")
