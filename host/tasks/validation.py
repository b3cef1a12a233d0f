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
"""

from __future__ import annotations

import asyncio
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
    """Called with `running` or `validating` after each transition (progress, listeners)."""
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
        started = time.perf_counter()
        answer = await self.ask_validator(messages)
        elapsed_ms = (time.perf_counter() - started) * 1000
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
        first = [*self.base_messages[:-1], _with_note(self.base_messages[-1], protocol)]
        messages = first
        limit = self.settings.max_retries + 1
        for attempt in range(1, limit + 1):
            text = await self._build(messages, attempt, None)
            await self._move(
                TaskStatus.VALIDATING,
                f"attempt {attempt} of {limit}: checking {self.tokens} tokens of answer",
                {"attempt": attempt, "phase": "validate"},
            )
            blocks = await asyncio.to_thread(checks.extract_blocks, text)
            judgement = await self.judge(blocks, attempt)
            data = self._event_data(judgement, attempt, None)
            if judgement.passed:
                code = proposed_code(blocks, target)
                await self._move(
                    TaskStatus.DONE,
                    f"attempt {attempt} PASS ({judgement.by}); result committed",
                    data,
                    result=text,
                    validated=True,
                    findings=judgement.findings,
                    patch=await asyncio.to_thread(self._patch, code),
                )
                return
            what = _verdict_text(judgement)
            if attempt == limit:
                await self._fail(
                    f"attempt {attempt} {what}; no retries left "
                    f"(max_retries {self.settings.max_retries})",
                    data,
                    result=text,
                    findings=judgement.findings,
                )
                return
            fix = correction(judgement, block=False)
            self._note("prompt", fix, attempt + 1, None)
            messages = [
                *first,
                {"role": "assistant", "content": text},
                {"role": "user", "content": fix},
            ]
            await self._move(
                TaskStatus.RUNNING,
                f"attempt {attempt} {what}; the builder regenerates with the correction "
                f"(attempt {attempt + 1} of {limit})",
                data,
                findings=judgement.findings,
            )

    async def _run_blocks(self) -> None:
        target = self.row.context.get("target_file")
        protocol = BLOCK_PROTOCOL
        if target:
            protocol += f"\nThe blocks, in order, make up the complete new content of `{target}`."
        first = [*self.base_messages[:-1], _with_note(self.base_messages[-1], protocol)]
        committed: list[CodeBlock] = []
        findings: list[dict[str, Any]] = []
        limit = self.settings.max_retries + 1
        for index in range(self.settings.max_blocks):
            messages = self._next_block_messages(first, committed)
            for attempt in range(1, limit + 1):
                text = await self._build(messages, attempt, index)
                code_text, finished = split_reply(text)
                blocks = await asyncio.to_thread(checks.extract_blocks, code_text)
                if finished and not blocks:  # after a FAIL too: the failed block is dropped
                    await self._finish_blocks(committed, findings, index, attempt)
                    return
                await self._move(
                    TaskStatus.VALIDATING,
                    f"block {index + 1}, attempt {attempt} of {limit}: checking it",
                    {"attempt": attempt, "block": index, "phase": "validate"},
                )
                accepted = checks.code_of(committed)
                judgement = await self.judge(blocks, attempt, index, accepted)
                data = self._event_data(judgement, attempt, index)
                if judgement.passed:
                    committed.extend(blocks)
                    findings.extend(judgement.findings)
                    if finished:
                        await self._finish_blocks(committed, findings, index + 1, attempt, data)
                        return
                    self._note("prompt", f"block {index + 1} accepted", attempt, index)
                    await self._move(
                        TaskStatus.RUNNING,
                        f"block {index + 1}, attempt {attempt} PASS ({judgement.by}); "
                        f"committed ({len(committed)} block(s) so far); asking for the next",
                        data,
                        findings=findings,
                        result=self._block_result(committed),
                    )
                    break
                what = _verdict_text(judgement)
                if attempt == limit:
                    await self._fail(
                        f"block {index + 1}, attempt {attempt} {what}; no retries left "
                        f"(max_retries {self.settings.max_retries}); "
                        f"{len(committed)} earlier block(s) stay committed",
                        data,
                        findings=[*findings, *judgement.findings],
                        result=self._block_result(committed),
                    )
                    return
                fix = correction(judgement, block=True)
                self._note("prompt", fix, attempt + 1, index)
                messages = [
                    *self._next_block_messages(first, committed),
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": fix},
                ]
                await self._move(
                    TaskStatus.RUNNING,
                    f"block {index + 1}, attempt {attempt} {what}; the builder rewrites "
                    f"this block with the correction (attempt {attempt + 1} of {limit})",
                    data,
                    findings=[*findings, *judgement.findings],
                )
        await self._fail(
            f"the builder did not say {END_OF_WORK} within {self.settings.max_blocks} blocks "
            "(validation.max_blocks); the committed blocks are in the result",
            {"blocks": len(committed)},
            findings=findings,
            result=self._block_result(committed),
        )

    @staticmethod
    def _next_block_messages(first: Messages, committed: Sequence[CodeBlock]) -> Messages:
        """The task, then the accepted code so far as one exchange: the builder's context
        grows with the accepted code, not with every failed attempt."""
        if not committed:
            return [*first[:-1], _with_note(first[-1], "Write the first block.")]
        accepted = "\n".join(
            f"```{b.language}\n{b.code.rstrip()}\n```\n{END_OF_BLOCK}" for b in committed
        )
        return [
            *first,
            {"role": "assistant", "content": accepted},
            {
                "role": "user",
                "content": f"Accepted. Write the next block, or reply {END_OF_WORK} if the "
                "work is complete.",
            },
        ]

    @staticmethod
    def _block_result(committed: Sequence[CodeBlock]) -> str | None:
        if not committed:
            return None
        language = next((b.language for b in committed if b.language), "")
        return f"```{language}\n{checks.code_of(committed)}```\n"

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
            result=self._block_result(committed),
            validated=True,
            findings=findings,
            patch=await asyncio.to_thread(self._patch, code),
        )


def _with_note(message: dict[str, str], note: str) -> dict[str, str]:
    return {**message, "content": f"{message['content']}\n\n{note}"}


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
