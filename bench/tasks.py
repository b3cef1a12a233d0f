"""Issue 3: swap-minimising scheduling against plain FIFO, and task submission throughput.

The same 40 tasks, alternating planning (architect) and implementation (builder), are
submitted at once to two daemons that differ only in `scheduler.policy`. Counted: GPU
swaps from the swap log, makespan (first submission → last task done), and the longest
wait (submission → running). Then how many tasks per second the store (SQLite, WAL)
accepts, directly and through `POST /api/tasks`.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from bench.common import median, tierhost_daemon, wait_models_ready
from host.store import Store

TASKS = 40
MAX_WAIT_S = 60.0
MIN_RESIDENCY_S = 2.0
TERMINAL = {"done", "failed", "cancelled"}


@dataclass
class QueueRun:
    policy: str
    swaps: int
    makespan_s: float
    longest_wait_s: float
    failed: int


def config_for(policy: str) -> str:
    demo = resources.files("host").joinpath("data/demo.toml").read_text("utf-8")
    return (
        f'{demo}\n[scheduler]\npolicy = "{policy}"\nmax_wait_s = {MAX_WAIT_S}\n'
        f"min_residency_s = {MIN_RESIDENCY_S}\n"
    )


def wait_terminal(client: httpx.Client, url: str, ids: list[str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        tasks = [client.get(f"{url}/api/tasks/{i}").json() for i in ids]
        if all(t["status"] in TERMINAL for t in tasks):
            return tasks
        time.sleep(0.2)
    raise RuntimeError("tasks did not finish within 900 s")


def run_queue(policy: str, workdir: Path) -> QueueRun:
    with tierhost_daemon(config_for(policy), workdir) as url, httpx.Client(timeout=60) as client:
        wait_models_ready(url, {"operator-demo", "validator-demo"})
        swaps_before = len(client.get(f"{url}/api/swaps", params={"limit": 1000}).json()["swaps"])
        ids = []
        for i in range(TASKS):
            kind = "planning" if i % 2 == 0 else "implementation"
            body = {"prompt": f"Task {i}: one line, please.", "type": kind, "validation": "none"}
            body["params"] = {"max_tokens": 8, "temperature": 0}
            response = client.post(f"{url}/api/tasks", json=body)
            response.raise_for_status()
            ids.append(response.json()["id"])
        tasks = wait_terminal(client, url, ids)
        swaps = client.get(f"{url}/api/swaps", params={"limit": 1000}).json()["swaps"]
    gpu_swaps = [s for s in swaps[swaps_before:] if s["device"] == "gpu0"]
    submitted = min(t["events"][0]["at"] for t in tasks)
    finished = max(t["events"][-1]["at"] for t in tasks)
    waits = []
    for task in tasks:
        running = next((e["at"] for e in task["events"] if e["status"] == "running"), None)
        if running is not None:
            waits.append(running - task["events"][0]["at"])
    return QueueRun(
        policy,
        len(gpu_swaps),
        finished - submitted,
        max(waits),
        sum(t["status"] != "done" for t in tasks),
    )


async def store_throughput(count: int) -> float:
    """Tasks/s through `Store.create_task`: one committed transaction each, as the API does."""
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "bench.sqlite3")
        try:
            started = time.perf_counter()
            for i in range(count):
                await store.create_task(
                    prompt=f"task {i}",
                    type="planning",
                    context={},
                    request={},
                    priority=0,
                    validation="none",
                )
            return count / (time.perf_counter() - started)
        finally:
            await store.close()


def http_throughput(count: int, workdir: Path) -> float:
    """Tasks/s through `POST /api/tasks` (validation, routing, store) while gpu0 is gaming,
    so the tasks stay queued and nothing else competes for the CPU."""
    with tierhost_daemon(None, workdir) as url, httpx.Client(timeout=60) as client:
        wait_models_ready(url, {"operator-demo", "validator-demo"})
        client.put(f"{url}/api/mode", json={"mode": "gaming"}).raise_for_status()
        body = {"prompt": "Plan a CLI.", "model": "architect-demo"}
        started = time.perf_counter()
        ids = []
        for _ in range(count):
            response = client.post(f"{url}/api/tasks", json=body)
            response.raise_for_status()
            ids.append(response.json()["id"])
        rate = count / (time.perf_counter() - started)
        for task_id in ids:
            client.post(f"{url}/api/tasks/{task_id}/cancel")
    return rate


@dataclass
class TaskResults:
    batch: list[QueueRun]
    fifo: list[QueueRun]
    store_rates: list[float]
    http_rates: list[float]


def run(runs: int, workdir: Path) -> TaskResults:
    batch, fifo = [], []
    for _ in range(max(1, runs // 2)):
        batch.append(run_queue("batch", workdir))
        fifo.append(run_queue("fifo", workdir))
    store_rates = [asyncio.run(store_throughput(500)) for _ in range(runs)]
    http_rates = [http_throughput(200, workdir) for _ in range(max(1, runs // 2))]
    return TaskResults(batch, fifo, store_rates, http_rates)


def report(results: TaskResults) -> list[str]:
    def med(runs: list[QueueRun], attribute: str) -> float:
        return median([getattr(r, attribute) for r in runs])

    b, f = results.batch, results.fifo
    lines = [
        f"{TASKS} tasks alternating planning/implementation, submitted at once; "
        f"`max_wait_s = {MAX_WAIT_S:g}`, `min_residency_s = {MIN_RESIDENCY_S:g}`; "
        f"median of {len(b)} run(s) per policy, the policies interleaved:",
        "",
        "| policy | gpu0 swaps | makespan s | longest wait s | not done |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, runs in (("Tierhost batching", b), ("FIFO baseline", f)):
        lines.append(
            f"| {name} | {med(runs, 'swaps'):g} | {med(runs, 'makespan_s'):.1f} "
            f"| {med(runs, 'longest_wait_s'):.1f} | {sum(r.failed for r in runs)} |"
        )
    swap_ratio = med(f, "swaps") / max(1.0, med(b, "swaps"))
    longest = max(r.longest_wait_s for r in b)
    lines += [
        "",
        f"FIFO swaps {swap_ratio:.1f}× as often as batching (target ≥ 4×); makespan "
        f"{med(b, 'makespan_s') / med(f, 'makespan_s'):.2f}× FIFO's; the longest wait under "
        f"batching was {longest:.1f} s against the {MAX_WAIT_S:g} s bound.",
        "",
        f"Task submission: {median(results.store_rates):,.0f} tasks/s into SQLite through "
        f"`Store.create_task` (500 tasks, median of {len(results.store_rates)} runs); "
        f"{median(results.http_rates):,.0f} tasks/s through `POST /api/tasks` "
        f"(200 sequential requests, median of {len(results.http_rates)} runs).",
    ]
    return lines
