"""Unified diffs → LSP text edits, checked against the document the editor has now.

The host offers an implementation as a unified diff (`patch`) when it knows the target
file. The editor may have changed the file since, so every hunk's old lines are looked
up in the current text (at the stated line, else the nearest exact match); a hunk that
no longer fits raises `PatchError` instead of editing the wrong lines. Pure.

Columns are UTF-16 code units, the LSP default and what VS Code uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lsprotocol import types

Units = Callable[[str], int]

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class PatchError(ValueError):
    """The diff is malformed, or does not fit the document as it is now."""


@dataclass
class Hunk:
    """One `@@` block: where it starts in the old file (1-based) and both sides' lines."""

    old_start: int
    old: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    old_no_eol: bool = False
    new_no_eol: bool = False


def _section_path(header: str) -> str:
    path = header[4:].split("\t", 1)[0].strip()
    return path[2:] if path.startswith(("a/", "b/")) else path


def parse(patch: str, path: str | None = None) -> list[Hunk]:
    """The hunks of `patch` for `path` (a diff of several files: the one that matches)."""
    sections: list[tuple[str, list[Hunk]]] = []
    current: list[Hunk] | None = None
    hunk: Hunk | None = None
    old_left = new_left = 0
    last_side = ""
    for line in patch.splitlines():
        if line.startswith("\\") and hunk is not None:
            # "\ No newline at end of file" belongs to the line just before it
            hunk.old_no_eol |= last_side in ("old", "both")
            hunk.new_no_eol |= last_side in ("new", "both")
            continue
        if hunk is not None and (old_left > 0 or new_left > 0):
            tag, body = (line[:1], line[1:]) if line else (" ", "")
            if tag == " ":
                hunk.old.append(body)
                hunk.new.append(body)
                old_left, new_left, last_side = old_left - 1, new_left - 1, "both"
            elif tag == "-":
                hunk.old.append(body)
                old_left, last_side = old_left - 1, "old"
            elif tag == "+":
                hunk.new.append(body)
                new_left, last_side = new_left - 1, "new"
            else:
                raise PatchError(f"unexpected line inside a hunk: {line!r}")
            continue
        if line.startswith("+++ "):
            current = []
            sections.append((_section_path(line), current))
            hunk = None
            continue
        match = _HUNK.match(line)
        if match:
            if current is None:  # a bare hunk list without file headers
                current = []
                sections.append(("", current))
            old_start = int(match.group(1))
            old_left = int(match.group(2) or "1")
            new_left = int(match.group(4) or "1")
            hunk = Hunk(old_start)
            current.append(hunk)
            continue
        hunk = None  # `diff --git`, `index`, `---` lines and prose between files
    if hunk is not None and (old_left > 0 or new_left > 0):
        raise PatchError("the diff ends in the middle of a hunk")
    if not sections or not any(hunks for _, hunks in sections):
        raise PatchError("the patch holds no hunks")
    if path is not None and len(sections) > 1:
        wanted = path.replace("\\", "/")
        for name, hunks in sections:
            if name and (wanted.endswith(name) or name.endswith(wanted)):
                return hunks
    return sections[0][1]


def _matches(lines: Sequence[str], at: int, old: list[str]) -> bool:
    if at < 0 or at + len(old) > len(lines):
        return False
    return all(lines[at + i].rstrip("\r\n") == old[i] for i in range(len(old)))


def _locate(lines: Sequence[str], hunk: Hunk) -> int:
    """0-based line where the hunk's old lines are, preferring the stated place."""
    stated = hunk.old_start - 1 if hunk.old else hunk.old_start
    if _matches(lines, stated, hunk.old):
        return stated
    for distance in range(1, len(lines) + 1):
        for at in (stated - distance, stated + distance):
            if _matches(lines, at, hunk.old):
                return at
    first = hunk.old[0] if hunk.old else ""
    raise PatchError(
        f"the hunk at line {hunk.old_start} does not match the document any more "
        f"(expected {first!r} there); the file changed since the task was submitted"
    )


def _position_after(lines: Sequence[str], count: int, units: Units) -> types.Position:
    """The position just past the first `count` lines (the end of the text if that is EOF
    without a final newline)."""
    if count < len(lines) or not lines or lines[-1].endswith(("\n", "\r")):
        return types.Position(line=count, character=0)
    last = lines[-1]
    return types.Position(line=len(lines) - 1, character=units(last))


def to_edits(
    hunks: Sequence[Hunk], lines: Sequence[str], units: Units = utf16_units
) -> list[types.TextEdit]:
    """One edit per hunk, replacing its old lines by its new ones. `lines` keep their ends."""
    eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    edits: list[types.TextEdit] = []
    previous_end = -1
    for hunk in hunks:
        at = _locate(lines, hunk)
        if at < previous_end:
            raise PatchError(f"the hunk at line {hunk.old_start} overlaps the one before it")
        previous_end = at + len(hunk.old)
        text = "".join(line + eol for line in hunk.new)
        reaches_eof = previous_end == len(lines)
        unterminated = bool(lines) and not lines[-1].endswith(("\n", "\r"))
        # no markers at all: keep the file's own "no newline at the end"
        keep_style = reaches_eof and unterminated and not hunk.old_no_eol
        if hunk.new and (hunk.new_no_eol or keep_style):
            text = text[: -len(eol)]
        start = types.Position(line=at, character=0)
        if at == len(lines) and unterminated:
            # appending after a last line without a newline: that line needs one first
            start = _position_after(lines, at, units)
            text = eol + text
        end = _position_after(lines, previous_end, units)
        edits.append(types.TextEdit(range=types.Range(start=start, end=end), new_text=text))
    return edits


def _offset(lines: Sequence[str], position: types.Position) -> int:
    """Code-point offset of an LSP (UTF-16) position in the joined lines."""
    offset = sum(len(line) for line in lines[: position.line])
    if position.line >= len(lines):
        return offset
    units = 0
    for index, char in enumerate(lines[position.line]):
        if units >= position.character or char in "\r\n":
            return offset + index
        units += 2 if ord(char) > 0xFFFF else 1
    return offset + len(lines[position.line])


def apply(text: str, edits: Sequence[types.TextEdit]) -> str:
    """The text after `edits` (non-overlapping), as an editor would apply them."""
    lines = text.splitlines(keepends=True)
    spans = sorted(
        ((_offset(lines, e.range.start), _offset(lines, e.range.end), e.new_text) for e in edits),
        reverse=True,
    )
    for start, end, new in spans:
        text = text[:start] + new + text[end:]
    return text
