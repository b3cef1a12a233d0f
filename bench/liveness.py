"""Issue 17: `/health` stays fast while a client sends the largest prompts the limits allow.

One demo daemon. In each round `/health` is probed every 10 ms for a while with nothing
else going on (the baseline), then again while another process sends, back to back, a
request body just under the daemon's body limit to `/v1/chat/completions` (`model:
"auto"`, so the body is read, parsed, type-inferred, routed and size-checked). Three prompt
shapes: prose, blank lines (what made the old line-start patterns quadratic) and one long
word. Idle and loaded phases alternate within the run, so both see the same machine.
Target: the median `/health` latency under load at most twice the idle median.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import median, ms, percentile, tierhost_daemon, wait_models_ready
from host.config import HostSettings

PROBE_INTERVAL_S = 0.01
PROBES_PER_PHASE = 60
SHAPES = ("prose", "blank lines", "one long word")


def body_limit() -> int:
    """The daemon's default body limit, in bytes: the largest request it reads."""
    return int(HostSettings().max_body_mb * 1024 * 1024)


def prompt_of(shape: str, body_bytes: int) -> str:
    """A prompt whose JSON request body comes to just under `body_bytes`."""
    room = body_bytes - 1024  # the JSON around the prompt
    if shape == "prose":
        sentence = "The service reads its settings from the environment at start. "
        return (sentence * (room // len(sentence) + 1))[:room]
    if shape == "blank lines":
        return "\n" * (room // 2)  # JSON writes each newline as two bytes
    return "x" * room


def _send_forever(url: str, shape: str, stop: multiprocessing.synchronize.Event) -> None:
    """The hostile client, in its own process so it takes no GIL from the prober."""
    body = httpx.Request(
        "POST",
        "/",
        json={
            "model": "auto",
            "max_tokens": 1,
            "messages": [{"role": "user", "content": prompt_of(shape, body_limit())}],
        },
    ).read()
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=120) as client:
        while not stop.is_set():
            client.post("/v1/chat/completions", content=body, headers=headers)


def _probe(client: httpx.Client, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        client.get("/health").raise_for_status()
        samples.append(time.perf_counter() - started)
        time.sleep(PROBE_INTERVAL_S)
    return samples


@dataclass
class LivenessResults:
    limit_bytes: int = 0
    idle: list[float] = field(default_factory=list)
    loaded: dict[str, list[float]] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, set[int]] = field(default_factory=dict)


def _check_rejection(url: str, shape: str) -> int:
    """What the daemon answers to one such body (it must be a 4xx, never a 500)."""
    prompt = prompt_of(shape, body_limit())
    body = {"model": "auto", "max_tokens": 1, "messages": [{"role": "user", "content": prompt}]}
    with httpx.Client(base_url=url, timeout=120) as client:
        return client.post("/v1/chat/completions", json=body).status_code


def run(runs: int, workdir: Path) -> LivenessResults:
    results = LivenessResults(limit_bytes=body_limit())
    spawn = multiprocessing.get_context("spawn")
    with tierhost_daemon(None, workdir) as url:
        wait_models_ready(url, {"operator-demo", "validator-demo"})
        for shape in SHAPES:
            results.statuses[shape] = {_check_rejection(url, shape)}
        with httpx.Client(base_url=url, timeout=30) as client:
            _probe(client, 10)  # warm the connection
            for _ in range(runs):
                for shape in SHAPES:
                    results.idle += _probe(client, PROBES_PER_PHASE)
                    stop = spawn.Event()
                    sender = spawn.Process(target=_send_forever, args=(url, shape, stop))
                    sender.start()
                    time.sleep(1.0)  # let the sender get its first bodies in flight
                    results.loaded.setdefault(shape, []).extend(_probe(client, PROBES_PER_PHASE))
                    stop.set()
                    sender.join(timeout=120)
                    if sender.is_alive():
                        sender.kill()
                        raise RuntimeError(f"the {shape} sender did not stop")
    return results


def report(results: LivenessResults) -> list[str]:
    idle = median(results.idle)
    lines = [
        f"`/health` probed every {PROBE_INTERVAL_S * 1000:.0f} ms, {PROBES_PER_PHASE} probes a "
        "phase, idle and loaded phases alternating; the load is a second process sending, back "
        f"to back, `/v1/chat/completions` bodies of {results.limit_bytes / 2**20:.1f} MiB "
        '(just under the default `host.max_body_mb`) with `model: "auto"`:',
        "",
        "| load | probes | median ms | p99 ms | × idle median | daemon's answer |",
        "|---|---:|---:|---:|---:|---|",
        f"| idle | {len(results.idle)} | {ms(idle)} | {ms(percentile(results.idle, 0.99))} "
        "| 1.00 | – |",
    ]
    worst = 0.0
    for shape, samples in results.loaded.items():
        ratio = median(samples) / idle
        worst = max(worst, ratio)
        answers = ", ".join(str(s) for s in sorted(results.statuses.get(shape, set())))
        lines.append(
            f"| {shape} | {len(samples)} | {ms(median(samples))} | "
            f"{ms(percentile(samples, 0.99))} | {ratio:.2f} | HTTP {answers} |"
        )
    lines += ["", f"Worst median ratio: {worst:.2f}× idle (target ≤ 2×)."]
    return lines
