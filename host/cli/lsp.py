"""`tierhost lsp`: the LSP bridge for editors, on stdio (or `--tcp`)."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_lsp(args: argparse.Namespace) -> int:
    from lsp.main import run  # pygls loads only for this command

    return run(args)


def add_commands(sub: Any) -> None:
    """Register `tierhost lsp` on the main parser's subparsers."""
    from lsp.main import add_arguments

    lsp = sub.add_parser(
        "lsp",
        help="serve the LSP bridge on stdio (starts the daemon in the background if none answers)",
    )
    add_arguments(lsp)
    lsp.set_defaults(func=cmd_lsp)
