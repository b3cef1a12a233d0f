"""Issue 12: a swap back to a model left asleep, against the bare-start floor.

Two SmolLM2 llama-servers share one budget-only gpu0 that holds one of them. Each
request alternates model, so each is a swap, timed from request to first token:

(a) floor: a bare llama-server spawned by hand → first token of one request;
(b) asleep: both models with `sleep = { idle_s = 1 }`; before each request the model
    that served the last one has fallen asleep by itself (`/props` says so), so the swap
    leaves it asleep and wakes the other (llama-server reloads the model on the request);
(c) stopped: the same daemon and waits without `sleep`: the swap stops one server and
    starts the other.

Every row waits the same before its request, and the rows take turns, one sample each,
so all three see the same machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    bare_llama_server,
    card,
    demo_gguf,
    median,
    ms,
    percentile,
    stream_chat,
    tierhost_daemon,
)
from bench.swap import FIRST_TOKEN_MAX, MODEL_ARGS, fresh_prompt
from host.models import gpu

IDLE_S = 1
_ARGS = '["--ctx-size", "8192", "--parallel", "2", "--no-warmup"]'
"""MODEL_ARGS as a config writes them: the daemon adds `--n-gpu-layers 0` on a budget-only
device itself."""


def _config(sleep: bool) -> str:
    models = "".join(
        f'[models.{name}]\ngguf = "{demo_gguf()}"\ndevice = "gpu0"\nmemory_mb = 300\n'
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
    card_mb: tuple[int, int] | None = None
    """On a real card: NVML's memory of the awake and of the asleep server after the run."""


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


def _floor_args() -> list[str]:
    """MODEL_ARGS, with every layer on the card when there is one: the daemon offloads
    them there (`gpu_layers`, 999), so the floor must too."""
    if card() is None:
        return MODEL_ARGS
    return [*MODEL_ARGS[: MODEL_ARGS.index("--n-gpu-layers")], "--n-gpu-layers", "999"]


def floor_once(client: httpx.Client, workdir: Path) -> float:
    args = ["--model", str(demo_gguf()), *_floor_args()]  # its NVML read is not timed
    spawned = time.perf_counter()
    with bare_llama_server(args, workdir / "floor.log") as server:
        stream_chat(client, server.url, "any", FIRST_TOKEN_MAX, fresh_prompt())
        return time.perf_counter() - spawned


def swap_once(client: httpx.Client, url: str, model: str, sleep: bool) -> float:
    """One request that swaps `model` in, then the wait until it has been idle past
    its sleep time (asleep by itself, with `sleep`)."""
    timing = stream_chat(client, url, model, FIRST_TOKEN_MAX, fresh_prompt())
    _settle(client, url, model, sleep)
    return timing.first_token_s


def run(runs: int, workdir: Path) -> SleepResults:
    """The three rows interleaved, one sample of each in turn, so that a machine that
    drifts (it does, by a fifth over a run) shifts all three alike."""
    results = SleepResults([], [], [], 0)
    with (
        tierhost_daemon(_config(True), workdir) as asleep_url,
        tierhost_daemon(_config(False), workdir) as stopped_url,
        httpx.Client(timeout=120) as client,
    ):
        for url, sleep in ((asleep_url, True), (stopped_url, False)):
            for model in ("first", "second"):  # the first loads are not swaps
                swap_once(client, url, model, sleep)
        for i in range(runs):
            model = "first" if i % 2 == 0 else "second"
            results.floor_first_token.append(floor_once(client, workdir))
            results.asleep_first_token.append(swap_once(client, asleep_url, model, True))
            results.stopped_first_token.append(swap_once(client, stopped_url, model, False))
        status = client.get(f"{asleep_url}/api/status").json()
        results.wakes = sum((m.get("sleep") or {}).get("wakes", 0) for m in status["models"])
        results.card_mb = _card_mb(status, awake="first" if runs % 2 else "second")
    return results


def _card_mb(status: dict[str, Any], awake: str) -> tuple[int, int] | None:
    """NVML's memory of the server that served last and of the one left asleep."""
    if card() is None:
        return None
    listed = {p.pid: p.used_mb for p in gpu.read_processes(0) or []}
    pids = {m["name"]: m["pid"] for m in status["models"]}
    asleep = "second" if awake == "first" else "first"
    return listed.get(pids[awake], 0), listed.get(pids[asleep], 0)


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
    paired = [b / a for b, a in zip(r.asleep_first_token, r.floor_first_token, strict=True)]
    ratio = median(paired)
    against_stop = median(r.asleep_first_token) / median(r.stopped_first_token)
    lines += [
        "",
        f"Wakes counted by the daemon in (b): {r.wakes} of {len(r.asleep_first_token)} swaps. "
        f"A swap to a model left asleep took {against_stop:.2f}× the swap that stops and "
        "starts, same daemon, same waits.",
        "",
        f"Swap to asleep vs floor, median of the paired ratios: {ratio:.2f}× (target ≤ 0.85×: "
        f"{'met' if ratio <= 0.85 else 'not met'}). llama-server's sleep drops the weights "
        "and reloads them from the page cache on the next request; the process, its "
        "HTTP server and its backends stay up, which is what the wake saves.",
    ]
    if r.card_mb is not None:
        lines += [
            "",
            f"On {card()}: NVML counted {r.card_mb[0]:,} MiB for the server that served "
            f"last and {r.card_mb[1]:,} MiB for the one left asleep (its CUDA context).",
        ]
    return lines
