"""Telemetry: the daemon's numbers in Prometheus form (`GET /metrics`).

Events (swaps, load failures, finished requests, KV restores) are counted as they
happen; state (queues, memory, residents, the warm pool) is read from the host's
status document when scraped, so a gauge can never drift from what `/api/status`
says. Each Host owns its own registry: several daemons in one process (tests) never
share or clash over a metric.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from host.models.arbiter import SwapRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

SWAP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)

StatusSource = Callable[[], Mapping[str, Any]]


class HostMetrics:
    """The counters and histograms of one host, and a collector for its live state.

    `kv_restores_total` and `kv_tokens_saved_total` (label `model`) are for the KV
    slot keeper: `metrics.kv_restores_total.labels(model=name).inc()`.
    """

    def __init__(self, status: StatusSource) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.swap_seconds = Histogram(
            "tierhost_swap_duration_seconds",
            "Time from a load decision to the model answering health checks.",
            ["model", "device"],
            buckets=SWAP_BUCKETS,
            registry=r,
        )
        self.swaps_total = Counter(
            "tierhost_swaps",
            "Loads onto a device, by outcome (ready or failed).",
            ["model", "device", "outcome"],
            registry=r,
        )
        self.load_failures_total = Counter(
            "tierhost_load_failures", "Loads that did not become ready.", ["model"], registry=r
        )
        self.requests_total = Counter(
            "tierhost_requests",
            "Requests answered, by the model that served them ('' for none) and status.",
            ["model", "status"],
            registry=r,
        )
        self.evictions_total = Counter(
            "tierhost_evictions", "Models stopped to make room for another.", ["model"], registry=r
        )
        self.tokens_generated_total = Counter(
            "tierhost_tokens_generated",
            "Tokens generated, from llama-server timings.",
            ["model"],
            registry=r,
        )
        self.generation_seconds_total = Counter(
            "tierhost_generation_seconds",
            "Seconds spent generating those tokens.",
            ["model"],
            registry=r,
        )
        self.tokens_per_second = Gauge(
            "tierhost_tokens_per_second",
            "Generation speed of the last request.",
            ["model"],
            registry=r,
        )
        self.prompt_tokens_total = Counter(
            "tierhost_prompt_tokens",
            "Prompt tokens prefilled (cache hits excluded).",
            ["model"],
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "tierhost_time_to_first_token_seconds",
            "Queue and swap wait plus prefill, per request.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.kv_restores_total = Counter(
            "tierhost_kv_restores",
            "KV slots restored from disk after a swap.",
            ["model"],
            registry=r,
        )
        self.kv_tokens_saved_total = Counter(
            "tierhost_kv_tokens_saved",
            "Prompt tokens not prefilled thanks to a restored slot.",
            ["model"],
            registry=r,
        )
        self.passthrough_requests_total = Counter(
            "tierhost_passthrough_requests",
            "Requests to the pass-through endpoints (embeddings, audio, images, rerank), "
            "by outcome: ok (answered 200), error (an error answer, a crash, a client gone).",
            ["model", "endpoint", "outcome"],
            registry=r,
        )
        self.sleep_seconds = Histogram(
            "tierhost_sleep_duration_seconds",
            "Time to put a model to sleep (its sleep call, until it answered).",
            ["model"],
            buckets=SWAP_BUCKETS,
            registry=r,
        )
        self.wake_seconds = Histogram(
            "tierhost_wake_duration_seconds",
            "Time to wake a sleeping model, until its health path answered.",
            ["model"],
            buckets=SWAP_BUCKETS,
            registry=r,
        )
        r.register(StateCollector(status))
        self._request_series: dict[str, _RequestSeries] = {}

    # -- events ----------------------------------------------------------------------

    def observe_sleep(self, model: str, seconds: float) -> None:
        self.sleep_seconds.labels(model).observe(seconds)

    def observe_wake(self, model: str, seconds: float) -> None:
        self.wake_seconds.labels(model).observe(seconds)

    def observe_swap(self, record: SwapRecord) -> None:
        self.swaps_total.labels(record.model, record.device, record.outcome).inc()
        for name in record.evicted:
            self.evictions_total.labels(name).inc()
        if record.outcome == "ready" and record.duration_s is not None:
            self.swap_seconds.labels(record.model, record.device).observe(record.duration_s)
        elif record.outcome != "ready":
            self.load_failures_total.labels(record.model).inc()

    def observe_request(
        self, model: str, timings: Mapping[str, Any] | None, waited_s: float
    ) -> None:
        """A finished completion: llama-server's `timings` plus the time it waited for
        its model. Time to first token is that wait plus the prefill."""
        if not timings:
            return
        series = self._request_series.get(model)
        if series is None:
            series = self._request_series[model] = _RequestSeries(
                self.ttft_seconds.labels(model),
                self.prompt_tokens_total.labels(model),
                self.tokens_generated_total.labels(model),
                self.generation_seconds_total.labels(model),
                self.tokens_per_second.labels(model),
            )
        prompt_ms = float(timings.get("prompt_ms") or 0.0)
        predicted = int(timings.get("predicted_n") or 0)
        predicted_ms = float(timings.get("predicted_ms") or 0.0)
        if "prompt_ms" in timings:  # Anthropic's usage has counts only: no prefill time
            series.ttft.observe(waited_s + prompt_ms / 1000)
        series.prompt_tokens.inc(int(timings.get("prompt_n") or 0))
        if predicted > 0 and predicted_ms > 0:
            series.tokens.inc(predicted)
            series.seconds.inc(predicted_ms / 1000)
            series.speed.set(predicted / (predicted_ms / 1000))

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class _RequestSeries:
    """One model's series of every finished request, looked up once: `labels()` takes a
    lock and builds a key each time, on every proxied request."""

    ttft: Histogram
    prompt_tokens: Counter
    tokens: Counter
    seconds: Counter
    speed: Gauge


class StateCollector(Collector):
    """Gauges read from the status document at scrape time."""

    def __init__(self, status: StatusSource) -> None:
        self._status = status

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked: the families depend on the config

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        queue = GaugeMetricFamily(
            "tierhost_queue_depth", "Requests waiting for a model on the device.", labels=["device"]
        )
        used = GaugeMetricFamily(
            "tierhost_device_memory_used_mib",
            "Memory the scheduler counts as taken on the device.",
            labels=["device"],
        )
        budget = GaugeMetricFamily(
            "tierhost_device_memory_budget_mib", "The device's memory budget.", labels=["device"]
        )
        measured = GaugeMetricFamily(
            "tierhost_gpu_memory_used_mib", "GPU memory in use, read with NVML.", labels=["device"]
        )
        for device in status.get("devices", []):
            name = device["name"]
            queue.add_metric([name], device.get("queue", 0))
            used.add_metric([name], device.get("used_mb", 0))
            if device.get("budget_mb") is not None:
                budget.add_metric([name], device["budget_mb"])
            if device.get("gpu_used_mb") is not None:
                measured.add_metric([name], device["gpu_used_mb"])
        yield from (queue, used, budget, measured)
        yield from self._models(status.get("models", []))
        memory = psutil.virtual_memory()
        ram = GaugeMetricFamily("tierhost_ram_bytes", "Host RAM.", labels=["kind"])
        ram.add_metric(["total"], memory.total)
        ram.add_metric(["available"], memory.available)
        ram.add_metric(["used"], memory.total - memory.available)
        yield ram

    @staticmethod
    def _models(models: list[dict[str, Any]]) -> Iterator[Metric]:
        resident = GaugeMetricFamily(
            "tierhost_model_ready",
            "1 while the model's server is up and healthy.",
            labels=["model"],
        )
        queued = GaugeMetricFamily(
            "tierhost_model_queued", "Requests waiting for the model.", labels=["model"]
        )
        in_flight = GaugeMetricFamily(
            "tierhost_model_in_flight", "Requests the model is serving.", labels=["model"]
        )
        warm = GaugeMetricFamily(
            "tierhost_warm_pool_residency_ratio",
            "Fraction of the model's GGUF in the page cache (mincore).",
            labels=["model"],
        )
        rss = GaugeMetricFamily(
            "tierhost_model_rss_bytes",
            "Resident memory of the model's server.",
            labels=["model"],
        )
        reachable = GaugeMetricFamily(
            "tierhost_remote_reachable",
            "1 while the model on another box answers its health probe.",
            labels=["model"],
        )
        probe = GaugeMetricFamily(
            "tierhost_remote_probe_seconds",
            "How long the remote model's last health probe took.",
            labels=["model"],
        )
        asleep = GaugeMetricFamily(
            "tierhost_model_asleep",
            "1 while the model's server is asleep (off the card, its process kept).",
            labels=["model"],
        )
        for model in models:
            if model.get("kind") == "remote":
                name = model["name"]
                reachable.add_metric([name], 1.0 if model.get("reachable") else 0.0)
                in_flight.add_metric([name], model.get("in_flight", 0))
                if model.get("probe_ms") is not None:
                    probe.add_metric([name], model["probe_ms"] / 1000)
                continue
            if model.get("kind") not in ("managed", "command"):
                continue
            name = model["name"]
            resident.add_metric([name], 1.0 if model.get("state") == "ready" else 0.0)
            if model.get("sleep") is not None:
                asleep.add_metric([name], 1.0 if model.get("state") == "asleep" else 0.0)
            queued.add_metric([name], model.get("queued", 0))
            in_flight.add_metric([name], model.get("in_flight", 0))
            if model.get("warm") is not None:
                warm.add_metric([name], model["warm"])
            pid = model.get("pid")
            if pid:
                with contextlib.suppress(psutil.Error):
                    rss.add_metric([name], psutil.Process(pid).memory_info().rss)
        yield from (resident, queued, in_flight, warm, rss, reachable, probe, asleep)
