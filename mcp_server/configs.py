"""The JSON snippets that register Tierhost in an MCP client, ready to paste.

Claude Code and OpenClaude read `mcpServers` (in `.mcp.json` or `~/.claude.json`); VS
Code reads `servers` (in `.vscode/mcp.json`). Over stdio the client launches
`tierhost mcp` itself, so the command is an absolute path: editors often start with a
PATH that lacks the virtualenv. Over HTTP the client connects to the daemon's `/mcp`,
with the bearer token when the daemon needs one.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Literal

ClientName = Literal["claude", "openclaude", "vscode"]
CLIENTS: tuple[ClientName, ...] = ("claude", "openclaude", "vscode")
SERVER_NAME = "tierhost"


def launch_command() -> list[str]:
    """`tierhost mcp` by absolute path, or this interpreter running `-m mcp_server`."""
    beside = Path(sys.executable).with_name("tierhost")
    if beside.is_file():
        return [str(beside), "mcp"]
    found = shutil.which("tierhost")
    if found:
        return [str(Path(found).resolve()), "mcp"]
    return [sys.executable, "-m", "mcp_server"]


def server_entry(
    client: ClientName, url: str, *, http: bool, token: str | None, command: list[str]
) -> dict[str, Any]:
    if http:
        entry: dict[str, Any] = {"type": "http", "url": url.rstrip("/") + "/mcp"}
        if token:
            entry["headers"] = {"Authorization": f"Bearer {token}"}
        return entry
    entry = {"type": "stdio", "command": command[0], "args": command[1:]}
    # the URL always: without it `tierhost mcp` would start a daemon of its own on the
    # default port when the one meant is elsewhere; the token when the daemon needs one
    entry["env"] = {"TIERHOST_URL": url}
    if token:
        entry["env"]["TIERHOST_TOKEN"] = token
    return entry


def snippet(
    client: ClientName,
    url: str,
    *,
    http: bool = False,
    token: str | None = None,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """The whole document to merge into the client's config file."""
    entry = server_entry(client, url, http=http, token=token, command=command or launch_command())
    key = "servers" if client == "vscode" else "mcpServers"
    return {key: {SERVER_NAME: entry}}


def where(client: ClientName) -> str:
    """Where the snippet goes, said once on stderr."""
    if client == "vscode":
        return "add this to .vscode/mcp.json in your workspace (or your user mcp.json)"
    if client == "openclaude":
        return "add this to .mcp.json in your project (or run `openclaude mcp add-json`)"
    return "add this to .mcp.json in your project (or `claude mcp add-json tierhost '<entry>'`)"
