"""The policy chain is pure: each reason path is checked with a config and a snapshot."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.config import Config, load_config, parse_config
from host.core.routing import (
    FORCE_BIG_TAG,
    Decision,
    RouteRequest,
    RoutingError,
    TypeQuestion,
    context_window_of,
    decide,
    export_routes,
    import_routes,
    snapshot_from_config,
    strip_force_big,
    validate_routes,
)
from host.core.task_types import Classification, Classifier
from host.models.type_classifier import load_or_fit

# A 24 GB box: an MoE architect and a dense builder share gpu0, a small operator on the
# CPU, and a hosted model as the architect's last resort.
BOX_TEXT = """
    [devices.gpu0]
    memory_mb = 24000
    [devices.cpu]
    kind = "cpu"

    [models.qwen-moe]
    gguf = "/models/moe.gguf"
    device = "gpu0"
    memory_mb = 20000
    args = ["--ctx-size", "65536", "--parallel", "2"]
    [models.coder]
    gguf = "/models/coder.gguf"
    device = "gpu0"
    memory_mb = 18000
    context_window = 16384
    [models.coder-small]
    gguf = "/models/coder-small.gguf"
    device = "cpu"
    memory_mb = 3000
    context_window = 8192
    [models.helper]
    gguf = "/models/helper.gguf"
    device = "cpu"
    memory_mb = 2000
    context_window = 4096
    persistent = true
    [models.hosted]
    kind = "remote"
    base_url = "https://api.example.com/v1"
    context_window = 200000

    [tiers.architect]
    models = ["qwen-moe"]
    fallback_tier = "cloud"
    [tiers.builder]
    models = ["coder", "coder-small"]
    fallback_tier = "architect"
    max_prompt_tokens = 12000
    [tiers.operator]
    models = ["helper"]
    [tiers.cloud]
    models = ["hosted"]
    """
BOX = parse_config(BOX_TEXT, "box")


def route(
    prompt: str = "hello",
    *,
    config: Config = BOX,
    routes: dict[str, str] | None = None,
    modes: dict[str, str] | None = None,
    failed: frozenset[str] = frozenset(),
    unreachable: frozenset[str] = frozenset(),
    classifier: Classifier | None = None,
    **request: object,
) -> Decision:
    snap = snapshot_from_config(config, routes, modes, failed, unreachable, classifier)
    return decide(RouteRequest(prompt=prompt, **request), snap)  # type: ignore[arg-type]


def said(decision: Decision, fragment: str) -> bool:
    return any(fragment in reason for reason in decision.reasons)


def test_a_given_type_goes_through_the_routing_table() -> None:
    decision = route("anything", type="implementation")
    assert (decision.type, decision.tier, decision.model) == ("implementation", "builder", "coder")
    assert decision.reasons[0] == "type implementation given by the request"
    assert said(decision, "routing table: implementation → builder")
    assert decision.reasons[-1] == "chose coder"
    assert decision.device == "gpu0" and decision.wait_reason is None


def test_an_inferred_type_cites_the_rule_that_fired() -> None:
    decision = route("Draft a roadmap for the launch")
    assert decision.type == "planning" and decision.model == "qwen-moe"
    assert decision.reasons[0] == "type planning inferred: keyword 'roadmap' → planning"


def test_a_tie_without_a_classifier_uses_the_default_type() -> None:
    decision = route("review the plan")
    assert decision.type == "planning"
    assert "default type planning" in decision.reasons[0]


def test_the_classifier_breaks_a_tie_and_the_decision_says_so() -> None:
    decision = route("review the plan", classifier_answer="review")
    assert decision.type == "review"
    assert "classifier model chose review" in decision.reasons[0]


WITH_ROUTER = BOX.model_copy(update={"classifier": "helper"})
"""The box with its CPU helper as the classifier model."""


def test_an_unsure_type_asks_the_classifier_model_among_the_candidates() -> None:
    decision = route("review the plan", config=WITH_ROUTER)
    assert decision.type == "planning"  # the default, until the model answers
    assert decision.type_question == TypeQuestion(
        "helper", "review the plan", ("planning", "review")
    )
    nothing_fired = route("hello there", config=WITH_ROUTER).type_question
    assert nothing_fired is not None
    assert nothing_fired.choices == tuple(WITH_ROUTER.task_type_names())


def test_no_question_without_a_classifier_model_or_once_it_answered() -> None:
    assert route("review the plan").type_question is None
    answered = route("review the plan", config=WITH_ROUTER, classifier_answer="review")
    assert (answered.type, answered.type_question) == ("review", None)
    assert answered.type_evidence is not None
    assert answered.type_evidence["decided_by"] == "classifier model"
    assert answered.type_evidence["classifier_model"] == {
        "model": "helper",
        "choices": ["planning", "review"],
        "answer": "review",
        "error": None,
    }


def test_a_sure_step_or_a_given_type_asks_nothing() -> None:
    assert route("Draft a roadmap for the launch", config=WITH_ROUTER).type_question is None
    given = route("hello", type="email", config=WITH_ROUTER)
    assert (given.type_question, given.type_evidence) == (None, None)
    assert given.as_json()["type_evidence"] is None


def test_a_question_left_unanswered_keeps_the_default_and_says_why() -> None:
    asked = route("review the plan", config=WITH_ROUTER)
    decision = asked.unanswered("no answer within 10 s")
    assert (decision.type, decision.model, decision.type_question) == ("planning", "qwen-moe", None)
    assert decision.reasons[0].endswith(
        "default type planning; the classifier model helper gave no answer: no answer within 10 s"
    )
    assert decision.reasons[1:] == asked.reasons[1:]
    assert decision.type_evidence is not None
    assert decision.type_evidence["classifier_model"]["error"] == "no answer within 10 s"


class FixedClassifier:
    def __init__(self, answer: Classification) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def classify(self, text: str) -> Classification | None:
        self.asked.append(text)
        return self.answer


def test_the_decision_json_carries_each_steps_evidence() -> None:
    sure = Classification(
        "implementation", 0.81, ("flag", "command"), (("implementation", 0.81), ("planning", 0.1))
    )
    snap = snapshot_from_config(BOX, classifier=FixedClassifier(sure))
    decision = decide(RouteRequest(prompt="the plan: add a --dry-run flag to sync"), snap)
    assert decision.type == "implementation"
    assert decision.as_json()["type_evidence"] == {
        "decided_by": "classifier",
        "rule": "keyword 'plan' → planning",
        "rule_scores": {"planning": 1.0},
        "strong_rule": False,
        "classifier": {
            "type": "implementation",
            "confidence": 0.81,
            "words": ["flag", "command"],
            "ranking": [
                {"type": "implementation", "probability": 0.81},
                {"type": "planning", "probability": 0.1},
            ],
            "needed": 0.5,
        },
        "classifier_model": None,
    }


def test_the_owners_rules_decide_before_the_classifier_is_asked() -> None:
    config = parse_config(BOX_TEXT + '\n[rules]\ninfra = ["grafana"]\n', "box-with-rules")
    classifier = FixedClassifier(Classification("review", 0.99))
    snap = snapshot_from_config(config, classifier=classifier)
    decision = decide(RouteRequest(prompt="grafana shows no data since tuesday"), snap)
    assert (decision.type, decision.model) == ("infra", "helper")
    assert decision.reasons[0] == "type infra inferred: your rule 'grafana' → infra"
    assert classifier.asked == []


class AskedClassifier:
    """Says review, sure, of anything; remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def classify(self, text: str) -> Classification:
        self.asked.append(text)
        return Classification("review", 0.9, ("tidy",))


def test_a_request_that_says_the_type_routes_nothing_is_typed_by_the_rules_alone() -> None:
    classifier = AskedClassifier()
    snap = snapshot_from_config(WITH_ROUTER, classifier=classifier)
    named = decide(RouteRequest(prompt="tidy this up", tier="builder", classify=False), snap)
    assert classifier.asked == []
    assert named.type_question is None  # nor is the classifier model
    assert named.model == "coder" and named.type == BOX.default_type
    assert named.reasons[0].endswith(
        "(by the rules alone: the classifier is not asked where the type routes nothing)"
    )
    routed = decide(RouteRequest(prompt="tidy this up", model="auto"), snap)
    assert classifier.asked == ["tidy this up"]
    assert routed.type == "review" and "classifier: review 0.90" in routed.reasons[0]


def test_the_standing_infra_rule_beats_an_edited_table() -> None:
    decision = route("x", type="infra", routes={**BOX.routing, "infra": "architect"})
    assert decision.tier == "operator" and decision.model == "helper"
    assert said(decision, "standing rule: infra → operator (beats the routing table)")


def test_an_edited_table_moves_other_types() -> None:
    decision = route("x", type="email", routes={**BOX.routing, "email": "architect"})
    assert decision.model == "qwen-moe"
    assert said(decision, "routing table: email → architect")


def test_an_explicit_model_or_tier_overrides_the_table() -> None:
    by_model = route("x", type="planning", model="coder-small")
    assert by_model.model == "coder-small" and said(by_model, "override: model coder-small")
    by_tier = route("x", type="planning", tier="builder")
    assert by_tier.model == "coder" and said(by_tier, "override: tier builder requested")
    via_model_field = route("x", type="planning", model="builder")
    assert via_model_field.model == "coder"


def test_auto_routes_by_content() -> None:
    assert route("implement the parser", model="auto").model == "coder"


@pytest.mark.parametrize(
    ("request_fields", "status", "kind", "fragment"),
    [
        ({"model": "gpt-9"}, 404, "unknown_model", "unknown model 'gpt-9'"),
        ({"tier": "wizard"}, 404, "unknown_tier", "unknown tier 'wizard'; known tiers: arch"),
        ({"type": "poetry"}, 400, "unknown_type", "unknown task type 'poetry'; known: admin"),
    ],
)
def test_unknown_names_are_refused_with_the_known_ones(
    request_fields: dict[str, str], status: int, kind: str, fragment: str
) -> None:
    with pytest.raises(RoutingError) as caught:
        route("x", **request_fields)  # type: ignore[arg-type]
    assert (caught.value.status, caught.value.kind) == (status, kind)
    assert fragment in caught.value.message


def test_gaming_fails_soft_to_the_remote_fallback() -> None:
    decision = route("x", type="planning", modes={"gpu0": "gaming"})
    assert decision.model == "hosted" and decision.tier == "cloud"
    assert said(decision, "mode gate: skip qwen-moe, gpu0 is in gaming mode")
    assert said(decision, "chose hosted (cloud) instead of qwen-moe")


def test_gaming_fails_soft_to_a_cpu_model_of_the_same_tier() -> None:
    decision = route("x", type="implementation", modes={"gpu0": "gaming"})
    assert decision.model == "coder-small" and decision.wait_reason is None


def test_force_big_beats_gaming() -> None:
    for request in ({"force_big": True}, {"model": "big"}):
        decision = route("x", type="planning", modes={"gpu0": "gaming"}, **request)  # type: ignore[arg-type]
        assert decision.model == "qwen-moe" and decision.force_big
        assert decision.wait_reason is None
        assert said(decision, "force-big")


def test_the_force_big_tag_is_stripped_before_the_model_sees_it() -> None:
    decision = route("#force_big plan the migration", modes={"gpu0": "gaming"})
    assert decision.prompt == "plan the migration"
    assert decision.model == "qwen-moe"
    assert said(decision, "prompt tag #force_big (stripped)")
    assert strip_force_big("use #force_bigger") == ("use #force_bigger", False)
    assert strip_force_big("a #FORCE_BIG b") == ("a b", True)


def test_force_big_moves_work_off_a_cpu_only_tier_to_the_big_tier() -> None:
    decision = route("x", type="email", force_big=True)
    assert decision.model == "qwen-moe"
    assert said(decision, "force-big: operator has no GPU model, using architect")


def test_gaming_with_no_fallback_makes_the_work_wait() -> None:
    config = load_config()
    architect = config.tiers["architect"].model_copy(update={"fallback_tier": None})
    lone = config.model_copy(update={"tiers": {**config.tiers, "architect": architect}})
    snap = snapshot_from_config(lone, modes={"gpu0": "gaming"})
    decision = decide(RouteRequest("x", type="planning"), snap)
    assert decision.model == "architect-demo"
    assert decision.wait_reason == "gpu0 is in gaming mode"
    assert said(decision, "nothing else can serve; architect-demo waits")


def test_a_device_pinned_to_another_tier_makes_the_work_wait_with_a_reason() -> None:
    decision = route("x", type="planning", modes={"gpu0": "builder"})
    assert decision.model == "qwen-moe"
    assert decision.wait_reason == "gpu0 is pinned to builder; architect work waits"
    pinned_ok = route("x", type="implementation", modes={"gpu0": "builder"})
    assert pinned_ok.model == "coder" and pinned_ok.wait_reason is None


def test_oversize_goes_to_a_candidate_with_a_bigger_context() -> None:
    # ~20,000 tokens: over the builder tier's 12,000 threshold, within qwen-moe's 32,768.
    # Both builders may still fit it (at least 5,000): the candidate that surely has room wins.
    decision = route("x" * 80_000, type="implementation")
    assert decision.model == "qwen-moe" and decision.estimated_tokens == 20_000
    assert said(
        decision, "size: ~20000 tokens may be over coder's 12000 (estimated; at least 5000)"
    )
    assert said(decision, "size: ~20000 tokens may be over coder-small's 8192")
    # At least 12,288: surely over both builders; qwen-moe may fit it, hosted surely does.
    decision = route("x" * 16 * 12_288, type="implementation")
    assert decision.model == "hosted"
    assert said(decision, "size: ~49152 tokens is over coder's 12000")
    assert said(decision, "size: ~49152 tokens is over coder-small's 8192")
    assert said(decision, "size: ~49152 tokens may be over qwen-moe's 32768")


def test_too_big_for_every_candidate_is_openais_context_length_error_saying_how_big() -> None:
    with pytest.raises(RoutingError) as caught:
        route("x" * 1_000_000, type="admin")
    # 400, not 413: OpenAI-style clients retry a 413 as transient, and recognise this one.
    assert (caught.value.status, caught.value.kind) == (400, "context_length_exceeded")
    assert "This model's maximum context length is 4096 tokens" in caught.value.message
    assert "resulted in at least 62500 tokens (about 250000" in caught.value.message
    assert "(the largest context window among helper)" in caught.value.message


def test_the_estimate_never_refuses_a_prompt_that_may_fit() -> None:
    # 20,000 characters: ~5,000 tokens at four a token, but prose of five characters a
    # token is 4,000 and fits helper's 4,096. Only a tokenizer's count may refuse it.
    decision = route("x" * 20_000, type="admin")
    assert decision.model == "helper" and decision.estimated_tokens == 5000
    assert said(decision, "size: ~5000 tokens may be over helper's 4096 (estimated; at least 1250)")
    assert said(decision, "size: no candidate surely has room; trying helper")
    # Over every window even at sixteen characters a token: refused on the estimate.
    with pytest.raises(RoutingError, match="resulted in at least 4097 tokens"):
        route("x" * (16 * 4096 + 1), type="admin")


def test_a_count_by_the_models_tokenizer_decides_exactly() -> None:
    text = "x" * 20_000
    fits = route(text, type="admin", prompt_tokens=4096)
    assert fits.model == "helper" and fits.estimated_tokens == 4096
    assert not said(fits, "may be over")
    with pytest.raises(RoutingError) as caught:
        route("short", type="admin", prompt_tokens=4097)
    assert caught.value.kind == "context_length_exceeded"
    assert "However, your messages resulted in 4097 tokens. Please" in caught.value.message
    moved = route(text, type="implementation", prompt_tokens=12_001)
    assert moved.model == "qwen-moe"
    assert said(moved, "size: 12001 tokens is over coder's 12000")


def test_a_recently_failed_model_is_skipped_for_the_next_one() -> None:
    decision = route("x", type="implementation", failed=frozenset({"coder"}))
    assert decision.model == "coder-small"
    assert said(decision, "health: skip coder, it failed recently")


def test_an_unreachable_remote_is_not_used() -> None:
    decision = route(
        "x",
        type="planning",
        modes={"gpu0": "gaming"},
        unreachable=frozenset({"hosted"}),
    )
    assert decision.model == "qwen-moe" and decision.wait_reason == "gpu0 is in gaming mode"
    assert said(decision, "health: skip hosted, the remote endpoint is not reachable")


def test_when_everything_is_unhealthy_the_first_fitting_model_is_tried() -> None:
    decision = route("x", type="admin", failed=frozenset({"helper"}))
    assert decision.model == "helper"
    assert said(decision, "every candidate is unhealthy")


def test_context_window_comes_from_config_or_the_server_args() -> None:
    assert context_window_of(BOX.managed()["coder"]) == 16384
    assert context_window_of(BOX.managed()["qwen-moe"]) == 32768  # 65536 over 2 slots


def test_routes_are_validated_exported_and_imported() -> None:
    table = validate_routes({"email": "architect"}, BOX)
    assert table["email"] == "architect" and table["planning"] == "architect"
    assert import_routes(export_routes(table), BOX) == table
    with pytest.raises(RoutingError, match="unknown tier 'nope'"):
        validate_routes({"email": "nope"}, BOX)
    with pytest.raises(RoutingError, match="unknown task type 'poems'"):
        validate_routes({"poems": "architect"}, BOX)
    with pytest.raises(RoutingError, match=r"model-routing\.json must be"):
        import_routes({"routes": ["email"]}, BOX)
    with pytest.raises(RoutingError, match="unsupported version 2"):
        import_routes({"version": 2, "routes": {}}, BOX)
    with pytest.raises(RoutingError, match="unsupported version True"):
        import_routes({"version": True, "routes": {}}, BOX)


TYPES = sorted(BOX.routing)
MODES = st.sampled_from(["auto", "gaming", "architect", "builder"])


# No deadline: speed is measured in bench/, not asserted here (a 100 KB prompt once
# failed a slow machine's 200 ms deadline and then every run, from hypothesis's database).
@settings(deadline=None)
@given(
    prompt=st.text(max_size=200) | st.just("x" * 100_000) | st.just("\n" * 50_000),
    task_type=st.none() | st.sampled_from([*TYPES, "unknown"]),
    model=st.none() | st.sampled_from([*BOX.models, *BOX.tiers, "auto", "big", "nope"]),
    force_big=st.booleans(),
    mode=MODES,
    failed=st.frozensets(st.sampled_from(sorted(BOX.models))),
    unreachable=st.frozensets(st.just("hosted")),
    routes=st.dictionaries(st.sampled_from(TYPES), st.sampled_from(sorted(BOX.tiers))),
    classified=st.booleans(),
    answer=st.none() | st.sampled_from(TYPES) | st.text(max_size=20),
)
def test_every_decision_names_a_real_model_with_reasons_or_is_a_clear_error(
    prompt: str,
    task_type: str | None,
    model: str | None,
    force_big: bool,
    mode: str,
    failed: frozenset[str],
    unreachable: frozenset[str],
    routes: dict[str, str],
    classified: bool,
    answer: str | None,
) -> None:
    try:
        decision = route(
            prompt,
            config=WITH_ROUTER,
            type=task_type,
            model=model,
            force_big=force_big,
            modes={"gpu0": mode},
            failed=failed,
            unreachable=unreachable,
            routes={**BOX.routing, **routes},
            classifier=load_or_fit() if classified else None,
            classifier_answer=answer,
        )
    except RoutingError as error:
        assert error.status in (400, 404)
        assert error.message
        return
    assert decision.model in BOX.models
    assert decision.reasons
    assert decision.tier in BOX.tiers
    assert decision.type in TYPES
    assert (decision.type_evidence is None) == (task_type is not None)
    if decision.type_question is not None:
        assert answer is None and set(decision.type_question.choices) <= set(TYPES)
    if task_type == "infra" and model is None and not force_big:
        assert decision.tier == "operator"
    if decision.wait_reason is not None:
        assert not decision.force_big


TAG_PIECES = ["#force_big", "#FORCE_BIG", "#Force_Big", " ", "\t", "\n", "x", "_", "-", "#"]
TAG_PIECES += ["é", "İ", "1", "#force_bigx", "a#force_big"]


@given(st.lists(st.sampled_from(TAG_PIECES), max_size=50).map("".join))
def test_the_tag_is_stripped_as_the_tag_pattern_says(prompt: str) -> None:
    """The fast path (str searches, cut by index) agrees with the one regex that defines
    the tag: whitespace or the start before it, no word character after it, one space
    or tab after it taken with it, the rest trimmed."""
    stripped, count = FORCE_BIG_TAG.subn("", prompt)
    assert strip_force_big(prompt) == ((stripped.strip() if count else prompt), count > 0)


# One model on another box serves every tier: the tier a request was routed to is the
# one it is served in (its system prompt says so), whichever tier lists the model first.
SHARED = parse_config(
    """
    [devices.cpu]
    kind = "cpu"
    [models.far]
    kind = "remote"
    base_url = "http://10.0.0.2:8080/v1"
    [tiers.architect]
    models = ["far"]
    max_prompt_tokens = 100
    [tiers.builder]
    models = ["far"]
    [tiers.operator]
    models = ["far"]
    """,
    "shared",
)


def test_a_model_shared_by_tiers_serves_in_the_tier_routed_to() -> None:
    assert route("Check the disks.", config=SHARED, type="infra").tier == "operator"
    assert route("Add a flag.", config=SHARED, tier="builder").tier == "builder"
    assert route("Plan it.", config=SHARED, type="planning").tier == "architect"


def test_a_shared_model_has_the_size_limit_of_the_tier_routed_to() -> None:
    long = "word " * 400  # ~500 tokens: over the architect's 100, no limit for operator
    decision = route(long, config=SHARED, type="admin")
    assert (decision.model, decision.tier) == ("far", "operator")
    with pytest.raises(RoutingError) as caught:
        route(long, config=SHARED, type="planning")
    assert caught.value.kind == "context_length_exceeded"


# The big model on a gaming PC across the LAN, a small one at home as its fallback.
GAMING_PC = parse_config(
    """
    [devices.cpu]
    kind = "cpu"
    [models.pc-big]
    kind = "remote"
    base_url = "http://pc.lan:8080/v1"
    mode_url = "http://pc.lan:8790/mode"
    [models.small]
    gguf = "/models/small.gguf"
    device = "cpu"
    memory_mb = 2000
    [tiers.architect]
    models = ["pc-big", "small"]
    [tiers.builder]
    models = ["pc-big", "small"]
    [tiers.operator]
    models = ["small"]
    """,
    "gaming-pc",
)
GAMING = "its box is in gaming mode (http://pc.lan:8790/mode)"


def on_the_pc(holds: dict[str, str], **request: object) -> Decision:
    snap = snapshot_from_config(GAMING_PC, remote_holds=holds)
    return decide(RouteRequest(prompt="plan the release", type="planning", **request), snap)  # type: ignore[arg-type]


def test_a_remote_whose_box_is_gaming_is_skipped_saying_why() -> None:
    assert on_the_pc({}).model == "pc-big"
    decision = on_the_pc({"pc-big": GAMING})
    assert decision.model == "small"
    assert said(decision, f"mode gate: skip pc-big, {GAMING}")
    assert decision.wait_reason is None


def test_forced_work_still_goes_to_the_gaming_box() -> None:
    for forced in ({"force_big": True}, {"model": "big"}):
        decision = on_the_pc({"pc-big": GAMING}, **forced)
        assert decision.model == "pc-big", forced
        assert not said(decision, "mode gate: skip")


def test_a_gaming_box_with_nothing_else_makes_the_work_wait_with_its_reason() -> None:
    decision = decide(
        RouteRequest(prompt="x", model="pc-big"),
        snapshot_from_config(GAMING_PC, remote_holds={"pc-big": GAMING}),
    )
    assert (decision.model, decision.wait_reason) == ("pc-big", GAMING)
