"""The validation loop in process: a real Store, a scripted builder and validator, a fake clock.

`ValidationLoop` is driven as the dispatcher drives it: the task row is created and
moved to RUNNING first, and the loop gets the builder and the validator as two async
callables, here scripts that answer from a list (or raise). The deterministic checks
are the real ones (ast and ruff, in a thread), so every answer below is written to pass
or to fail them on purpose. The validator's time is read from a fake clock that only
the fake validator advances, so `validator_ms` is exact. Every run is bounded by
`asyncio.wait_for`; nothing sleeps.

What is pinned is what a client sees: the task's events (status, reason, data), the
fields each move writes, the scratchpad, and what the builder and validator were asked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from host.config import ValidationSettings
from host.core import verdict as verdicts
from host.core.task_states import TaskStatus
from host.store import Store, TaskRow
from host.tasks.checks import extract_blocks
from host.tasks.validation import (
    BLOCK_PROTOCOL,
    FINAL_PROTOCOL,
    SCRATCH_MAX_CHARS,
    TARGET_PROTOCOL,
    Action,
    Judgement,
    Messages,
    NextBlock,
    Reply,
    Step,
    ValidationLoop,
    ValidatorUnavailable,
    WholeAnswer,
    next_step,
)

BOUND_S = 30.0
"""The longest one run of the loop may take (the checks run ruff once per Python block)."""

FENCE = "```"
PROMPT = "Write add(a, b) in Python."
SYSTEM = "You are the builder tier of a local agent host."
TOKENS = 10
"""What the scripted builder counts for a reply unless a test scripts the counts."""
VALIDATOR_S = 0.25
"""How long the fake validator takes on the fake clock: every `validator_ms` is 250.0."""


def fenced(code: str, language: str = "python") -> str:
    return f"{FENCE}{language}\n{code}{FENCE}\n"


GOOD_CODE = "def add(a: int, b: int) -> int:\n    return a + b\n"
GOOD = fenced(GOOD_CODE)
BETTER_CODE = "def add(a: int, b: int) -> int:\n    return int(a) + int(b)\n"
BETTER = fenced(BETTER_CODE)
BROKEN = "Here it is:\n" + fenced("def add(a, b)\n    return a + b\n")
BROKEN_REASON = "line 1: expected ':': def add(a, b) (ast)"

IMPORTS = fenced("import math\n")
AREA_CODE = "def area(r: float) -> float:\n    return math.pi * r * r\n"
AREA = fenced(AREA_CODE)
BROKEN_AREA = fenced("def area(r)\n    return math.pi * r * r\n")
BROKEN_AREA_REASON = "line 1: expected ':': def area(r) (ast)"
UNUSED_MATH = {
    "line": 1,
    "message": "F401: `math` imported but unused",
    "severity": "warning",
    "source": "ruff",
}
UNDEFINED_MATH = {
    "line": 2,
    "message": "F821: Undefined name `math`",
    "severity": "warning",
    "source": "ruff",
}
EOB = "END OF BLOCK\n"

ORIGINAL = "def add(a, b):\n    pass\n"
CALC = {"files": [{"path": "calc.py", "content": ORIGINAL}], "target_file": "calc.py"}
GEO = {"files": [{"path": "geo.py", "content": ""}], "target_file": "geo.py"}


def correction_for(by: str, reason: str, *, block: bool = False) -> str:
    what = "this block only, as one fenced code block" if block else "the complete answer"
    head = f"Your answer failed validation ({by}):\n{reason}\n\n"
    return head + f"Fix every problem and send {what} again."


def validator_finding(reason: str, line: int = 1, block: int = 0) -> dict[str, Any]:
    return {
        "line": line,
        "message": reason,
        "severity": "error",
        "source": "validator",
        "block": block,
    }


# -- the fakes ---------------------------------------------------------------------------


@dataclass
class FakeClock:
    """`time.perf_counter` for the loop: it moves only when the fake validator works."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Builder:
    """The builder on its lease: each call answers the next scripted reply, or raises it."""

    replies: list[str | BaseException]
    tokens: list[int] = field(default_factory=list)
    """Tokens per reply, in order; TOKENS each when the script names none."""
    asked: list[Messages] = field(default_factory=list)

    async def __call__(self, messages: Messages) -> tuple[str, int]:
        self.asked.append([dict(m) for m in messages])
        if not self.replies:
            raise AssertionError(f"the builder was asked {len(self.asked)} times: one too many")
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply, self.tokens.pop(0) if self.tokens else TOKENS


@dataclass
class Validator:
    """The validator model: each call answers the next scripted verdict, or raises it."""

    answers: list[str | BaseException]
    clock: FakeClock
    asked: list[Messages] = field(default_factory=list)

    async def __call__(self, messages: Messages) -> str:
        self.asked.append([dict(m) for m in messages])
        self.clock.now += VALIDATOR_S
        if not self.answers:
            raise AssertionError(f"the validator was asked {len(self.asked)} times: one too many")
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


@dataclass(frozen=True)
class Move:
    status: str
    reason: str
    fields: dict[str, Any]
    """What the move wrote besides the scratchpad, as it was at the time of the move."""


class RecordingStore(Store):
    """The real store, keeping what each move wrote: a later move overwrites the row's
    fields, and the loop passes lists it extends afterwards, so they are copied here."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        super().__init__(db, path)
        self.moves: list[Move] = []

    async def move_task(
        self,
        task_id: str,
        new: TaskStatus,
        reason: str,
        *,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> TaskRow:
        row = await super().move_task(task_id, new, reason, data=data, **fields)
        kept = json.loads(json.dumps({k: v for k, v in fields.items() if k != "scratchpad"}))
        self.moves.append(Move(new.value, reason, kept))
        return row


@dataclass
class Ran:
    task: TaskRow
    """The task after the loop, with its events."""
    builder: Builder
    validator: Validator | None
    moves: list[Move]
    """The loop's moves (not the dispatcher's three before it)."""
    phases: list[str]
    """What `on_change` was called with, in order."""

    @property
    def events(self) -> list[tuple[str, str]]:
        """(status, reason) of the loop's events."""
        return [(e["status"], e["reason"]) for e in self.task.events[len(STARTED) :]]

    @property
    def data(self) -> list[dict[str, Any] | None]:
        return [e.get("data") for e in self.task.events[len(STARTED) :]]

    @property
    def scratch(self) -> list[tuple[str, int, int | None]]:
        """(role, attempt, block) of every scratchpad entry."""
        return [(s["role"], s["attempt"], s.get("block")) for s in self.task.scratchpad]


STARTED = [
    ("queued", "submitted"),
    ("waiting_device", "waiting for model coder"),
    ("running", "running on coder"),
]
"""The events before the loop runs: as the dispatcher writes them."""


@dataclass
class Rig:
    """A store and a clock for the loops of one test."""

    store: RecordingStore
    clock: FakeClock
    last: Ran | None = None
    """The latest run, also when it raised."""

    async def run(
        self,
        replies: list[str | BaseException],
        answers: list[str | BaseException] | None,
        *,
        validation_policy: str = "final",
        context: dict[str, Any] | None = None,
        tokens: list[int] | None = None,
        max_retries: int = 3,
        max_blocks: int = 20,
    ) -> Ran:
        """A task started as the dispatcher starts it, then one run of the loop on it;
        `answers` None means no validator model (checks only)."""
        row = await self.store.create_task(
            prompt=PROMPT,
            type="implementation",
            context=context if context is not None else {"files": []},
            request={"tier": None, "model": None, "force_big": False, "params": {}},
            priority=0,
            validation=validation_policy,
            tier="builder",
            model="coder",
            decision={"reasons": ["test"]},
        )
        await self.store.move_task(row.id, TaskStatus.WAITING_DEVICE, "waiting for model coder")
        row = await self.store.move_task(
            row.id,
            TaskStatus.RUNNING,
            "running on coder",
            validated=None,
            findings=[],
            patch=None,
            scratchpad=[],
            attempts=0,
        )
        self.store.moves.clear()
        builder = Builder(list(replies), list(tokens or []))
        validator = None if answers is None else Validator(list(answers), self.clock)
        phases: list[str] = []
        loop = ValidationLoop(
            self.store,
            row,
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
            builder,
            validator,
            None if validator is None else "judge",
            ValidationSettings(max_retries=max_retries, max_blocks=max_blocks),
            on_change=phases.append,
            clock=self.clock,
        )
        try:
            await asyncio.wait_for(loop.run(), BOUND_S)
        finally:
            self.last = Ran(
                await self.store.get_task(row.id, with_events=True),
                builder,
                validator,
                list(self.store.moves),
                phases,
            )
        return self.last


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = await RecordingStore.open(tmp_path / "tasks.sqlite3")
    try:
        yield Rig(store, FakeClock())
    finally:
        await store.close()


def first_request(note: str) -> Messages:
    """What the builder is asked first: the task, with the policy's protocol note."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{PROMPT}\n\n{note}"},
    ]


# -- final: the whole answer, checked as one ----------------------------------------------


async def test_an_answer_that_passes_the_checks_is_committed_at_once_without_a_validator(
    rig: Rig,
) -> None:
    ran = await rig.run([GOOD], None, context=CALC)

    assert [(e["status"], e["reason"]) for e in ran.task.events[: len(STARTED)]] == STARTED
    assert ran.events == [
        ("validating", "attempt 1 of 4: checking 10 tokens of answer"),
        ("done", "attempt 1 PASS (checks only); result committed"),
    ]
    assert ran.data == [
        {"attempt": 1, "phase": "validate"},
        {"attempt": 1, "verdict": "pass", "by": "checks only", "reason": "", "findings": 0},
    ]
    task = ran.task
    assert task.status is TaskStatus.DONE and task.validated is True and task.error is None
    assert (task.result, task.findings, task.attempts, task.tokens) == (GOOD, [], 1, TOKENS)
    assert task.patch == (
        "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n"
        "-def add(a, b):\n-    pass\n"
        "+def add(a: int, b: int) -> int:\n+    return a + b\n"
    )
    assert task.scratchpad == [
        {"role": "builder", "content": GOOD, "attempt": 1},
        {"role": "checks", "content": "PASS", "attempt": 1},
    ]
    assert ran.phases == ["validating", "done"]
    assert ran.builder.asked == [first_request(TARGET_PROTOCOL.format(path="calc.py"))]


async def test_the_validator_is_asked_once_the_checks_pass_and_its_pass_keeps_the_warnings(
    rig: Rig,
) -> None:
    code = "import os\n\n\n" + GOOD_CODE
    ran = await rig.run([fenced(code)], ["PASS"])

    assert ran.events == [
        ("validating", "attempt 1 of 4: checking 10 tokens of answer"),
        ("done", "attempt 1 PASS (judge); result committed"),
    ]
    assert ran.data[1] == {
        "attempt": 1,
        "verdict": "pass",
        "by": "judge",
        "reason": "",
        "findings": 1,
        "validator_ms": 250.0,
    }
    unused = {
        "line": 1,
        "message": "F401: `os` imported but unused",
        "severity": "warning",
        "source": "ruff",
        "block": 0,
    }
    assert ran.task.findings == [unused] and ran.task.validated is True
    assert ran.task.patch is None  # no target file
    assert ran.validator is not None and ran.validator.asked == [
        verdicts.build_messages(
            PROMPT, code, language="python", notes=["line 1: F401: `os` imported but unused (ruff)"]
        )
    ]
    assert ran.scratch == [("builder", 1, None), ("checks", 1, None), ("validator", 1, None)]
    assert ran.task.scratchpad[2]["content"] == "PASS"
    assert ran.builder.asked == [first_request(FINAL_PROTOCOL)]


async def test_a_fail_of_the_checks_is_fed_back_without_asking_the_validator(rig: Rig) -> None:
    ran = await rig.run([BROKEN, GOOD], ["PASS"], tokens=[11, 13])

    assert ran.events == [
        ("validating", "attempt 1 of 4: checking 11 tokens of answer"),
        (
            "running",
            f"attempt 1 FAIL (checks): {BROKEN_REASON}; the builder regenerates with the "
            "correction (attempt 2 of 4)",
        ),
        ("validating", "attempt 2 of 4: checking 13 tokens of answer"),
        ("done", "attempt 2 PASS (judge); result committed"),
    ]
    assert ran.data[1] == {
        "attempt": 1,
        "verdict": "fail",
        "by": "checks",
        "reason": BROKEN_REASON,
        "findings": 1,
    }
    error = {
        "line": 1,
        "message": "expected ':': def add(a, b)",
        "severity": "error",
        "source": "ast",
        "block": 0,
    }
    assert ran.moves[1].fields == {"findings": [error], "attempts": 1, "tokens": 11}
    fix = correction_for("checks", BROKEN_REASON)
    first = first_request(FINAL_PROTOCOL)
    assert ran.builder.asked == [
        first,
        [*first, {"role": "assistant", "content": BROKEN}, {"role": "user", "content": fix}],
    ]
    assert ran.validator is not None and len(ran.validator.asked) == 1  # for GOOD only
    assert GOOD_CODE in ran.validator.asked[0][-1]["content"]
    assert ran.task.scratchpad == [
        {"role": "builder", "content": BROKEN, "attempt": 1},
        {"role": "checks", "content": f"FAIL: {BROKEN_REASON}", "attempt": 1},
        {"role": "prompt", "content": fix, "attempt": 2},
        {"role": "builder", "content": GOOD, "attempt": 2},
        {"role": "checks", "content": "PASS", "attempt": 2},
        {"role": "validator", "content": "PASS", "attempt": 2},
    ]
    assert (ran.task.result, ran.task.findings) == (GOOD, [])
    assert (ran.task.attempts, ran.task.tokens) == (2, 24)
    assert ran.phases == ["validating", "running", "validating", "done"]


async def test_a_fail_of_the_validator_is_fed_back_and_the_second_answer_is_committed(
    rig: Rig,
) -> None:
    reason = "line 2 does not coerce string input"
    ran = await rig.run([GOOD, BETTER], [f"FAIL: {reason}", "PASS"], context=CALC)

    assert ran.events == [
        ("validating", "attempt 1 of 4: checking 10 tokens of answer"),
        (
            "running",
            f"attempt 1 FAIL (judge): {reason}; the builder regenerates with the correction "
            "(attempt 2 of 4)",
        ),
        ("validating", "attempt 2 of 4: checking 10 tokens of answer"),
        ("done", "attempt 2 PASS (judge); result committed"),
    ]
    assert ran.data[1] == {
        "attempt": 1,
        "verdict": "fail",
        "by": "judge",
        "reason": reason,
        "findings": 1,
        "validator_ms": 250.0,
    }
    assert ran.moves[1].fields["findings"] == [validator_finding(reason, line=2)]
    assert ran.builder.asked[1][-1] == {"role": "user", "content": correction_for("judge", reason)}
    assert ran.task.status is TaskStatus.DONE and ran.task.validated is True
    assert (ran.task.result, ran.task.findings) == (BETTER, [])
    assert ran.task.patch == (
        "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n"
        "-def add(a, b):\n-    pass\n"
        "+def add(a: int, b: int) -> int:\n+    return int(a) + int(b)\n"
    )
    assert [s["content"] for s in ran.task.scratchpad if s["role"] == "validator"] == [
        f"FAIL: {reason}",
        "PASS",
    ]


async def test_fails_until_no_retries_are_left_end_failed_with_the_last_answer(rig: Rig) -> None:
    reasons = ["first problem", "line 2 second problem", "third problem"]
    ran = await rig.run(
        [GOOD, GOOD, GOOD], [f"FAIL: {r}" for r in reasons], context=CALC, max_retries=2
    )

    last = "attempt 3 FAIL (judge): third problem; no retries left (max_retries 2)"
    assert ran.events == [
        ("validating", "attempt 1 of 3: checking 10 tokens of answer"),
        (
            "running",
            "attempt 1 FAIL (judge): first problem; the builder regenerates with the "
            "correction (attempt 2 of 3)",
        ),
        ("validating", "attempt 2 of 3: checking 10 tokens of answer"),
        (
            "running",
            "attempt 2 FAIL (judge): line 2 second problem; the builder regenerates with the "
            "correction (attempt 3 of 3)",
        ),
        ("validating", "attempt 3 of 3: checking 10 tokens of answer"),
        ("failed", last),
    ]
    assert ran.data[-1] == {
        "attempt": 3,
        "verdict": "fail",
        "by": "judge",
        "reason": "third problem",
        "findings": 1,
        "validator_ms": 250.0,
    }
    task = ran.task
    assert task.status is TaskStatus.FAILED and task.validated is False and task.error == last
    assert (task.result, task.patch, task.attempts, task.tokens) == (GOOD, None, 3, 30)
    assert task.findings == [validator_finding("third problem")]
    assert ran.moves[-1].fields == {
        "error": last,
        "validated": False,
        "result": GOOD,
        "findings": [validator_finding("third problem")],
        "attempts": 3,
        "tokens": 30,
    }
    # each retry carries the last failed answer and its correction, not every one before
    first = first_request(TARGET_PROTOCOL.format(path="calc.py"))
    assert ran.builder.asked[2] == [
        *first,
        {"role": "assistant", "content": GOOD},
        {"role": "user", "content": correction_for("judge", "line 2 second problem")},
    ]
    assert ran.phases == ["validating", "running", "validating", "running", "validating", "failed"]


async def test_no_verdict_is_never_a_pass_it_is_retried_in_its_own_words_then_fails(
    rig: Rig,
) -> None:
    ran = await rig.run(
        [GOOD, GOOD], ["Looks fine to me, PASS probably.", "PASS\nFAIL: both"], max_retries=1
    )

    none_line = "the validator gave no verdict (no PASS or FAIL line)"
    both = "the validator gave no verdict (it says both PASS and FAIL)"
    assert ran.events == [
        ("validating", "attempt 1 of 2: checking 10 tokens of answer"),
        (
            "running",
            f"attempt 1 NO VERDICT (judge): {none_line}; the builder regenerates with the "
            "correction (attempt 2 of 2)",
        ),
        ("validating", "attempt 2 of 2: checking 10 tokens of answer"),
        ("failed", f"attempt 2 NO VERDICT (judge): {both}; no retries left (max_retries 1)"),
    ]
    assert [d["verdict"] for d in ran.data if d and "verdict" in d] == ["none", "none"]
    assert ran.builder.asked[1][-1]["content"] == (
        f"The validator could not confirm your answer:\n{none_line}\n\n"
        "Fix every problem and send the complete answer again."
    )
    assert ran.task.validated is False and ran.task.findings == [validator_finding(both)]


async def test_an_unavailable_validator_fails_the_task_with_its_message_not_a_verdict(
    rig: Rig,
) -> None:
    message = "validator judge unavailable: model judge failed to start"
    ran = await rig.run([GOOD, GOOD], ["FAIL: first problem", ValidatorUnavailable(message)])

    assert ran.events[-2:] == [
        ("validating", "attempt 2 of 4: checking 10 tokens of answer"),
        ("failed", message),
    ]
    assert ran.data[-1] == {"attempt": 2, "verdict": "none"}
    task = ran.task
    assert (task.status, task.error, task.validated) == (TaskStatus.FAILED, message, False)
    assert task.result is None  # a whole answer is only kept when it was judged
    assert task.findings == [validator_finding("first problem")]  # from the retry before
    assert ran.scratch[-2:] == [("builder", 2, None), ("checks", 2, None)]
    assert ran.phases[-1] == "failed"


async def test_a_builder_error_propagates_and_the_loop_records_nothing_after_it(
    rig: Rig,
) -> None:
    with pytest.raises(RuntimeError, match="upstream went away"):
        await rig.run([BROKEN, RuntimeError("upstream went away")], None)

    assert rig.last is not None
    task = rig.last.task
    assert task.status is TaskStatus.RUNNING  # the dispatcher records how it ended
    assert rig.last.events[-1][1].startswith("attempt 1 FAIL (checks)")
    assert task.attempts == 1 and len(rig.last.builder.asked) == 2


async def test_scratchpad_entries_are_clipped_and_the_result_keeps_the_whole_answer(
    rig: Rig,
) -> None:
    long_answer = fenced("# " + "y" * SCRATCH_MAX_CHARS + "\nx = 1\n")
    at_the_limit = "x" * SCRATCH_MAX_CHARS
    ran = await rig.run([long_answer], [at_the_limit], max_retries=0)

    over = len(long_answer) - SCRATCH_MAX_CHARS
    assert ran.task.scratchpad == [
        {
            "role": "builder",
            "content": f"{long_answer[:SCRATCH_MAX_CHARS]}\n[… {over} more characters]",
            "attempt": 1,
        },
        {"role": "checks", "content": "PASS", "attempt": 1},
        {"role": "validator", "content": at_the_limit, "attempt": 1},
    ]
    assert ran.task.result == long_answer
    assert ran.task.status is TaskStatus.FAILED  # a line of x is no verdict


async def test_the_patch_holds_the_target_files_language_only(rig: Rig) -> None:
    usage = "Run it:\n" + fenced('python -c "import calc"\n', "bash")
    ran = await rig.run([GOOD + usage], None, context=CALC)

    assert ran.task.result == GOOD + usage
    assert ran.task.patch is not None and "import calc" not in ran.task.patch
    assert ran.task.patch.endswith("+    return a + b\n")


async def test_a_target_file_missing_from_the_context_files_gets_no_patch(rig: Rig) -> None:
    ran = await rig.run([GOOD], None, context={"files": [], "target_file": "calc.py"})

    assert ran.task.status is TaskStatus.DONE and ran.task.patch is None
    assert ran.builder.asked == [first_request(TARGET_PROTOCOL.format(path="calc.py"))]


async def test_the_checking_reason_counts_the_tokens_of_the_answer_being_checked(
    rig: Rig,
) -> None:
    ran = await rig.run([BROKEN, GOOD], None, tokens=[11, 13])

    assert ran.events[2] == ("validating", "attempt 2 of 4: checking 13 tokens of answer")


# -- block by block: one block per reply, each checked before the next ----------------------


def block_request(target: str | None = None) -> Messages:
    """What the builder is asked for the first block."""
    note = BLOCK_PROTOCOL
    if target:
        note += f"\nThe blocks, in order, make up the complete new content of `{target}`."
    return first_request(f"{note}\n\nWrite the first block.")


def after(accepted: list[str], target: str | None = None) -> Messages:
    """What the builder is asked for the block after the accepted ones."""
    note = BLOCK_PROTOCOL
    if target:
        note += f"\nThe blocks, in order, make up the complete new content of `{target}`."
    return [
        *first_request(note),
        {"role": "assistant", "content": "\n".join(f"{b}END OF BLOCK" for b in accepted)},
        {
            "role": "user",
            "content": "Accepted. Write the next block, or reply END OF WORK if the work is "
            "complete.",
        },
    ]


def block_result(*codes: str) -> str:
    return f"{FENCE}python\n" + "\n".join(codes) + f"{FENCE}\n"


async def test_blocks_are_committed_in_order_and_end_of_work_ends_the_task_done(
    rig: Rig,
) -> None:
    ran = await rig.run(
        [IMPORTS + EOB, AREA + EOB, "END OF WORK"],
        ["PASS", "PASS"],
        validation_policy="block_by_block",
        context=GEO,
    )

    assert ran.events == [
        ("validating", "block 1, attempt 1 of 4: checking it"),
        (
            "running",
            "block 1, attempt 1 PASS (judge); committed (1 block(s) so far); asking for the next",
        ),
        ("validating", "block 2, attempt 1 of 4: checking it"),
        (
            "running",
            "block 2, attempt 1 PASS (judge); committed (2 block(s) so far); asking for the next",
        ),
        ("done", "END OF WORK after 2 block(s); every block validated and committed"),
    ]
    assert ran.data == [
        {"attempt": 1, "block": 0, "phase": "validate"},
        {
            "attempt": 1,
            "verdict": "pass",
            "by": "judge",
            "reason": "",
            "findings": 1,
            "block": 0,
            "validator_ms": 250.0,
        },
        {"attempt": 1, "block": 1, "phase": "validate"},
        {
            "attempt": 1,
            "verdict": "pass",
            "by": "judge",
            "reason": "",
            "findings": 1,
            "block": 1,
            "validator_ms": 250.0,
        },
        {"attempt": 1, "blocks": 2},
    ]
    imports_only = block_result("import math\n")
    assert ran.moves[1].fields == {
        "findings": [{**UNUSED_MATH, "block": 0}],
        "result": imports_only,
        "attempts": 1,
        "tokens": 10,
    }
    task = ran.task
    assert task.status is TaskStatus.DONE and task.validated is True
    assert task.result == block_result("import math\n", AREA_CODE)
    assert task.findings == [{**UNUSED_MATH, "block": 0}, {**UNDEFINED_MATH, "block": 1}]
    assert task.patch == (
        "--- /dev/null\n+++ b/geo.py\n@@ -0,0 +1,4 @@\n+import math\n+\n"
        "+def area(r: float) -> float:\n+    return math.pi * r * r\n"
    )
    assert (task.attempts, task.tokens) == (3, 30)
    assert ran.builder.asked == [
        block_request("geo.py"),
        after([IMPORTS], "geo.py"),
        after([IMPORTS, AREA], "geo.py"),
    ]
    assert ran.validator is not None and ran.validator.asked[1] == verdicts.build_messages(
        PROMPT,
        AREA_CODE,
        language="python",
        notes=["line 2: F821: Undefined name `math` (ruff)"],
        accepted="import math\n",
    )
    assert ran.scratch == [
        ("builder", 1, 0),
        ("checks", 1, 0),
        ("validator", 1, 0),
        ("prompt", 1, 0),
        ("builder", 1, 1),
        ("checks", 1, 1),
        ("validator", 1, 1),
        ("prompt", 1, 1),
        ("builder", 1, 2),
    ]
    prompts = [s["content"] for s in task.scratchpad if s["role"] == "prompt"]
    assert prompts == ["block 1 accepted", "block 2 accepted"]
    assert ran.phases == ["validating", "running", "validating", "running", "done"]


async def test_end_of_work_in_the_reply_of_the_last_block_commits_it_and_ends_done(
    rig: Rig,
) -> None:
    ran = await rig.run(
        [IMPORTS + EOB, AREA + "END OF WORK\n"], None, validation_policy="block_by_block"
    )

    assert ran.events[-2:] == [
        ("validating", "block 2, attempt 1 of 4: checking it"),
        ("done", "END OF WORK after 2 block(s); every block validated and committed"),
    ]
    assert ran.data[-1] == {
        "attempt": 1,
        "verdict": "pass",
        "by": "checks only",
        "reason": "",
        "findings": 1,
        "block": 1,
    }
    assert ran.task.result == block_result("import math\n", AREA_CODE)
    assert ran.task.patch is None  # no target file
    assert [s["content"] for s in ran.task.scratchpad if s["role"] == "prompt"] == [
        "block 1 accepted"
    ]
    assert ran.builder.asked == [block_request(), after([IMPORTS])]


async def test_end_of_work_before_any_block_fails_the_task(rig: Rig) -> None:
    ran = await rig.run(["END OF WORK"], ["PASS"], validation_policy="block_by_block")

    reason = "the builder said END OF WORK without writing a block"
    assert ran.events == [("failed", reason)]
    assert ran.data == [{"attempt": 1, "blocks": 0}]
    task = ran.task
    assert (task.error, task.validated, task.result, task.attempts) == (reason, False, None, 1)
    assert ran.validator is not None and ran.validator.asked == []
    assert ran.scratch == [("builder", 1, 0)]
    assert ran.phases == ["failed"]


async def test_a_failing_block_is_rewritten_with_the_correction_and_then_committed(
    rig: Rig,
) -> None:
    ran = await rig.run(
        [IMPORTS + EOB, BROKEN_AREA + EOB, AREA + EOB, "END OF WORK"],
        ["PASS", "PASS"],
        validation_policy="block_by_block",
    )

    assert ran.events[2:] == [
        ("validating", "block 2, attempt 1 of 4: checking it"),
        (
            "running",
            f"block 2, attempt 1 FAIL (checks): {BROKEN_AREA_REASON}; the builder rewrites "
            "this block with the correction (attempt 2 of 4)",
        ),
        ("validating", "block 2, attempt 2 of 4: checking it"),
        (
            "running",
            "block 2, attempt 2 PASS (judge); committed (2 block(s) so far); asking for the next",
        ),
        ("done", "END OF WORK after 2 block(s); every block validated and committed"),
    ]
    assert ran.data[3] == {
        "attempt": 1,
        "verdict": "fail",
        "by": "checks",
        "reason": BROKEN_AREA_REASON,
        "findings": 1,
        "block": 1,
    }
    assert ran.data[-1] == {"attempt": 1, "blocks": 2}
    error = {
        "line": 1,
        "message": "expected ':': def area(r)",
        "severity": "error",
        "source": "ast",
        "block": 1,
    }
    assert ran.moves[3].fields == {
        "findings": [{**UNUSED_MATH, "block": 0}, error],
        "attempts": 2,
        "tokens": 20,
    }
    fix = correction_for("checks", BROKEN_AREA_REASON, block=True)
    assert ran.builder.asked[2] == [
        *after([IMPORTS]),
        {"role": "assistant", "content": BROKEN_AREA + EOB},
        {"role": "user", "content": fix},
    ]
    assert ran.builder.asked[3] == after([IMPORTS, AREA])
    assert ran.validator is not None and len(ran.validator.asked) == 2  # never the broken one
    assert ran.scratch[4:8] == [
        ("builder", 1, 1),
        ("checks", 1, 1),
        ("prompt", 2, 1),
        ("builder", 2, 1),
    ]
    assert ran.task.scratchpad[6]["content"] == fix
    # the failed attempt's error is not among the committed findings
    assert ran.task.findings == [{**UNUSED_MATH, "block": 0}, {**UNDEFINED_MATH, "block": 1}]
    assert ran.task.result == block_result("import math\n", AREA_CODE)


async def test_a_block_failing_past_the_retries_fails_and_the_earlier_blocks_stay_committed(
    rig: Rig,
) -> None:
    ran = await rig.run(
        [IMPORTS + EOB, "def (:", "def (:"],
        ["PASS"],
        validation_policy="block_by_block",
        max_retries=1,
    )

    reason = "line 1: invalid syntax: def (: (ast)"
    last = (
        f"block 2, attempt 2 FAIL (checks): {reason}; no retries left (max_retries 1); "
        "1 earlier block(s) stay committed"
    )
    assert ran.events[2:] == [
        ("validating", "block 2, attempt 1 of 2: checking it"),
        (
            "running",
            f"block 2, attempt 1 FAIL (checks): {reason}; the builder rewrites this block with "
            "the correction (attempt 2 of 2)",
        ),
        ("validating", "block 2, attempt 2 of 2: checking it"),
        ("failed", last),
    ]
    error = {
        "line": 1,
        "message": "invalid syntax: def (:",
        "severity": "error",
        "source": "ast",
        "block": 1,
    }
    imports_only = block_result("import math\n")
    assert ran.moves[-1].fields == {
        "error": last,
        "validated": False,
        "findings": [{**UNUSED_MATH, "block": 0}, error],
        "result": imports_only,
        "attempts": 3,
        "tokens": 30,
    }
    task = ran.task
    assert (task.status, task.error, task.result) == (TaskStatus.FAILED, last, imports_only)
    assert task.patch is None
    assert ran.phases == ["validating", "running", "validating", "running", "validating", "failed"]


async def test_end_of_work_after_a_failed_block_drops_that_block_and_ends_done(
    rig: Rig,
) -> None:
    ran = await rig.run(
        [IMPORTS + EOB, BROKEN_AREA + EOB, "END OF WORK"],
        ["PASS"],
        validation_policy="block_by_block",
    )

    assert ran.events[-1] == (
        "done",
        "END OF WORK after 1 block(s); every block validated and committed",
    )
    assert ran.data[-1] == {"attempt": 2, "blocks": 1}
    assert ran.task.result == block_result("import math\n")
    assert ran.task.findings == [{**UNUSED_MATH, "block": 0}]
    assert ran.scratch[-1] == ("builder", 2, 1)


async def test_max_blocks_stops_a_builder_that_never_says_end_of_work(rig: Rig) -> None:
    ran = await rig.run(
        [IMPORTS + EOB, AREA + EOB], None, validation_policy="block_by_block", max_blocks=2
    )

    reason = (
        "the builder did not say END OF WORK within 2 blocks (validation.max_blocks); "
        "the committed blocks are in the result"
    )
    assert ran.events[-2:] == [
        (
            "running",
            "block 2, attempt 1 PASS (checks only); committed (2 block(s) so far); "
            "asking for the next",
        ),
        ("failed", reason),
    ]
    assert ran.data[-1] == {"blocks": 2}
    task = ran.task
    assert (task.error, task.validated) == (reason, False)
    assert task.result == block_result("import math\n", AREA_CODE)
    assert task.findings == [{**UNUSED_MATH, "block": 0}, {**UNDEFINED_MATH, "block": 1}]
    assert len(ran.builder.asked) == 2


async def test_an_unavailable_validator_in_block_two_keeps_block_one_as_the_result(
    rig: Rig,
) -> None:
    message = "validator judge failed: ReadTimeout: timed out"
    ran = await rig.run(
        [IMPORTS + EOB, AREA + EOB],
        ["PASS", ValidatorUnavailable(message)],
        validation_policy="block_by_block",
    )

    assert ran.events[-2:] == [
        ("validating", "block 2, attempt 1 of 4: checking it"),
        ("failed", message),
    ]
    # "attempt" counts the task's builds here, not the block's attempts as elsewhere
    assert ran.data[-1] == {"attempt": 2, "verdict": "none"}
    assert ran.task.result == block_result("import math\n")
    assert ran.task.validated is False


async def test_prose_before_end_of_work_is_not_committed_as_a_block(rig: Rig) -> None:
    ran = await rig.run(
        [IMPORTS + EOB, "That is all.\nEND OF WORK"], None, validation_policy="block_by_block"
    )

    assert ran.events[-1] == (
        "done",
        "END OF WORK after 1 block(s); every block validated and committed",
    )
    assert ran.task.result == block_result("import math\n")


# -- the pure decisions and words of the skeleton -----------------------------------------


def judged(kind: verdicts.Kind, reason: str = "", by: str = "judge") -> Judgement:
    return Judgement(kind, by, reason, [])


WHOLE = WholeAnswer(first_request(FINAL_PROTOCOL))
THIRD_BLOCK = NextBlock(
    first_request(BLOCK_PROTOCOL),
    2,
    tuple(extract_blocks(IMPORTS + AREA)),
    ({**UNUSED_MATH, "block": 0},),
)


@pytest.mark.parametrize(
    ("unit", "judgement", "attempt", "max_retries", "expected"),
    [
        pytest.param(WHOLE, judged(verdicts.Kind.PASS), 4, 3, Step(Action.ACCEPT), id="pass-last"),
        pytest.param(
            WHOLE,
            judged(verdicts.Kind.FAIL, "x is never read"),
            1,
            3,
            Step(
                Action.RETRY,
                "attempt 1 FAIL (judge): x is never read; the builder regenerates with the "
                "correction (attempt 2 of 4)",
                correction_for("judge", "x is never read"),
            ),
            id="fail-first-of-four",
        ),
        pytest.param(
            WHOLE,
            judged(verdicts.Kind.FAIL, "x is never read", by="checks"),
            4,
            3,
            Step(
                Action.GIVE_UP,
                "attempt 4 FAIL (checks): x is never read; no retries left (max_retries 3)",
            ),
            id="fail-last",
        ),
        pytest.param(
            WHOLE,
            judged(verdicts.Kind.NONE, "no PASS or FAIL line"),
            1,
            0,
            Step(
                Action.GIVE_UP,
                "attempt 1 NO VERDICT (judge): no PASS or FAIL line; no retries left "
                "(max_retries 0)",
            ),
            id="no-verdict-without-retries",
        ),
        pytest.param(
            THIRD_BLOCK,
            judged(verdicts.Kind.NONE, "no PASS or FAIL line"),
            1,
            1,
            Step(
                Action.RETRY,
                "block 3, attempt 1 NO VERDICT (judge): no PASS or FAIL line; the builder "
                "rewrites this block with the correction (attempt 2 of 2)",
                "The validator could not confirm your answer:\nno PASS or FAIL line\n\n"
                "Fix every problem and send this block only, as one fenced code block again.",
            ),
            id="block-no-verdict-retried",
        ),
        pytest.param(
            THIRD_BLOCK,
            judged(verdicts.Kind.FAIL, "line 1: bad"),
            2,
            1,
            Step(
                Action.GIVE_UP,
                "block 3, attempt 2 FAIL (judge): line 1: bad; no retries left (max_retries 1); "
                "2 earlier block(s) stay committed",
            ),
            id="block-fail-last",
        ),
        pytest.param(
            THIRD_BLOCK, judged(verdicts.Kind.PASS), 1, 1, Step(Action.ACCEPT), id="block-pass"
        ),
    ],
)
def test_next_step_after_a_judged_attempt(
    unit: WholeAnswer | NextBlock,
    judgement: Judgement,
    attempt: int,
    max_retries: int,
    expected: Step,
) -> None:
    assert next_step(unit, judgement, attempt, max_retries) == expected


def test_a_whole_answer_is_read_as_its_blocks_and_kept_when_given_up() -> None:
    assert WHOLE.read(BROKEN + "END OF WORK\n") == Reply(extract_blocks(BROKEN))
    assert WHOLE.read("END OF WORK") == Reply(extract_blocks("END OF WORK"))  # never finished
    assert WHOLE.request == first_request(FINAL_PROTOCOL)
    assert (WHOLE.block, WHOLE.accepted, WHOLE.findings) == (None, "", ())
    assert WHOLE.checking(2, 4, 30) == "attempt 2 of 4: checking 30 tokens of answer"
    assert WHOLE.kept_result(BROKEN) == BROKEN


def test_a_block_is_read_without_its_markers_and_a_give_up_keeps_the_committed_ones() -> None:
    assert THIRD_BLOCK.read("  **END OF WORK**  ") == Reply([], finished=True)
    assert THIRD_BLOCK.read(AREA + "END OF WORK.\n") == Reply(extract_blocks(AREA), True)
    assert THIRD_BLOCK.read(AREA + EOB) == Reply(extract_blocks(AREA), False)
    assert THIRD_BLOCK.request == after([IMPORTS, AREA])
    assert THIRD_BLOCK.accepted == "import math\n\n" + AREA_CODE
    assert THIRD_BLOCK.checking(2, 4, 30) == "block 3, attempt 2 of 4: checking it"
    assert THIRD_BLOCK.kept_result("whatever") == block_result("import math\n", AREA_CODE)
    first = NextBlock(first_request(BLOCK_PROTOCOL), 0, (), ())
    assert first.request == block_request()
    assert first.kept_result(IMPORTS) is None  # nothing committed: no result
