"""Issue 12: a swap back to a model left asleep, against the bare-start floor.

Two SmolLM2 llama-servers share one budget-only gpu0 that holds one of them. Each
request alternates model, so each is a swap, timed from request to first token:

(a) floor: a bare llama-server spawned by hand → first token of one request;
(b) asleep: both models with `sleep = { idle_s = 1 }`; before each request the model
    that served the last one has fallen asleep by itself (`/props` says so), so the swap
    leaves it asleep and wakes the other (llama-server reloads the model on the request);
(c) stopped: the same daemon and waits without `sleep`: the swap stops one server and
    starts the other.

Every row waits the same before its request, so all see the same machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import (
    bare_llama_server,
    demo_gguf,
    median,
    ms,
    percentile,
    stream_chat,
    tierhost_daemon,
)
from bench.swap import FIRST_TOKEN_MAX, MODEL_ARGS, fresh_prompt

IDLE_S = 1
_ARGS = '["--ctx-size", "8192", "--parallel", "2", "--no-warmup"]'
"""MODEL_ARGS as a config writes them: the daemon adds `--n-gpu-layers 0` on a budget-only
device itself."""


def _config(sleep: bool) -> str:
    models = "".join(
        f'[models.{name}]\ngguf = "demo:smollm2"\ndevice = "gpu0"\nmemory_mb = 300\n'
        f"args = {_ARGS}\nstart_timeout_s = 60\n"
        + (f"sleep = {{ idle_s = {IDLE_S} }}\n" if sleep else "")
        for name in ("first", "second")
    )
    return (
        '[devices.gpu0]\nkind = "gpu"\nmemory_mb = 400\n'
        + models
        + '[tiers.architect]\nmodels = ["first"]\n[tiers.builder]\nmodels = ["second"]\n'
        + '[tiers.operator]\nmodels = ["second"]\n'
    )


@dataclass
class SleepResults:
    floor_first_token: list[float]
    asleep_first_token: list[float]
    stopped_first_token: list[float]
    wakes: int
    """Wakes the daemon counted in (b): every swap of it should be one."""


def _settle(client: httpx.Client, url: str, model: str, sleep: bool) -> None:
    """Wait until `model` has been idle past its sleep time (asleep by itself, when it
    sleeps): the same wait for every row."""
    deadline = time.monotonic() + 30
    time.sleep(IDLE_S + 0.1)
    while sleep and time.monotonic() < deadline:
        status = client.get(f"{url}/api/status").json()
        port = next(m["port"] for m in status["models"] if m["name"] == model)
        if client.get(f"http://127.0.0.1:{port}/props").json().get("is_sleeping"):
            return
        time.sleep(0.05)
    if sleep:
        raise RuntimeError(f"{model} did not fall asleep within 30 s")


def measure_floor(runs: int, workdir: Path) -> list[float]:
    first_token = []
    with httpx.Client(timeout=120) as client:
        for _ in range(runs):
            time.sleep(IDLE_S + 0.1)
            spawned = time.perf_counter()
            args = ["--model", str(demo_gguf()), *MODEL_ARGS]
            with bare_llama_server(args, workdir / "floor.log") as server:
                stream_chat(client, server.url, "any", FIRST_TOKEN_MAX, fresh_prompt())
                first_token.append(time.perf_counter() - spawned)
    return first_token


def measure_daemon(runs: int, workdir: Path, sleep: bool) -> tuple[list[float], int]:
    swaps: list[float] = []
    with tierhost_daemon(_config(sleep), workdir) as url, httpx.Client(timeout=120) as client:
        for model in ("first", "second"):  # both started once: the first loads are not swaps
            stream_chat(client, url, model, FIRST_TOKEN_MAX)
            _settle(client, url, model, sleep)
        for i in range(runs):
            model = "first" if i % 2 == 0 else "second"
            timing = stream_chat(client, url, model, FIRST_TOKEN_MAX, fresh_prompt())
            swaps.append(timing.first_token_s)
            _settle(client, url, model, sleep)
        status = client.get(f"{url}/api/status").json()
        wakes = sum((m.get("sleep") or {}).get("wakes", 0) for m in status["models"])
    return swaps, wakes


def run(runs: int, workdir: Path) -> SleepResults:
    floor = measure_floor(runs, workdir)
    asleep, wakes = measure_daemon(runs, workdir, sleep=True)
    stopped, _ = measure_daemon(runs, workdir, sleep=False)
    return SleepResults(floor, asleep, stopped, wakes)


def report(results: SleepResults) -> list[str]:
    r = results
    floor = median(r.floor_first_token)
    rows = [
        ("(a) floor: bare llama-server spawn → first token", r.floor_first_token),
        ("(b) Tierhost: swap to a model left asleep → first token", r.asleep_first_token),
        ("(c) Tierhost: swap that stops and starts → first token", r.stopped_first_token),
    ]
    lines = [
        "| measurement | runs | median ms | p90 ms | × floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, values in rows:
        lines.append(
            f"| {label} | {len(values)} | {ms(median(values))} | "
            f"{ms(percentile(values, 0.9))} | {median(values) / floor:.2f} |"
        )
    ratio = median(r.asleep_first_token) / floor
    lines += [
        "",
        f"Wakes counted by the daemon in (b): {r.wakes} of {len(r.asleep_first_token)} swaps.",
        "",
        f"Swap to asleep vs floor: {ratio:.2f}× (target ≤ 0.85×: "
        f"{'met' if ratio <= 0.85 else 'not met'}). llama-server's sleep drops the weights "
        "and reloads them from the page cache on the next request; the process, its "
        "HTTP server and its backends stay up, which is what the wake saves.",
    ]
    return lines
