"""The validator model's verdicts: read robustly, and never mistaken for a PASS."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host.core import verdict
from host.core.verdict import SYSTEM_PROMPT, Kind, build_messages, line_of, parse_verdict


@pytest.mark.parametrize(
    "answer",
    [
        "PASS",
        "PASS.",
        "  PASS  \n",
        "**PASS**",
        "`PASS`",
        "Pass",
        "Verdict: PASS",
        "Final verdict: **PASS**",
        "The code parses and handles the empty list.\n\nPASS",
        "> PASS",
    ],
)
def test_pass(answer: str) -> None:
    verdict = parse_verdict(answer)
    assert verdict.kind is Kind.PASS and verdict.passed
    assert verdict.raw == answer


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("FAIL: line 3 divides by zero", "line 3 divides by zero"),
        ("FAIL - `requests.fetch` does not exist", "requests.fetch` does not exist"),
        ("**FAIL**: no handling of None", "no handling of None"),
        ("Verdict: FAIL: off by one in the loop", "off by one in the loop"),
        ("Fail: the loop never ends", "the loop never ends"),
        ("FAIL the loop never ends", "the loop never ends"),
        ("FAIL\nThe function ignores an empty list.", "The function ignores an empty list."),
        ("FAIL", "no reason given"),
        ("Looking at it...\nFAIL: missing return", "missing return"),
        ("FAIL: a\nFAIL: b", "b"),
    ],
)
def test_fail_with_its_reason(answer: str, reason: str) -> None:
    verdict = parse_verdict(answer)
    assert verdict.kind is Kind.FAIL and not verdict.passed
    assert verdict.reason == reason


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        "Looks good to me!",
        "PASS or FAIL",
        "PASS\nFAIL: but the edge case",
        "I would pass this.",
        "pass",
        "PASSED",
        "PASS: mostly fine, but the loop is wrong",
        "This will fail if x is None",
        "fail: lower-case prose",
        "The verdict is PASS because it works",
        "def f():\n    pass\n",
        "PASSWORD = 'x'",
    ],
)
def test_no_verdict_is_never_a_pass(answer: str) -> None:
    verdict = parse_verdict(answer)
    assert verdict.kind is Kind.NONE and not verdict.passed
    assert verdict.reason.startswith("the validator gave no verdict")


def test_a_long_reason_is_cut_and_flattened() -> None:
    verdict = parse_verdict("FAIL: " + "word\t" * 500)
    assert verdict.kind is Kind.FAIL
    assert len(verdict.reason) <= 500 and "\t" not in verdict.reason


@pytest.mark.parametrize(
    ("reason", "line"),
    [("line 7: x is unused", 7), ("on lines 3-4 the loop", 3), ("no line here", 1), ("line 0", 1)],
)
def test_line_of_a_reason(reason: str, line: int) -> None:
    assert line_of(reason) == line


# -- properties: nothing random is a PASS ---------------------------------------------

NO_LINE_BREAKS = st.characters(blacklist_categories=("Cc", "Zl", "Zp", "Cs"))


@given(st.text())
def test_text_without_the_word_pass_is_never_a_pass(text: str) -> None:
    if "pass" in text.lower():
        text = text.lower().replace("pass", "p_ss")
    assert not parse_verdict(text).passed


@given(st.text(), st.text(), st.text(NO_LINE_BREAKS))
def test_any_text_with_a_fail_line_is_never_a_pass(before: str, after: str, reason: str) -> None:
    assert not parse_verdict(f"{before}\nFAIL: {reason}\n{after}").passed


@given(st.text(NO_LINE_BREAKS), st.text(NO_LINE_BREAKS))
def test_pass_inside_a_sentence_is_never_a_pass(left: str, right: str) -> None:
    assert not parse_verdict(f"x{left}PASS{right}").passed  # no verdict line starts with x
    assert not parse_verdict(f"PASS {right}z").passed  # PASS with words after it


@given(st.text(st.characters(blacklist_characters="Ff")))
def test_pass_alone_on_a_line_after_any_text_without_fail_is_a_pass(before: str) -> None:
    assert parse_verdict(f"{before}\nPASS\n").kind is Kind.PASS


# -- the prompt ----------------------------------------------------------------------


def test_the_prompt_is_strict_and_carries_the_task_code_and_notes() -> None:
    messages = build_messages(
        "Write add(a, b).",
        "def add(a, b):\n    return a + b\n",
        language="python",
        notes=["line 1: F401 unused import"],
        accepted="import os\n",
    )
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    for topic in ("Syntax", "Logical consistency", "Invented APIs", "edge cases", "FAIL:"):
        assert topic in SYSTEM_PROMPT
    user = messages[1]["content"]
    assert "Write add(a, b)." in user
    assert "```python\ndef add(a, b):" in user
    assert "- line 1: F401 unused import" in user
    assert "import os" in user and "do not review" in user


# -- linear time on any answer (issue 17) ---------------------------------------------

_BACKTRACKING_LINE = re.compile(
    r"^[\s>#*_`\"'\-]*(?:(?:final\s+)?(?:verdict|answer|result|decision)\s*[:=\-]\s*)?"
    r"[*_`\"']*(?P<word>PASS|Pass|FAIL|Fail)(?![A-Za-z0-9_])[*_`\"']*(?P<rest>.*)$",
    re.IGNORECASE,
)
"""The verdict pattern before its decoration became possessive (quadratic on `***...`)."""


@given(st.text(alphabet=" \t>#*_`\"'-:=PASFILpasfilVerdict final", max_size=40))
def test_the_linear_verdict_pattern_reads_every_line_as_before(line: str) -> None:
    before = _BACKTRACKING_LINE.match(line)
    now = verdict._LINE.match(line)
    assert (before.groupdict() if before else None) == (now.groupdict() if now else None)


def test_a_huge_line_of_decoration_is_read_in_linear_time() -> None:
    # The backtracking pattern took 9 s on 20,000 stars; this many would outlast the
    # test's timeout.
    assert parse_verdict("*" * 300_000).kind is Kind.NONE
    assert parse_verdict("*" * 300_000 + "PASS").kind is Kind.PASS
