"""`tierhost mcp|token|discord`: MCP on stdio, the bearer token, the Discord bot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from host.auth import TOKEN_FILE, load_or_create_token
from host.client import discover_token
from host.paths import data_dir


def cmd_mcp(args: argparse.Namespace) -> int:
    from mcp_server.stdio import run  # the MCP SDK loads only for this command

    return run(args)


def cmd_token(args: argparse.Namespace) -> int:
    directory = data_dir(args.data_dir)
    existed = (directory / TOKEN_FILE).exists()
    token = load_or_create_token(directory)
    if not existed:
        print(
            f"tierhost: created a new token in {directory / TOKEN_FILE} (mode 0600); a daemon "
            "bound beyond loopback with this data dir will require it",
            file=sys.stderr,
        )
    print(token)
    return 0


def cmd_discord(args: argparse.Namespace) -> int:
    from mcp_server.discord_bot import run

    # read, never created: the token is the daemon's, and the bot may run on another box
    return run(args.url, discover_token(directory=args.data_dir))


def add_commands(sub: Any) -> None:
    """Register the MCP commands on the main parser's subparsers (`mcp-config` is
    `connect`'s, in host.cli.connect)."""
    mcp = sub.add_parser(
        "mcp", help="serve MCP on stdio (starts the daemon in the background if none answers)"
    )
    mcp.add_argument("--url", help="daemon URL (default: $TIERHOST_URL or 127.0.0.1:8788)")
    mcp.add_argument("--no-start", action="store_true", help="fail instead of starting a daemon")
    mcp.set_defaults(func=cmd_mcp)

    token = sub.add_parser("token", help="print the bearer token (created if missing)")
    token.add_argument("--data-dir", type=Path, help="the daemon's data dir (default: XDG)")
    token.set_defaults(func=cmd_token)

    bot = sub.add_parser(
        "discord", help="run the Discord bot (bot token in $DISCORD_BOT_TOKEN; extra: discord)"
    )
    bot.add_argument("--url", help="daemon URL (default: $TIERHOST_URL or 127.0.0.1:8788)")
    bot.add_argument(
        "--data-dir", type=Path, help="where the token file is (default: XDG; $TIERHOST_TOKEN wins)"
    )
    bot.set_defaults(func=cmd_discord)
