"""`python -m mcp_server` / `tierhost mcp`: the MCP server on stdio.

A thin client of the daemon: it finds (or starts) the daemon, then serves MCP on
stdin/stdout. stdout belongs to the protocol, so everything for people goes to stderr.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from host.client import TokenError, default_url, find_token
from mcp_server.launcher import DaemonStartFailed, ensure_daemon
from mcp_server.server import build_server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="daemon URL (default: $TIERHOST_URL or 127.0.0.1:8788)")
    parser.add_argument("--no-start", action="store_true", help="fail instead of starting a daemon")


async def serve(url: str, start: bool) -> int:
    try:
        outcome = await ensure_daemon(url, start=start)
        print(outcome.describe(), file=sys.stderr, flush=True)
    except DaemonStartFailed as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    # no token given: the server's HostClient finds it (`host.client.find_token`), and
    # names where it came from when the daemon refuses it; `host_status` tells the agent
    # whether this session started the daemon it talks to
    await build_server(url, daemon=outcome.daemon()).run_stdio_async()
    return 0


def run(args: argparse.Namespace) -> int:
    url = (args.url or default_url()).rstrip("/")
    try:
        find_token()  # a token that cannot be sent stops here, not in the first tool call
    except TokenError as exc:
        print(f"tierhost mcp: {exc}", file=sys.stderr, flush=True)
        return 1
    return anyio.run(serve, url, not args.no_start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp_server", description=__doc__)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:
        return 130
