"""Where the bridge may read and write: inside the workspace folders the editor declared.

Both ends can be hostile: the host names result files through its task ids (a daemon
across the LAN, or one that was tampered with), and anything that speaks LSP names
documents through URIs. So:

- a result file is written only at `<folder>/.tierhost/<kind>-<task id>.md`, only for an
  id of the host's own format, and only if the path, symlinks resolved, is still in that
  folder's `.tierhost/` (a `.tierhost` or a file planted as a symlink out is refused);
- a document is read from disk only when it lies in a workspace folder — after `..`,
  percent-encoding and symlinks are resolved the way the OS resolves them. With workspace
  folders, a `file:` URI outside all of them is refused even when it is open; with none,
  only the text the editor holds for an open document is used (it is what the user
  sees), and nothing is written. A URI of another scheme (`untitled:`) has no disk to
  read: only an open document's text.

Decisions over paths; the only I/O is resolving them (`os.path.realpath` reads links),
so the tests build real symlinks in a temporary folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

FOLDER = ".tierhost"

TASK_ID = re.compile(r"t-[0-9a-f]{17,32}")
"""`host.store.new_task_id`: `t-`, the creation time in ms as 11 (or, after the year
2527, more) hex digits, then 6 random hex digits. Matched whole (`fullmatch`)."""

_KIND = re.compile(r"[a-z]+")


class Refused(ValueError):
    """The bridge will not read or write there; the message says why, for the user."""


def is_task_id(value: object) -> bool:
    return isinstance(value, str) and TASK_ID.fullmatch(value) is not None


def _resolve(path: str) -> Path:
    """The path the OS would open: absolute, `..` and symlinks resolved."""
    try:
        return Path(os.path.realpath(path))
    except (ValueError, OSError) as exc:  # an embedded NUL, a symlink loop
        raise Refused(f"{path!r} is not a usable path ({exc})") from None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def file_path(uri: str) -> str | None:
    """A `file:` URI's local path (percent-decoded, not yet resolved); None for other
    schemes. A file on another host (`file://server/share/…`) or a path with a NUL is
    refused."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "file":
        return None
    if parts.netloc not in ("", "localhost"):
        raise Refused(f"{uri} names a file on another host ({parts.netloc}); not read")
    path = unquote(parts.path)
    if "\0" in path:
        raise Refused(f"{uri} holds a NUL byte; not a file name")
    if re.match(r"/[A-Za-z]:", path):  # file:///C:/… on Windows
        path = path[1:]
    return path


def workspace_folders(uris: Iterable[str | None]) -> list[Path]:
    """The local folders among the editor's workspace folders and root URI, resolved,
    without repeats; URIs of other schemes (a remote workspace) have no local folder."""
    folders: list[Path] = []
    for uri in uris:
        if not uri:
            continue
        try:
            path = file_path(uri)
            if path is None:
                continue
            folder = _resolve(path)
        except Refused:
            continue
        if folder not in folders:
            folders.append(folder)
    return folders


@dataclass(frozen=True)
class Located:
    """Where a document's text may come from and where its results may go."""

    disk: Path | None
    """The resolved file to read when the editor does not hold the text; None: the
    editor's text only."""
    folder: Path | None
    """The workspace folder it belongs to (results go to its `.tierhost/`); None: none."""
    shown: str
    """The name the host sees: the path relative to its folder, else the URI."""


def locate(uri: str, folders: Sequence[Path], is_open: bool) -> Located:
    """Whether the bridge may use a document, and how; Refused says why not."""
    path = file_path(uri)
    if path is None:
        if not is_open:
            raise Refused(
                f"{uri} is not open in the editor; the bridge uses only the text of open "
                "documents and files inside a workspace folder"
            )
        return Located(None, folders[0] if folders else None, uri)
    if not folders:
        if not is_open:
            raise Refused(
                f"{uri}: no workspace folder is open, so the bridge reads no file from "
                "disk; open the file in the editor, or open its folder as the workspace"
            )
        return Located(None, None, path)
    resolved = _resolve(path)
    folder = next((f for f in folders if _inside(resolved, f)), None)
    if folder is None:
        where = ", ".join(str(f) for f in folders)
        raise Refused(
            f"{uri} is outside every workspace folder ({where}); the bridge reads and "
            "sends only files inside them"
        )
    if not is_open and not resolved.is_file():
        kind = "missing" if not resolved.exists() else "not a regular file"
        raise Refused(f"cannot read {uri}: it is not open in the editor and {kind} on disk")
    shown = resolved.relative_to(folder).as_posix() if resolved != folder else resolved.name
    return Located(resolved, folder, shown)


def result_file(folder: Path, command: str, task_id: str) -> Path:
    """Where a command's result is written: `<folder>/.tierhost/<kind>-<task id>.md`,
    checked — the id has the host's format, `.tierhost` resolves to itself (no link
    out), and the file is not a symlink. Refused says why not; nothing is created."""
    kind = command.removeprefix("tierhost.")
    if not _KIND.fullmatch(kind):
        raise Refused(f"{command!r} is not a command whose result is written")
    if not is_task_id(task_id):
        raise Refused(
            f"the host named the task {task_id!r}, which is not a task id of the host's "
            "form (t- and 17 hex digits), so no file is named after it"
        )
    base = _resolve(str(folder))
    directory = _resolve(str(base / FOLDER))
    if directory != base / FOLDER:
        raise Refused(
            f"{base / FOLDER} is a link (to {directory}); results are written only in "
            "the workspace folder's own .tierhost folder"
        )
    target = directory / f"{kind}-{task_id}.md"
    if target.is_symlink():
        raise Refused(f"{target} is a symlink; results are not written through links")
    return target
