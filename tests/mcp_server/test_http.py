"""`/mcp` on the daemon: the bearer token off loopback, DNS-rebinding checks on it."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mcp_server.clients import http_client
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


async def test_the_http_client_finds_the_token_itself(
    open_daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the Discord bot does: no token passed, the data dir's token file is read."""
    monkeypatch.delenv("TIERHOST_TOKEN", raising=False)
    monkeypatch.setenv("TIERHOST_DATA_DIR", str(open_daemon.data_dir))
    with anyio.fail_after(WAIT_S):
        async with http_client(open_daemon.url, read_timeout_s=WAIT_S) as client:
            decision = structured(await client.call_tool("route_task", {"prompt": "Plan it."}))
    assert decision["tier"] == "architect"


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


CANCEL_WAIT_S = 30.0


def _wait_for_line(process: subprocess.Popen[bytes], prefix: str, timeout_s: float) -> None:
    """Read the process's stdout until a line starts with `prefix` (bounded)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    pending = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0.0))
        chunk = os.read(fd, 4096) if ready else b""
        if ready and not chunk:
            break  # the caller exited
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if any(line.decode().startswith(prefix) for line in lines):
            return
    raise AssertionError(f"the call never reported {prefix!r}")


def _task_with_prompt(http: httpx.Client, prompt: str) -> dict[str, Any]:
    tasks = http.get("/api/tasks", params={"type": "planning", "limit": 50}).json()["tasks"]
    found: dict[str, Any] = next(t for t in tasks if t["prompt"] == prompt)
    return found


def _wait_until_ended(http: httpx.Client, task: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + CANCEL_WAIT_S
    while task["status"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"task still {task['status']}, for nobody"
        time.sleep(0.05)
        task = http.get(f"/api/tasks/{task['id']}").json()
    return task


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("phase", ["queued", "running"])
def test_a_wait_whose_http_client_dies_cancels_its_task(
    shared_daemon: Daemon, tmp_path: Path, mode: str, phase: str
) -> None:
    """Like stdio: the caller's process is killed mid-wait, so its connection drops with
    no cancel notification and no session DELETE; the task must not run on for nobody.
    `legacy` is the 2025 handshake most MCP hosts speak, `auto` the SDK's newest."""
    prompt = f"Plan, step by step, a long detailed migration of a web shop ({uuid.uuid4()})."
    argv = [sys.executable, "-m", "tests.mcp_server.http_caller", shared_daemon.url, mode, prompt]
    with shared_daemon.client() as http, (tmp_path / "caller.log").open("w") as errlog:
        if phase == "queued":  # pinned to the builder, the planning task is held in the queue
            assert http.put("/api/mode", json={"mode": "builder"}).status_code == 200
        try:
            caller = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errlog)
            try:
                _wait_for_line(caller, phase, WAIT_S)
            finally:
                caller.kill()
                caller.wait(timeout=30)
            task = _wait_until_ended(http, _task_with_prompt(http, prompt))
        finally:
            if phase == "queued":
                http.put("/api/mode", json={"mode": "auto"})
    assert task["status"] == "cancelled", task
