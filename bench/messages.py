"""Issue 14: what the host adds to Anthropic's Messages API.

`POST /v1/messages` through the host (a Claude id, mapped by family to the resident
operator-demo) against the same request to that model's llama-server's own
`/v1/messages`, interleaved so both see the same machine: one-token messages plain and
streamed, and `count_tokens`. The median of the paired differences is what the host adds
(target ≤ 2 ms).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import median, percentile, tierhost_daemon, wait_models_ready

MODEL = "operator-demo"
CLAUDE_ID = "claude-haiku-4-5"
"""Mapped to tier operator, whose first model is operator-demo."""
HEADERS = {"anthropic-version": "2023-06-01"}
MESSAGES = [{"role": "user", "content": "Hi"}]


@dataclass
class Paired:
    direct_ms: list[float] = field(default_factory=list)
    host_ms: list[float] = field(default_factory=list)

    def added(self) -> list[float]:
        return [h - d for h, d in zip(self.host_ms, self.direct_ms, strict=True)]


@dataclass
class MessagesResults:
    plain: Paired
    streamed: Paired
    count: Paired


Call = Callable[[httpx.Client, str, str], None]


def _timed(call: Call, client: httpx.Client, base: str, model: str) -> float:
    started = time.perf_counter()
    call(client, base, model)
    return (time.perf_counter() - started) * 1000


def _plain(client: httpx.Client, base: str, model: str) -> None:
    body = {"model": model, "max_tokens": 1, "messages": MESSAGES, "temperature": 0}
    response = client.post(f"{base}/v1/messages", json=body, headers=HEADERS)
    if response.status_code != 200:
        raise RuntimeError(f"{base}: HTTP {response.status_code}: {response.text[:300]}")


def _streamed(client: httpx.Client, base: str, model: str) -> None:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 1,
        "messages": MESSAGES,
        "temperature": 0,
        "stream": True,
    }
    with client.stream("POST", f"{base}/v1/messages", json=body, headers=HEADERS) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"{base}: HTTP {response.status_code}: {response.text[:300]}")
        for _ in response.iter_bytes():
            pass


def _count(client: httpx.Client, base: str, model: str) -> None:
    body = {"model": model, "messages": MESSAGES}
    response = client.post(f"{base}/v1/messages/count_tokens", json=body, headers=HEADERS)
    if response.status_code != 200:
        raise RuntimeError(f"{base}: HTTP {response.status_code}: {response.text[:300]}")


def run(runs: int, workdir: Path) -> MessagesResults:
    pairs = max(30, runs * 3)
    results = MessagesResults(Paired(), Paired(), Paired())
    with tierhost_daemon(None, workdir) as url, httpx.Client(timeout=120) as client:
        wait_models_ready(url, {MODEL})
        status = client.get(f"{url}/api/status").json()
        port = next(m["port"] for m in status["models"] if m["name"] == MODEL)
        direct = f"http://127.0.0.1:{port}"
        kinds: tuple[tuple[Paired, Call], ...] = (
            (results.plain, _plain),
            (results.streamed, _streamed),
            (results.count, _count),
        )
        for _, call in kinds:  # warm both paths' connections
            for _ in range(3):
                call(client, direct, MODEL)
                call(client, url, CLAUDE_ID)
        for paired, call in kinds:
            for _ in range(pairs):
                paired.direct_ms.append(_timed(call, client, direct, MODEL))
                paired.host_ms.append(_timed(call, client, url, CLAUDE_ID))
    return results


def report(results: MessagesResults) -> list[str]:
    lines = [
        f"`/v1/messages` through Tierhost (`model: {CLAUDE_ID}`, mapped to {MODEL}, resident "
        "on the CPU) against the same request to its llama-server's own `/v1/messages`, "
        "paired and interleaved; one-token answers:",
        "",
        "| request | pairs | direct median ms | through Tierhost median ms "
        "| **added** median ms | added p99 ms | × direct |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = (
        ("`/v1/messages`, plain", results.plain),
        ("`/v1/messages`, streamed (to its last event)", results.streamed),
        ("`/v1/messages/count_tokens`", results.count),
    )
    for label, paired in rows:
        added = paired.added()
        direct = median(paired.direct_ms)
        lines.append(
            f"| {label} | {len(added)} | {direct:.2f} | {median(paired.host_ms):.2f} "
            f"| {median(added):.2f} | {percentile(added, 0.99):.2f} "
            f"| {median(paired.host_ms) / direct:.2f} |"
        )
    plain_added = median(results.plain.added())
    verdict = "met" if plain_added <= 2.0 else "not met"
    lines += [
        "",
        f"Target ≤ 2 ms added at the median (plain): {plain_added:.2f} ms, {verdict}.",
        "",
        "A plain request goes upstream as a stream and is put back together here "
        "(`host.api.assembly`), so that a client that leaves stops the generation; "
        "llama-server answers a stream later than a plain request, and the events are "
        "parsed in Python. The streamed row, which takes neither step, is what the path "
        "itself adds.",
    ]
    return lines
