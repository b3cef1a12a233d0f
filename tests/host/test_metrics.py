"""`GET /metrics` and `tierhost top`: Prometheus text that parses and moves with swaps."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from host.metrics import HostMetrics
from host.models.arbiter import SwapRecord
from tests.conftest import Daemon

STATUS: dict[str, Any] = {
    "devices": [
        {"name": "gpu0", "budget_mb": 400, "used_mb": 300, "gpu_used_mb": None, "queue": 2}
    ],
    "models": [
        {
            "name": "m",
            "kind": "managed",
            "state": "ready",
            "queued": 1,
            "in_flight": 1,
            "warm": 0.5,
            "pid": os.getpid(),
        },
        {
            "name": "r",
            "kind": "remote",
            "state": "remote",
            "queued": 0,
            "in_flight": 2,
            "reachable": False,
            "probe_ms": 250.0,
        },
    ],
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


# -- the registry, without a daemon ------------------------------------------------------------


def test_events_and_state_render_as_prometheus_text() -> None:
    metrics = HostMetrics(lambda: STATUS)
    metrics.observe_swap(SwapRecord("m", "gpu0", 10.0, 11.5, ("x",), "evicted x", "ready"))
    metrics.observe_swap(SwapRecord("m", "gpu0", 20.0, None, (), "device had room", "failed"))
    timings = {"prompt_n": 40, "prompt_ms": 200.0, "predicted_n": 50, "predicted_ms": 500.0}
    metrics.observe_request("m", timings, waited_s=1.0)
    metrics.kv_restores_total.labels(model="m").inc()
    metrics.kv_tokens_saved_total.labels(model="m").inc(1900)
    text = metrics.render().decode()

    assert value(text, "tierhost_swaps_total", model="m", device="gpu0", outcome="ready") == 1
    assert value(text, "tierhost_swap_duration_seconds_count", model="m", device="gpu0") == 1
    assert value(text, "tierhost_swap_duration_seconds_sum", model="m", device="gpu0") == 1.5
    assert value(text, "tierhost_load_failures_total", model="m") == 1
    assert value(text, "tierhost_evictions_total", model="x") == 1
    assert value(text, "tierhost_tokens_per_second", model="m") == 100.0
    assert value(text, "tierhost_time_to_first_token_seconds_sum", model="m") == 1.2
    assert value(text, "tierhost_kv_restores_total", model="m") == 1
    assert value(text, "tierhost_kv_tokens_saved_total", model="m") == 1900
    assert value(text, "tierhost_queue_depth", device="gpu0") == 2
    assert value(text, "tierhost_device_memory_used_mib", device="gpu0") == 300
    assert value(text, "tierhost_device_memory_budget_mib", device="gpu0") == 400
    assert value(text, "tierhost_warm_pool_residency_ratio", model="m") == 0.5
    assert value(text, "tierhost_model_rss_bytes", model="m") > 0
    assert value(text, "tierhost_ram_bytes", kind="total") > 0
    assert ("tierhost_model_ready", (("model", "r"),)) not in samples(text)  # remote: no gauge
    assert ("tierhost_remote_reachable", (("model", "r"),)) in samples(text)
    assert value(text, "tierhost_remote_reachable", model="r") == 0
    assert value(text, "tierhost_remote_probe_seconds", model="r") == 0.25
    assert value(text, "tierhost_model_in_flight", model="r") == 2


def test_each_host_has_its_own_registry() -> None:
    first, second = HostMetrics(lambda: STATUS), HostMetrics(lambda: STATUS)
    first.kv_restores_total.labels(model="m").inc()
    assert value(first.render().decode(), "tierhost_kv_restores_total", model="m") == 1
    assert value(second.render().decode(), "tierhost_kv_restores_total", model="m") == 0


def test_a_request_without_timings_counts_nothing() -> None:
    metrics = HostMetrics(lambda: {})
    metrics.observe_request("m", None, waited_s=3.0)
    text = metrics.render().decode()
    assert value(text, "tierhost_time_to_first_token_seconds_count", model="m") == 0


# -- a real daemon -------------------------------------------------------------------------------


def chat(daemon: Daemon, model: str) -> None:
    with daemon.client() as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        )
    assert response.status_code == 200, response.text


def scrape(daemon: Daemon) -> str:
    with daemon.client() as http:
        response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


@pytest.mark.real
def test_metrics_parse_and_move_when_models_swap(demo_daemon: Daemon) -> None:
    before = scrape(demo_daemon)
    assert value(before, "tierhost_device_memory_budget_mib", device="gpu0") == 400
    ready = ("tierhost_swaps_total", "ready")
    assert value(before, ready[0], model="builder-demo", device="gpu0", outcome=ready[1]) == 0

    chat(demo_daemon, "architect-demo")
    chat(demo_daemon, "builder-demo")  # 300 + 300 > 400: architect-demo is evicted
    after = scrape(demo_daemon)

    for model in ("architect-demo", "builder-demo"):
        assert value(after, ready[0], model=model, device="gpu0", outcome=ready[1]) == 1
        count = value(after, "tierhost_swap_duration_seconds_count", model=model, device="gpu0")
        assert count == 1
        assert value(after, "tierhost_swap_duration_seconds_sum", model=model, device="gpu0") > 0
    assert value(after, "tierhost_evictions_total", model="architect-demo") == 1
    assert value(after, "tierhost_model_ready", model="builder-demo") == 1
    assert value(after, "tierhost_model_ready", model="architect-demo") == 0
    assert value(after, "tierhost_device_memory_used_mib", device="gpu0") == 300
    assert 0.0 <= value(after, "tierhost_warm_pool_residency_ratio", model="builder-demo") <= 1
    for model in ("architect-demo", "builder-demo"):  # fed by the proxy from llama's timings
        assert value(after, "tierhost_time_to_first_token_seconds_count", model=model) == 1
        assert value(after, "tierhost_tokens_generated_total", model=model) >= 1
        assert value(after, "tierhost_tokens_per_second", model=model) > 0

    with demo_daemon.client() as http:  # a streamed request is counted from its last event
        body = {"model": "builder-demo", "messages": [{"role": "user", "content": "Hi"}]}
        response = http.post("/v1/chat/completions", json={**body, "stream": True, "max_tokens": 3})
    assert response.status_code == 200 and "data: [DONE]" in response.text
    streamed = scrape(demo_daemon)
    assert value(streamed, "tierhost_time_to_first_token_seconds_count", model="builder-demo") == 2


@pytest.mark.real
def test_metrics_stay_behind_the_request_guard(demo_daemon: Daemon) -> None:
    with httpx.Client(timeout=10) as http:
        response = http.get(f"{demo_daemon.url}/metrics", headers={"Host": "evil.example"})
    assert response.status_code == 421
    with demo_daemon.client() as http:
        assert http.post("/metrics").status_code == 405  # read-only


@pytest.mark.real
def test_top_once_prints_one_frame(demo_daemon: Daemon) -> None:
    chat(demo_daemon, "architect-demo")
    result = subprocess.run(
        [sys.executable, "-m", "host", "top", "--once", "--url", demo_daemon.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for word in ("Devices", "gpu0", "/ 400", "Models", "architect-demo", "yes", "RAM used"):
        assert word in result.stdout, result.stdout


def test_top_without_a_daemon_says_so() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "host", "top", "--once", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "no tierhost daemon at http://127.0.0.1:9" in result.stderr
