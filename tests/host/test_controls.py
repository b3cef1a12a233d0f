"""The controls' one shell step of a decision: asking the classifier model when the pure
decision says nothing explicit was sure, and deciding again with its answer."""

from __future__ import annotations

from collections.abc import Sequence

from host.config import Config
from host.controls import Controls
from host.core import routing
from host.models.type_model import TypeQuestionFailed
from tests.host.core.test_routing import BOX, WITH_ROUTER


class FakeAsker:
    def __init__(self, answer: str | None = None, error: str | None = None) -> None:
        self.answer = answer
        self.error = error
        self.questions: list[tuple[str, tuple[str, ...]]] = []

    async def ask(self, text: str, choices: Sequence[str]) -> str:
        self.questions.append((text, tuple(choices)))
        if self.error is not None:
            raise TypeQuestionFailed(self.error)
        assert self.answer is not None
        return self.answer


class NoGate:
    def set_allowed(self, allowed: frozenset[str] | None, reason: str, device: str) -> None:
        pass


async def decided(
    config: Config, asker: FakeAsker | None, prompt: str
) -> tuple[routing.Decision, list[routing.RouteRequest]]:
    """The decision `decide_asking` returns, and every request it decided."""
    made = Controls(config, {"gpu0": NoGate()}, set)
    made.type_model = asker
    seen: list[routing.RouteRequest] = []

    async def decide(request: routing.RouteRequest) -> routing.Decision:
        seen.append(request)
        return routing.decide(request, made.snapshot())

    return await made.decide_asking(routing.RouteRequest(prompt=prompt), decide), seen


async def test_an_unsure_type_is_asked_once_and_decided_again_with_the_answer() -> None:
    asker = FakeAsker("review")
    decision, seen = await decided(WITH_ROUTER, asker, "review the plan")
    assert asker.questions == [("review the plan", ("planning", "review"))]
    assert [r.classifier_answer for r in seen] == [None, "review"]
    assert decision.type == "review"
    assert "the classifier model chose review" in decision.reasons[0]


async def test_a_failed_question_keeps_the_first_decision_and_says_why() -> None:
    decision, seen = await decided(WITH_ROUTER, FakeAsker(error="not resident"), "review the plan")
    assert len(seen) == 1
    assert decision.type == "planning"
    assert decision.reasons[0].endswith("the classifier model helper gave no answer: not resident")


async def test_nothing_is_asked_when_a_step_was_sure_or_no_model_is_configured() -> None:
    asker = FakeAsker("review")
    await decided(WITH_ROUTER, asker, "Draft a roadmap for the launch")
    await decided(BOX, asker, "review the plan")
    assert asker.questions == []
    decision, seen = await decided(WITH_ROUTER, None, "review the plan")
    assert len(seen) == 1 and decision.type == "planning"
