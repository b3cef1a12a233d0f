"""Which task each command sends: its type (the host routes the type to a tier), the
instruction, and what the editor knows (the file, the selection, the target of a patch).

The instruction stays short and the code travels in `context`, so the host's own
prompt assembly (and its validators) see the file as a file, not pasted into prose.
Pure: the server passes in the document's text and path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lsp.arguments import TASK_COMMANDS

_INSTRUCTIONS: dict[str, tuple[str, str]] = {
    # command: (with a selection, for the whole file)
    "tierhost.plan": (
        "Write a step-by-step plan, in Markdown, for the work the selected code in {path} "
        "(lines {first}-{last}) needs: goals, numbered steps, risks.",
        "Write a step-by-step plan, in Markdown, for the work {path} needs: goals, "
        "numbered steps, risks.",
    ),
    "tierhost.design": (
        "Propose a design, in Markdown, for the selected code in {path} (lines "
        "{first}-{last}): components, interfaces, data flow, trade-offs.",
        "Propose a design, in Markdown, for {path}: components, interfaces, data flow, trade-offs.",
    ),
    "tierhost.review": (
        "Review the selected code in {path} (lines {first}-{last}). List concrete problems "
        "in Markdown, each starting with `line N:` where N is the line number in the file.",
        "Review {path}. List concrete problems in Markdown, each starting with `line N:` "
        "where N is the line number in the file.",
    ),
    "tierhost.implement": (
        "Implement what the selected code in {path} (lines {first}-{last}) describes. Answer "
        "with only the code that replaces the selection, in one fenced code block.",
        "Implement what {path} describes. Answer with only the complete new file, in one "
        "fenced code block.",
    ),
    "tierhost.explain": (
        "Explain, in Markdown, what the selected code in {path} (lines {first}-{last}) does "
        "and why.",
        "Explain, in Markdown, what {path} does and why.",
    ),
}


@dataclass(frozen=True)
class TaskRequest:
    """The body of `POST /api/tasks`, less the options the caller chose."""

    type: str
    prompt: str
    context: dict[str, Any]


def build(
    command: str,
    *,
    path: str,
    text: str,
    selection: str | None,
    first_line: int | None = None,
    last_line: int | None = None,
) -> TaskRequest:
    """The task for `command` on the document at `path` (1-based lines for the selection)."""
    with_selection, whole_file = _INSTRUCTIONS[command]
    if selection is not None:
        prompt = with_selection.format(path=path, first=first_line, last=last_line)
    else:
        prompt = whole_file.format(path=path)
    context: dict[str, Any] = {"files": [{"path": path, "content": text}]}
    if selection is not None:
        context["selection"] = selection
    if command == "tierhost.implement":
        context["target_file"] = path  # the host offers its answer as a patch to this file
    return TaskRequest(TASK_COMMANDS[command], prompt, context)
