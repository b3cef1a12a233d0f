"""Issue 15: one swap-minimising queue per GPU, for requests as well as tasks.

Editor agents reach the host mostly through `/v1`: aider's architect mode, two agents, or
an agent and its sub-agents send requests that alternate between two GPU models all day.
Two daemons that differ only in `scheduler.policy` get the same load:

- **requests**: 12 concurrent clients, each sending 2 chat completions in turn that
  alternate between architect-demo and builder-demo (24 requests, 8 tokens each);
- **mixed**: the same clients while 8 tasks alternating planning / implementation are
  queued at the same moment.

Counted: gpu0 swaps from the swap log, wall time (first request → last answer), and each
request's wait for its model (`X-Tierhost-Wait-Ms`): median and worst.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from bench.common import median, tierhost_daemon, wait_models_ready

CLIENTS = 12
TURNS = 2
TASKS = 8
MODELS = ("architect-demo", "builder-demo")
REQUEST_MAX_WAIT_S = 30.0
MIN_RESIDENCY_S = 2.0
TERMINAL = {"done", "failed", "cancelled"}


@dataclass
class LoadRun:
    policy: str
    load: str
    swaps: int
    wall_s: float
    waits_s: list[float]
    failed: int


def config_for(policy: str) -> str:
    demo = resources.files("host").joinpath("data/demo.toml").read_text("utf-8")
    return (
        f'{demo}\n[scheduler]\npolicy = "{policy}"\n'
        f"request_max_wait_s = {REQUEST_MAX_WAIT_S}\nmin_residency_s = {MIN_RESIDENCY_S}\n"
    )


async def _client(http: httpx.AsyncClient, url: str, index: int) -> list[float | None]:
    waits: list[float | None] = []
    for turn in range(TURNS):
        model = MODELS[(index + turn) % 2]
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"Client {index}, turn {turn}: say hi."}],
            "max_tokens": 8,
            "temperature": 0,
        }
        response = await http.post(f"{url}/v1/chat/completions", json=body)
        waited = response.headers.get("x-tierhost-wait-ms")
        ok = response.status_code == 200 and waited is not None
        waits.append(float(waited) / 1000 if ok and waited is not None else None)
    return waits


async def _requests(url: str) -> tuple[float, list[float | None]]:
    async with httpx.AsyncClient(timeout=600) as http:
        started = time.monotonic()
        per_client = await asyncio.gather(*(_client(http, url, i) for i in range(CLIENTS)))
        return time.monotonic() - started, [w for waits in per_client for w in waits]


def _submit_tasks(client: httpx.Client, url: str) -> list[str]:
    ids = []
    for i in range(TASKS):
        kind = "planning" if i % 2 == 0 else "implementation"
        body = {"prompt": f"Task {i}: one line, please.", "type": kind, "validation": "none"}
        body["params"] = {"max_tokens": 8, "temperature": 0}
        response = client.post(f"{url}/api/tasks", json=body)
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids


def _wait_terminal(client: httpx.Client, url: str, ids: list[str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        tasks = [client.get(f"{url}/api/tasks/{i}").json() for i in ids]
        if all(t["status"] in TERMINAL for t in tasks):
            return tasks
        time.sleep(0.2)
    raise RuntimeError("tasks did not finish within 900 s")


def run_load(policy: str, load: str, workdir: Path) -> LoadRun:
    with tierhost_daemon(config_for(policy), workdir) as url, httpx.Client(timeout=60) as client:
        wait_models_ready(url, {"operator-demo", "validator-demo"})
        swaps_before = len(client.get(f"{url}/api/swaps", params={"limit": 1000}).json()["swaps"])
        started = time.monotonic()
        ids = _submit_tasks(client, url) if load == "mixed" else []
        wall_s, waits = asyncio.run(_requests(url))
        tasks = _wait_terminal(client, url, ids) if ids else []
        if tasks:
            wall_s = time.monotonic() - started
        swaps = client.get(f"{url}/api/swaps", params={"limit": 1000}).json()["swaps"]
    task_waits = []
    for task in tasks:
        running = next((e["at"] for e in task["events"] if e["status"] == "running"), None)
        if running is not None:
            task_waits.append(running - task["events"][0]["at"])
    answered = [w for w in waits if w is not None]
    failed = len(waits) - len(answered) + sum(t["status"] != "done" for t in tasks)
    gpu_swaps = [s for s in swaps[swaps_before:] if s["device"] == "gpu0"]
    return LoadRun(policy, load, len(gpu_swaps), wall_s, answered + task_waits, failed)


@dataclass
class QueueResults:
    runs: list[LoadRun]


def run(runs: int, workdir: Path) -> QueueResults:
    results = []
    for _ in range(max(1, runs // 4)):
        for load in ("requests", "mixed"):
            for policy in ("batch", "fifo"):
                results.append(run_load(policy, load, workdir))
    return QueueResults(results)


def report(results: QueueResults) -> list[str]:
    rounds = len(results.runs) // 4
    lines = [
        f"{CLIENTS} concurrent clients, each sending {TURNS} chat completions in turn that "
        f"alternate between {MODELS[0]} and {MODELS[1]} (8 tokens each); *mixed* adds "
        f"{TASKS} tasks alternating planning / implementation queued at the same moment. "
        f"`request_max_wait_s = {REQUEST_MAX_WAIT_S:g}`, `min_residency_s = "
        f"{MIN_RESIDENCY_S:g}`; medians of {rounds} run(s) per row, the policies "
        "interleaved. Waits are each request's `X-Tierhost-Wait-Ms` (and for tasks, "
        "submission → running).",
        "",
        "| load | policy | gpu0 swaps | wall s | median wait s | worst wait s | not answered |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    summary: dict[tuple[str, str], tuple[float, float, float, float]] = {}
    for load in ("requests", "mixed"):
        for policy in ("batch", "fifo"):
            chosen = [r for r in results.runs if r.load == load and r.policy == policy]
            swaps = median([r.swaps for r in chosen])
            wall = median([r.wall_s for r in chosen])
            wait = median([median(r.waits_s) for r in chosen])
            worst = max(max(r.waits_s) for r in chosen)
            summary[(load, policy)] = (swaps, wall, wait, worst)
            name = "Tierhost batching" if policy == "batch" else "FIFO baseline"
            lines.append(
                f"| {load} | {name} | {swaps:g} | {wall:.1f} | {wait:.2f} | {worst:.2f} "
                f"| {sum(r.failed for r in chosen)} |"
            )
    lines.append("")
    for load in ("requests", "mixed"):
        b, f = summary[(load, "batch")], summary[(load, "fifo")]
        lines.append(
            f"- {load}: FIFO swaps {f[0] / max(1.0, b[0]):.1f}× as often as batching (target "
            f"≥ 4×); median wait {b[2]:.2f} s against FIFO's {f[2]:.2f} s; worst wait "
            f"{b[3]:.2f} s under batching."
        )
    return lines
