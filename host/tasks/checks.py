"""Deterministic checks on generated code: cheap, exact, and run before any model is asked.

A validator model is slow and can be wrong; a parser is fast and never is. So every
answer is first split into its fenced code blocks, and each block goes through the
checks its language has (Python: `ast` then `ruff`; JSON, TOML, YAML: parse; shell:
`bash -n`; every language: not empty, fence closed). A block with an error-severity
finding fails without costing a model call. Warnings (ruff's style and undefined-name
notes) do not fail a block; they travel on to the validator model as hints.

Everything here is a function of the text, and a total one: whatever the text (nested
ten thousand deep, megabytes long), a check answers with findings and never raises, so a
task being validated always moves on. Nesting is measured before a recursive parser sees
it, a parser that still overflows is a finding, and a check that breaks in another way is
skipped with the reason. The two external tools (`ruff`, `bash`) run as bounded
subprocesses and, when missing, are skipped with a reason instead of failing.
"""

from __future__ import annotations

import ast
import importlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Severity = Literal["error", "warning"]
Source = Literal["ast", "ruff", "json", "toml", "yaml", "bash", "structure", "validator"]

TOOL_TIMEOUT_S = 10.0
"""The longest `ruff` or `bash -n` may take on one block before the check is skipped."""

MAX_NESTING = 200
"""The deepest nesting of brackets a JSON block may have before it is parsed: Python's
parsers recurse, and a block nested thousands deep would overflow them."""

MAX_BLOCK_CHARS = 1_000_000
"""A longer block is a finding, not a parse: no model writes a megabyte of code that
should pass, and the checks stay bounded in time."""

log = logging.getLogger("tierhost.checks")

RUFF_ERRORS = frozenset({"E902", "E999", "F631", "F632", "F701", "F702", "F704", "F706", "F707"})
"""ruff rules that mean the code cannot run as written; every other rule is a warning."""

_ALIASES: dict[str, str] = {
    "py": "python",
    "python": "python",
    "python3": "python",
    "py3": "python",
    "json": "json",
    "toml": "toml",
    "yaml": "yaml",
    "yml": "yaml",
    "sh": "bash",
    "bash": "bash",
    "shell": "bash",
}
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}+|~{3,}+)\s*+(?P<info>[^`\s]*+)[^`]*+$")
"""An opening fence line. The quantifiers are possessive: with plain ones a long line that
ends in a backtick made the engine try every split of it (quadratic time)."""


@dataclass(frozen=True)
class Finding:
    """One problem, pointing at a line of its code block (1-based)."""

    line: int
    message: str
    severity: Severity
    source: Source

    def as_json(self, block: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "line": self.line,
            "message": self.message,
            "severity": self.severity,
            "source": self.source,
        }
        if block is not None:
            data["block"] = block
        return data


@dataclass(frozen=True)
class CodeBlock:
    """A fenced block of an answer (or the whole answer, when it has no fence)."""

    code: str
    language: str
    """Normalised: python, json, toml, yaml, bash, or the fence's own word; "" unknown."""
    fenced: bool
    closed: bool
    """False when the answer ended inside the fence: the output was cut off."""


@dataclass(frozen=True)
class BlockReport:
    block: CodeBlock
    findings: tuple[Finding, ...]
    skipped: tuple[str, ...] = ()
    """Checks that could not run here, each with why (no ruff, no PyYAML, a timeout)."""

    @property
    def passed(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)


@dataclass(frozen=True)
class Report:
    """The checks of one answer: PASS when no block has an error-severity finding."""

    blocks: tuple[BlockReport, ...]
    findings_outside: tuple[Finding, ...] = field(default=())
    """Problems of the answer as a whole (it is empty)."""

    @property
    def passed(self) -> bool:
        return not self.findings_outside and all(b.passed for b in self.blocks)

    def findings_json(self) -> list[dict[str, Any]]:
        """Every finding with the index of its block (0 for the answer as a whole)."""
        found = [f.as_json(block=0) for f in self.findings_outside]
        for index, report in enumerate(self.blocks):
            found += [f.as_json(block=index) for f in report.findings]
        return found

    def errors(self) -> list[str]:
        """The error findings as lines a builder can act on."""
        lines = [f"{f.source}: {f.message}" for f in self.findings_outside]
        many = len(self.blocks) > 1
        for index, report in enumerate(self.blocks):
            where = f"block {index + 1}, " if many else ""
            lines += [
                f"{where}line {f.line}: {f.message} ({f.source})"
                for f in report.findings
                if f.severity == "error"
            ]
        return lines

    def warnings(self) -> list[str]:
        return [
            f"line {f.line}: {f.message} ({f.source})"
            for report in self.blocks
            for f in report.findings
            if f.severity == "warning"
        ]


# -- extraction ----------------------------------------------------------------------


def normalise_language(word: str) -> str:
    word = word.strip().lower().lstrip(".")
    return _ALIASES.get(word, word)


_JSON_TOKEN = re.compile(r'\\.|["\[\]{}]', re.S)


def json_too_deep(text: str, limit: int = MAX_NESTING) -> int | None:
    """The offset of the first bracket that opens level `limit + 1`, or None.

    Brackets inside strings do not count. One linear pass over the quotes, escapes and
    brackets, so it is safe on any text, unlike `json.loads`, which recurses per level.
    """
    depth = 0
    in_string = False
    for match in _JSON_TOKEN.finditer(text):
        token = match[0]
        if token[0] == "\\":
            continue  # an escaped character: never a quote or a bracket of the document
        if token == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif token in "[{":
            depth += 1
            if depth > limit:
                return match.start()
        else:
            depth = max(0, depth - 1)
    return None


def line_at(text: str, offset: int) -> int:
    """The 1-based line of a character offset."""
    return text.count("\n", 0, offset) + 1


def guess_language(code: str) -> str:
    """A language for unlabelled code, from cheap and conservative signs; "" when unsure."""
    stripped = code.strip()
    if not stripped:
        return ""
    first = stripped.splitlines()[0]
    if first.startswith("#!"):
        if "python" in first:
            return "python"
        if re.search(r"\b(ba|z|da)?sh\b", first):
            return "bash"
    if stripped[0] in "{[":
        if json_too_deep(stripped) is not None:
            return "json"  # brackets nested this deep: the JSON check says why it fails
        try:
            json.loads(stripped)
        except (ValueError, RecursionError):
            pass
        else:
            return "json"
    if re.search(r"^(def |class |async def |import \w|from [\w.]+ import )", stripped, re.M):
        return "python"
    if re.match(r"^\[[\w.\-\"]+\]\s*$", first) and re.search(r"^[\w\-\"]+\s*=", stripped, re.M):
        return "toml"
    return ""


def extract_blocks(text: str) -> list[CodeBlock]:
    """The fenced code blocks of an answer, in order; the whole answer when it has none.

    A fence is three or more backticks or tildes; it closes on a line of the same
    character, at least as long, and nothing else. An answer that ends inside a fence
    yields a block with `closed=False`: the output was truncated.
    """
    blocks: list[CodeBlock] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        fence = match["fence"]
        language = normalise_language(match["info"])
        body: list[str] = []
        index += 1
        closed = False
        while index < len(lines):
            line = lines[index]
            candidate = line.strip()
            if (
                candidate
                and set(candidate) == {fence[0]}
                and len(candidate) >= len(fence)
                and len(line) - len(line.lstrip(" ")) <= 3
            ):
                closed = True
                index += 1
                break
            body.append(line)
            index += 1
        code = "\n".join(body) + ("\n" if body else "")
        blocks.append(CodeBlock(code, language or guess_language(code), True, closed))
    if not blocks and text.strip():
        code = text if text.endswith("\n") else text + "\n"
        blocks.append(CodeBlock(code, guess_language(text), False, True))
    return blocks


# -- the checks per language ---------------------------------------------------------

CheckResult = tuple[list[Finding], list[str]]
"""The findings of one check, and the reasons it (or a part of it) did not run."""
Checker = Callable[[str], CheckResult]


def check_structure(block: CodeBlock) -> list[Finding]:
    findings: list[Finding] = []
    if not block.code.strip():
        findings.append(Finding(1, "the code block is empty", "error", "structure"))
    if not block.closed:
        last = max(1, len(block.code.splitlines()))
        findings.append(
            Finding(
                last,
                "the code block is never closed: the answer looks truncated",
                "error",
                "structure",
            )
        )
    return findings


def too_complex(what: str, source: Source, exc: BaseException) -> Finding:
    """The finding for a document that overflows its parser (RecursionError, MemoryError):
    the language's own tools would fail on it the same way, so it is an error."""
    return Finding(
        1,
        f"{what} is nested too deeply or is too complex to parse ({type(exc).__name__})",
        "error",
        source,
    )


def check_python(code: str) -> CheckResult:
    try:
        ast.parse(code)
    except SyntaxError as exc:
        detail = exc.msg
        if exc.text:
            detail += f": {exc.text.strip()[:80]}"
        return [Finding(max(1, exc.lineno or 1), detail, "error", "ast")], []
    except (RecursionError, MemoryError) as exc:  # CPython's compiler fails the same way
        return [too_complex("the Python code", "ast", exc)], []
    return run_ruff(code)


def ruff_binary() -> str | None:
    """ruff from this interpreter's environment first (the daemon's venv), else PATH."""
    beside = Path(sys.executable).parent / "ruff"
    if beside.is_file():
        return str(beside)
    return shutil.which("ruff")


def run_ruff(code: str, binary: str | None = None) -> CheckResult:
    binary = binary or ruff_binary()
    if binary is None:
        return [], ["ruff: not installed (neither in the daemon's environment nor on PATH)"]
    argv = [
        binary,
        "check",
        "--isolated",
        "--no-cache",
        "--output-format",
        "json",
        "--stdin-filename",
        "block.py",
        "-",
    ]
    try:
        done = subprocess.run(
            argv, input=code, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return [], [f"ruff: no answer within {TOOL_TIMEOUT_S:g} s"]
    except OSError as exc:
        return [], [f"ruff: cannot run {binary}: {exc.strerror}"]
    try:
        items = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        return [], [f"ruff: unreadable output (exit {done.returncode}): {done.stderr[:200]}"]
    findings = []
    for item in items:
        rule = item.get("code")
        severity: Severity = "error" if rule is None or rule in RUFF_ERRORS else "warning"
        line = int((item.get("location") or {}).get("row") or 1)
        message = item.get("message", "")
        findings.append(
            Finding(max(1, line), f"{rule}: {message}" if rule else message, severity, "ruff")
        )
    return findings, []


_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


def check_json(code: str) -> CheckResult:
    deep = json_too_deep(code)
    if deep is not None:
        message = f"JSON nested deeper than {MAX_NESTING} levels; not parsed"
        return [Finding(line_at(code, deep), message, "error", "json")], []
    try:
        json.loads(code)
    except json.JSONDecodeError as exc:
        return [Finding(max(1, exc.lineno), exc.msg, "error", "json")], []
    except (RecursionError, MemoryError) as exc:
        return [too_complex("the JSON", "json", exc)], []
    return [], []


def check_toml(code: str) -> CheckResult:
    try:
        tomllib.loads(code)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION.search(message)
        line = int(position[1]) if position else 1
        return [Finding(line, _TOML_POSITION.sub("", message).strip(), "error", "toml")], []
    except (RecursionError, MemoryError) as exc:
        return [too_complex("the TOML", "toml", exc)], []
    return [], []


def check_yaml(code: str) -> CheckResult:
    try:
        yaml: Any = importlib.import_module("yaml")
    except ImportError:
        return [], ["yaml: PyYAML is not installed, so YAML is not parsed"]
    try:
        for _ in yaml.safe_load_all(code):
            pass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = int(mark.line) + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return [Finding(line, str(problem), "error", "yaml")], []
    except (RecursionError, MemoryError) as exc:
        return [too_complex("the YAML", "yaml", exc)], []
    return [], []


_BASH_LINE = re.compile(r"line (\d+): (.*)")


def check_bash(code: str) -> CheckResult:
    bash = shutil.which("bash")
    if bash is None:
        return [], ["bash: not on PATH, so shell syntax is not checked"]
    try:
        done = subprocess.run(
            [bash, "-n", "/dev/stdin"],  # from a path, bash names the line of an error
            input=code,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [], [f"bash: no answer within {TOOL_TIMEOUT_S:g} s"]
    except OSError as exc:
        return [], [f"bash: cannot run {bash}: {exc.strerror}"]
    if done.returncode == 0:
        return [], []
    findings: list[Finding] = []
    for raw in done.stderr.splitlines():
        match = _BASH_LINE.search(raw)
        if match is None:
            continue
        message = match[2].strip()
        if message.startswith("`") and findings:  # bash quotes the offending line next
            last = findings.pop()
            message = f"{last.message}: {message}"
        findings.append(Finding(int(match[1]), message, "error", "bash"))
    if not findings:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "syntax error"
        findings.append(Finding(1, message, "error", "bash"))
    return findings, []


CHECKERS: dict[str, Checker] = {
    "python": check_python,
    "json": check_json,
    "toml": check_toml,
    "yaml": check_yaml,
    "bash": check_bash,
}
"""Language → its check. Add a language by adding an entry; unknown ones get structure only."""


def check_block(block: CodeBlock, checkers: dict[str, Checker] | None = None) -> BlockReport:
    """Structure first; the language check only on a block that is complete and not empty
    (a truncated block would only repeat the truncation as a syntax error), and not too
    long to check. A check that raises all the same is skipped with the reason (and the
    trace in the log): an answer under validation always gets a report."""
    structure = check_structure(block)
    if structure:
        return BlockReport(block, tuple(structure))
    if len(block.code) > MAX_BLOCK_CHARS:
        message = (
            f"the code block has {len(block.code):,} characters; the checks take at most "
            f"{MAX_BLOCK_CHARS:,}"
        )
        return BlockReport(block, (Finding(1, message, "error", "structure"),))
    checker = (checkers if checkers is not None else CHECKERS).get(block.language)
    if checker is None:
        return BlockReport(block, ())
    try:
        found, skipped = checker(block.code)
    except (RecursionError, MemoryError) as exc:
        return BlockReport(block, (too_complex(f"the {block.language} code", "structure", exc),))
    except Exception as exc:
        log.exception(
            "the %s check raised on a block of %d characters", block.language, len(block.code)
        )
        reason = f"{block.language}: the check failed ({type(exc).__name__}: {exc}); not checked"
        return BlockReport(block, (), (reason,))
    return BlockReport(block, tuple(found), tuple(skipped))


def check_blocks(blocks: Sequence[CodeBlock], checkers: dict[str, Checker] | None = None) -> Report:
    if not blocks:
        return Report((), (Finding(1, "the answer is empty", "error", "structure"),))
    return Report(tuple(check_block(b, checkers) for b in blocks))


def check_answer(text: str, checkers: dict[str, Checker] | None = None) -> Report:
    """Extract the answer's code blocks and check each: the one entry point callers need."""
    return check_blocks(extract_blocks(text), checkers)


def code_of(blocks: Sequence[CodeBlock]) -> str:
    """The code of an answer, as it would go into a file: the blocks, a blank line apart."""
    return "\n".join(b.code.rstrip("\n") + "\n" for b in blocks if b.code.strip())
