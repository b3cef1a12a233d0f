"""`/mcp` on the daemon: the bearer token off loopback, DNS-rebinding checks on it."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from tests.conftest import Daemon
from tests.mcp_server.conftest import (
    http_client_for,
    stdio_client_for,
    structured,
    text_of,
    token_of,
)

pytestmark = pytest.mark.real

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
MCP_HEADERS = {"accept": "application/json, text/event-stream"}
WAIT_S = 120.0


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
def test_off_loopback_every_mcp_request_needs_the_token(open_daemon: Daemon, method: str) -> None:
    with open_daemon.client() as http:
        body = INITIALIZE if method == "POST" else None
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic x"}):
            response = http.request(method, "/mcp", json=body, headers={**MCP_HEADERS, **headers})
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"] == "Bearer"
            assert "tierhost token" in response.json()["error"]["message"]


def test_off_loopback_the_token_opens_mcp(open_daemon: Daemon) -> None:
    with open_daemon.client() as http:
        response = http.post(
            "/mcp",
            json=INITIALIZE,
            headers={**MCP_HEADERS, "authorization": f"Bearer {token_of(open_daemon)}"},
        )
    assert response.status_code == 200, response.text


async def test_off_loopback_tools_work_with_the_token(open_daemon: Daemon) -> None:
    """Changes go through the daemon's guard too, so the server must pass the token on."""
    with anyio.fail_after(WAIT_S):
        async with http_client_for(open_daemon.url, token_of(open_daemon)) as client:
            decision = structured(await client.call_tool("route_task", {"prompt": "Plan it."}))
            assert decision["tier"] == "architect"
            table = structured(await client.call_tool("get_routing", {}))["routes"]
            same = await client.call_tool("set_routing", {"routes": table, "replace": True})
            assert structured(same)["routes"] == table


async def test_stdio_reads_the_token_from_the_data_dir(open_daemon: Daemon, tmp_path: Path) -> None:
    with (tmp_path / "stdio.log").open("w") as errlog, anyio.fail_after(WAIT_S):
        env = {"TIERHOST_DATA_DIR": str(open_daemon.data_dir)}
        async with stdio_client_for(open_daemon.url, errlog, env) as client:
            result = await client.call_tool("route_task", {"prompt": "Plan it."})
    assert structured(result)["tier"] == "architect"


async def test_stdio_without_the_token_says_how_to_get_it(
    open_daemon: Daemon, tmp_path: Path
) -> None:
    with (tmp_path / "stdio.log").open("w") as errlog, anyio.fail_after(WAIT_S):
        env = {"TIERHOST_DATA_DIR": str(tmp_path / "elsewhere")}
        async with stdio_client_for(open_daemon.url, errlog, env) as client:
            result = await client.call_tool("route_task", {"prompt": "Plan it."})
    assert result.is_error and "tierhost token" in text_of(result)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"host": "evil.example"}, 421),
        ({"origin": "http://evil.example"}, 403),
    ],
)
def test_on_loopback_dns_rebinding_is_refused(
    shared_daemon: Daemon, headers: dict[str, str], status: int
) -> None:
    with httpx.Client(base_url=shared_daemon.url, timeout=30.0) as http:
        response = http.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **headers})
    assert response.status_code == status, response.text


def test_on_loopback_no_token_is_needed(shared_daemon: Daemon) -> None:
    with httpx.Client(base_url=shared_daemon.url, timeout=30.0) as http:
        response = http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert response.status_code == 200, response.text
