"""Issue 16: how often the router gets the task type right, and what a decision costs.

The evaluation set (tests/host/core/data/routing_eval.jsonl, written apart from the
classifier's corpus) is scored twice in the same run: with the keyword rules alone (the
router before the classifier) and with the classifier between the strong rules and the
default. Then the decision latency: `routing.decide` on each prompt of the set, in
process, with and without the classifier (fresh prompts each round, so the classifier's
memo does not hide its cost).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import median, percentile
from host.config import load_config
from host.core import routing
from host.core.evaluation import Example, Score, read_examples, score
from host.models.type_classifier import load_or_fit

EVAL_SET = Path(__file__).resolve().parent.parent / "tests/host/core/data/routing_eval.jsonl"


@dataclass
class RoutingResults:
    rules: Score
    classifier: Score
    types: list[str]
    rules_ms: list[float] = field(default_factory=list)
    classifier_ms: list[float] = field(default_factory=list)
    fit_s: float = 0.0


def examples() -> list[Example]:
    return read_examples(EVAL_SET.read_text(), load_config().task_type_names())


def run(runs: int, workdir: Path) -> RoutingResults:
    config = load_config()
    started = time.perf_counter()
    classifier = load_or_fit(config.examples, directory=workdir / "cache")  # a fresh fit
    fit_s = time.perf_counter() - started
    plain = routing.snapshot_from_config(config)
    with_classifier = routing.snapshot_from_config(config, classifier=classifier)
    items = examples()
    results = RoutingResults(
        score(items, plain), score(items, with_classifier), config.task_type_names(), fit_s=fit_s
    )
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
    return results


def report(results: RoutingResults) -> list[str]:
    rules, classified = results.rules, results.classifier
    lines = [
        f"Evaluation set: {classified.total} prompts, "
        f"{classified.total // len(results.types)} per type, written apart from the corpus.",
        "",
        "| router | type accuracy | tier accuracy | infra off the operator tier |",
        "|---|---:|---:|---:|",
    ]
    for name, scored in (
        ("keyword rules alone (before)", rules),
        ("rules + classifier", classified),
    ):
        infra_off = sum(n for (t, _), n in scored.off_tier.items() if t == "infra")
        lines.append(
            f"| {name} | {scored.type_accuracy:.1%} ({scored.right_type}/{scored.total}) "
            f"| {scored.tier_accuracy:.1%} ({scored.right_tier}/{scored.total}) | {infra_off} |"
        )
    lines += ["", "Confusion, rules + classifier:", "", *classified.table(results.types)]
    lines += ["", "Confusion, keyword rules alone:", "", *rules.table(results.types)]
    lines += [
        "",
        "Decision latency (`routing.decide` in process, every prompt of the set per run):",
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
    return lines
