"""An MCP client of the daemon's `/mcp` that a test kills in the middle of a call.

`python -m tests.mcp_server.http_caller URL MODE PROMPT` calls `submit_task` with
`wait` and prints each progress message on its own line, so the test can kill this
process at the moment it chooses: the connection then drops the way it does when a
bot or an editor dies, with no `notifications/cancelled` and no session DELETE.
"""

from __future__ import annotations

import sys

import anyio

from mcp_server.clients import http_client


async def call(url: str, mode: str, prompt: str) -> None:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        print(message or "", flush=True)

    async with http_client(url, read_timeout_s=600.0, mode=mode) as client:
        arguments = {"prompt": prompt, "type": "planning", "max_tokens": 4000, "wait": True}
        result = await client.call_tool("submit_task", arguments, progress_callback=on_progress)
        print(f"ended: {result.structured_content}", flush=True)


if __name__ == "__main__":
    anyio.run(call, *sys.argv[1:4])
