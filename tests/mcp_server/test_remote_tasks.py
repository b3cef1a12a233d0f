"""MCP `submit_task(wait=true)` on a remote model, over every transport, to `done`.

Issue 10: a task routed to a `kind = "remote"` model must end the same through every
client. The daemon here (`tests.remote_box`) routes every tier to "the other box", a
second real llama-server on loopback behind its own API key, so an answer can only have
come from there. The clients are the ones the other MCP tests use, bound to this daemon
rather than to the shared demo one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_server.server import build_server
from tests.conftest import Daemon
from tests.mcp_server.conftest import (
    CLIENT_TIMEOUT_S,
    TRANSPORTS,
    http_client_for,
    stdio_client_for,
    structured,
    text_of,
)

pytestmark = pytest.mark.real

WAIT_S = 120.0
"""Bound on one call: a few tokens from SmolLM2 on a busy two-core box."""


def client_of(transport: str, url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Client:
    """An unopened MCP client of the daemon at `url` over `transport`, built like the
    `connect` fixture's (which is bound to the shared demo daemon)."""
    if transport == "in-process":
        return Client(build_server(url), read_timeout_seconds=CLIENT_TIMEOUT_S)
    if transport == "stdio":
        errlog = (tmp_path / "mcp-stdio.log").open("a")
        request.addfinalizer(errlog.close)
        return stdio_client_for(url, errlog)
    return http_client_for(url)


def recorded(daemon: Daemon, task_id: str) -> dict[str, Any]:
    """The task as the daemon's API has it: what the MCP answer must agree with."""
    with daemon.client() as http:
        response = http.get(f"/api/tasks/{task_id}")
        response.raise_for_status()
        task: dict[str, Any] = response.json()
        return task


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_submit_with_wait_runs_an_infra_task_on_the_remote_model_to_done(
    transport: str,
    shared_remote_daemon: Daemon,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The remote model is listed by every tier, so the task must still say the tier it
    was routed to (infra → operator), not the first tier of the config that lists it."""
    client = client_of(transport, shared_remote_daemon.url, tmp_path, request)
    with anyio.fail_after(WAIT_S):
        async with client:
            result = await client.call_tool(
                "submit_task",
                {
                    "prompt": "Check the disks on the NAS.",
                    "type": "infra",
                    "max_tokens": 8,
                    "wait": True,
                },
            )
    task = structured(result)
    assert task["status"] == "done", task
    assert (task["tier"], task["model"]) == ("operator", "operator-far")
    assert task["result"] and task["tokens"] > 0
    assert task["result"][:20] in text_of(result)
    # the daemon's own record agrees, and the task took the normal path to its end
    host = recorded(shared_remote_daemon, task["id"])
    assert (host["status"], host["model"], host["result"]) == (
        "done",
        "operator-far",
        task["result"],
    )
    assert [e["status"] for e in host["events"]] == ["queued", "waiting_device", "running", "done"]
