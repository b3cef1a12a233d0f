"""The router scored on an evaluation set written apart from the classifier's corpus
(tests/host/core/data/routing_eval.jsonl: everyday requests, labelled by what the
person wants). The suite enforces floors; docs/BENCHMARKS.md reports the full table,
the old keyword rules' score beside it, and the decision latency."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.config import load_config
from host.core import routing
from host.core.evaluation import Example, Score, read_examples, score
from host.models.type_classifier import TypeClassifier, all_examples, load_or_fit

EVAL_SET = Path(__file__).parent / "data" / "routing_eval.jsonl"

TYPE_ACCURACY_FLOOR = 0.88
"""Under the issue's 90 % target, not met yet: 89.5 % on 2026-12-02 (91.4 % when the
classifier may overrule a keyword at 0.3, but then "Plan it." goes to admin). The floor
keeps what is reached from slipping back."""
TIER_ACCURACY_FLOOR = 0.90
"""Under the issue's 95 % target, not met yet: 91.8 % on 2026-12-02 (audit work that
names servers reaches the operator, review work with code the builder)."""


def eval_examples() -> list[Example]:
    return read_examples(EVAL_SET.read_text(), load_config().task_type_names())


@pytest.fixture(scope="module")
def classifier() -> TypeClassifier:
    return load_or_fit()


@pytest.fixture(scope="module")
def scored(classifier: TypeClassifier) -> Score:
    snapshot = routing.snapshot_from_config(load_config(), classifier=classifier)
    return score(eval_examples(), snapshot)


def test_the_eval_set_is_not_the_training_corpus() -> None:
    training = {prompt.strip().lower() for prompt, _ in all_examples()}
    shared = [e.prompt for e in eval_examples() if e.prompt.strip().lower() in training]
    assert shared == []
    per_type: dict[str, int] = {}
    for example in eval_examples():
        per_type[example.type] = per_type.get(example.type, 0) + 1
    assert set(per_type) == set(load_config().task_type_names())
    assert min(per_type.values()) >= 25


def test_the_type_is_right_often_enough(scored: Score) -> None:
    misses = "\n".join(
        f"{m.example.type} → {m.got_type}: {m.example.prompt[:80]}" for m in scored.misses
    )
    assert scored.type_accuracy >= TYPE_ACCURACY_FLOOR, misses


def test_the_tier_is_right_often_enough(scored: Score) -> None:
    assert scored.tier_accuracy >= TIER_ACCURACY_FLOOR, dict(scored.off_tier)


def test_infra_never_leaves_the_operator_tier(scored: Score) -> None:
    off = {tier: n for (expected, tier), n in scored.off_tier.items() if expected == "infra"}
    assert off == {}


def test_a_classifier_decision_says_its_type_confidence_and_words(
    classifier: TypeClassifier,
) -> None:
    snapshot = routing.snapshot_from_config(load_config(), classifier=classifier)
    decision = routing.decide(
        routing.RouteRequest(prompt="Add a --dry-run flag to the sync command"), snapshot
    )
    reason = next(r for r in decision.reasons if r.startswith("type "))
    assert decision.type == "implementation"
    assert "classifier: implementation 0." in reason
    assert "'" in reason  # the words that weighed most


def test_the_classifier_is_deterministic_and_travels_as_its_cache(
    classifier: TypeClassifier,
) -> None:
    import pickle

    prompt = "rotate the TLS certificate on the ingress before it expires friday"
    first = classifier.classify(prompt)
    again = pickle.loads(pickle.dumps(classifier))
    assert again.classify(prompt) == first
    if classifier.path is not None:
        assert len(pickle.dumps(classifier)) < 1_000  # the path, not the arrays
