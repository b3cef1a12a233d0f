"""The validator model's side of a validator pass: what it is asked, and how its answer is read.

The validator is a small CPU-resident model; its answers are short but not always
well-formed. So the prompt is strict (answer exactly `PASS` or `FAIL: reason`) and the
parser is strict the other way round: a PASS is only a line that says PASS and nothing
else, and any answer that is not clearly one verdict is "no verdict" — recorded, and
never taken for a PASS. Pure functions only; the loop that calls the model is
`host.tasks.validation`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

SYSTEM_PROMPT = """\
You are a strict code validator. You review code that another model wrote for a task.
Check, in this order:
1. Syntax: would the code parse and run as written?
2. Logical consistency: does it do what the task asks, without contradicting itself?
3. Invented APIs: does it call functions, methods, modules or options that do not exist?
4. Missing edge cases: empty input, None, zero, errors the task implies.
Answer with exactly one line and nothing else:
PASS
or
FAIL: <the most important problem, naming the line>
Do not explain a PASS. Do not rewrite the code."""

MAX_REASON_CHARS = 500

VERDICT_GRAMMAR = r"""root ::= "PASS" | "FAIL: " [^\n]+"""
"""GBNF for llama-server: the model can only write one of the two verdicts. A small
validator that rambles (SmolLM2 never answered in form without it) still has to decide.
The parser stays strict for servers that ignore the grammar."""


class Kind(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    """No verdict: the answer said neither, or said both."""


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str
    raw: str

    @property
    def passed(self) -> bool:
        return self.kind is Kind.PASS


def build_messages(
    task: str,
    code: str,
    *,
    language: str = "",
    notes: Sequence[str] = (),
    accepted: str = "",
) -> list[dict[str, str]]:
    """The chat for one verdict: the task, the code under review, and static-analysis notes
    (warnings that did not fail the deterministic checks, so the model may weigh them)."""
    parts = [f"Task:\n{task.strip()}"]
    if accepted.strip():
        parts.append(f"Code already accepted (context only, do not review):\n```\n{accepted}```")
    parts.append(f"Code to review:\n```{language}\n{code}```")
    if notes:
        parts.append("Static analysis notes:\n" + "\n".join(f"- {n}" for n in notes))
    parts.append("Your verdict (PASS, or FAIL: reason):")
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


# A verdict line: optional markdown/quote/list decoration, an optional label such as
# "Verdict:", then the word in capitals or title case, then the rest of the line. The
# decoration is possessive: what follows it never starts with one of its characters, and
# with a plain `*` a long line of them took quadratic time (20,000 stars: 9 s).
_DECORATION = r"[\s>#*_`\"'\-]*+"
_LABEL = r"(?:(?:final\s+)?(?:verdict|answer|result|decision)\s*[:=\-]\s*)?"
_LINE = re.compile(
    rf"^{_DECORATION}{_LABEL}[*_`\"']*(?P<word>PASS|Pass|FAIL|Fail)(?![A-Za-z0-9_])"
    r"[*_`\"']*(?P<rest>.*)$",
    re.IGNORECASE,
)
_FAIL_REST = re.compile(r"^\s*(?:[:\-\u2013\u2014.!,;]\s*(?P<reason>.*))?$", re.S)
_PASS_REST = re.compile(r"^[\s.!*_`\"']*$")


def _verdict_of_line(line: str) -> tuple[Kind, str] | None:
    match = _LINE.match(line)
    if match is None:
        return None
    word = match["word"]
    if word not in ("PASS", "Pass", "FAIL", "Fail"):
        return None  # "pass"/"fail" in lower case is prose ("pass the list to ...")
    rest = match["rest"]
    if word.upper() == "PASS":
        return (Kind.PASS, "") if _PASS_REST.match(rest) else None
    fail = _FAIL_REST.match(rest)
    if fail is not None:
        return Kind.FAIL, (fail["reason"] or "").strip(" *_`\"'")
    if word == "FAIL" and rest[:1].isspace():
        return Kind.FAIL, rest.strip(" *_`\"'")  # "FAIL the loop never ends"
    return None


def parse_verdict(text: str) -> Verdict:
    """PASS, FAIL with its reason, or no verdict.

    Every line is read, so a verdict after a preamble still counts. A PASS is a line
    that is PASS alone (decoration allowed); a FAIL is a line that starts with FAIL,
    optionally followed by `:` or a dash and the reason. When lines disagree, or none is
    a verdict, there is no verdict. A FAIL without a reason on its line takes the next
    lines that are not verdicts as its reason.
    """
    lines = text.splitlines()
    found: list[tuple[int, Kind, str]] = []
    for index, line in enumerate(lines):
        verdict = _verdict_of_line(line)
        if verdict is not None:
            found.append((index, *verdict))
    kinds = {kind for _, kind, _ in found}
    if len(kinds) != 1:
        detail = "it says both PASS and FAIL" if kinds else "no PASS or FAIL line"
        return Verdict(Kind.NONE, f"the validator gave no verdict ({detail})", text)
    kind = kinds.pop()
    if kind is Kind.PASS:
        return Verdict(Kind.PASS, "", text)
    index, _, reason = found[-1]
    if not reason:
        following = [ln.strip() for ln in lines[index + 1 :] if ln.strip()]
        reason = " ".join(following)
    reason = " ".join(reason.split())[:MAX_REASON_CHARS] or "no reason given"
    return Verdict(Kind.FAIL, reason, text)


_LINE_REF = re.compile(r"\blines?\s+(\d+)", re.IGNORECASE)


def line_of(reason: str) -> int:
    """The line a reason names ("line 4: ..."), else 1: findings always point somewhere."""
    match = _LINE_REF.search(reason)
    return max(1, int(match[1])) if match else 1
