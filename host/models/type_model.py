"""The classifier model: a small model asked for a task's type when nothing explicit was sure.

The router says when to ask (`host.core.routing.Decision.type_question`: the rules did
not decide and the statistical classifier was under its threshold) and what may be
answered; this asks, through a lease like every other caller's, at temperature 0 with a
GBNF grammar that lets the model write one of the candidate type names and nothing
else. The answer is then checked by the router all the same (`resolve_tie`): a remote
endpoint may ignore the grammar.

A question must never cost more than it is worth. A classifier model on a GPU is asked
only while it is resident (a type is not worth evicting the big model); one on the CPU
or on another box may be waited for, and every question is abandoned after
`QUESTION_TIMEOUT_S`, leaving the default type, with the reason saying why.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Protocol

import httpx

from host.models.arbiter import ModelUnavailable, QueueFull, TooManyRequests, WaitTimedOut
from host.models.chat import ChatFailed, complete_chat
from host.models.leases import ModelLease

QUESTION_TIMEOUT_S = 10.0
"""The longest a request waits for the classifier model (a lease, and the answer)."""

ANSWER_TOKENS = 8
"""Room for the longest type name (a grammar-constrained answer stops at its end)."""

DESCRIPTIONS: dict[str, str] = {
    "planning": "plans, roadmaps, breaking work into steps, estimates, priorities",
    "design": "architecture, interfaces, schemas, data models, trade-offs between designs",
    "audit": "security and compliance checks, vulnerabilities, licences, secrets",
    "review": "reviewing or critiquing existing code, documents or pull requests",
    "implementation": "writing, fixing, refactoring or testing code",
    "infra": "servers, deployment, containers, networks, CI, backups, operations",
    "email": "reading, writing or answering email and messages",
    "admin": "calendars, meetings, invoices, expenses, paperwork, reminders",
}


class TypeQuestionFailed(Exception):
    """The classifier model could not be asked or gave no usable answer; says why."""


class Leases(Protocol):
    """What asking needs of the fleet."""

    def lease_now(self, model: str, forced: bool = False) -> ModelLease | None: ...

    async def lease(
        self, model: str, timeout: float | None = None, *, forced: bool = False
    ) -> ModelLease: ...


def grammar(choices: Sequence[str]) -> str:
    """A GBNF grammar whose only sentences are the choices (JSON string escapes are GBNF's)."""
    return "root ::= " + " | ".join(json.dumps(choice) for choice in choices)


def question_body(text: str, choices: Sequence[str]) -> dict[str, object]:
    """The chat completion that asks: the kinds of work described, the request, one word."""
    kinds = "\n".join(
        f"- {name}: {DESCRIPTIONS[name]}" if name in DESCRIPTIONS else f"- {name}"
        for name in choices
    )
    return {
        "messages": [
            {
                "role": "system",
                "content": (
                    "You sort requests by the kind of work they ask for. The kinds:\n"
                    f"{kinds}\nAnswer with the kind's name only."
                ),
            },
            {"role": "user", "content": f"Request:\n{text}\n\nWhich kind of work is this?"},
        ],
        "temperature": 0,
        "max_tokens": ANSWER_TOKENS,
        "grammar": grammar(choices),
    }


class TypeModel:
    """Asks one configured model; `may_wait` says whether a lease may wait for a load."""

    def __init__(
        self,
        leases: Leases,
        model: str,
        *,
        may_wait: bool,
        timeout_s: float = QUESTION_TIMEOUT_S,
    ) -> None:
        self._leases = leases
        self.model = model
        self._may_wait = may_wait
        self._timeout_s = timeout_s

    async def ask(self, text: str, choices: Sequence[str]) -> str:
        """The model's answer (one of `choices` when it obeys its grammar). Raises
        `TypeQuestionFailed` saying why there is none."""
        try:
            async with asyncio.timeout(self._timeout_s):
                lease = await self._lease()
                try:
                    answer = await complete_chat(lease, question_body(text, choices))
                finally:
                    lease.release()
        except TimeoutError:
            raise TypeQuestionFailed(f"no answer within {self._timeout_s:g} s") from None
        except (ChatFailed, ModelUnavailable, QueueFull, TooManyRequests, WaitTimedOut) as exc:
            raise TypeQuestionFailed(str(exc)) from None
        except httpx.HTTPError as exc:
            raise TypeQuestionFailed(f"{type(exc).__name__}: {exc}") from None
        if not answer.strip():
            raise TypeQuestionFailed("it answered nothing")
        return answer.strip()

    async def _lease(self) -> ModelLease:
        lease = self._leases.lease_now(self.model)
        if lease is not None:
            return lease
        if not self._may_wait:
            raise TypeQuestionFailed(
                "it is not resident, and a type is not worth a swap on its GPU"
            )
        return await self._leases.lease(self.model, self._timeout_s)
