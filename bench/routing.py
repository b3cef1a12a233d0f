"""Issue 16: how often the router gets the task type right, and what a decision costs.

Two labelled sets, both written apart from the classifier's corpus, are each scored
twice in the same run: with the keyword rules alone (the router before the classifier)
and with the classifier between the strong rules and the default. The evaluation set
(tests/host/core/data/routing_eval.jsonl) guided which boundaries the corpus was
extended on; the held-out set (routing_holdout.jsonl) was written afterwards by someone
who saw neither, and nothing was tuned on it. Then the decision latency: `routing.decide`
on each prompt of the set, in process, with and without the classifier (fresh prompts
each round, so the classifier's memo does not hide its cost); and what asking the
classifier model costs a request: the demo model (SmolLM2-135M) on a real llama-server
on the CPU, asked about each prompt that nothing explicit was sure of.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import bare_llama_server, demo_gguf, median, percentile
from host.config import load_config
from host.core import routing
from host.core.evaluation import Example, Score, read_examples, score
from host.models.leases import ModelLease
from host.models.type_classifier import TypeClassifier, load_or_fit
from host.models.type_model import TypeModel, TypeQuestionFailed

DATA = Path(__file__).resolve().parent.parent / "tests/host/core/data"
EVAL_SET = DATA / "routing_eval.jsonl"
HOLDOUT_SET = DATA / "routing_holdout.jsonl"
ROUTER_ARGS = ["--ctx-size", "2048", "--parallel", "1", "--no-warmup", "--n-gpu-layers", "0"]


@dataclass
class SetScores:
    name: str
    rules: Score
    classifier: Score


@dataclass
class RoutingResults:
    sets: list[SetScores]
    types: list[str]
    rules_ms: list[float] = field(default_factory=list)
    classifier_ms: list[float] = field(default_factory=list)
    fit_s: float = 0.0
    question_ms: list[float] = field(default_factory=list)
    """Each question to the classifier model, lease to answer."""
    questions_right: int = 0
    question_failures: list[str] = field(default_factory=list)
    unsure: int = 0
    """Prompts of both sets that no explicit step was sure of (those that ask the model)."""


def examples(path: Path = EVAL_SET) -> list[Example]:
    return read_examples(path.read_text(), load_config().task_type_names())


class _OneServer:
    """The fleet, as the question sees it: one resident llama-server."""

    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        self._url = url
        self._http = http

    def lease_now(self, model: str, forced: bool = False) -> ModelLease:
        return ModelLease(
            model, f"{self._url}/v1", self._http, {}, None, None, self._url, lambda: None
        )

    async def lease(
        self, model: str, timeout: float | None = None, *, forced: bool = False
    ) -> ModelLease:
        return self.lease_now(model)


QUESTION_SAMPLE_PER_TYPE = 6
"""So few prompts of the sets leave every explicit step unsure that their questions alone
say little of the cost; the model is also asked about this many of each type, as if."""


def measure_questions(
    items: list[Example], classifier: TypeClassifier, results: RoutingResults, workdir: Path
) -> None:
    """Ask the classifier model about the prompts nothing explicit was sure of, and about
    a sample of each type among all the types (what a question costs, and how often so
    small a model is right)."""
    config = load_config().model_copy(update={"classifier": "router"})
    snapshot = routing.snapshot_from_config(config, classifier=classifier)
    types = tuple(config.task_type_names())
    questions: list[tuple[Example, routing.TypeQuestion]] = []
    for example in items:
        decision = routing.decide(routing.RouteRequest(prompt=example.prompt), snapshot)
        if decision.type_question is not None:
            questions.append((example, decision.type_question))
    results.unsure = len(questions)
    taken: dict[str, int] = {}
    for example in items:
        if taken.get(example.type, 0) < QUESTION_SAMPLE_PER_TYPE:
            taken[example.type] = taken.get(example.type, 0) + 1
            text = example.prompt[: routing.QUESTION_CHARS]
            questions.append((example, routing.TypeQuestion("router", text, types)))

    async def ask_all(url: str) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            model = TypeModel(_OneServer(url, http), "router", may_wait=False)
            await model.ask("warm up", ("planning", "review"))
            for example, question in questions:
                began = time.perf_counter()
                try:
                    answer = await model.ask(question.text, question.choices)
                except TypeQuestionFailed as exc:
                    results.question_failures.append(str(exc))
                    continue
                results.question_ms.append((time.perf_counter() - began) * 1000)
                results.questions_right += answer == example.type

    log = workdir / "router.log"
    with bare_llama_server(["--model", str(demo_gguf()), *ROUTER_ARGS], log) as server:
        asyncio.run(ask_all(server.url))


def run(runs: int, workdir: Path) -> RoutingResults:
    config = load_config()
    started = time.perf_counter()
    classifier = load_or_fit(config.examples, directory=workdir / "cache")  # a fresh fit
    fit_s = time.perf_counter() - started
    plain = routing.snapshot_from_config(config)
    with_classifier = routing.snapshot_from_config(config, classifier=classifier)
    sets = []
    for name, path in (("evaluation set", EVAL_SET), ("held-out set", HOLDOUT_SET)):
        labelled = examples(path)
        sets.append(SetScores(name, score(labelled, plain), score(labelled, with_classifier)))
    results = RoutingResults(sets, config.task_type_names(), fit_s=fit_s)
    items = examples(EVAL_SET) + examples(HOLDOUT_SET)
    for round_ in range(runs):
        for example in items:
            prompt = f"{example.prompt} (round {round_})"
            for snapshot, samples in (
                (plain, results.rules_ms),
                (with_classifier, results.classifier_ms),
            ):
                began = time.perf_counter()
                routing.decide(routing.RouteRequest(prompt=prompt), snapshot)
                samples.append((time.perf_counter() - began) * 1000)
    measure_questions(items, classifier, results, workdir)
    return results


def _score_rows(sets: list[SetScores]) -> list[str]:
    lines = [
        "| set | router | type accuracy | tier accuracy | infra off the operator tier |",
        "|---|---|---:|---:|---:|",
    ]
    for scored_set in sets:
        for name, scored in (
            ("keyword rules alone (before)", scored_set.rules),
            ("rules + classifier", scored_set.classifier),
        ):
            infra_off = sum(n for (t, _), n in scored.off_tier.items() if t == "infra")
            lines.append(
                f"| {scored_set.name} ({scored.total}) | {name} "
                f"| {scored.type_accuracy:.1%} ({scored.right_type}/{scored.total}) "
                f"| {scored.tier_accuracy:.1%} ({scored.right_tier}/{scored.total}) "
                f"| {infra_off} |"
            )
    return lines


def report(results: RoutingResults) -> list[str]:
    lines = [
        "Two labelled sets, each written apart from the classifier's corpus: the evaluation "
        "set, whose misses showed which boundaries the corpus needed, and a held-out set "
        "written afterwards without sight of either, on which nothing was tuned.",
        "",
        *_score_rows(results.sets),
    ]
    for scored_set in results.sets:
        lines += [
            "",
            f"Confusion on the {scored_set.name}, rules + classifier:",
            "",
            *scored_set.classifier.table(results.types),
            "",
            f"Confusion on the {scored_set.name}, keyword rules alone:",
            "",
            *scored_set.rules.table(results.types),
        ]
    lines += [
        "",
        "Decision latency (`routing.decide` in process, every prompt of both sets per run):",
        "",
        "| router | decisions | median ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| keyword rules alone | {len(results.rules_ms)} | {median(results.rules_ms):.3f} "
        f"| {percentile(results.rules_ms, 0.99):.3f} |",
        f"| rules + classifier | {len(results.classifier_ms)} "
        f"| {median(results.classifier_ms):.3f} | {percentile(results.classifier_ms, 0.99):.3f} |",
        "",
        f"Fitting the classifier from the corpus (once per corpus and machine, then cached): "
        f"{results.fit_s:.1f} s. Target: median ≤ 5 ms.",
    ]
    asked = results.question_ms
    failed = len(results.question_failures)
    lines += [
        "",
        f"The classifier model is asked only where every explicit step was unsure: "
        f"{results.unsure} of the {sum(s.classifier.total for s in results.sets)} prompts of "
        f"both sets. What a question adds to such a request, with the demo model "
        f"(SmolLM2-135M, llama-server on the CPU) asked about those and about "
        f"{QUESTION_SAMPLE_PER_TYPE} prompts of each type among all the types: "
        f"{median(asked):.0f} ms median, p99 {percentile(asked, 0.99):.0f} ms over "
        f"{len(asked)} questions" + (f" ({failed} failed)" if failed else "") + "; so small "
        f"a model named the right type {results.questions_right} times of {len(asked)}, which "
        "is why it is the last step before the default and never overrules the others.",
    ]
    return lines
