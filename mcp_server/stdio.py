"""`python -m mcp_server` / `tierhost mcp`: the MCP server on stdio.

A thin client of the daemon: it finds (or starts) the daemon, then serves MCP on
stdin/stdout. stdout belongs to the protocol, so everything for people goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys

import anyio

from host.auth import TOKEN_FILE
from host.client import default_url
from host.paths import data_dir
from mcp_server.launcher import DaemonStartFailed, ensure_daemon
from mcp_server.server import build_server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="daemon URL (default: $TIERHOST_URL or 127.0.0.1:8788)")
    parser.add_argument("--no-start", action="store_true", help="fail instead of starting a daemon")


async def serve(url: str, token: str | None, start: bool) -> int:
    try:
        outcome = await ensure_daemon(url, token=token, start=start)
        print(outcome.describe(), file=sys.stderr, flush=True)
    except DaemonStartFailed as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    await build_server(url, token=token).run_stdio_async()
    return 0


def _token() -> str | None:
    """`$TIERHOST_TOKEN`, else the local daemon's token file if there is one: a daemon
    bound beyond loopback refuses changes without it, and sending it to one that does
    not need it is harmless."""
    if token := os.environ.get("TIERHOST_TOKEN"):
        return token
    try:
        return (data_dir() / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def run(args: argparse.Namespace) -> int:
    url = (args.url or default_url()).rstrip("/")
    token = _token()
    return anyio.run(serve, url, token, not args.no_start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp_server", description=__doc__)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:
        return 130
