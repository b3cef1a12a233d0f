"""Validator passes: generate → validate → commit, with the correction fed back on a FAIL.

The dispatcher hands a task here once the builder's lease is held, and keeps that
lease until this returns: every attempt (and every block) is generated on the same
resident builder, so the scheduler cannot swap it out between attempts. Each answer
goes through the deterministic checks (`host.tasks.checks`, in a thread, like the extraction
of its code blocks and the diff of the result: none may hold up the event loop) and,
only when they pass, through the validator model (`host.core.verdict`), which is
persistent or on the CPU (config refuses anything else), so asking it never forces a
swap either.

Every attempt is a task event — RUNNING → VALIDATING for the check, then VALIDATING →
RUNNING (a retry, with the verdict and reason), DONE (accepted) or FAILED (no retries
left) — and the exchange is kept as the task's scratchpad. The host never writes a user
file: an accepted result for `context.target_file` is offered as a unified diff.

Both policies run their attempts through one skeleton, `ValidationLoop._attempts`, for one
unit at a time: the whole answer (`final`, a `WholeAnswer`) or the next block
(`block_by_block`, a `NextBlock`). The unit says what differs (what the builder is asked,
how its reply is read, the words of the events, what a give up keeps); what follows a
judged attempt is the pure `next_step`. Each policy then states only what accepting
commits: the answer, or one more block and the request for the next.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from host.config import ValidationSettings
from host.core import verdict as verdicts
from host.core.patches import target_content, unified_diff
from host.core.task_states import TaskStatus
from host.models.arbiter import ModelUnavailable, QueueFull, TooManyRequests, WaitTimedOut
from host.models.chat import ChatFailed, complete_chat
from host.models.leases import ModelLease
from host.store import Store, TaskRow
from host.tasks import checks
from host.tasks.checks import CodeBlock, Finding

Messages = list[dict[str, str]]
Generate = Callable[[Messages], Awaitable[tuple[str, int]]]
"""The builder, on the lease the dispatcher holds: messages → (text, tokens)."""
AskValidator = Callable[[Messages], Awaitable[str]]

SCRATCH_MAX_CHARS = 20_000
"""One scratchpad entry is cut to this: the scratchpad is for reading, not replaying."""

FINAL_PROTOCOL = "Put all code in fenced code blocks with their language (```python ... ```)."
TARGET_PROTOCOL = (
    "Answer with the complete new content of `{path}` in one fenced code block with its "
    "language; it replaces the file as a whole."
)
BLOCK_PROTOCOL = """\
Work block by block. Each reply holds exactly ONE top-level block of code (the imports, \
one function, or one class) in one fenced code block with its language, followed by a \
line `END OF BLOCK`. Then stop and wait: each block is checked before you write the next. \
When the work is complete, reply with the line `END OF WORK` alone."""
END_OF_BLOCK = "END OF BLOCK"
END_OF_WORK = "END OF WORK"
_MARKER = re.compile(r"^[ \t*_`]*END OF (?:BLOCK|WORK)[ \t*_`.]*$", re.M)


class ValidatorUnavailable(Exception):
    """The validator model could not be asked; the task fails with this, not a verdict."""


@dataclass(frozen=True)
class Judgement:
    """The outcome of checking one answer (or one block)."""

    verdict: verdicts.Kind
    by: str
    """`checks`, the validator model's name, or `checks only` when there is no model."""
    reason: str
    findings: list[dict[str, Any]]
    validator_answer: str | None = None
    validator_ms: float | None = None

    @property
    def passed(self) -> bool:
        return self.verdict is verdicts.Kind.PASS


def correction(judgement: Judgement, *, block: bool) -> str:
    """What the builder reads after a FAIL: the reasons, and what to send back."""
    what = "this block only, as one fenced code block" if block else "the complete answer"
    if judgement.verdict is verdicts.Kind.NONE:
        head = "The validator could not confirm your answer"
    else:
        head = f"Your answer failed validation ({judgement.by})"
    return f"{head}:\n{judgement.reason}\n\nFix every problem and send {what} again."


def split_reply(text: str) -> tuple[str, bool]:
    """A block-protocol reply without its marker lines, and whether it says END OF WORK."""
    finished = any(END_OF_WORK in line for line in _MARKER.findall(text))
    return _MARKER.sub("", text).strip("\n"), finished


def _language_for(path: str) -> str:
    suffix = path.rsplit(".", 1)[-1] if "." in path.rsplit("/", 1)[-1] else ""
    return checks.normalise_language(suffix)


def proposed_code(blocks: Sequence[CodeBlock], target: str | None) -> str:
    """The file content an answer proposes: its blocks in the target's language when it
    has any (a `bash` usage example beside the Python file is not part of the file)."""
    chosen = list(blocks)
    if target:
        language = _language_for(target)
        matching = [b for b in blocks if b.language == language]
        chosen = matching or chosen
    return checks.code_of(chosen)


def _clip(text: str) -> str:
    if len(text) <= SCRATCH_MAX_CHARS:
        return text
    return text[:SCRATCH_MAX_CHARS] + f"\n[… {len(text) - SCRATCH_MAX_CHARS} more characters]"


# -- one unit of attempts: the whole answer, or one block ------------------------------


@dataclass(frozen=True)
class Reply:
    """A builder's reply as the checks see it."""

    blocks: list[CodeBlock]
    finished: bool = False
    """The reply said END OF WORK (only a block's reply is read for the marker)."""


@dataclass(frozen=True)
class WholeAnswer:
    """`final`: the unit is the whole answer, and a retry regenerates all of it."""

    request: Messages
    """What the builder is asked first: the task and the answer protocol."""

    block = None
    where = ""
    """How an event names the unit, before `attempt N`."""
    redo = "regenerates"
    accepted = ""
    """No code is accepted before a whole answer: the validator has no context to see."""
    findings = ()
    """Nothing is committed before it, so a retry or give up records its findings alone."""

    def read(self, text: str) -> Reply:
        return Reply(checks.extract_blocks(text))

    def checking(self, attempt: int, limit: int, tokens: int) -> str:
        return f"attempt {attempt} of {limit}: checking {tokens} tokens of answer"

    def left_behind(self) -> str:
        return ""

    def kept_result(self, text: str) -> str | None:
        """A whole answer that fails for good stays the result: the client sees what failed."""
        return text


@dataclass(frozen=True)
class NextBlock:
    """`block_by_block`: the unit is the next block, and a retry rewrites that block only;
    the blocks committed before it stay as they are, whatever becomes of this one."""

    first: Messages
    """The task and the block protocol, as every block's request begins."""
    block: int
    """This block's index in the task, from 0."""
    committed: tuple[CodeBlock, ...]
    findings: tuple[dict[str, Any], ...]
    """The committed blocks' findings: a retry or give up records them before this block's."""

    redo = "rewrites this block"

    @property
    def where(self) -> str:
        return f"block {self.block + 1}, "

    @property
    def request(self) -> Messages:
        """The task, then the accepted code so far as one exchange: the builder's context
        grows with the accepted code, not with every failed attempt."""
        if not self.committed:
            return [*self.first[:-1], _with_note(self.first[-1], "Write the first block.")]
        accepted = "\n".join(
            f"```{b.language}\n{b.code.rstrip()}\n```\n{END_OF_BLOCK}" for b in self.committed
        )
        return [
            *self.first,
            {"role": "assistant", "content": accepted},
            {
                "role": "user",
                "content": f"Accepted. Write the next block, or reply {END_OF_WORK} if the "
                "work is complete.",
            },
        ]

    @property
    def accepted(self) -> str:
        """The committed code, which the validator sees as context, not to review."""
        return checks.code_of(self.committed)

    def read(self, text: str) -> Reply:
        """The reply's block; a reply that says END OF WORK counts its fenced code only,
        so a closing remark ("That is all.") is not taken for a block of code."""
        code, finished = split_reply(text)
        blocks = checks.extract_blocks(code)
        if finished:
            blocks = [b for b in blocks if b.fenced]
        return Reply(blocks, finished)

    def checking(self, attempt: int, limit: int, tokens: int) -> str:
        return f"{self.where}attempt {attempt} of {limit}: checking it"

    def left_behind(self) -> str:
        """The end of a give up's reason: a failed block does not undo the earlier ones."""
        return f"; {len(self.committed)} earlier block(s) stay committed"

    def kept_result(self, text: str) -> str | None:
        """A block that fails for good is dropped: the result is what was committed."""
        return block_result(self.committed)


Unit = WholeAnswer | NextBlock
"""What `ValidationLoop._attempts` runs attempts for; each says only what differs."""


class Action(enum.StrEnum):
    ACCEPT = "accept"
    RETRY = "retry"
    GIVE_UP = "give up"


@dataclass(frozen=True)
class Step:
    """What follows a judged attempt, with its words."""

    action: Action
    reason: str = ""
    """The event's reason for a retry or a give up; an accept is worded by its policy,
    which knows what accepting it committed."""
    correction: str = ""
    """What the builder reads before the next attempt (a retry only)."""


def next_step(unit: Unit, judgement: Judgement, attempt: int, max_retries: int) -> Step:
    """After attempt `attempt` of 1 + `max_retries`: a PASS is accepted; anything else (a
    FAIL, and no verdict too, which is never taken for a PASS) is retried with the
    correction while attempts are left, and given up on after the last."""
    if judgement.passed:
        return Step(Action.ACCEPT)
    limit = max_retries + 1
    said = f"{unit.where}attempt {attempt} {_verdict_text(judgement)}"
    if attempt >= limit:
        reason = f"{said}; no retries left (max_retries {max_retries}){unit.left_behind()}"
        return Step(Action.GIVE_UP, reason)
    return Step(
        Action.RETRY,
        f"{said}; the builder {unit.redo} with the correction (attempt {attempt + 1} of {limit})",
        correction(judgement, block=unit.block is not None),
    )


@dataclass(frozen=True)
class Accepted:
    """The attempt that passed, for its policy to commit."""

    attempt: int
    text: str
    reply: Reply
    judgement: Judgement
    data: dict[str, Any]
    """The event data of its verdict."""


@dataclass(frozen=True)
class Finished:
    """A reply that said END OF WORK with no code in it: there was nothing to check."""

    attempt: int


def block_result(committed: Sequence[CodeBlock]) -> str | None:
    """The committed blocks as one fenced answer; None before the first."""
    if not committed:
        return None
    language = next((b.language for b in committed if b.language), "")
    return f"```{language}\n{checks.code_of(committed)}```\n"


@dataclass
class ValidationLoop:
    """One task's validator pass. `run()` ends the task DONE or FAILED (cancellation and
    builder errors propagate to the dispatcher, which records them as before)."""

    store: Store
    row: TaskRow
    base_messages: Messages
    generate: Generate
    ask_validator: AskValidator | None
    validator_name: str | None
    settings: ValidationSettings
    on_change: Callable[[str], None] = lambda phase: None
    """Called with the new status after each transition (progress, listeners)."""
    clock: Callable[[], float] = time.perf_counter
    """Times the validator's answer (`validator_ms`); a test passes a fake one."""
    scratchpad: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    tokens: int = 0

    # -- shared steps --------------------------------------------------------------------

    def _note(self, role: str, content: str, attempt: int, block: int | None) -> None:
        entry: dict[str, Any] = {"role": role, "content": _clip(content), "attempt": attempt}
        if block is not None:
            entry["block"] = block
        self.scratchpad.append(entry)

    async def _move(
        self, status: TaskStatus, reason: str, data: dict[str, Any] | None = None, **fields: Any
    ) -> None:
        await self.store.move_task(
            self.row.id,
            status,
            reason,
            data=data,
            scratchpad=self.scratchpad,
            attempts=self.attempts,
            tokens=self.tokens,
            **fields,
        )
        self.on_change(status.value)

    async def _build(self, messages: Messages, attempt: int, block: int | None) -> str:
        text, tokens = await self.generate(messages)
        self.tokens += tokens
        self.attempts += 1
        self._note("builder", text, attempt, block)
        return text

    async def judge(
        self,
        blocks: Sequence[CodeBlock],
        attempt: int,
        block_index: int | None = None,
        accepted: str = "",
    ) -> Judgement:
        """Deterministic checks, then (only if they pass) the validator model."""
        report = await asyncio.to_thread(checks.check_blocks, blocks)
        found = report.findings_json()
        if block_index is not None:
            found = [{**f, "block": block_index} for f in found]
        if not report.passed:
            reason = "; ".join(report.errors())
            self._note("checks", f"FAIL: {reason}", attempt, block_index)
            return Judgement(verdicts.Kind.FAIL, "checks", reason, found)
        skipped = [s for b in report.blocks for s in b.skipped]
        summary = "PASS" + (f" (skipped: {'; '.join(skipped)})" if skipped else "")
        self._note("checks", summary, attempt, block_index)
        if self.ask_validator is None or self.validator_name is None:
            return Judgement(verdicts.Kind.PASS, "checks only", "", found)
        code = checks.code_of(blocks)
        language = next((b.language for b in blocks if b.language), "")
        messages = verdicts.build_messages(
            self.row.prompt, code, language=language, notes=report.warnings(), accepted=accepted
        )
        started = self.clock()
        answer = await self.ask_validator(messages)
        elapsed_ms = (self.clock() - started) * 1000
        verdict = verdicts.parse_verdict(answer)
        self._note("validator", answer, attempt, block_index)
        if verdict.kind is not verdicts.Kind.PASS:
            finding = Finding(
                verdicts.line_of(verdict.reason), verdict.reason, "error", "validator"
            ).as_json(block=block_index if block_index is not None else 0)
            found = [*found, finding]
        return Judgement(
            verdict.kind, self.validator_name, verdict.reason, found, answer, elapsed_ms
        )

    def _event_data(self, judgement: Judgement, attempt: int, block: int | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "attempt": attempt,
            "verdict": judgement.verdict.value,
            "by": judgement.by,
            "reason": judgement.reason,
            "findings": len(judgement.findings),
        }
        if block is not None:
            data["block"] = block
        if judgement.validator_ms is not None:
            data["validator_ms"] = round(judgement.validator_ms, 1)
        return data

    def _patch(self, code: str) -> str | None:
        target = target_content(self.row.context)
        if target is None:
            return None
        path, old = target
        return unified_diff(path, old, code)

    async def _fail(self, reason: str, data: dict[str, Any], **fields: Any) -> None:
        await self._move(TaskStatus.FAILED, reason, data, error=reason, validated=False, **fields)

    def _asking(self, protocol: str) -> Messages:
        """The task's messages with the policy's protocol after the last one."""
        return [*self.base_messages[:-1], _with_note(self.base_messages[-1], protocol)]

    # -- the attempts of one unit, the same for both policies ----------------------------

    async def _attempts(self, unit: Unit) -> Accepted | Finished | None:
        """Build → check → accept, retry with the correction, or give up, for one unit.

        The accepted attempt is returned for the policy to commit, as is a reply that
        finished the work without code (nothing to check). A give up is recorded here,
        the task FAILED with what the unit keeps, and returns None."""
        limit = self.settings.max_retries + 1
        messages = unit.request
        attempt = 1
        while True:
            before = self.tokens
            text = await self._build(messages, attempt, unit.block)
            reply = await asyncio.to_thread(unit.read, text)
            if reply.finished and not reply.blocks:
                return Finished(attempt)
            await self._move(
                TaskStatus.VALIDATING,
                unit.checking(attempt, limit, self.tokens - before),
                _checking_data(attempt, unit.block),
            )
            judgement = await self.judge(reply.blocks, attempt, unit.block, unit.accepted)
            data = self._event_data(judgement, attempt, unit.block)
            step = next_step(unit, judgement, attempt, self.settings.max_retries)
            if step.action is Action.ACCEPT:
                return Accepted(attempt, text, reply, judgement, data)
            findings = [*unit.findings, *judgement.findings]
            if step.action is Action.GIVE_UP:
                await self._fail(
                    step.reason, data, findings=findings, result=unit.kept_result(text)
                )
                return None
            self._note("prompt", step.correction, attempt + 1, unit.block)
            messages = [
                *unit.request,
                {"role": "assistant", "content": text},
                {"role": "user", "content": step.correction},
            ]
            await self._move(TaskStatus.RUNNING, step.reason, data, findings=findings)
            attempt += 1

    # -- the two policies ---------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.row.validation == "block_by_block":
                await self._run_blocks()
            else:
                await self._run_final()
        except ValidatorUnavailable as exc:
            message = str(exc)
            await self._fail(message, {"attempt": self.attempts, "verdict": "none"})

    async def _run_final(self) -> None:
        target = self.row.context.get("target_file")
        protocol = TARGET_PROTOCOL.format(path=target) if target else FINAL_PROTOCOL
        outcome = await self._attempts(WholeAnswer(self._asking(protocol)))
        if not isinstance(outcome, Accepted):
            return  # given up, and recorded (a whole answer never finishes without code)
        code = proposed_code(outcome.reply.blocks, target)
        await self._move(
            TaskStatus.DONE,
            f"attempt {outcome.attempt} PASS ({outcome.judgement.by}); result committed",
            outcome.data,
            result=outcome.text,
            validated=True,
            findings=outcome.judgement.findings,
            patch=await asyncio.to_thread(self._patch, code),
        )

    async def _run_blocks(self) -> None:
        target = self.row.context.get("target_file")
        protocol = BLOCK_PROTOCOL
        if target:
            protocol += f"\nThe blocks, in order, make up the complete new content of `{target}`."
        first = self._asking(protocol)
        committed: list[CodeBlock] = []
        findings: list[dict[str, Any]] = []
        for index in range(self.settings.max_blocks):
            block = NextBlock(first, index, tuple(committed), tuple(findings))
            outcome = await self._attempts(block)
            if outcome is None:
                return  # this block was given up on, and recorded
            if isinstance(outcome, Finished):  # after a FAIL too: the failed block is dropped
                await self._finish_blocks(committed, findings, index, outcome.attempt)
                return
            committed.extend(outcome.reply.blocks)
            findings.extend(outcome.judgement.findings)
            if outcome.reply.finished:
                await self._finish_blocks(
                    committed, findings, index + 1, outcome.attempt, outcome.data
                )
                return
            self._note("prompt", f"block {index + 1} accepted", outcome.attempt, index)
            await self._move(
                TaskStatus.RUNNING,
                f"{block.where}attempt {outcome.attempt} PASS ({outcome.judgement.by}); "
                f"committed ({len(committed)} block(s) so far); asking for the next",
                outcome.data,
                findings=findings,
                result=block_result(committed),
            )
        await self._fail(
            f"the builder did not say {END_OF_WORK} within {self.settings.max_blocks} blocks "
            "(validation.max_blocks); the committed blocks are in the result",
            {"blocks": len(committed)},
            findings=findings,
            result=block_result(committed),
        )

    async def _finish_blocks(
        self,
        committed: list[CodeBlock],
        findings: list[dict[str, Any]],
        blocks: int,
        attempt: int,
        data: dict[str, Any] | None = None,
    ) -> None:
        if not committed:
            await self._fail(
                f"the builder said {END_OF_WORK} without writing a block",
                {"attempt": attempt, "blocks": 0},
            )
            return
        target = self.row.context.get("target_file")
        code = proposed_code(committed, target)
        await self._move(
            TaskStatus.DONE,
            f"{END_OF_WORK} after {blocks} block(s); every block validated and committed",
            data or {"attempt": attempt, "blocks": blocks},
            result=block_result(committed),
            validated=True,
            findings=findings,
            patch=await asyncio.to_thread(self._patch, code),
        )


def _with_note(message: dict[str, str], note: str) -> dict[str, str]:
    return {**message, "content": f"{message['content']}\n\n{note}"}


def _checking_data(attempt: int, block: int | None) -> dict[str, Any]:
    if block is None:
        return {"attempt": attempt, "phase": "validate"}
    return {"attempt": attempt, "block": block, "phase": "validate"}


def _verdict_text(judgement: Judgement) -> str:
    if judgement.verdict is verdicts.Kind.NONE:
        return f"NO VERDICT ({judgement.by}): {judgement.reason}"
    return f"FAIL ({judgement.by}): {judgement.reason}"


# -- the validator model, asked through its lease ---------------------------------------


class Leases(Protocol):
    async def lease(
        self, model: str, timeout: float | None = None, *, forced: bool = False
    ) -> ModelLease: ...


async def ask_validator(models: Leases, model: str, messages: Messages, max_tokens: int) -> str:
    """One verdict from the validator model. The lease is held only for the request; the
    model is persistent or on the CPU, so acquiring it never evicts the builder."""
    try:
        endpoint = await models.lease(model)
    except (ModelUnavailable, WaitTimedOut, QueueFull, TooManyRequests) as exc:
        raise ValidatorUnavailable(f"validator {model} unavailable: {exc}") from exc
    body = {
        "messages": messages,
        "temperature": 0,
        "max_tokens": max_tokens,
        "grammar": verdicts.VERDICT_GRAMMAR,  # llama-server: a verdict in form, whatever the model
    }
    try:
        return await complete_chat(endpoint, body)
    except ChatFailed as exc:
        raise ValidatorUnavailable(f"validator {model} unavailable: {exc}") from exc
    except httpx.HTTPError as exc:
        raise ValidatorUnavailable(
            f"validator {model} failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        endpoint.release()
