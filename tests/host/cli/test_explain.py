"""`tierhost route --explain` reads the decision's evidence; each branch of it, pure."""

from __future__ import annotations

from host.cli.tasks import explain_type
from host.wire import TypeEvidence


def test_a_given_type_has_nothing_to_explain() -> None:
    assert explain_type(None) == ["type: given by the request (nothing inferred)"]


def test_a_strong_rule_says_the_classifier_was_not_asked() -> None:
    lines = explain_type(
        TypeEvidence.model_validate(
            {
                "decided_by": "rule",
                "rule": "file kind of main.py in the context → implementation",
                "rule_scores": {"implementation": 3.0, "planning": 1.0},
                "strong_rule": True,
                "classifier": None,
                "classifier_model": None,
            }
        )
    )
    assert lines[1].endswith("(strong: decides)")
    assert lines[2] == "     scores: implementation 3, planning 1"
    assert lines[3] == "  2. classifier: not asked (a strong rule decided)"


def test_the_classifier_models_failure_is_shown() -> None:
    lines = explain_type(
        TypeEvidence.model_validate(
            {
                "decided_by": "default",
                "rule": "no rule fired",
                "rule_scores": {},
                "strong_rule": False,
                "classifier": {"type": "infra", "confidence": 0.17, "words": [], "needed": 0.3},
                "classifier_model": {
                    "model": "router",
                    "choices": ["planning", "review"],
                    "answer": None,
                    "error": "no answer within 10 s",
                },
            }
        )
    )
    assert lines[2] == "     scores: none"
    assert lines[3] == "  2. classifier: infra 0.17, needed 0.30 — no telling words"
    assert lines[4] == (
        "  3. classifier model router (among planning, review): no answer: no answer within 10 s"
    )
    assert lines[5] == "  decided by: default"
