"""`tierhost mcp|token|mcp-config`: MCP on stdio, the bearer token, client configs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from host.auth import TOKEN_FILE, load_or_create_token
from host.client import default_url, discover_token
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


def cmd_mcp_config(args: argparse.Namespace) -> int:
    from mcp_server.configs import snippet, where

    url = (args.url or default_url()).rstrip("/")
    token = None
    if args.http and not args.no_token:
        token = load_or_create_token(data_dir(args.data_dir))
    document = snippet(args.client, url, http=args.http, token=token)
    print(f"tierhost: {where(args.client)}", file=sys.stderr)
    print(json.dumps(document, indent=2))
    return 0


def cmd_discord(args: argparse.Namespace) -> int:
    from mcp_server.discord_bot import run

    # read, never created: the token is the daemon's, and the bot may run on another box
    return run(args.url, discover_token(directory=args.data_dir))


def add_commands(sub: Any) -> None:
    """Register the MCP commands on the main parser's subparsers."""
    from mcp_server.configs import CLIENTS

    mcp = sub.add_parser(
        "mcp", help="serve MCP on stdio (starts the daemon in the background if none answers)"
    )
    mcp.add_argument("--url", help="daemon URL (default: $TIERHOST_URL or 127.0.0.1:8788)")
    mcp.add_argument("--no-start", action="store_true", help="fail instead of starting a daemon")
    mcp.set_defaults(func=cmd_mcp)

    token = sub.add_parser("token", help="print the bearer token (created if missing)")
    token.add_argument("--data-dir", type=Path, help="the daemon's data dir (default: XDG)")
    token.set_defaults(func=cmd_token)

    config = sub.add_parser("mcp-config", help="print the JSON that registers Tierhost in a client")
    config.add_argument("client", choices=CLIENTS)
    config.add_argument("--url", help="daemon URL (default: $TIERHOST_URL or 127.0.0.1:8788)")
    config.add_argument(
        "--http", action="store_true", help="connect to the daemon's /mcp instead of stdio"
    )
    config.add_argument("--no-token", action="store_true", help="leave the token out (--http)")
    config.add_argument("--data-dir", type=Path, help="where the token is (default: XDG)")
    config.set_defaults(func=cmd_mcp_config)

    bot = sub.add_parser(
        "discord", help="run the Discord bot (bot token in $DISCORD_BOT_TOKEN; extra: discord)"
    )
    bot.add_argument("--url", help="daemon URL (default: $TIERHOST_URL or 127.0.0.1:8788)")
    bot.add_argument(
        "--data-dir", type=Path, help="where the token file is (default: XDG; $TIERHOST_TOKEN wins)"
    )
    bot.set_defaults(func=cmd_discord)
