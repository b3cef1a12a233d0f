"""How `tierhost connect --write` merges its keys into a client's own file: pure text in,
text out, so that what is kept and what is refused is tested without touching a file.

A settings file is the user's: every key Tierhost does not set stays as it was. A file
that cannot be read safely (malformed JSON, JSON with comments, which VS Code allows
but a JSON parser cannot keep) is refused rather than rewritten, since rewriting it
would lose what the user wrote. YAML (aider's config) is merged by lines, top-level
`key: value` only, so its comments and every other line survive without a YAML library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from host.cli.setups import yaml_scalar


class MergeRefused(ValueError):
    """The file cannot be merged into without losing something; the message says why."""


def merge_patch(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`current` with `patch`'s keys: a mapping merges one level down (an `env` keeps the
    variables it had, `mcpServers` its other servers), whatever else replaces the value.
    Entries one level down are replaced whole: a server entry that changed from HTTP to
    stdio keeps no stale `headers`."""
    merged = dict(current)
    for key, value in patch.items():
        old = merged.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            merged[key] = {**old, **value}
        else:
            merged[key] = value
    return merged


def merge_json(text: str, patch: Mapping[str, Any], name: str) -> str:
    """The JSON document `text` with `patch` merged in (see `merge_patch`); an empty
    file counts as `{}`. Indented by two spaces, as the clients write their own."""
    if text.strip():
        try:
            current = json.loads(text)
        except ValueError as exc:
            comments = re.search(r"^\s*//|/\*", text, re.MULTILINE)
            why = "it has comments (JSONC)" if comments else f"it is not valid JSON ({exc})"
            raise MergeRefused(
                f"{name}: {why}; nothing was written: merge the printed keys by hand"
            ) from None
        if not isinstance(current, dict):
            raise MergeRefused(
                f"{name}: it holds a JSON {type(current).__name__}, not an object; "
                "nothing was written"
            )
    else:
        current = {}
    return json.dumps(merge_patch(current, patch), indent=2, ensure_ascii=False) + "\n"


_TOP_KEY = re.compile(r"(?P<key>[A-Za-z0-9_][A-Za-z0-9_.\-]*)\s*:(?:\s|$)")


def _key_of(line: str) -> str | None:
    """The key of a top-level `key: value` line, None for anything else."""
    match = _TOP_KEY.match(line)
    return match["key"] if match else None


def _continues(line: str) -> bool:
    """Whether a line belongs to the value of the top-level key above it: indented, a
    `- item` of a block list, or blank (then only if more of the value follows)."""
    return line[:1] in (" ", "\t") or line.startswith("- ") or line.strip() == "-"


def merge_yaml(text: str, options: Mapping[str, Any], name: str) -> str:
    """`text` with each option set: its top-level line (and the block under it, if any)
    replaced where the key is already there, else appended. Comments, blank lines and
    every other key stay as they were; a repeated key is set once (YAML forbids two)."""
    first = next(
        (ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), ""
    )
    if first.lstrip().startswith(("{", "[", "---", "%")) or (first and first[0] in " \t"):
        raise MergeRefused(
            f"{name}: not a plain `key: value` file (flow style, several documents or a "
            "leading indent); nothing was written: merge the printed lines by hand"
        )
    lines = text.splitlines()
    out: list[str] = []
    done: set[str] = set()
    index = 0
    while index < len(lines):
        line = lines[index]
        key = _key_of(line)
        index += 1
        if key is None or key not in options:
            out.append(line)
            continue
        end = index
        while end < len(lines) and (_continues(lines[end]) or not lines[end].strip()):
            end += 1
        while end > index and not lines[end - 1].strip():
            end -= 1  # blank lines after the block are the file's, not the value's
        index = end
        if key not in done:
            out.append(f"{key}: {yaml_scalar(options[key])}")
            done.add(key)
    missing = [key for key in options if key not in done]
    if missing:
        if out and out[-1].strip():
            out.append("")
        out.append("# tierhost connect aider")
        out += [f"{key}: {yaml_scalar(options[key])}" for key in missing]
    return "\n".join(out) + "\n"
