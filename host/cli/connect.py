"""`tierhost connect claude-code | openclaude | aider | vscode`, and `mcp-config`.

Prints what an editor agent needs to run on the host's tiers, as lines that work when
pasted: the URL of the daemon meant (`--url`, `$TIERHOST_URL`, else the config's bind
and port), its token when it requires one, and its tiers (asked of the daemon when it
answers, else read from the config). With `--write` the keys are merged into the
client's own file, every other key kept, a `.bak` made first, the new file put in place
atomically; a file that cannot be merged safely is refused and left as it was.

The token is only ever read: from `--data-dir`'s token file (the daemon's data dir),
else `$TIERHOST_TOKEN`, else this machine's data dir. A missing one is an error, never
a new token made here that the daemon would not know.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from host.auth import TOKEN_FILE, is_loopback
from host.cli import merging, setups
from host.cli.setups import ClientName, Setup, Target
from host.client import (
    HostClient,
    HostError,
    HostUnreachable,
    find_token,
    is_loopback_url,
    read_token_file,
)
from host.config import load_config
from host.wire import HostStatus
from mcp_server.configs import launch_command

PROBE_TIMEOUT_S = 3.0
"""How long to wait for the daemon's status: a daemon that does not answer by then is
treated as not running, and the config's tiers are used."""


class ConnectError(Exception):
    """What `connect` cannot do, in one line that says how to fix it."""


@dataclass(frozen=True)
class Probe:
    """What the daemon said to one status request."""

    answered: bool
    refused: bool
    """It answered 401: a token is required, and the one sent (if any) is not it."""
    status: HostStatus | None = None


async def probe(url: str, token: str | None) -> Probe:
    async with HostClient(url, token=token or "", timeout=PROBE_TIMEOUT_S) as client:
        try:
            return Probe(True, False, await client.status())
        except HostError as exc:
            return Probe(True, exc.status == 401)
        except HostUnreachable:
            return Probe(False, False)


def daemon_token(directory: Path | None) -> tuple[str, str] | None:
    """The daemon's token and where it was found: the token file of `--data-dir` when
    given (the user named the daemon's data dir), else `find_token`'s usual order."""
    if directory is not None:
        path = directory / TOKEN_FILE
        value = read_token_file(path)
        return (value, str(path)) if value else None
    return find_token()


def tiers_of(status: HostStatus) -> tuple[str, ...]:
    """The daemon's tiers in the order its models are listed (config order)."""
    seen: dict[str, None] = {}
    for model in status.models:
        if model.tier:
            seen.setdefault(model.tier)
    return tuple(seen)


@dataclass(frozen=True)
class Resolved:
    target: Target
    said: tuple[str, ...]
    """What to tell the user on stderr about where the facts came from."""


async def resolve(
    url: str | None,
    config_path: Path | None,
    directory: Path | None,
    *,
    with_token: bool = True,
) -> Resolved:
    """The daemon a client should use, from the flags, the environment, the config and
    the daemon itself."""
    from mcp_server.http import loopback_url  # the MCP SDK loads only when it is needed

    config = load_config(config_path)
    where = url or os.environ.get("TIERHOST_URL") or ""
    where = (where or loopback_url(config.host.host, config.host.port)).rstrip("/")
    said: list[str] = []
    open_probe = await probe(where, None)
    status = open_probe.status
    if open_probe.answered:
        needed = open_probe.refused
    else:
        # not running now: it will want the token if it is elsewhere or binds beyond loopback
        needed = not is_loopback_url(where) or not is_loopback(config.host.host)
        said.append(
            f"no daemon answers at {where} now; tiers from the config "
            f"({config_path or 'the demo config'})"
        )
    token: str | None = None
    if needed and with_token:
        found = daemon_token(directory)
        if found is None:
            hint = f" or put it in {directory / TOKEN_FILE}" if directory else ""
            raise ConnectError(
                f"the daemon at {where} requires its token and none was found: set "
                f"TIERHOST_TOKEN to what `tierhost token` prints on the daemon's machine, "
                f"pass --data-dir with the daemon's data dir{hint}, or --no-token to leave "
                "it out"
            )
        token, source = found
        if open_probe.refused:
            checked = await probe(where, token)
            if checked.refused:
                raise ConnectError(
                    f"the daemon at {where} refused the token from {source}; use the one "
                    "`tierhost token` prints on the daemon's machine"
                )
            status = checked.status
    elif needed:
        said.append(f"the daemon at {where} requires a token: fill it in where it says tierhost")
    if status is not None:
        tiers = tiers_of(status)
        said.append(f"tiers of the daemon at {where}: {', '.join(tiers) or 'none'}")
    else:
        tiers = tuple(config.tiers)
    command = tuple(launch_command())
    return Resolved(Target(where, token, tiers, command), tuple(said))


# -- writing a client's file -------------------------------------------------------------


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """A complete temp file beside `path`, fsynced, then renamed over it: a reader (the
    client starting meanwhile) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def file_paths(setup: Setup, explicit: Path | None) -> list[Path]:
    """Where each of the setup's files is: `--file` for the first (VS Code's mcp.json
    then sits beside its settings.json), the usual places otherwise."""
    paths = [Path(edit.path).expanduser() for edit in setup.files]
    if explicit is not None and paths:
        paths = [explicit] + [explicit.parent / p.name for p in paths[1:]]
    # a settings file linked from a dotfiles repository stays a link: write its target
    return [p.resolve() if p.is_symlink() else p for p in paths]


@dataclass(frozen=True)
class Planned:
    path: Path
    old: bytes | None
    new: bytes


def plan_writes(setup: Setup, paths: list[Path]) -> list[Planned]:
    """Every file's new content, computed before anything is written: one refusal stops
    them all, so a client is never left half configured."""
    planned = []
    for edit, path in zip(setup.files, paths, strict=True):
        try:
            old = path.read_bytes()
        except FileNotFoundError:
            old = None
        except OSError as exc:
            raise ConnectError(f"cannot read {path}: {exc.strerror}") from None
        try:
            text = (old or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise ConnectError(f"{path}: not UTF-8 text; nothing was written") from None
        try:
            if edit.format == "json":
                merged = merging.merge_json(text, edit.patch, str(path))
            else:
                merged = merging.merge_yaml(text, edit.patch, str(path))
        except merging.MergeRefused as exc:
            raise ConnectError(str(exc)) from None
        planned.append(Planned(path, old, merged.encode("utf-8")))
    return planned


def carry_out(planned: list[Planned], secret: bool) -> list[str]:
    """Write each file (its `.bak` first); what was done, one line each."""
    said = []
    for item in planned:
        if item.old == item.new:
            said.append(f"{item.path} already has these settings; left as it was")
            continue
        if item.old is None:
            write_atomically(item.path, item.new, 0o600 if secret else 0o644)
            said.append(f"wrote {item.path}")
            continue
        mode = stat.S_IMODE(item.path.stat().st_mode)
        write_atomically(backup_path(item.path), item.old, mode)
        write_atomically(item.path, item.new, mode)
        said.append(f"merged into {item.path} (the old one is {backup_path(item.path)})")
    return said


# -- the commands ------------------------------------------------------------------------


def _say(lines: tuple[str, ...] | list[str]) -> None:
    for line in lines:
        print(f"tierhost: {line}", file=sys.stderr)


def cmd_connect(args: argparse.Namespace) -> int:
    if args.file is not None and not args.write:
        raise ConnectError("--file names the file --write merges into: add --write")
    try:
        resolved = asyncio.run(
            resolve(args.url, args.config, args.data_dir, with_token=not args.no_token)
        )
        setup = setups.setup_for(cast(ClientName, args.client), resolved.target)
    except setups.NoTiers as exc:
        raise ConnectError(str(exc)) from None
    _say(resolved.said)
    written: tuple[str, ...] = ()
    if args.write:
        paths = file_paths(setup, args.file)
        _say(carry_out(plan_writes(setup, paths), resolved.target.token is not None))
        written = tuple(edit.path for edit in setup.files)
    if args.json:
        print(json.dumps(setups.document(setup, resolved.target), indent=2))
    else:
        print(setups.render(setup, written=written), end="")
    return 0


def cmd_mcp_config(args: argparse.Namespace) -> int:
    """`tierhost mcp-config CLIENT`: the MCP part of `connect`, as it always printed it."""
    from mcp_server.configs import snippet, where

    resolved = asyncio.run(
        resolve(args.url, args.config, args.data_dir, with_token=not args.no_token)
    )
    target = resolved.target
    document = snippet(
        args.client, target.url, http=args.http, token=target.token, command=list(target.command)
    )
    print(f"tierhost: {where(args.client)}", file=sys.stderr)
    print(json.dumps(document, indent=2))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="daemon URL (default: $TIERHOST_URL, else the config's host and port)"
    )
    parser.add_argument(
        "--config", type=Path, help="the daemon's tierhost.toml (default: the demo config)"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="the daemon's data dir, where its token is (read only)"
    )
    parser.add_argument("--no-token", action="store_true", help="leave the token out")


def add_commands(sub: Any) -> None:
    """Register `connect` and its alias `mcp-config` on the main parser's subparsers."""
    from mcp_server.configs import CLIENTS

    connect = sub.add_parser(
        "connect",
        help="print (or --write) what Claude Code, OpenClaude, aider or VS Code needs to "
        "run on the host's tiers",
    )
    connect.add_argument("client", choices=setups.CLIENTS)
    _common(connect)
    connect.add_argument("--json", action="store_true", help="print JSON for scripts")
    connect.add_argument(
        "--write",
        action="store_true",
        help="merge into the client's file (keeps other keys, writes a .bak first)",
    )
    connect.add_argument(
        "--file",
        type=Path,
        help="the file --write merges into (default: the client's usual one; for vscode "
        "the settings.json, with mcp.json beside it)",
    )
    connect.set_defaults(func=cmd_connect)

    config = sub.add_parser(
        "mcp-config",
        help="print the JSON that registers Tierhost's MCP tools in a client (see connect)",
    )
    config.add_argument("client", choices=CLIENTS)
    _common(config)
    config.add_argument(
        "--http", action="store_true", help="connect to the daemon's /mcp instead of stdio"
    )
    config.set_defaults(func=cmd_mcp_config)
