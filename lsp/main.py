"""`python -m lsp` / `tierhost lsp`: find (or start) the daemon, then serve LSP.

An editor launches the bridge on its own, so, like `tierhost mcp`, it starts the daemon
in the background when none answers on loopback (`mcp_server.launcher`, shared). If
that fails the bridge still serves: the editor gets the reason as a message, and each
command a clear error, instead of a server that died before saying why.
stdout belongs to the protocol on stdio, so everything for people goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from host.client import TokenError, default_url, discover_token
from mcp_server.launcher import DaemonStartFailed, Outcome, ensure_daemon


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="daemon URL (default: $TIERHOST_URL or 127.0.0.1:8788)")
    parser.add_argument("--no-start", action="store_true", help="fail instead of starting a daemon")
    parser.add_argument("--tcp", action="store_true", help="serve on TCP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1", help="TCP address (with --tcp)")
    parser.add_argument("--port", type=int, default=2087, help="TCP port (with --tcp)")
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )


def describe(outcome: Outcome) -> str:
    if not outcome.started:
        return f"tierhost lsp: using the Tierhost daemon at {outcome.url}"
    return (
        f"tierhost lsp: no daemon answered at {outcome.url}, so I started `tierhost serve` in "
        f"the background (pid {outcome.pid}, log {outcome.log}); healthy after "
        f"{outcome.seconds:.1f} s. It keeps running after this editor session."
    )


def find_daemon(url: str, secret: str | None, start: bool) -> str | None:
    """None when a daemon answers (perhaps one just started), else why not."""
    try:
        outcome = asyncio.run(ensure_daemon(url, token=secret, start=start))
    except DaemonStartFailed as exc:
        return str(exc).replace("tierhost mcp:", "tierhost lsp:", 1)
    print(describe(outcome), file=sys.stderr, flush=True)
    return None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr)
    url = (args.url or default_url()).rstrip("/")
    try:
        secret = discover_token()  # $TIERHOST_TOKEN, else this machine's token file
    except TokenError as exc:
        print(f"tierhost lsp: {exc}", file=sys.stderr, flush=True)
        return 1
    problem = find_daemon(url, secret, not args.no_start)
    if problem:
        print(problem, file=sys.stderr, flush=True)
    from lsp.server import build_server  # pygls loads only when serving, not for `--help`

    server = build_server(url, secret, problem)
    if args.tcp:
        print(f"tierhost lsp: serving LSP on {args.host}:{args.port}", file=sys.stderr, flush=True)
        server.start_tcp(args.host, args.port)
    else:
        server.start_io()
    return server.exit_status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lsp", description=__doc__)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:
        return 130
