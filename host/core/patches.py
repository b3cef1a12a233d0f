"""The commit step's output: an accepted result offered as a unified diff, never written.

The host does not touch the user's files; the editor does (the LSP bridge turns this
patch into a workspace edit, a script can `git apply` it). Pure functions only.
"""

from __future__ import annotations

import difflib
from typing import Any

NO_NEWLINE = "\\ No newline at end of file\n"


def unified_diff(path: str, old: str, new: str) -> str | None:
    """A `git apply`-able diff that turns `old` into `new` for `path`; None when equal.

    difflib does not know "no newline at end of file": it copies a last line without a
    newline as it is, so every diff line that does not end in one gets git's marker.
    """
    if old == new:
        return None
    diff = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"a/{path}" if old else "/dev/null",
        tofile=f"b/{path}",
    )
    return "".join(line if line.endswith("\n") else line + "\n" + NO_NEWLINE for line in diff)


def target_content(context: dict[str, Any]) -> tuple[str, str] | None:
    """The target file's path and its current text, when the task's context has both."""
    target = context.get("target_file")
    if not target:
        return None
    for item in context.get("files", []):
        if item.get("path") == target:
            return str(target), str(item.get("content", ""))
    return None
