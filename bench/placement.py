"""Issue 12: models across two GPUs against the one-device workaround.

A box with two 1000 MiB cards (budget-only: every server is the real llama-server with
SmolLM2 on the CPU, so what is measured is the arbitration and the real starts and stops
it causes): a dense model on both cards (500 + 500 MiB), the MoE on gpu1 (900 MiB), a
small model on gpu0 (400 MiB). 40 requests in turn cycle dense → moe → small.

- **two cards**: `devices = ["gpu0", "gpu1"]` for the dense model, one card for the others.
- **one device**: the workaround without this feature: both cards as one 2000 MiB device,
  every model on it with its total.

Counted from the swap log: evictions (models stopped to make room), how often the small
model was evicted for the MoE, and the makespan (first request → last answer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import median, tierhost_daemon

REQUESTS = 40
CYCLE = ("dense", "moe", "small")
CARD_MB = 1000
DEMO_ARGS = '["--ctx-size", "2048", "--parallel", "1", "--no-warmup"]'


def _model(name: str, placement: str, memory: str) -> str:
    return (
        f'[models.{name}]\ngguf = "demo:smollm2"\n{placement}\nmemory_mb = {memory}\n'
        f"args = {DEMO_ARGS}\nstart_timeout_s = 60\n"
    )


TIERS = (
    '[tiers.architect]\nmodels = ["dense"]\n[tiers.builder]\nmodels = ["moe"]\n'
    '[tiers.operator]\nmodels = ["small"]\n'
)

LAYOUTS = {
    "two cards": (
        f'[devices.gpu0]\nkind = "gpu"\nmemory_mb = {CARD_MB}\n'
        f'[devices.gpu1]\nkind = "gpu"\nindex = 1\nmemory_mb = {CARD_MB}\n'
        + _model("dense", 'devices = ["gpu0", "gpu1"]', "{gpu0 = 500, gpu1 = 500}")
        + _model("moe", 'device = "gpu1"', "900")
        + _model("small", 'device = "gpu0"', "400")
        + TIERS
    ),
    "one device": (
        f'[devices.gpus]\nkind = "gpu"\nmemory_mb = {2 * CARD_MB}\n'
        + _model("dense", 'device = "gpus"', "1000")
        + _model("moe", 'device = "gpus"', "900")
        + _model("small", 'device = "gpus"', "400")
        + TIERS
    ),
}


@dataclass
class LayoutRun:
    layout: str
    evictions: int
    small_for_moe: int
    loads: int
    makespan_s: float
    failed: int


def run_layout(layout: str, workdir: Path) -> LayoutRun:
    with tierhost_daemon(LAYOUTS[layout], workdir) as url, httpx.Client(timeout=300) as client:
        failed = 0
        began = time.perf_counter()
        for index in range(REQUESTS):
            body = {"model": CYCLE[index % 3], "prompt": "Hi", "max_tokens": 4}
            if client.post(f"{url}/v1/completions", json=body).status_code != 200:
                failed += 1
        makespan = time.perf_counter() - began
        swaps: list[dict[str, Any]] = client.get(f"{url}/api/swaps", params={"limit": 1000}).json()[
            "swaps"
        ]
    evicted = [(s["model"], e) for s in swaps for e in s["evicted"]]
    return LayoutRun(
        layout,
        len(evicted),
        sum(1 for model, e in evicted if model == "moe" and e == "small"),
        len(swaps),
        makespan,
        failed,
    )


@dataclass
class PlacementResults:
    runs: list[LayoutRun]
    rounds: int


def run(runs: int, workdir: Path) -> PlacementResults:
    """The two layouts interleaved, `rounds` times (each round is 40 requests a layout)."""
    rounds = max(1, min(3, runs // 4))
    results = []
    for round_index in range(rounds):
        for layout in LAYOUTS:
            where = workdir / f"{layout.replace(' ', '-')}-{round_index}"
            where.mkdir()
            results.append(run_layout(layout, where))
    return PlacementResults(results, rounds)


def report(results: PlacementResults) -> list[str]:
    lines = [
        f"{REQUESTS} completions in turn cycling dense (both cards, 500 + 500 MiB) → MoE "
        f"(gpu1, 900 MiB) → small (gpu0, 400 MiB), on two budget-only {CARD_MB} MiB cards, "
        f"against the workaround of both cards as one {2 * CARD_MB} MiB device; medians of "
        f"{results.rounds} round(s), the layouts interleaved. Evictions and loads from the "
        "swap log.",
        "",
        "| layout | evictions | small evicted for the MoE | loads | makespan s | failed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    summary: dict[str, tuple[float, float, float]] = {}
    for layout in LAYOUTS:
        chosen = [r for r in results.runs if r.layout == layout]
        evictions = median([r.evictions for r in chosen])
        small = median([r.small_for_moe for r in chosen])
        loads = median([r.loads for r in chosen])
        makespan = median([r.makespan_s for r in chosen])
        failed = sum(r.failed for r in chosen)
        summary[layout] = (evictions, small, makespan)
        lines.append(
            f"| {layout} | {evictions:g} | {small:g} | {loads:g} | {makespan:.1f} | {failed} |"
        )
    two, one = summary["two cards"], summary["one device"]
    lines += [
        "",
        f"- The small model was evicted for the MoE {two[1]:g} times with two cards "
        f"(target 0) and {one[1]:g} times as one device.",
        f"- Evictions: {two[0]:g} with two cards against {one[0]:g} as one device "
        f"({two[0] / max(1.0, one[0]):.2f}×; target: fewer); makespan {two[2]:.1f} s "
        f"against {one[2]:.1f} s ({two[2] / one[2]:.2f}×).",
    ]
    return lines
