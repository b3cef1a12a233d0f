"""Issue 13: what open dashboards cost the proxy.

The demo daemon; one-token chat completions to the resident operator-demo, each paired
with the same request sent straight to its llama-server (the added time is the paired
difference), in blocks that alternate between no dashboard and five open ones. A
"dashboard" here does what the page does: it holds `GET /api/events` open and, on each
event, fetches `/api/status`, `/api/mode` and `/api/routing` (at most once a second).
The requests themselves change no model's state, so the feeds carry little; what is
measured is the cost of five readers being there. Target: at most +0.5 ms at the median.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import median, percentile, plain_chat, tierhost_daemon, wait_models_ready

MODEL = "operator-demo"
DASHBOARDS = 5
BLOCK = 20
"""Requests per block before switching between none and five dashboards."""


@dataclass
class DashboardResults:
    none_added_ms: list[float] = field(default_factory=list)
    five_added_ms: list[float] = field(default_factory=list)
    events_seen: int = 0


class Dashboard:
    """One page's traffic on a thread: the feed, and the fetches each event causes."""

    def __init__(self, url: str) -> None:
        self.events = 0
        self._stopping = False
        self._client = httpx.Client(base_url=url, timeout=httpx.Timeout(30.0, read=None))
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._opened.wait(30)

    def _refresh(self) -> None:
        for path in ("/api/status", "/api/mode", "/api/routing"):
            self._client.get(path)

    def _run(self) -> None:
        last = 0.0
        try:
            self._refresh()
            with self._client.stream("GET", "/api/events") as feed:
                self._opened.set()
                for line in feed.iter_lines():
                    if line.startswith("event: ") and line != "event: hello":
                        self.events += 1
                        if time.monotonic() - last >= 1.0:
                            last = time.monotonic()
                            self._refresh()
        except Exception:  # closed under it by close(): the page went away
            if not self._stopping:
                raise
        finally:
            self._opened.set()

    def close(self) -> None:
        """Leave the page: its connections close, so the next block has none open."""
        self._stopping = True
        self._client.close()
        self._thread.join(10)


def run(runs: int, workdir: Path) -> DashboardResults:
    results = DashboardResults()
    blocks = max(2, runs)
    with tierhost_daemon(None, workdir) as url, httpx.Client(timeout=120) as client:
        wait_models_ready(url, {MODEL})
        status = client.get(f"{url}/api/status").json()
        port = next(m["port"] for m in status["models"] if m["name"] == MODEL)
        direct = f"http://127.0.0.1:{port}"
        for _ in range(5):
            plain_chat(client, direct, MODEL)
            plain_chat(client, url, MODEL)
        for block in range(blocks):
            open_ones = [Dashboard(url) for _ in range(DASHBOARDS)] if block % 2 else []
            into = results.five_added_ms if open_ones else results.none_added_ms
            for _ in range(BLOCK):
                d = plain_chat(client, direct, MODEL)
                h = plain_chat(client, url, MODEL)
                into.append((h - d) * 1000)
            for page in open_ones:
                page.close()
                results.events_seen += page.events
    return results


def report(results: DashboardResults) -> list[str]:
    none, five = median(results.none_added_ms), median(results.five_added_ms)
    delta = five - none
    verdict = "met" if delta <= 0.5 else "not met"
    return [
        "One-token chat completions to the resident operator-demo, each paired with the "
        "same request straight to its llama-server; blocks of "
        f"{BLOCK} alternating between no dashboard and {DASHBOARDS} open ones (each holds "
        "`/api/events` open and refetches the state on its events).",
        "",
        "| dashboards open | requests | added median ms | added p90 ms |",
        "|---|---:|---:|---:|",
        f"| none | {len(results.none_added_ms)} | {none:.2f} | "
        f"{percentile(results.none_added_ms, 0.9):.2f} |",
        f"| {DASHBOARDS} | {len(results.five_added_ms)} | {five:.2f} | "
        f"{percentile(results.five_added_ms, 0.9):.2f} |",
        "",
        f"Five dashboards add {delta:+.2f} ms at the median (target ≤ +0.5 ms: {verdict}). "
        f"Their feeds carried {results.events_seen} events besides their hellos.",
    ]
