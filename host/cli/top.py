"""`tierhost top`: the daemon's `/metrics`, live in the terminal.

It reads the same Prometheus text a scraper reads, so what the terminal shows and
what a dashboard graphs cannot disagree.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from host.client import (
    HostUnreachable,
    auth_headers,
    default_url,
    error_of,
    find_token,
    is_loopback_url,
)

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]
"""Sample name → sorted label pairs → value."""

MIB = 1024 * 1024


def parse(text: str) -> Samples:
    samples: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _by(samples: Samples, name: str, label: str) -> dict[str, float]:
    """Values of `name` summed per value of `label` (other labels folded in)."""
    result: dict[str, float] = defaultdict(float)
    for labels, value in samples.get(name, {}).items():
        key = dict(labels).get(label)
        if key is not None:
            result[key] += value
    return result


def _fmt(value: float | None, spec: str = ".0f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def render(samples: Samples) -> Group:
    """One frame: devices, models, RAM."""
    devices = Table(title="Devices", expand=False)
    for column in ("device", "queue", "used / budget MiB", "GPU used MiB"):
        devices.add_column(column, justify="right" if column != "device" else "left")
    queue = _by(samples, "tierhost_queue_depth", "device")
    used = _by(samples, "tierhost_device_memory_used_mib", "device")
    budget = _by(samples, "tierhost_device_memory_budget_mib", "device")
    gpu = _by(samples, "tierhost_gpu_memory_used_mib", "device")
    for name in sorted(queue):
        devices.add_row(
            name,
            _fmt(queue[name]),
            f"{_fmt(used.get(name))} / {_fmt(budget.get(name))}",
            _fmt(gpu.get(name)),
        )

    models = Table(title="Models", expand=False)
    columns = ("model", "ready", "queued", "in flight", "warm", "RSS MiB", "swaps")
    for column in (*columns, "mean swap s", "tok/s", "mean TTFT s", "KV restores"):
        models.add_column(column, justify="left" if column == "model" else "right")
    ready = _by(samples, "tierhost_model_ready", "model")
    queued = _by(samples, "tierhost_model_queued", "model")
    in_flight = _by(samples, "tierhost_model_in_flight", "model")
    warm = _by(samples, "tierhost_warm_pool_residency_ratio", "model")
    rss = _by(samples, "tierhost_model_rss_bytes", "model")
    swaps = _by(samples, "tierhost_swaps_total", "model")
    swap_sum = _by(samples, "tierhost_swap_duration_seconds_sum", "model")
    swap_count = _by(samples, "tierhost_swap_duration_seconds_count", "model")
    tps = _by(samples, "tierhost_tokens_per_second", "model")
    ttft_sum = _by(samples, "tierhost_time_to_first_token_seconds_sum", "model")
    ttft_count = _by(samples, "tierhost_time_to_first_token_seconds_count", "model")
    restores = _by(samples, "tierhost_kv_restores_total", "model")
    for name in sorted(ready):
        models.add_row(
            name,
            "[green]yes[/]" if ready[name] else "no",
            _fmt(queued.get(name)),
            _fmt(in_flight.get(name)),
            _fmt(warm[name] * 100, ".0f", "%") if name in warm else "-",
            _fmt(rss[name] / MIB) if name in rss else "-",
            _fmt(swaps.get(name, 0.0)),
            _mean(swap_sum.get(name), swap_count.get(name)),
            _fmt(tps.get(name), ".1f"),
            _mean(ttft_sum.get(name), ttft_count.get(name)),
            _fmt(restores.get(name, 0.0)),
        )
    ram = _by(samples, "tierhost_ram_bytes", "kind")
    failures = sum(_by(samples, "tierhost_load_failures_total", "model").values())
    line = (
        f"RAM used {_fmt(ram.get('used', 0) / MIB)} MiB of {_fmt(ram.get('total', 0) / MIB)} MiB"
        f" · load failures {_fmt(failures)}"
    )
    return Group(devices, models, line)


def _mean(total: float | None, count: float | None) -> str:
    if not total or not count:
        return "-"
    return f"{total / count:.2f}"


def fetch(url: str, client: httpx.Client, token_source: str | None = None) -> Samples:
    try:
        response = client.get(f"{url}/metrics")
    except httpx.TransportError:
        raise HostUnreachable(
            f"no tierhost daemon at {url} (start it with `tierhost serve`)"
        ) from None
    if response.status_code >= 400:
        raise error_of(response, token_source)
    return parse(response.text)


def cmd_top(args: argparse.Namespace) -> int:
    url = (args.url or default_url()).rstrip("/")
    console = Console()
    # /metrics needs the token off loopback like every route but /health
    token, source = find_token() or (None, None)
    with httpx.Client(
        timeout=10.0, headers=auth_headers(token), trust_env=not is_loopback_url(url)
    ) as client:
        if args.once:
            console.print(render(fetch(url, client, source)))
            return 0
        with Live(render(fetch(url, client, source)), console=console, screen=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(render(fetch(url, client, source)))


def add_commands(sub: Any) -> None:
    top = sub.add_parser("top", help="live swaps, queues, memory and speed (from /metrics)")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    top.add_argument("--url", help="daemon URL (default: $TIERHOST_URL)")
    top.set_defaults(func=cmd_top)
