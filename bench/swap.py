"""Issue 2: what a swap costs, against the floor and llama.cpp's router mode, and what the
proxy adds to a request that does not swap.

(a) floor: a bare llama-server, spawned by hand → healthy → first token of one request;
(b) router: `llama-server --models-dir D --models-max 1` alternating two models;
(c) tierhost: the demo daemon alternating architect-demo and builder-demo (a real swap on
    the budget-only gpu0 every time), timed from request to first token;
(d) overhead: one-token requests to a resident model, direct, through a bare byte
    relay (`bench.relay`: the least any Python proxy adds here) and through the proxy,
    interleaved so all three see the same machine; and streaming tokens/s direct and
    through the proxy.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import (
    START_TIMEOUT_S,
    bare_llama_server,
    demo_gguf,
    free_port,
    llama_server,
    median,
    ms,
    percentile,
    plain_chat,
    stop,
    stream_chat,
    tierhost_daemon,
    wait_healthy,
    wait_models_ready,
)

MODEL_ARGS = ["--ctx-size", "8192", "--parallel", "2", "--no-warmup", "--n-gpu-layers", "0"]
FIRST_TOKEN_MAX = 4
_prompts = itertools.count()


def fresh_prompt() -> str:
    """A new conversation each time, all of one length: every path prefills the same
    tokens, and Tierhost has no saved KV slot to restore (bench.kv_slots measures that)."""
    return f"Write one sentence about the sea, number {next(_prompts) % 1000:03d}."


STREAM_TOKENS = 128


@dataclass
class SwapResults:
    floor_healthy: list[float]
    floor_first_token: list[float]
    router_first_token: list[float]
    router_same_model: list[float]
    tierhost_first_token: list[float]
    direct_ms: list[float]
    relay_ms: list[float]
    proxy_ms: list[float]
    direct_tps: list[float]
    proxy_tps: list[float]


def measure_floor(runs: int, workdir: Path) -> tuple[list[float], list[float]]:
    healthy, first_token = [], []
    with httpx.Client(timeout=120) as client:
        for _ in range(runs):
            spawned = time.perf_counter()
            with bare_llama_server(
                ["--model", str(demo_gguf()), *MODEL_ARGS], workdir / "floor.log"
            ) as server:
                healthy.append(server.start_s)
                stream_chat(client, server.url, "any", FIRST_TOKEN_MAX, fresh_prompt())
                first_token.append(time.perf_counter() - spawned)
    return healthy, first_token


def measure_router(runs: int, workdir: Path) -> tuple[list[float], list[float]]:
    """Every request alternates model, so with --models-max 1 every request swaps."""
    models_dir = workdir / "router-models"
    models_dir.mkdir(exist_ok=True)
    for name in ("architect", "builder"):
        link = models_dir / f"{name}.gguf"
        if not link.exists():
            link.symlink_to(demo_gguf())
    port = free_port()
    argv = [
        str(llama_server()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--models-dir",
        str(models_dir),
        "--models-max",
        "1",
        *MODEL_ARGS,
    ]
    log = (workdir / "router.log").open("ab")
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    swapping, staying = [], []
    try:
        wait_healthy(url, process, START_TIMEOUT_S)
        # The router drops kept-alive connections across a swap: one connection a request.
        with httpx.Client(timeout=120, headers={"Connection": "close"}) as client:
            stream_chat(client, url, "builder", FIRST_TOKEN_MAX)  # first load is not a swap
            for i in range(runs):
                model = "architect" if i % 2 == 0 else "builder"
                timing = stream_chat(client, url, model, FIRST_TOKEN_MAX, fresh_prompt())
                swapping.append(timing.first_token_s)
                timing = stream_chat(client, url, model, FIRST_TOKEN_MAX, fresh_prompt())
                staying.append(timing.first_token_s)
    finally:
        stop(process)
    return swapping, staying


@contextmanager
def byte_relay(target_port: int) -> Iterator[str]:
    """`bench.relay` in a process of its own (as the daemon is), piping to `target_port`."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.relay", str(port), str(target_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # stopped as its process group, as every server here
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2.0).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the byte relay did not start") from None
                time.sleep(0.02)
        yield url
    finally:
        stop(process)


def measure_tierhost(
    runs: int, overhead_runs: int, stream_runs: int, workdir: Path
) -> tuple[list[float], list[float], list[float], list[float], list[float], list[float]]:
    swapping: list[float] = []
    direct_ms: list[float] = []
    relay_ms: list[float] = []
    proxy_ms: list[float] = []
    direct_tps: list[float] = []
    proxy_tps: list[float] = []
    with tierhost_daemon(None, workdir) as url, httpx.Client(timeout=120) as client:
        wait_models_ready(url, {"operator-demo", "validator-demo"})
        stream_chat(client, url, "builder-demo", FIRST_TOKEN_MAX)  # first load is not a swap
        for i in range(runs):
            model = "architect-demo" if i % 2 == 0 else "builder-demo"
            timing = stream_chat(client, url, model, FIRST_TOKEN_MAX, fresh_prompt())
            swapping.append(timing.first_token_s)

        status = client.get(f"{url}/api/status").json()
        resident = next(
            m for m in status["models"] if m["state"] == "ready" and m["device"] == "gpu0"
        )
        direct = f"http://127.0.0.1:{resident['port']}"
        name = resident["name"]
        with byte_relay(resident["port"]) as relay:
            for _ in range(3):  # warm every path's connections
                for base in (direct, relay, url):
                    plain_chat(client, base, name)
            for _ in range(overhead_runs):
                direct_ms.append(plain_chat(client, direct, name) * 1000)
                relay_ms.append(plain_chat(client, relay, name) * 1000)
                proxy_ms.append(plain_chat(client, url, name) * 1000)
        for _ in range(stream_runs):
            direct_tps.append(stream_chat(client, direct, name, STREAM_TOKENS).tokens_per_s)
            proxy_tps.append(stream_chat(client, url, name, STREAM_TOKENS).tokens_per_s)
    return swapping, direct_ms, relay_ms, proxy_ms, direct_tps, proxy_tps


def run(runs: int, workdir: Path) -> SwapResults:
    floor_healthy, floor_first = measure_floor(runs, workdir)
    router_swap, router_same = measure_router(runs, workdir)
    tierhost_swap, direct_ms, relay_ms, proxy_ms, direct_tps, proxy_tps = measure_tierhost(
        runs, overhead_runs=max(60, runs * 6), stream_runs=max(5, runs // 2), workdir=workdir
    )
    return SwapResults(
        floor_healthy,
        floor_first,
        router_swap,
        router_same,
        tierhost_swap,
        direct_ms,
        relay_ms,
        proxy_ms,
        direct_tps,
        proxy_tps,
    )


def report(results: SwapResults) -> list[str]:
    r = results
    floor = median(r.floor_first_token)
    rows = [
        ("(a) floor: bare llama-server spawn → healthy", r.floor_healthy),
        ("(a) floor: bare llama-server spawn → first token", r.floor_first_token),
        (
            "(b) router mode `--models-max 1`: request that swaps → first token",
            r.router_first_token,
        ),
        ("(b) router mode: request that stays → first token", r.router_same_model),
        ("(c) Tierhost: request that swaps → first token", r.tierhost_first_token),
    ]
    lines = [
        "| measurement | runs | median ms | p90 ms | × floor (first token) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, values in rows:
        ratio = median(values) / floor
        lines.append(
            f"| {label} | {len(values)} | {ms(median(values))} | {ms(percentile(values, 0.9))} "
            f"| {ratio:.2f} |"
        )
    added = [p - d for p, d in zip(r.proxy_ms, r.direct_ms, strict=True)]
    relayed = [p - d for p, d in zip(r.relay_ms, r.direct_ms, strict=True)]
    tps_ratio = median(r.proxy_tps) / median(r.direct_tps)
    lines += [
        "",
        "Requests that do not swap (one-token completions to the resident model: direct, "
        "through a bare byte relay and through the proxy, interleaved):",
        "",
        "| path | runs | median ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| direct to llama-server | {len(r.direct_ms)} | {median(r.direct_ms):.2f} "
        f"| {percentile(r.direct_ms, 0.99):.2f} |",
        f"| through a byte relay (`bench.relay`) | {len(r.relay_ms)} | {median(r.relay_ms):.2f} "
        f"| {percentile(r.relay_ms, 0.99):.2f} |",
        f"| through Tierhost | {len(r.proxy_ms)} | {median(r.proxy_ms):.2f} "
        f"| {percentile(r.proxy_ms, 0.99):.2f} |",
        f"| added by the byte relay (paired) | {len(relayed)} | {median(relayed):.2f} "
        f"| {percentile(relayed, 0.99):.2f} |",
        f"| **added by Tierhost** (paired) | {len(added)} | {median(added):.2f} "
        f"| {percentile(added, 0.99):.2f} |",
        "",
        "The byte relay parses nothing and passes the plain request on as it came: the "
        "floor under any proxy written in Python on this machine"
        + (
            " (it answered sooner than direct: a client reaching llama-server through a "
            "uvloop socket gets its answer sooner)"
            if median(relayed) < 0
            else ""
        )
        + f". Tierhost adds {median(added) - median(relayed):.2f} ms more than it (the "
        "medians' difference): it reads and routes the request, and sends a plain one "
        "upstream as a stream, so that a client that leaves ends the generation.",
        "",
        f"Streaming {STREAM_TOKENS} tokens: direct {median(r.direct_tps):.1f} tokens/s, "
        f"through Tierhost {median(r.proxy_tps):.1f} tokens/s (median of {len(r.direct_tps)}; "
        f"ratio {tps_ratio:.3f}).",
        "",
        f"Swap vs floor: {median(r.tierhost_first_token) / floor:.2f}× (target ≤ 1.1×); "
        f"vs router mode: {median(r.tierhost_first_token) / median(r.router_first_token):.2f}× "
        "(target < 1).",
    ]
    return lines
