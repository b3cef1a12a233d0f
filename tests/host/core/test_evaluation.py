"""Scoring labelled prompts: the tallies and the table people read."""

from __future__ import annotations

import pytest

from host.config import load_config
from host.core import routing
from host.core.evaluation import BadExamples, Example, Score, read_examples, score

TYPES = ["planning", "implementation", "infra"]


def test_a_score_counts_types_tiers_and_confusions() -> None:
    scored = Score()
    scored.add(Example("a", "implementation"), "implementation", "builder", "builder")
    scored.add(Example("b", "infra"), "admin", "operator", "operator")
    scored.add(Example("c", "planning"), "implementation", "builder", "architect")
    scored.add(Example("d", "planning"), None, None, "architect")
    assert (scored.total, scored.right_type, scored.right_tier) == (4, 1, 2)
    assert scored.type_accuracy == 0.25 and scored.tier_accuracy == 0.5
    assert scored.off_tier == {("planning", "builder"): 1}
    assert scored.confusion[("planning", "refused")] == 1
    table = scored.table(TYPES)
    assert table[0] == "| expected ↓ / inferred → | planning | implementation | infra |"
    assert table[2:] == [
        "| planning | · | 1 | · |",
        "| implementation | · | 1 | · |",
        "| infra | · | · | · |",  # inferred admin: not a column here
    ]


def test_scoring_routes_each_prompt_untyped_against_its_types_tier() -> None:
    snapshot = routing.snapshot_from_config(load_config())
    examples = [
        Example("```python\nx = 1\n```\nfinish this", "implementation"),
        Example("hmm", "infra"),
    ]
    scored = score(examples, snapshot)
    assert scored.right_type == 1  # the code fence; "hmm" falls to the default type
    assert scored.off_tier == {("infra", "architect"): 1}  # infra must reach the operator
    assert [m.example.prompt for m in scored.misses] == ["hmm"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no examples"),
        ("[1]\n", "line 1: not an object"),
        ('{"prompt": ""}\n', "line 1: `prompt` must be a non-empty string"),
        ('\n{"prompt": "x", "type": "poetry"}\n', "line 2: `type` 'poetry' is not one of"),
        ("{oops\n", "line 1: not JSON"),
    ],
)
def test_a_bad_labelled_file_names_its_line(text: str, message: str) -> None:
    with pytest.raises(BadExamples, match=message.replace("[", r"\[")):
        read_examples(text, TYPES)
