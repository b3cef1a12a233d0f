"""A finished task → what the editor shows: a Markdown document, a workspace edit, and
diagnostics. Pure functions of the task (`host.wire.Task`, as `HostClient` hands it over)
and the document's lines, so each case is a table-driven test with no server, no daemon
and no editor.

The client has already checked the task against its model (an answer that does not fit
is a `HostError` there), so a finding here always has its line, message, severity and
source. A task without `patch` or `result` still gives what it can: a document without a
result says so, an implementation without a patch falls back to the answer's code block.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lsprotocol import types

from host.wire import Finding, Task
from lsp import diff

SOURCE = "tierhost"

_FENCE = re.compile(r"^(`{3,}|~{3,})[^\n]*\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)

_SEVERITY: dict[Literal["error", "warning"], types.DiagnosticSeverity] = {
    "error": types.DiagnosticSeverity.Error,
    "warning": types.DiagnosticSeverity.Warning,
}
"""Keyed by `Finding.severity`'s names: a severity added there fails the type check here."""

_TITLES = {
    "tierhost.plan": "Plan",
    "tierhost.design": "Design",
    "tierhost.review": "Review",
    "tierhost.explain": "Explanation",
    "tierhost.implement": "Implementation",
}


# -- documents -----------------------------------------------------------------------


def task_link(url: str, task_id: str) -> str:
    """The task in the host's API: what a diagnostic and a document link to."""
    return f"{url.rstrip('/')}/api/tasks/{task_id}"


def markdown(
    command: str,
    task: Task,
    *,
    source: str,
    lines: tuple[int, int] | None,
    url: str,
) -> str:
    """The Markdown a plan, design, review or explanation opens as."""
    task_id = task.id
    title = _TITLES.get(command, command)
    where = f"`{source}`" + (f" lines {lines[0]}–{lines[1]}" if lines else "")
    facts = [task.tier or "-", task.model or "-", str(task.status), f"{task.tokens} tokens"]
    if task.validated is not None:
        facts.append("validated" if task.validated else "validation failed")
    out = [
        f"# {title}: {source.rsplit('/', 1)[-1]}",
        "",
        f"> Tierhost task [`{task_id}`]({task_link(url, task_id)}) · " + " · ".join(facts),
        f"> for {where}",
        "",
    ]
    if task.result and task.result.strip():
        out += [task.result.strip(), ""]
    elif task.error:
        out += [f"**The task {task.status}:** {task.error}", ""]
    else:
        out += [f"*No result (task {task.status}).*", ""]
    if task.findings:
        out += ["## Findings", ""]
        for finding in task.findings:
            origin = finding.source or SOURCE
            out.append(f"- line {finding.line} ({finding.severity}, {origin}): {finding.message}")
        out.append("")
    reasons = task.decision.reasons if task.decision else []
    if reasons:
        out += ["## Why this tier", "", *[f"- {r}" for r in reasons], ""]
    return "\n".join(out)


# -- edits ---------------------------------------------------------------------------


def code_block(result: str) -> str:
    """The code of an answer: its first fenced block, else the whole answer (trimmed)."""
    match = _FENCE.search(result)
    if match:
        return match.group(2)
    return result.strip("\n") + "\n"


def _fit(code: str, selection: types.Range, lines: Sequence[str]) -> str:
    """Line ends that fit the place: whole lines keep a final newline, a part of a line
    none."""
    whole_lines = selection.start.character == 0 and (
        selection.end.character == 0 or selection.end.line >= len(lines)
    )
    code = code.rstrip("\n")
    return code + "\n" if whole_lines else code


def whole_document(lines: Sequence[str], units: diff.Units = diff.utf16_units) -> types.Range:
    if not lines:
        return types.Range(start=types.Position(0, 0), end=types.Position(0, 0))
    last = lines[-1]
    if last.endswith(("\n", "\r")):
        end = types.Position(line=len(lines), character=0)
    else:
        end = types.Position(line=len(lines) - 1, character=units(last))
    return types.Range(start=types.Position(0, 0), end=end)


@dataclass(frozen=True)
class Implementation:
    """The edit to offer, and where it came from (`patch` or `code block`) and why."""

    edit: types.WorkspaceEdit
    origin: str
    note: str = ""


def workspace_edit(
    uri: str, version: int | None, edits: list[types.TextEdit], versioned: bool
) -> types.WorkspaceEdit:
    """A versioned `documentChanges` edit when the client takes one (it refuses to apply
    to a document that changed meanwhile), else plain `changes`."""
    if versioned:
        document = types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version)
        return types.WorkspaceEdit(
            document_changes=[types.TextDocumentEdit(text_document=document, edits=list(edits))]
        )
    return types.WorkspaceEdit(changes={uri: list(edits)})


def implementation(
    task: Task,
    *,
    uri: str,
    path: str,
    version: int | None,
    lines: Sequence[str],
    selection: types.Range | None,
    versioned: bool = True,
    units: diff.Units = diff.utf16_units,
) -> Implementation:
    """The edit for a finished implementation: the host's `patch` when it sent one that
    fits the document, else the answer's code block in place of the selection (no
    selection: in place of the whole document)."""
    note = ""
    if task.patch and task.patch.strip():
        try:
            edits = diff.to_edits(diff.parse(task.patch, path), lines, units)
            return Implementation(workspace_edit(uri, version, edits, versioned), "patch")
        except diff.PatchError as exc:
            note = f"the host's patch did not apply ({exc}); using the code block instead"
    if not task.result or not task.result.strip():
        raise ValueError(f"task {task.id} has no result to turn into an edit")
    target = selection or whole_document(lines, units)
    text = _fit(code_block(task.result), target, lines)
    edit = types.TextEdit(range=target, new_text=text)
    return Implementation(workspace_edit(uri, version, [edit], versioned), "code block", note)


# -- diagnostics ---------------------------------------------------------------------


def diagnostics(
    findings: Sequence[Finding],
    *,
    task_id: str,
    url: str,
    lines: Sequence[str],
    line_offset: int = 0,
    units: diff.Units = diff.utf16_units,
) -> list[types.Diagnostic]:
    """One diagnostic per finding, on its line (1-based, plus `line_offset`, clamped to
    the document), each carrying the task id (`code`, a link to the task, and `data`)."""
    out: list[types.Diagnostic] = []
    last_line = max(len(lines) - 1, 0)
    for finding in findings:
        index = min(max(finding.line - 1 + line_offset, 0), last_line)
        text = lines[index].rstrip("\r\n") if index < len(lines) else ""
        indent = len(text) - len(text.lstrip())
        span = types.Range(
            start=types.Position(line=index, character=units(text[:indent])),
            end=types.Position(line=index, character=units(text)),
        )
        data: dict[str, Any] = {"taskId": task_id}
        if finding.block is not None:
            data["block"] = finding.block
        out.append(
            types.Diagnostic(
                range=span,
                message=finding.message,
                severity=_SEVERITY[finding.severity],
                source=f"{SOURCE}/{finding.source}" if finding.source else SOURCE,
                code=task_id,
                code_description=types.CodeDescription(href=task_link(url, task_id)),
                data=data,
            )
        )
    return out
