"""Type inference is a set of rules a person can audit: every case names the rule that fired."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host.core.task_types import (
    SCAN_HEAD_CHARS,
    SCAN_TAIL_CHARS,
    Classification,
    InferenceRules,
    choose_type,
    infer_type,
    resolve_tie,
    scanned_part,
)

RULES = InferenceRules()


@pytest.mark.parametrize(
    ("prompt", "files", "expected", "rule_part"),
    [
        ("Draft a roadmap with milestones for the release", [], "planning", "keyword"),
        ("Sketch the architecture and the data model", [], "design", "keyword"),
        ("Audit this service for vulnerabilities", [], "audit", "keyword"),
        ("Please review and critique the pull request", [], "review", "keyword"),
        ("Implement and refactor the parser", [], "implementation", "keyword"),
        ("Write a Dockerfile and deploy to kubernetes", [], "infra", "keyword"),
        ("Reply to this email from the landlord", [], "email", "keyword"),
        ("Put the meeting on my calendar and log the invoice", [], "admin", "keyword"),
        ("What is wrong here?\n```python\nprint(1/0)\n```", [], "implementation", "code fence"),
        ("Why does this fail?\ndef f(x):\n    return x", [], "implementation", "code-looking"),
        ("What does this do?", ["src/app/main.rs"], "implementation", "file kind of main.rs"),
        ("What does this do?", ["deploy/Dockerfile"], "infra", "file kind of Dockerfile"),
        ("Summarise it", ["inbox/note.eml"], "email", "file kind of note.eml"),
    ],
)
def test_each_rule_kind_fires_and_is_reported(
    prompt: str, files: list[str], expected: str, rule_part: str
) -> None:
    result = infer_type(prompt, files, RULES)
    assert result.type == expected
    assert rule_part in result.rule
    assert result.scores[expected] == max(result.scores.values())


def test_keywords_match_whole_words_only() -> None:
    # "planet" holds "plan", "classy" holds "class": neither is a keyword hit.
    result = infer_type("a classy planet", [], RULES)
    assert result.type is None
    assert result.rule == "no rule fired"


def test_a_tie_names_the_tied_types_and_chooses_nothing() -> None:
    result = infer_type("review the plan", [], RULES)
    assert result.type is None
    assert result.tied == ("planning", "review")
    assert "tie" in result.rule


def test_code_weighs_as_much_as_one_keyword() -> None:
    """Code in a prompt is evidence that code is involved, not that code is wanted:
    "review this: <code>" is a tie for the classifier to settle, not an implementation."""
    result = infer_type("review this:\n```\nx = 1\n```", [], RULES)
    assert result.type is None and result.tied == ("implementation", "review")
    assert infer_type("```\nx = 1\n```", [], RULES).type == "implementation"


def test_the_classifier_settles_a_tie_only_with_a_tied_type() -> None:
    tie = infer_type("review the plan", [], RULES)
    chosen = resolve_tie(tie, " Review. ", "planning")
    assert chosen.type == "review"
    assert "classifier model chose review" in chosen.rule

    ignored = resolve_tie(tie, "email", "planning")
    assert ignored.type == "planning"
    assert "classifier model answered 'email'" in ignored.rule
    assert "default type planning" in ignored.rule


def test_without_a_classifier_a_tie_takes_the_default_type() -> None:
    result = resolve_tie(infer_type("hello there", [], RULES), None, "admin")
    assert result.type == "admin"
    assert result.rule == "no rule fired; default type admin"


def test_a_clear_winner_is_never_overruled_by_the_classifier() -> None:
    clear = infer_type("implement the function", [], RULES)
    assert resolve_tie(clear, "email", "planning") is clear


def test_config_keywords_extend_the_defaults_and_add_types() -> None:
    rules = InferenceRules.with_extra({"research": ["literature", "survey"], "email": ["memo"]})
    assert infer_type("do a literature survey", [], rules).type == "research"
    assert infer_type("send a memo", [], rules).type == "email"
    assert infer_type("draft a roadmap", [], rules).type == "planning"


@given(st.text(max_size=300), st.lists(st.text(max_size=40), max_size=4))
def test_inference_always_explains_itself(prompt: str, files: list[str]) -> None:
    result = infer_type(prompt, files, RULES)
    assert result.rule
    if result.type is None:
        assert result.tied
    else:
        assert result.type in RULES.keywords
    settled = resolve_tie(result, None, "planning")
    assert settled.type is not None
    assert settled.rule


def test_the_rules_read_the_head_and_the_tail_of_a_long_prompt() -> None:
    filler = "lorem ipsum " * 10_000
    assert infer_type("Reply to this email. " + filler, [], RULES).type == "email"
    assert infer_type(filler + " Put it on my calendar.", [], RULES).type == "admin"
    assert infer_type(filler[:60_000] + " deploy " + filler[:60_000], [], RULES).type is None
    assert len(scanned_part(filler)) == SCAN_HEAD_CHARS + SCAN_TAIL_CHARS + 1
    assert scanned_part("short") == "short"


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "prompt",
    [
        "\n" * 1_000_000,  # was quadratic: 48 KB of these froze the host for 22 s
        " \n" * 500_000,
        "\n\t \n" * 250_000 + "```",
        "return " + "x" * 1_000_000,
        "x" * 10_000_000,
    ],
)
def test_hostile_prompts_are_inferred_in_linear_time(prompt: str) -> None:
    """A liveness bound, not a speed target (bench/ measures speed): each of these took
    seconds to minutes when the line-start patterns could run over newlines."""
    assert infer_type(prompt, [], RULES).rule


def test_line_start_patterns_still_allow_indentation() -> None:
    assert infer_type("Why?\n\t  def f(x):\n", [], RULES).type == "implementation"
    assert infer_type("See:\n   ```\nx\n```", [], RULES).type == "implementation"


SURE = Classification("implementation", 0.86, ("flag", "command", "add"))
UNSURE = Classification("email", 0.31, ("send",))


def test_a_strong_rule_decides_before_the_classifier() -> None:
    fenced = infer_type("fix this\n```python\nx = 1\n```", ("app/main.py",), RULES)
    choice = choose_type(fenced, Classification("planning", 0.99), 0.5, None, "planning")
    assert (choice.type, choice.reason, choice.decided_by) == (
        "implementation",
        "file kind of main.py in the context → implementation",
        "rule",
    )


def test_a_sure_classifier_decides_over_a_weak_rule_and_says_so() -> None:
    weak = infer_type("the plan is to add a --dry-run flag to sync", (), RULES)
    assert weak.type == "planning"
    choice = choose_type(weak, SURE, 0.5, None, "planning")
    assert (choice.type, choice.decided_by, choice.needed) == ("implementation", "classifier", 0.5)
    assert choice.reason == (
        "classifier: implementation 0.86 — 'flag', 'command', 'add'; "
        "over the weaker keyword 'plan' → planning"
    )


def test_an_unsure_classifier_leaves_a_weak_rule_to_decide() -> None:
    weak = infer_type("the plan is to add a --dry-run flag to sync", (), RULES)
    choice = choose_type(weak, UNSURE, 0.5, None, "planning")
    assert (choice.type, choice.decided_by, choice.unsure) == ("planning", "weak rule", False)
    assert choice.reason.endswith("classifier: email 0.31 — 'send' is under the threshold 0.50")


def test_nothing_sure_is_the_default_type_and_the_reason_says_so() -> None:
    nothing = infer_type("hmm", (), RULES)
    choice = choose_type(nothing, UNSURE, 0.5, None, "planning")
    assert (choice.type, choice.unsure) == ("planning", True)
    assert choice.reason.endswith("nothing was sure: default type planning")
    assert choose_type(nothing, None, 0.5, None, "planning").type == "planning"


def test_a_classifier_that_names_no_word_for_its_type_decides_nothing() -> None:
    nothing = infer_type("go on", (), RULES)
    shapeless = Classification("infra", 0.58)  # only character shapes weighed
    choice = choose_type(nothing, shapeless, 0.3, None, "planning")
    assert (choice.type, choice.decided_by) == ("planning", "default")
    assert "classifier: infra 0.58 names no telling word for it" in choice.reason


def test_a_tie_is_still_broken_by_the_classifier_models_answer() -> None:
    tie = infer_type("plan the design", (), RULES)
    assert tie.type is None
    choice = choose_type(tie, None, 0.5, "design", "planning")
    assert (choice.type, choice.decided_by) == ("design", "classifier model")
    assert choice.reason.endswith("the classifier model chose design")


def test_a_classifier_model_answer_outside_the_candidates_leaves_the_default() -> None:
    tie = infer_type("plan the design", (), RULES)
    choice = choose_type(tie, None, 0.5, "email", "planning")
    assert (choice.type, choice.decided_by) == ("planning", "default")
    assert "the classifier model answered 'email'" in choice.reason


def test_the_classifier_model_is_not_heard_where_an_explicit_step_was_sure() -> None:
    weak = infer_type("the plan is to add a --dry-run flag to sync", (), RULES)
    assert choose_type(weak, SURE, 0.5, "email", "planning").type == "implementation"
    assert choose_type(weak, None, 0.5, "email", "planning").type == "planning"


def test_an_owners_rule_decides_alone_and_is_quoted() -> None:
    rules = InferenceRules.with_extra({}, {"infra": ["grafana"], "admin": ["expense report"]})
    result = infer_type("Why does Grafana show no data since Tuesday?", (), rules)
    assert result.type == "infra"
    assert result.rule == "your rule 'grafana' → infra"
    choice = choose_type(result, Classification("review", 0.95), 0.3, None, "planning")
    assert (choice.type, choice.decided_by) == ("infra", "rule")
    # whole words only, as for keywords
    assert infer_type("grafanalike dashboards", (), rules).type is None


def test_a_rule_that_agrees_with_the_classifier_says_so() -> None:
    weak = infer_type("Write a Dockerfile for the API", (), RULES)
    sure = Classification("infra", 0.58, ("dockerfile",))
    choice = choose_type(weak, sure, 0.3, None, "planning")
    assert (choice.type, choice.reason) == (
        "infra",
        "classifier: infra 0.58 — 'dockerfile'; keyword 'dockerfile' → infra agrees",
    )
