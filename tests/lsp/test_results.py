"""Task results → diagnostics, edits and Markdown: pure functions, driven by tables."""

from __future__ import annotations

from typing import Any

import pytest
from lsprotocol import types
from pydantic import ValidationError

from host.wire import Finding, Task
from lsp import diff, results

URL = "http://127.0.0.1:8788"
SOURCE = "def add(a, b):\n    return a + b\n\n\ndef mean(values):\n    pass\n"
LINES = SOURCE.splitlines(keepends=True)


def pos(line: int, character: int) -> types.Position:
    return types.Position(line=line, character=character)


def span(a: int, b: int, c: int, d: int) -> types.Range:
    return types.Range(start=pos(a, b), end=pos(c, d))


# -- findings → diagnostics ----------------------------------------------------------


@pytest.mark.parametrize(
    ("finding", "offset", "expected_range", "severity", "source"),
    [
        # line 2 of the file, from its indent to its end
        (
            {"line": 2, "message": "m", "severity": "error", "source": "ast"},
            0,
            span(1, 4, 1, 16),
            types.DiagnosticSeverity.Error,
            "tierhost/ast",
        ),
        (
            {"line": 1, "message": "m", "severity": "warning", "source": "ruff"},
            0,
            span(0, 0, 0, 14),
            types.DiagnosticSeverity.Warning,
            "tierhost/ruff",
        ),
        # lines of generated code placed at line 4 (0-based) of the file
        (
            {"line": 2, "message": "m", "severity": "error", "source": "validator"},
            4,
            span(5, 4, 5, 8),
            types.DiagnosticSeverity.Error,
            "tierhost/validator",
        ),
        # past the end: clamped to the last line; before the start: the first
        (
            {"line": 99, "message": "m", "severity": "warning", "source": "x"},
            0,
            span(5, 4, 5, 8),
            types.DiagnosticSeverity.Warning,
            "tierhost/x",
        ),
        (
            {"line": 0, "message": "m", "severity": "error", "source": "x"},
            0,
            span(0, 0, 0, 14),
            types.DiagnosticSeverity.Error,
            "tierhost/x",
        ),
        # an empty line: an empty range at its start
        (
            {"line": 3, "message": "m", "severity": "error", "source": "x"},
            0,
            span(2, 0, 2, 0),
            types.DiagnosticSeverity.Error,
            "tierhost/x",
        ),
        # an empty source → plain tierhost
        (
            {"line": 1, "message": "m", "severity": "warning", "source": ""},
            0,
            span(0, 0, 0, 14),
            types.DiagnosticSeverity.Warning,
            "tierhost",
        ),
    ],
)
def test_a_finding_becomes_a_diagnostic(
    finding: dict[str, Any],
    offset: int,
    expected_range: types.Range,
    severity: types.DiagnosticSeverity,
    source: str,
) -> None:
    (diagnostic,) = results.diagnostics(
        [Finding.model_validate(finding)], task_id="t-42", url=URL, lines=LINES, line_offset=offset
    )
    assert diagnostic.range == expected_range
    assert diagnostic.severity == severity
    assert diagnostic.source == source
    assert diagnostic.message == "m"


def test_each_diagnostic_links_its_task() -> None:
    findings = [Finding(line=2, message="bad", severity="error", source="ast", block=1)]
    (diagnostic,) = results.diagnostics(findings, task_id="t-42", url=URL + "/", lines=LINES)
    assert diagnostic.code == "t-42"
    assert diagnostic.code_description == types.CodeDescription(href=f"{URL}/api/tasks/t-42")
    assert diagnostic.data == {"taskId": "t-42", "block": 1}


def test_a_finding_without_a_block_carries_only_the_task_id() -> None:
    findings = [Finding(line=2, message="bad", severity="error", source="ast")]
    (diagnostic,) = results.diagnostics(findings, task_id="t-42", url=URL, lines=LINES)
    assert diagnostic.data == {"taskId": "t-42"}


@pytest.mark.parametrize(
    "findings",
    [
        None,
        "line 2: bad",
        ["line 2: bad"],
        [{"message": "no line", "severity": "error", "source": "x"}],
        [{"line": "two", "message": "m", "severity": "error", "source": "x"}],
        [{"line": 2, "severity": "error", "source": "x"}],
        [{"line": 2, "message": "m", "severity": "fatal", "source": "x"}],
        [{"line": 2, "message": "m", "severity": "error"}],
    ],
)
def test_malformed_findings_are_refused_before_the_bridge_sees_them(findings: Any) -> None:
    """`HostClient` validates the task against `host.wire.Task` (a refusal is its
    `bad_response`), so `results` is never handed findings like these."""
    with pytest.raises(ValidationError, match="findings"):
        Task.model_validate({"id": "t", "status": "done", "findings": findings})


def test_an_empty_document_still_gets_its_diagnostics() -> None:
    (diagnostic,) = results.diagnostics(
        [Finding(line=3, message="m", severity="error", source="x")],
        task_id="t",
        url=URL,
        lines=[],
    )
    assert diagnostic.range == span(0, 0, 0, 0)


# -- code blocks and edits -----------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ("Here:\n```python\nx = 1\n```\nDone.", "x = 1\n"),
        ("```\na\nb\n```", "a\nb\n"),
        ("~~~py\nz()\n~~~", "z()\n"),
        ("first\n```py\none\n```\nthen\n```py\ntwo\n```", "one\n"),
        ("\n\nreturn sum(values) / len(values)\n\n", "return sum(values) / len(values)\n"),
    ],
)
def test_code_block(answer: str, code: str) -> None:
    assert results.code_block(answer) == code


def _only_edit(implementation: results.Implementation) -> types.TextEdit:
    changes = implementation.edit.document_changes
    assert changes is not None
    (change,) = changes
    assert isinstance(change, types.TextDocumentEdit)
    (edit,) = change.edits
    assert isinstance(edit, types.TextEdit)
    return edit


@pytest.mark.parametrize(
    ("selection", "answer", "expected"),
    [
        # whole lines selected: replaced, the line after stays on its own line
        (
            span(5, 0, 6, 0),
            "```py\n    return sum(values) / len(values)\n```",
            "def add(a, b):\n    return a + b\n\n\ndef mean(values):\n"
            "    return sum(values) / len(values)\n",
        ),
        # part of a line: no newline is added
        (
            span(5, 4, 5, 8),
            "```\nreturn 0\n```",
            "def add(a, b):\n    return a + b\n\n\ndef mean(values):\n    return 0\n",
        ),
        # no selection: the whole document
        (None, "```py\nprint('hi')\n```", "print('hi')\n"),
    ],
)
def test_implementation_replaces_the_selection_with_the_code(
    selection: types.Range | None, answer: str, expected: str
) -> None:
    task = Task.model_validate({"id": "t-1", "status": "done", "result": answer})
    offer = results.implementation(
        task, uri="file:///s.py", path="s.py", version=3, lines=LINES, selection=selection
    )
    assert offer.origin == "code block" and offer.note == ""
    assert diff.apply(SOURCE, [_only_edit(offer)]) == expected
    changes = offer.edit.document_changes
    assert changes is not None
    change = changes[0]
    assert isinstance(change, types.TextDocumentEdit)
    assert change.text_document.uri == "file:///s.py" and change.text_document.version == 3


def test_implementation_prefers_the_hosts_patch() -> None:
    patch = "--- a/s.py\n+++ b/s.py\n@@ -6 +6 @@\n-    pass\n+    return 0\n"
    task = Task.model_validate(
        {"id": "t-1", "status": "done", "result": "```\nignored\n```", "patch": patch}
    )
    offer = results.implementation(
        task, uri="file:///s.py", path="s.py", version=1, lines=LINES, selection=None
    )
    assert offer.origin == "patch"
    assert diff.apply(SOURCE, [_only_edit(offer)]).endswith("def mean(values):\n    return 0\n")


def test_a_patch_that_no_longer_fits_falls_back_to_the_code_block() -> None:
    patch = "@@ -6 +6 @@\n-    raise NotImplementedError\n+    return 0\n"
    task = Task.model_validate(
        {"id": "t-1", "status": "done", "result": "```\n    return 1\n```", "patch": patch}
    )
    offer = results.implementation(
        task, uri="file:///s.py", path="s.py", version=1, lines=LINES, selection=span(5, 0, 6, 0)
    )
    assert offer.origin == "code block"
    assert "did not apply" in offer.note and "does not match" in offer.note
    assert diff.apply(SOURCE, [_only_edit(offer)]).endswith("    return 1\n")


def test_unversioned_clients_get_plain_changes() -> None:
    task = Task.model_validate({"id": "t-1", "status": "done", "result": "x"})
    offer = results.implementation(
        task,
        uri="file:///s.py",
        path="s.py",
        version=None,
        lines=LINES,
        selection=None,
        versioned=False,
    )
    assert offer.edit.document_changes is None
    assert offer.edit.changes is not None and list(offer.edit.changes) == ["file:///s.py"]


@pytest.mark.parametrize("result", [None, "", "   \n"])
def test_no_result_no_edit(result: str | None) -> None:
    with pytest.raises(ValueError, match="t-9 has no result"):
        results.implementation(
            Task.model_validate({"id": "t-9", "status": "done", "result": result}),
            uri="u:x",
            path="x",
            version=1,
            lines=LINES,
            selection=None,
        )


def test_whole_document_range() -> None:
    assert results.whole_document(["a\n", "b\n"]) == span(0, 0, 2, 0)
    assert results.whole_document(["a\n", "b😀"]) == span(0, 0, 1, 3)
    assert results.whole_document([]) == span(0, 0, 0, 0)


# -- documents -----------------------------------------------------------------------


def test_markdown_of_a_plan() -> None:
    task = Task.model_validate(
        {
            "id": "t-7",
            "status": "done",
            "tier": "architect",
            "model": "architect-demo",
            "tokens": 12,
            "validated": True,
            "result": "1. Do it.\n",
            "findings": [{"line": 3, "message": "unused", "severity": "warning", "source": "ruff"}],
            "decision": {"reasons": ["routing table: planning → architect"]},
        }
    )
    text = results.markdown("tierhost.plan", task, source="src/s.py", lines=(5, 8), url=URL)
    assert text.startswith("# Plan: s.py\n")
    assert f"[`t-7`]({URL}/api/tasks/t-7)" in text
    assert "architect · architect-demo · done · 12 tokens · validated" in text
    assert "for `src/s.py` lines 5–8" in text
    assert "1. Do it." in text
    assert "- line 3 (warning, ruff): unused" in text
    assert "- routing table: planning → architect" in text


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (
            {"id": "t", "status": "failed", "error": "model crashed"},
            "**The task failed:** model crashed",
        ),
        ({"id": "t", "status": "done", "result": ""}, "*No result (task done).*"),
    ],
)
def test_markdown_without_a_result(task: dict[str, Any], expected: str) -> None:
    text = results.markdown(
        "tierhost.review", Task.model_validate(task), source="s.py", lines=None, url=URL
    )
    assert expected in text and "for `s.py`\n" in text
