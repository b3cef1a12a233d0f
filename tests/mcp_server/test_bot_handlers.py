"""The Discord commands as plain functions, against the in-process MCP server."""

from __future__ import annotations

import anyio
import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent

from mcp_server import bot_handlers
from mcp_server.server import build_server
from tests.conftest import Daemon

pytestmark = pytest.mark.real

WAIT_S = 240.0


async def test_plan_shows_progress_and_replies_with_the_result(shared_daemon: Daemon) -> None:
    seen: list[str] = []

    async def progress(message: str) -> None:
        seen.append(message)

    with anyio.fail_after(WAIT_S):
        async with Client(build_server(shared_daemon.url)) as client:
            reply = await bot_handlers.plan(client, "Plan a tiny todo app.", progress, 32)
            status = await bot_handlers.task(client, reply.text.split()[1].rstrip(":"))
    assert not reply.failed and "done" in reply.text and "architect" in reply.text
    assert seen, "no progress reached the reply"
    assert not status.failed and "done" in status.text


async def test_mode_status_and_a_bad_mode(shared_daemon: Daemon) -> None:
    async with Client(build_server(shared_daemon.url)) as client:
        shown = await bot_handlers.mode(client)
        bad = await bot_handlers.mode(client, "turbo")
        status = await bot_handlers.status(client)
    assert "gpu0: auto" in shown.text
    assert bad.failed and "turbo" in bad.text and bad.text.startswith("⚠️")
    assert "device gpu0" in status.text


def test_a_long_result_becomes_an_attachment() -> None:
    long = "x" * 5000
    reply = bot_handlers.reply_from(
        CallToolResult(content=[TextContent(type="text", text=long)]), filename="t1.md"
    )
    assert reply.attachment == long and reply.filename == "t1.md"
    assert len(reply.text) <= bot_handlers.MESSAGE_LIMIT
