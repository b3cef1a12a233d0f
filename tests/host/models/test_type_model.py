"""The classifier model's question, against in-process fakes for the faults (a model that
is not resident, one that hangs, one that errors); the real question to a real
llama-server, grammar and all, is in test_type_model_live.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from host.models.arbiter import WaitTimedOut
from host.models.leases import ModelLease
from host.models.type_model import (
    TypeModel,
    TypeQuestionFailed,
    grammar,
    question_body,
)

CHOICES = ("planning", "review")


class FakeLeases:
    """A fleet whose model is resident (`now`), or must be waited for (`later`)."""

    def __init__(
        self,
        handler: Callable[[httpx.Request], httpx.Response],
        *,
        resident: bool = True,
        wait_error: Exception | None = None,
    ) -> None:
        self._handler = handler
        self._resident = resident
        self._wait_error = wait_error
        self.released = 0
        self.waited: list[float | None] = []
        self.bodies: list[dict[str, object]] = []

    def _lease(self) -> ModelLease:
        def record(request: httpx.Request) -> httpx.Response:
            self.bodies.append(json.loads(request.content))
            return self._handler(request)

        def release() -> None:
            self.released += 1

        return ModelLease(
            model="router",
            api_base="http://router.test/v1",
            http=httpx.AsyncClient(transport=httpx.MockTransport(record)),
            headers={},
            upstream_model=None,
            log_path=None,
            server_url="http://router.test",
            _release=release,
        )

    def lease_now(self, model: str, forced: bool = False) -> ModelLease | None:
        return self._lease() if self._resident else None

    async def lease(
        self, model: str, timeout: float | None = None, *, forced: bool = False
    ) -> ModelLease:
        self.waited.append(timeout)
        if self._wait_error is not None:
            raise self._wait_error
        return self._lease()


def answering(text: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(200, json={"choices": [{"message": {"content": text}}]})


def test_the_grammar_allows_only_the_choices() -> None:
    assert grammar(CHOICES) == 'root ::= "planning" | "review"'
    assert grammar(['a "quoted" type']) == 'root ::= "a \\"quoted\\" type"'


def test_the_question_describes_each_choice_and_constrains_the_answer() -> None:
    body = question_body("hmm", ("review", "my-type"))
    system = body["messages"][0]["content"]  # type: ignore[index]
    assert "- review: reviewing" in system
    assert "- my-type\n" in system  # a config's own type has no description
    assert body["grammar"] == 'root ::= "review" | "my-type"'
    assert body["temperature"] == 0


async def test_a_resident_model_is_asked_and_its_lease_given_back() -> None:
    leases = FakeLeases(answering(" review\n"))
    model = TypeModel(leases, "router", may_wait=False)
    assert await model.ask("thoughts on this?", CHOICES) == "review"
    assert leases.released == 1
    assert leases.waited == []
    assert leases.bodies[0]["stream"] is False


async def test_a_model_on_a_gpu_is_not_loaded_for_a_question() -> None:
    leases = FakeLeases(answering("review"), resident=False)
    model = TypeModel(leases, "router", may_wait=False)
    with pytest.raises(TypeQuestionFailed, match="not resident"):
        await model.ask("hmm", CHOICES)
    assert leases.waited == []


async def test_a_cpu_model_is_waited_for_within_the_question_timeout() -> None:
    leases = FakeLeases(answering("planning"), resident=False)
    model = TypeModel(leases, "router", may_wait=True, timeout_s=3.0)
    assert await model.ask("hmm", CHOICES) == "planning"
    assert leases.waited == [3.0]


async def test_a_lease_that_times_out_is_a_failure_that_says_so() -> None:
    leases = FakeLeases(answering("x"), resident=False, wait_error=WaitTimedOut("waited 3 s"))
    with pytest.raises(TypeQuestionFailed, match="waited 3 s"):
        await TypeModel(leases, "router", may_wait=True).ask("hmm", CHOICES)


async def test_a_model_that_hangs_is_abandoned_at_the_timeout() -> None:
    async def hang(_: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    class HangingLeases(FakeLeases):
        def _lease(self) -> ModelLease:
            lease = super()._lease()
            lease.http = httpx.AsyncClient(transport=httpx.MockTransport(hang))
            return lease

    leases = HangingLeases(answering("x"))
    model = TypeModel(leases, "router", may_wait=False, timeout_s=0.05)
    with pytest.raises(TypeQuestionFailed, match=r"no answer within 0\.05 s"):
        await asyncio.wait_for(model.ask("hmm", CHOICES), 5)
    assert leases.released == 1


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (lambda _: httpx.Response(500, text="boom"), "answered HTTP 500"),
        (lambda _: httpx.Response(200, text="not json"), "not JSON"),
        (answering("   "), "answered nothing"),
    ],
)
async def test_a_bad_answer_is_a_failure_that_says_what_was_wrong(
    handler: Callable[[httpx.Request], httpx.Response], message: str
) -> None:
    leases = FakeLeases(handler)
    with pytest.raises(TypeQuestionFailed, match=message):
        await TypeModel(leases, "router", may_wait=False).ask("hmm", CHOICES)
    assert leases.released == 1


async def test_a_connection_error_is_a_failure_not_a_crash() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TypeQuestionFailed, match="ConnectError"):
        await TypeModel(FakeLeases(refuse), "router", may_wait=False).ask("hmm", CHOICES)
