"""The deterministic checks: extraction of code blocks, and each language's check, as tables."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from host.tasks.checks import (
    CHECKERS,
    MAX_BLOCK_CHARS,
    MAX_NESTING,
    CodeBlock,
    check_answer,
    check_block,
    code_of,
    extract_blocks,
    guess_language,
    json_too_deep,
    ruff_binary,
)

FENCE = "```"


def fenced(language: str, code: str) -> str:
    return f"Here you go:\n{FENCE}{language}\n{code}{FENCE}\nDone.\n"


def findings(text: str) -> list[dict[str, Any]]:
    return check_answer(text).findings_json()


# -- extraction ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (fenced("python", "x = 1\n"), [("python", "x = 1\n", True)]),
        (fenced("py", "x = 1\n"), [("python", "x = 1\n", True)]),
        (fenced("yml", "a: 1\n"), [("yaml", "a: 1\n", True)]),
        (fenced("sh", "echo hi\n"), [("bash", "echo hi\n", True)]),
        (fenced("", "def f():\n    return 1\n"), [("python", "def f():\n    return 1\n", True)]),
        (fenced("", '{"a": [1, 2]}\n'), [("json", '{"a": [1, 2]}\n', True)]),
        (fenced("rust", "fn main() {}\n"), [("rust", "fn main() {}\n", True)]),
        ("~~~toml\n[a]\nb = 1\n~~~\n", [("toml", "[a]\nb = 1\n", True)]),
        ("````md\n```python\nx\n```\n````\n", [("md", "```python\nx\n```\n", True)]),
        (f"{FENCE}python\ndef f(:\n", [("python", "def f(:\n", False)]),
        ("import os\nprint(os.sep)", [("python", "import os\nprint(os.sep)\n", True)]),
        ("Just words, no code.", [("", "Just words, no code.\n", True)]),
        ("", []),
        (
            f"{FENCE}json\n{{}}\n{FENCE}\ntext\n{FENCE}bash\nls\n{FENCE}\n",
            [("json", "{}\n", True), ("bash", "ls\n", True)],
        ),
    ],
)
def test_extract_blocks(text: str, expected: list[tuple[str, str, bool]]) -> None:
    blocks = extract_blocks(text)
    assert [(b.language, b.code, b.closed) for b in blocks] == expected


@pytest.mark.parametrize(
    ("code", "language"),
    [
        ("#!/bin/bash\necho hi\n", "bash"),
        ("#!/usr/bin/env python3\nprint(1)\n", "python"),
        ("from a.b import c\n", "python"),
        ("class A:\n    pass\n", "python"),
        ("[1, 2, 3]", "json"),
        ("[tool.x]\nname = 'y'\n", "toml"),
        ("[not json\n", ""),
        ("hello world", ""),
        ("", ""),
    ],
)
def test_guess_language(code: str, language: str) -> None:
    assert guess_language(code) == language


def test_code_of_joins_blocks_a_blank_line_apart() -> None:
    blocks = [CodeBlock("a = 1\n", "python", True, True), CodeBlock("b = 2", "python", True, True)]
    assert code_of(blocks) == "a = 1\n\nb = 2\n"


# -- structure -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [(1, "the answer is empty", "structure")]),
        (f"{FENCE}python\n{FENCE}\n", [(1, "the code block is empty", "structure")]),
        (
            f"{FENCE}python\nx = 1\ny = (\n",
            [(2, "the code block is never closed: the answer looks truncated", "structure")],
        ),
    ],
)
def test_structure_failures(text: str, expected: list[tuple[int, str, str]]) -> None:
    report = check_answer(text)
    assert not report.passed
    assert [(f["line"], f["message"], f["source"]) for f in report.findings_json()] == expected


def test_a_truncated_block_is_not_also_reported_as_a_syntax_error() -> None:
    sources = {f["source"] for f in findings(f"{FENCE}python\ndef f(:\n")}
    assert sources == {"structure"}


# -- each language ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "code", "line", "source"),
    [
        ("python", "def f(:\n    pass\n", 1, "ast"),
        ("python", "x = 1\nif x\n    y = 2\n", 2, "ast"),
        ("json", '{\n  "a": 1,\n}\n', 3, "json"),
        ("toml", "[a]\nb = \n", 2, "toml"),
        ("yaml", "a: 1\n  b: 2\n", 2, "yaml"),
        ("bash", "echo hi\nif true; then\n  echo x\n", 4, "bash"),
        ("bash", "echo (\n", 1, "bash"),
    ],
)
def test_a_broken_block_fails_with_its_line(
    language: str, code: str, line: int, source: str
) -> None:
    if source == "bash" and shutil.which("bash") is None:
        pytest.skip("no bash")
    report = check_answer(fenced(language, code))
    assert not report.passed
    errors = [f for f in report.findings_json() if f["severity"] == "error"]
    assert [(f["line"], f["source"], f["block"]) for f in errors] == [(line, source, 0)]
    assert all(f["message"] for f in errors)
    assert report.errors() and f"line {line}" in report.errors()[0]


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "def add(a: int, b: int) -> int:\n    return a + b\n"),
        ("json", '{"a": [1, 2, {"b": null}]}\n'),
        ("toml", '[tool]\nname = "x"\nlist = [1, 2]\n'),
        ("yaml", "a: 1\nb:\n  - x\n  - y\n"),
        ("bash", 'for f in *; do\n  echo "$f"\ndone\n'),
        ("rust", 'fn main() { println!("hi"); }\n'),
        ("", "Some prose the validator model will judge.\n"),
    ],
)
def test_a_good_block_passes(language: str, code: str) -> None:
    report = check_answer(fenced(language, code))
    assert report.passed, report.findings_json()
    assert report.findings_json() == []


@pytest.mark.skipif(ruff_binary() is None, reason="ruff is not installed")
def test_ruff_findings_are_warnings_with_lines_unless_the_code_cannot_run() -> None:
    code = "import os\n\n\ndef f():\n    return undefined_name\n"
    report = check_answer(fenced("python", code))
    assert report.passed  # unused import and undefined name: the validator weighs them
    found = {(f["line"], f["message"].split(":")[0], f["severity"]) for f in findings(code)}
    assert found == {(1, "F401", "warning"), (5, "F821", "warning")}
    assert any("F821" in w and w.startswith("line 5") for w in report.warnings())

    broken = "def f():\n    return\nreturn 1\n"  # F706: return outside a function
    report = check_answer(fenced("python", broken))
    assert not report.passed
    assert [(f["line"], f["source"]) for f in report.findings_json()] == [(3, "ruff")]


def test_a_missing_tool_is_skipped_with_a_reason_not_failed() -> None:
    def no_tool(code: str) -> tuple[list[Any], list[str]]:
        return [], ["ruff: not installed"]

    block = CodeBlock("x = 1\n", "python", True, True)
    report = check_block(block, {**CHECKERS, "python": no_tool})
    assert report.passed and report.skipped == ("ruff: not installed",)


def test_one_bad_block_of_several_is_pointed_at_by_its_index() -> None:
    text = f"{FENCE}json\n{{}}\n{FENCE}\n{FENCE}python\ndef f(:\n{FENCE}\n"
    report = check_answer(text)
    assert not report.passed
    assert [(f["block"], f["line"]) for f in report.findings_json()] == [(1, 1)]
    assert report.errors()[0].startswith("block 2, line 1:")


# -- the checks are total: any text gets a report, never an exception (issue 17) ------------

DEEP = 10_000


@pytest.mark.parametrize(
    ("text", "source", "message"),
    [
        (fenced("json", "[" * DEEP + "]" * DEEP + "\n"), "json", "JSON nested deeper than 200"),
        (fenced("json", '{"a": ' * DEEP + "1" + "}" * DEEP + "\n"), "json", "nested deeper"),
        ("[" * DEEP + "]" * DEEP, "json", "JSON nested deeper than 200"),  # unlabelled
        (fenced("toml", "a = " + "[" * DEEP + "]" * DEEP + "\n"), "toml", "nested too deeply"),
        (fenced("yaml", "a: " + "[" * DEEP + "]" * DEEP + "\n"), "yaml", "nested too deeply"),
        (fenced("python", "x = 1" + " + 1" * 100_000 + "\n"), "ast", "nested too deeply"),
        (fenced("python", "x = " + "-" * 100_000 + "1\n"), "ast", "too complex"),
        (fenced("python", "x = " + "a." * 100_000 + "b\n"), "ast", "nested too deeply"),
    ],
)
def test_a_document_nested_too_deeply_is_an_error_finding(
    text: str, source: str, message: str
) -> None:
    if source == "yaml":
        pytest.importorskip("yaml")
    report = check_answer(text)
    assert not report.passed
    errors = [f for f in report.findings_json() if f["severity"] == "error"]
    assert [f["source"] for f in errors] == [source]
    assert message in errors[0]["message"]


def test_json_nesting_is_counted_outside_strings_only() -> None:
    brackets_in_a_string = '{"a": "' + "[" * 1000 + '\\"' + "{" * 1000 + '"}'
    assert json_too_deep(brackets_in_a_string) is None
    assert check_answer(fenced("json", brackets_in_a_string + "\n")).passed
    at_the_limit = "[" * MAX_NESTING + "]" * MAX_NESTING
    assert json_too_deep(at_the_limit) is None
    assert check_answer(fenced("json", at_the_limit + "\n")).passed
    one_more = "\n[" + at_the_limit + "]"
    assert json_too_deep(one_more) == 1 + MAX_NESTING  # the bracket that opens level 201
    found = check_answer(fenced("json", one_more + "\n")).findings_json()
    assert [f["line"] for f in found] == [2]


def test_a_block_too_long_to_check_is_a_finding_not_a_parse() -> None:
    code = '{"k": "' + "x" * MAX_BLOCK_CHARS + '"}\n'
    report = check_block(CodeBlock(code, "json", True, True))
    assert not report.passed
    assert report.findings[0].source == "structure"
    assert f"at most {MAX_BLOCK_CHARS:,}" in report.findings[0].message


def test_a_check_that_raises_is_skipped_with_the_reason_and_an_overflow_is_a_finding() -> None:
    def broken(code: str) -> tuple[list[Any], list[str]]:
        raise ValueError("a bug in a checker")

    def overflowing(code: str) -> tuple[list[Any], list[str]]:
        raise RecursionError("maximum recursion depth exceeded")

    block = CodeBlock("x = 1\n", "python", True, True)
    skipped = check_block(block, {"python": broken})
    assert skipped.passed
    assert skipped.skipped == (
        "python: the check failed (ValueError: a bug in a checker); not checked",
    )
    overflowed = check_block(block, {"python": overflowing})
    assert not overflowed.passed
    assert "nested too deeply" in overflowed.findings[0].message


def test_long_lines_and_huge_answers_are_split_in_linear_time() -> None:
    # With backtracking quantifiers these took time quadratic in the line length; at
    # this size they would not end within the test's timeout.
    line = FENCE + " " * 400_000 + "x`"
    assert extract_blocks(line) == [CodeBlock(line + "\n", "", False, True)]
    many = fenced("python", "x = 1\n") * 2_000 + FENCE + "python\n" + "y\n" * 100_000
    blocks = extract_blocks(many)
    assert len(blocks) == 2_001 and not blocks[-1].closed
