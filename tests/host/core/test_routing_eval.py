"""The router scored on two labelled sets written apart from the classifier's corpus
(everyday requests, labelled by what the person wants):

- tests/host/core/data/routing_eval.jsonl, the evaluation set: its misses showed which
  boundaries the corpus needed more examples on (and corpus lines too close to one of
  its prompts were taken out again);
- tests/host/core/data/routing_holdout.jsonl, the held-out set: written afterwards by
  someone who saw neither the corpus nor the evaluation set; nothing was tuned on it.

The suite enforces the issue's targets on both; docs/BENCHMARKS.md reports the full
tables, the old keyword rules' score beside them, and the decision latency."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.config import load_config
from host.core import routing
from host.core.evaluation import Example, Score, read_examples, score
from host.models.type_classifier import TypeClassifier, all_examples, load_or_fit

DATA = Path(__file__).parent / "data"
SETS = ("routing_eval.jsonl", "routing_holdout.jsonl")

TYPE_ACCURACY_FLOOR = 0.90
"""The issue's target (2026-12-02: 96.9 % on the evaluation set, 96.7 % held out)."""
TIER_ACCURACY_FLOOR = 0.95
"""The issue's target (2026-12-02: 98.0 % on the evaluation set, 97.9 % held out)."""


def examples_of(name: str) -> list[Example]:
    return read_examples((DATA / name).read_text(), load_config().task_type_names())


@pytest.fixture(scope="module")
def classifier() -> TypeClassifier:
    return load_or_fit()


@pytest.fixture(scope="module", params=SETS)
def scored(request: pytest.FixtureRequest, classifier: TypeClassifier) -> Score:
    snapshot = routing.snapshot_from_config(load_config(), classifier=classifier)
    return score(examples_of(request.param), snapshot)


@pytest.mark.parametrize("name", SETS)
def test_each_set_is_apart_from_the_training_corpus(name: str) -> None:
    training = {prompt.strip().lower() for prompt, _ in all_examples()}
    shared = [e.prompt for e in examples_of(name) if e.prompt.strip().lower() in training]
    assert shared == []
    per_type: dict[str, int] = {}
    for example in examples_of(name):
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
