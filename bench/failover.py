"""Issue 11: what a dead or hanging primary costs a request that fails over.

One daemon, three tiers, all of whose fallback is the same real llama-server ("the other
box", the demo model on loopback):

- `refused`: its primary is a port bound but not listening, so every connection is
  refused;
- `hanging`: its primary accepts connections and never answers (`read_timeout_s = 1`);
- `direct`: the fallback alone, the baseline.

Both primaries answer their health probe (their `health_url` is the fallback's
`/health`), so routing keeps choosing them and every measured request pays the failover.
That is the worst case, the first requests after a box dies and before a probe notices.
Each request is a streamed chat completion timed to its first token, and the three tiers
are interleaved. Between requests the run waits until the failed primary counts as
reachable again (its next probe), so each request starts from the same place.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import (
    bare_llama_server,
    demo_gguf,
    median,
    percentile,
    stream_chat,
    tierhost_daemon,
)

READ_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 1.0


@dataclass
class FailoverResults:
    direct_ms: list[float] = field(default_factory=list)
    refused_ms: list[float] = field(default_factory=list)
    hanging_ms: list[float] = field(default_factory=list)


class _Silent:
    """Accepts every connection and never says a word (a box that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


def _config(box: str, refused_port: int, silent_port: int) -> str:
    primaries = {"refused-box": refused_port, "hanging-box": silent_port}
    models = "".join(
        f"""
[models.{name}]
kind = "remote"
base_url = "http://127.0.0.1:{port}/v1"
health_url = "{box}/health"
health_interval_s = 0.1
connect_timeout_s = {CONNECT_TIMEOUT_S}
read_timeout_s = {READ_TIMEOUT_S}
"""
        for name, port in primaries.items()
    )
    return f"""
[devices.cpu]
kind = "cpu"
{models}
[models.fallback-box]
kind = "remote"
base_url = "{box}/v1"

[tiers.architect]
models = ["fallback-box"]
[tiers.builder]
models = ["fallback-box"]
[tiers.operator]
models = ["fallback-box"]
[tiers.direct]
models = ["fallback-box"]
[tiers.refused]
models = ["refused-box", "fallback-box"]
[tiers.hanging]
models = ["hanging-box", "fallback-box"]
"""


def _wait_reachable(client: httpx.Client, url: str, name: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        models = client.get(f"{url}/api/status").json()["models"]
        if next(m for m in models if m["name"] == name)["reachable"]:
            return
        time.sleep(0.02)
    raise RuntimeError(f"{name} not reachable again within 10 s")


def run(runs: int, workdir: Path) -> FailoverResults:
    results = FailoverResults()
    with socket.socket() as refused:
        refused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        silent = _Silent()
        try:
            box_args = ["--model", str(demo_gguf()), "--ctx-size", "2048", "--no-warmup"]
            with bare_llama_server(box_args, workdir / "box.log") as box:
                config = _config(box.url, refused.getsockname()[1], silent.port)
                with (
                    tierhost_daemon(config, workdir) as url,
                    httpx.Client(timeout=60) as client,
                ):
                    stream_chat(client, url, "direct", 2)  # warm the box
                    for _ in range(runs):
                        for tier, primary, samples in (
                            ("direct", None, results.direct_ms),
                            ("refused", "refused-box", results.refused_ms),
                            ("hanging", "hanging-box", results.hanging_ms),
                        ):
                            if primary is not None:
                                _wait_reachable(client, url, primary)
                            timing = stream_chat(client, url, tier, 2)
                            samples.append(timing.first_token_s * 1000)
        finally:
            silent.close()
    return results


def report(results: FailoverResults) -> list[str]:
    direct = median(results.direct_ms)
    refused = median(results.refused_ms)
    hanging = median(results.hanging_ms)
    rows = [
        ("straight to the fallback (baseline)", results.direct_ms),
        ("primary refuses connections → fallback", results.refused_ms),
        (
            f"primary accepts and hangs → fallback (read_timeout_s = {READ_TIMEOUT_S:g})",
            results.hanging_ms,
        ),
    ]
    lines = [
        "A streamed request, timed to its first token; each primary answers its health probe, "
        "so every request pays the failover (the worst case: before a probe notices).",
        "",
        "| path | runs | median ms | p90 ms |",
        "|---|---:|---:|---:|",
    ]
    for label, values in rows:
        lines.append(
            f"| {label} | {len(values)} | {median(values):.1f} | {percentile(values, 0.9):.1f} |"
        )
    lines += [
        "",
        f"Refused: {refused - direct:+.1f} ms against the fallback at the median (target "
        f"≤ +20 ms). Hanging: {hanging:.0f} ms against the timeout + fallback, "
        f"{READ_TIMEOUT_S * 1000 + direct:.0f} ms (target: no more). A box that does not "
        "even accept waits `connect_timeout_s` instead of `read_timeout_s`.",
    ]
    return lines
