"""The policy chain: a request and a snapshot in, a decision with its reasons out. Pure.

Evaluated in this order, each step that applies adding a reason a person can audit:

1. override — an explicit model or tier in the request;
2. force-big — header `X-Force-Big: true`, model `big`, or the prompt tag `#force_big`
   (stripped before any model sees it): the GPU may be used whatever its mode says;
3. routing table — the task type (given, or inferred by `host.core.task_types`) → tier, except
   that the config's standing rules (infra → operator) always win;
4. mode gate — a device in gaming mode takes no work unless forced (the work fails soft
   to its CPU or remote fallbacks, or waits when there are none), and neither does a
   remote model whose own box says it is gaming (or whose mode cannot be read); a device
   pinned to another tier makes the work wait for its own model (`wait_reason`);
5. size — the prompt's tokens (counted by the model's own tokenizer when the shell could,
   else estimated from its length) against each candidate's context window and its tier's
   threshold; too big → the next candidate with room, or a 400 `context_length_exceeded`
   (OpenAI's code, which clients read as "shorten the prompt", not "retry");
6. health — a model that failed recently, or a remote that is not reachable, is skipped
   in favour of the tier's next model, then the fallback tier.

Candidates are the tier's models in order, then those of its fallback tiers.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from host.config import Config, LocalModel, ManagedModel
from host.core import modes
from host.core.task_types import (
    Classification,
    Classifier,
    Inference,
    InferenceRules,
    TypeChoice,
    choose_type,
    decided_by_rule,
    infer_type,
    scanned_part,
)

FORCE_BIG_TAG = re.compile(r"(?<!\S)#force_big\b[ \t]?", re.IGNORECASE)


class RoutingError(Exception):
    """A request that cannot be routed; `status` says whose fault: 400 for a type or
    table the config does not have, 404 for a model or tier it does not have, 503 when
    nothing can serve now (the statuses of `host.errors`)."""

    def __init__(self, status: int, kind: str, message: str, reasons: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.reasons = list(reasons)

    def __reduce__(self) -> tuple[Any, ...]:
        """Raised in the offload worker, it must come back whole, not as `args`."""
        return (type(self), (self.status, self.kind, self.message, self.reasons))


@dataclass(frozen=True)
class RouteRequest:
    prompt: str
    type: str | None = None
    tier: str | None = None
    model: str | None = None
    """A model or tier name; `auto` routes by content, `big` forces the big model."""
    force_big: bool = False
    context_files: tuple[str, ...] = ()
    classifier_answer: str | None = None
    """Set by the shell after asking the classifier model (`Decision.type_question`)."""
    intent: str | None = None
    """What the type is inferred from, when not the whole prompt: the newest user turn
    of a conversation (its system prompt and tool output say little of what is wanted)."""
    prompt_tokens: int | None = None
    """The prompt's tokens as counted by a model's own tokenizer, set by the shell when it
    could ask one (a resident llama-server's `/tokenize`); None: estimated from its length."""
    classify: bool = True
    """Whether the statistical classifier may be asked for the type. The proxy says no for
    a request that names its tier: there the type routes nothing and is not reported,
    while the classifier costs ~1.5 ms of a request the rules do not settle. The type is
    then the rules' alone, and its reason says so."""


@dataclass(frozen=True)
class ModelView:
    name: str
    device: str | None
    is_gpu: bool
    context_window: int | None
    remote: bool = False
    reachable: bool = True
    failed_recently: bool = False
    held_by_mode: str | None = None
    """For a remote: why its own box takes no unforced work now (its GPU mode)."""


@dataclass(frozen=True)
class RoutingSnapshot:
    config: Config
    routes: Mapping[str, str]
    modes: Mapping[str, str]
    models: Mapping[str, ModelView]
    classifier: Classifier | None = None
    """The statistical type classifier, when the shell has one (rules alone otherwise)."""

    def known_types(self) -> list[str]:
        return self.config.task_type_names()


@dataclass(frozen=True)
class TypeQuestion:
    """What the shell should ask the configured classifier model, because no explicit step
    was sure of the type: the text the type is read from, and the only answers it may
    give (its grammar allows nothing else)."""

    model: str
    text: str
    choices: tuple[str, ...]


QUESTION_CHARS = 2_000
"""What the classifier model reads of a prompt: its head, where the ask is (a small CPU
model's prompt processing is the cost of the question)."""


@dataclass(frozen=True)
class Decision:
    type: str | None
    tier: str
    model: str
    device: str | None
    reasons: tuple[str, ...]
    prompt: str
    force_big: bool = False
    wait_reason: str | None = None
    estimated_tokens: int = 0
    candidates: tuple[str, ...] = field(default=())
    type_evidence: Mapping[str, Any] | None = None
    """Every step's evidence for the type (`type_evidence()`); None when it was given."""
    type_question: TypeQuestion | None = None
    """Set when the type is only the default and a classifier model could be asked."""

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "tier": self.tier,
            "model": self.model,
            "device": self.device,
            "reasons": list(self.reasons),
            "force_big": self.force_big,
            "wait_reason": self.wait_reason,
            "estimated_tokens": self.estimated_tokens,
            "type_evidence": None if self.type_evidence is None else dict(self.type_evidence),
        }

    def unanswered(self, error: str) -> Decision:
        """This decision, saying that the classifier model could not answer and why (the
        default type stands)."""
        question = self.type_question
        if question is None or self.type_evidence is None:
            return self
        why = f"the classifier model {question.model} gave no answer: {error}"
        evidence = {
            **self.type_evidence,
            "classifier_model": {
                "model": question.model,
                "choices": list(question.choices),
                "answer": None,
                "error": error,
            },
        }
        reasons = (f"{self.reasons[0]}; {why}", *self.reasons[1:])
        return dataclasses.replace(
            self, reasons=reasons, type_evidence=evidence, type_question=None
        )


TYPICAL_CHARS_PER_TOKEN = 4
"""English prose and code average 3 to 5 characters a token with the usual BPE
vocabularies (SmolLM2's: 3.2 to 3.8 on this project's docs and code)."""

MOST_CHARS_PER_TOKEN = 16
"""More than any text but a degenerate one packs into a token. A token is at most about
one word with its space: measured with SmolLM2's tokenizer, docs and code take 3.2 to
3.8 characters a token, a config file 2.6, a random run of long common words 11.4
(each one token); only runs of one character go beyond (64 for spaces), and those the
model's own tokenizer counts when it is resident."""


def estimate_tokens(text: str) -> int:
    """The likely token count: four characters a token, cheap and deterministic. Used to
    prefer a candidate that surely has room, never on its own to refuse a prompt."""
    return math.ceil(len(text) / TYPICAL_CHARS_PER_TOKEN)


def fewest_tokens(text: str) -> int:
    """A count the prompt is all but sure to reach: sixteen characters a token.

    Refusing on the likely count refused prompts that fit (a 3,431-token prompt of over
    16,384 characters for a 4,096-token window: 4.8 characters a token). A refusal is
    final for the client, while a prompt let through that does not fit costs at most a
    model load and is then refused by llama-server itself, with the same error. So an
    estimate refuses only what even this count puts over every window: for a 4,096-token
    window, over 65,536 characters, the gross cases (a whole log pasted into a small
    model). Everything in between is for the model's tokenizer to count (see
    `RouteRequest.prompt_tokens`) or for the model to refuse.
    """
    return math.ceil(len(text) / MOST_CHARS_PER_TOKEN)


@dataclass(frozen=True)
class PromptSize:
    """What the size step knows of a prompt: the likely count and the count it surely
    reaches (both the tokenizer's count when `counted`)."""

    likely: int
    fewest: int
    counted: bool

    @classmethod
    def of(cls, prompt: str, counted: int | None) -> PromptSize:
        if counted is not None:
            return cls(counted, counted, True)
        return cls(estimate_tokens(prompt), fewest_tokens(prompt), False)


def context_length_message(largest: int, size: PromptSize, considered: Sequence[str]) -> str:
    """OpenAI's wording, which client libraries match to recognise the error (LiteLLM's
    ContextWindowExceededError looks for "maximum context length")."""
    resulted = f"{size.likely}" if size.counted else f"at least {size.fewest}"
    detail = "" if size.counted else f" (about {size.likely}, estimated from their length)"
    return (
        f"This model's maximum context length is {largest} tokens. However, your messages "
        f"resulted in {resulted} tokens{detail}. Please reduce the length of the messages. "
        f"(the largest context window among {', '.join(considered)})"
    )


def context_window_of(model: LocalModel) -> int | None:
    """From config, else (for llama-server) `--ctx-size` divided by `--parallel` in the
    model's args; a command model's args are not ours to read."""
    if model.context_window is not None or not isinstance(model, ManagedModel):
        return model.context_window
    ctx = parallel = None
    args = list(model.args)
    for flag, value in itertools.pairwise(args):
        if flag in ("-c", "--ctx-size") and value.isdigit():
            ctx = int(value)
        elif flag in ("-np", "--parallel") and value.isdigit():
            parallel = int(value)
    if not ctx:
        return None
    return ctx // (parallel or 1)


def snapshot_from_config(
    config: Config,
    routes: Mapping[str, str] | None = None,
    modes: Mapping[str, str] | None = None,
    failed: set[str] | frozenset[str] = frozenset(),
    unreachable: set[str] | frozenset[str] = frozenset(),
    classifier: Classifier | None = None,
    remote_holds: Mapping[str, str] | None = None,
) -> RoutingSnapshot:
    views = {}
    for name, model in config.models.items():
        if isinstance(model, LocalModel):
            kind = config.devices[model.device].kind
            views[name] = ModelView(
                name,
                model.device,
                kind == "gpu",
                context_window_of(model),
                failed_recently=name in failed,
            )
        else:
            views[name] = ModelView(
                name,
                None,
                False,
                model.context_window,
                remote=True,
                reachable=name not in unreachable,
                failed_recently=name in failed,
                held_by_mode=(remote_holds or {}).get(name),
            )
    return RoutingSnapshot(
        config, dict(routes or config.routing), dict(modes or {}), views, classifier
    )


_TAG = "#force_big"
_TAGS_CUT_BY_INDEX = 32


def strip_force_big(prompt: str) -> tuple[str, bool]:
    """The prompt without its `#force_big` tags, and whether it had one.

    Every request's prompt passes here, up to the body limit: the tag is looked for with
    `str` searches (C speed, linear whatever the text), and a few tags are cut out by
    index. The regex (linear too, but many times slower per character) runs only for a
    prompt full of tags, or one where lowercasing changes the length so indexes would
    not line up.
    """
    lowered = prompt.lower()
    found = lowered.count(_TAG)
    if not found:
        return prompt, False
    if found > _TAGS_CUT_BY_INDEX or len(lowered) != len(prompt):
        stripped, count = FORCE_BIG_TAG.subn("", prompt)
        return (stripped.strip() if count else prompt), count > 0
    pieces: list[str] = []
    kept_from = 0
    at = lowered.find(_TAG)
    while at != -1:
        end = at + len(_TAG)
        after = lowered[end : end + 1]
        if (at == 0 or lowered[at - 1].isspace()) and not (after.isalnum() or after == "_"):
            pieces.append(prompt[kept_from:at])
            kept_from = end + 1 if after in (" ", "\t") else end
        at = lowered.find(_TAG, end)
    if not pieces:
        return prompt, False
    pieces.append(prompt[kept_from:])
    return "".join(pieces).strip(), True


def _tier_chain(config: Config, tier: str) -> list[str]:
    chain = [tier]
    while (next_tier := config.tiers[chain[-1]].fallback_tier) and next_tier not in chain:
        chain.append(next_tier)
    return chain


def _serving_tier(config: Config, tier: str, model: str) -> str:
    """The tier `model` serves this request in: the first tier of the routed tier's chain
    that lists it. A model may be listed by several tiers (one remote model for all of
    them, say), and the first tier of the whole config that lists it is not the one the
    request was routed to; an explicit model, or one in no tier, falls back to that."""
    chain = _tier_chain(config, tier) if tier in config.tiers else []
    serving = next((t for t in chain if model in config.tiers[t].models), None)
    return serving or config.tier_of(model) or tier


def _known(names: Sequence[str] | Mapping[str, object]) -> str:
    return ", ".join(sorted(names))


def type_evidence(
    inference: Inference,
    classification: Classification | None,
    choice: TypeChoice,
    request: RouteRequest,
    classifier_model: str | None,
) -> dict[str, Any]:
    """Each step's evidence, for `tierhost route --explain` and the decision JSON: what
    every rule scored, what the classifier thought of each likely type and how sure it
    had to be, and what the classifier model was asked and answered."""
    opinion = None
    if classification is not None:
        opinion = {
            "type": classification.type,
            "confidence": round(classification.confidence, 4),
            "words": list(classification.evidence),
            "ranking": [
                {"type": name, "probability": round(p, 4)} for name, p in classification.ranking
            ],
            "needed": choice.needed,
        }
    asked = None
    if request.classifier_answer is not None and classifier_model is not None:
        asked = {
            "model": classifier_model,
            "choices": list(inference.tied),
            "answer": request.classifier_answer,
            "error": None,
        }
    return {
        "decided_by": choice.decided_by,
        "rule": inference.rule,
        "rule_scores": dict(inference.scores),
        "strong_rule": decided_by_rule(inference),
        "classifier": opinion,
        "classifier_model": asked,
    }


def _decide_type(
    request: RouteRequest, snap: RoutingSnapshot, prompt: str
) -> tuple[str, str, dict[str, Any] | None, TypeQuestion | None]:
    """The type, why, each step's evidence, and the question for the classifier model
    when nothing explicit was sure."""
    if request.type is not None:
        if request.type not in snap.known_types():
            raise RoutingError(
                400,
                "unknown_type",
                f"unknown task type {request.type!r}; known: {_known(snap.known_types())}",
            )
        return request.type, f"type {request.type} given by the request", None, None
    config = snap.config
    rules = InferenceRules.with_extra(config.inference, config.rules)
    inference = infer_type(prompt, request.context_files, rules)
    if inference.type is None and not inference.scores:
        # Nothing fired: the classifier model may name any type.
        inference = dataclasses.replace(inference, tied=tuple(snap.known_types()))
    classification = None
    unasked = ""
    if snap.classifier is not None and not decided_by_rule(inference):
        if request.classify:
            classification = snap.classifier.classify(scanned_part(prompt))
        else:
            unasked = (
                " (by the rules alone: the classifier is not asked where the type routes nothing)"
            )
    choice = choose_type(
        inference,
        classification,
        config.classifier_threshold,
        request.classifier_answer,
        config.default_type,
    )
    question = None
    if (
        choice.unsure
        and request.classify
        and config.classifier is not None
        and request.classifier_answer is None
    ):
        question = TypeQuestion(config.classifier, prompt[:QUESTION_CHARS], inference.tied)
    evidence = type_evidence(inference, classification, choice, request, config.classifier)
    return choice.type, f"type {choice.type} inferred: {choice.reason}{unasked}", evidence, question


def decide(request: RouteRequest, snap: RoutingSnapshot) -> Decision:
    config = snap.config
    reasons: list[str] = []
    prompt, tagged = strip_force_big(request.prompt)
    requested = request.model if request.model not in (None, "auto", "big") else None
    force_big = request.force_big or tagged or request.model == "big"
    tokens = PromptSize.of(prompt, request.prompt_tokens)

    # 1. override
    explicit_model: str | None = None
    tier: str | None = None
    if requested is not None:
        if requested in config.models:
            explicit_model = requested
            reasons.append(f"override: model {requested} requested")
        elif requested in config.tiers:
            tier = requested
            reasons.append(f"override: tier {requested} requested")
        else:
            raise RoutingError(
                404,
                "unknown_model",
                f"unknown model {requested!r}; known models and tiers: "
                f"{_known([*config.models, *config.tiers])}",
            )
    if request.tier is not None and explicit_model is None:
        if request.tier not in config.tiers:
            raise RoutingError(
                404,
                "unknown_tier",
                f"unknown tier {request.tier!r}; known tiers: {_known(config.tiers)}",
            )
        tier = request.tier
        reasons.append(f"override: tier {tier} requested")
    intent = prompt if request.intent is None else strip_force_big(request.intent)[0]
    task_type, type_reason, evidence, question = _decide_type(request, snap, intent)
    reasons.insert(0, type_reason)

    # 2. force-big
    if force_big:
        signal = (
            "prompt tag #force_big (stripped)"
            if tagged
            else "model big"
            if request.model == "big"
            else "X-Force-Big"
        )
        reasons.append(f"force-big ({signal}): the GPU may be used whatever its mode")

    # 3. routing table, with the standing rules first
    if explicit_model is None and tier is None:
        standing = config.standing_rules.get(task_type)
        if standing is not None:
            tier = standing
            reasons.append(f"standing rule: {task_type} → {standing} (beats the routing table)")
        else:
            tier = snap.routes.get(task_type) or config.routing.get(task_type)
            if tier is None:
                raise RoutingError(
                    400,
                    "unrouted_type",
                    f"no route for task type {task_type!r}; add it to the routing table",
                )
            reasons.append(f"routing table: {task_type} → {tier}")
    if explicit_model is not None:
        candidates = [explicit_model]
        tier = config.tier_of(explicit_model) or tier or ""
    else:
        assert tier is not None
        no_gpu = not any(snap.models[m].is_gpu for m in config.tiers[tier].models)
        if force_big and no_gpu and config.big_tier in config.tiers and config.big_tier != tier:
            reasons.append(f"force-big: {tier} has no GPU model, using {config.big_tier}")
            tier = config.big_tier
        chain = _tier_chain(config, tier)
        candidates = list(dict.fromkeys(m for t in chain for m in config.tiers[t].models))
        if len(chain) > 1:
            reasons.append(
                f"candidates: {', '.join(candidates)} (fallback tiers {', '.join(chain[1:])})"
            )

    decision = _choose(candidates, snap, reasons, task_type, tier or "", prompt, tokens, force_big)
    return dataclasses.replace(decision, type_evidence=evidence, type_question=question)


def _choose(
    candidates: list[str],
    snap: RoutingSnapshot,
    reasons: list[str],
    task_type: str,
    tier: str,
    prompt: str,
    tokens: PromptSize,
    force_big: bool,
) -> Decision:
    config = snap.config
    held: list[tuple[str, str]] = []
    waits: dict[str, str] = {}
    fitting: list[str] = []
    may_fit: list[str] = []
    too_small: list[tuple[str, int]] = []

    # 4. mode gate
    passed: list[str] = []
    for name in candidates:
        view = snap.models[name]
        if view.held_by_mode is not None and not force_big:
            held.append((name, view.held_by_mode))
            reasons.append(f"mode gate: skip {name}, {view.held_by_mode}")
            continue
        mode = snap.modes.get(view.device or "", modes.AUTO)
        verdict = modes.gate(config, view.device, mode, name, force_big)
        if verdict is modes.Gate.PASS:
            passed.append(name)
        elif verdict is modes.Gate.SKIP:
            held.append((name, f"{view.device} is in {mode} mode"))
            reasons.append(f"mode gate: skip {name}, {view.device} is in {mode} mode")
        else:
            # Pinned to another tier: the work keeps its model and waits for the pin to lift.
            passed.append(name)
            waits[name] = f"{view.device} is pinned to {mode}; {tier} work waits"
            reasons.append(f"mode gate: {name} waits, {view.device} is pinned to {mode}")
    if not passed and held:
        name, why = held[0]
        passed = [name]
        waits[name] = why
        reasons.append(f"mode gate: nothing else can serve; {name} waits for the device")

    # 5. size
    def limit_of(name: str) -> int | None:
        owner = _serving_tier(config, tier, name)
        threshold = config.tiers[owner].max_prompt_tokens if owner in config.tiers else None
        limits = [v for v in (snap.models[name].context_window, threshold) if v is not None]
        return min(limits) if limits else None

    approx = "" if tokens.counted else "~"
    for name in passed:
        limit = limit_of(name)
        if limit is None or tokens.likely <= limit:
            fitting.append(name)
        elif tokens.fewest <= limit:
            may_fit.append(name)
            reasons.append(
                f"size: ~{tokens.likely} tokens may be over {name}'s {limit} "
                f"(estimated; at least {tokens.fewest})"
            )
        else:
            too_small.append((name, limit))
            reasons.append(f"size: {approx}{tokens.likely} tokens is over {name}'s {limit}")
    if may_fit and not fitting:
        reasons.append(f"size: no candidate surely has room; trying {', '.join(may_fit)}")
    fitting += may_fit  # a sure fit first; the model itself refuses a prompt that is too long
    if not fitting:
        largest = max(limit for _, limit in too_small)
        raise RoutingError(
            400,
            "context_length_exceeded",
            context_length_message(largest, tokens, [n for n, _ in too_small]),
            reasons,
        )

    # 6. health
    healthy = []
    for name in fitting:
        view = snap.models[name]
        if view.failed_recently:
            reasons.append(f"health: skip {name}, it failed recently")
        elif view.remote and not view.reachable:
            reasons.append(f"health: skip {name}, the remote endpoint is not reachable")
        else:
            healthy.append(name)
    # A gated model that is itself healthy beats trying a broken fallback: it waits.
    gated = [
        n
        for n, _ in held
        if n not in fitting
        and not snap.models[n].failed_recently
        and ((limit := limit_of(n)) is None or tokens.fewest <= limit)
    ]
    if healthy:
        chosen = healthy[0]
    elif gated:
        chosen = gated[0]
        waits[chosen] = dict(held)[chosen]
        reasons.append(f"health: no healthy fallback; {chosen} waits for the device")
    else:
        chosen = fitting[0]
        reasons.append(f"health: every candidate is unhealthy; trying {chosen} anyway")
    chosen_tier = _serving_tier(config, tier, chosen)
    if chosen != candidates[0]:
        reasons.append(f"chose {chosen} ({chosen_tier}) instead of {candidates[0]}")
    else:
        reasons.append(f"chose {chosen}")
    wait_reason = waits.get(chosen)
    return Decision(
        type=task_type,
        tier=chosen_tier,
        model=chosen,
        device=snap.models[chosen].device,
        reasons=tuple(reasons),
        prompt=prompt,
        force_big=force_big,
        wait_reason=wait_reason,
        estimated_tokens=tokens.likely,
        candidates=tuple(candidates),
    )


def validate_routes(routes: Mapping[str, Any], config: Config) -> dict[str, str]:
    """A routing table from a client or a file, checked: every type and tier must exist."""
    if not isinstance(routes, Mapping):
        raise RoutingError(400, "invalid_routes", "routes must be an object of type → tier")
    known_types = config.task_type_names()
    table: dict[str, str] = {}
    for task_type, tier in routes.items():
        if task_type not in known_types:
            raise RoutingError(
                400,
                "unknown_type",
                f"unknown task type {task_type!r}; known: {_known(known_types)} "
                "(add new types to task_types in the config)",
            )
        if not isinstance(tier, str) or tier not in config.tiers:
            raise RoutingError(
                404,
                "unknown_tier",
                f"routes.{task_type}: unknown tier {tier!r}; known tiers: {_known(config.tiers)}",
            )
        table[task_type] = tier
    return {**config.routing, **table}


def export_routes(routes: Mapping[str, str]) -> dict[str, Any]:
    """The `model-routing.json` document."""
    return {"version": 1, "routes": dict(routes)}


def import_routes(document: object, config: Config) -> dict[str, str]:
    if not isinstance(document, dict) or not isinstance(document.get("routes"), dict):
        raise RoutingError(
            400, "invalid_routes", 'model-routing.json must be {"version": 1, "routes": {...}}'
        )
    version = document.get("version", 1)
    if type(version) is not int or version != 1:  # `true == 1` in Python, not in JSON
        raise RoutingError(400, "invalid_routes", f"unsupported version {version!r}")
    return validate_routes(document["routes"], config)
