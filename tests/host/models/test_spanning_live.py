"""Two cards, live: a dense model on both, the MoE on gpu1, a small model on gpu0.

The devices are budget-only (no NVML index), so every server is the real llama-server
with SmolLM2 on the CPU; what is real is the arbitration: which servers run, which stop,
and the memory counted on each card while they do.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import Daemon, model_status, start_daemon, wait_for

DEMO_ARGS = '["--ctx-size", "2048", "--parallel", "2", "--no-warmup"]'
BUDGET_MB = 1000

CONFIG = f"""
[devices.gpu0]
kind = "gpu"
memory_mb = {BUDGET_MB}
[devices.gpu1]
kind = "gpu"
index = 1
memory_mb = {BUDGET_MB}

[models.dense]
gguf = "demo:smollm2"
devices = ["gpu0", "gpu1"]
memory_mb = {{gpu0 = 500, gpu1 = 500}}
args = {DEMO_ARGS}
start_timeout_s = 60

[models.moe]
gguf = "demo:smollm2"
device = "gpu1"
memory_mb = 900
args = {DEMO_ARGS}
start_timeout_s = 60

[models.small]
gguf = "demo:smollm2"
device = "gpu0"
memory_mb = 400
args = {DEMO_ARGS}
start_timeout_s = 60

[tiers.architect]
models = ["dense"]
[tiers.builder]
models = ["moe"]
[tiers.operator]
models = ["small"]
"""


@pytest.fixture
def box(tmp_path: Path, daemon_factory: list[Daemon]) -> Daemon:
    daemon = start_daemon(tmp_path, CONFIG)
    daemon_factory.append(daemon)
    return daemon


def ask(daemon: Daemon, model: str) -> None:
    with daemon.client(timeout=120) as http:
        response = http.post(
            "/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 2}
        )
    assert response.status_code == 200, response.text


def devices(daemon: Daemon) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in daemon.status()["devices"]}


def swap_of(daemon: Daemon, model: str) -> dict[str, Any] | None:
    """The latest swap that loaded `model`, from the swap log."""
    with daemon.client() as http:
        swaps: list[dict[str, Any]] = http.get("/api/swaps").json()["swaps"]
    return next((s for s in swaps if s["model"] == model), None)


def argv_of(daemon: Daemon, model: str) -> list[str]:
    pid = model_status(daemon, model)["pid"]
    assert pid is not None, f"{model} is not running"
    return list(psutil.Process(pid).cmdline())


@pytest.mark.real
def test_the_dense_model_spans_both_cards_and_the_moe_evicts_it_from_both(box: Daemon) -> None:
    ask(box, "small")
    ask(box, "dense")
    cards = devices(box)
    assert cards["gpu0"]["residents"] == ["dense", "small"]
    assert cards["gpu1"]["residents"] == ["dense"]
    assert (cards["gpu0"]["used_mb"], cards["gpu1"]["used_mb"]) == (900, 500)
    argv = argv_of(box, "dense")
    assert argv[argv.index("--tensor-split") + 1] == "500,500"
    dense = model_status(box, "dense")
    assert dense["device"] == "gpu0+gpu1"
    assert dense["memory_by_device"] == {"gpu0": 500, "gpu1": 500}
    small_pid = model_status(box, "small")["pid"]

    ask(box, "moe")
    cards = devices(box)
    assert cards["gpu0"]["residents"] == ["small"]
    assert cards["gpu1"]["residents"] == ["moe"]
    assert model_status(box, "dense")["state"] == "stopped"
    assert model_status(box, "small")["pid"] == small_pid  # never stopped for the MoE
    assert "--tensor-split" not in argv_of(box, "moe")
    wait_for(lambda: swap_of(box, "moe"), "the MoE's swap in the log")
    assert swap_of(box, "moe")["evicted"] == ["dense"]
    assert swap_of(box, "dense")["device"] == "gpu0+gpu1"


@pytest.mark.real
def test_alternating_load_over_both_cards_keeps_every_budget(box: Daemon) -> None:
    """Three clients alternate dense, moe and small; meanwhile no card ever counts more
    than its budget, and every request is answered."""
    failures: list[BaseException] = []
    seen: list[tuple[int, int]] = []
    done = threading.Event()

    def client(order: list[str]) -> None:
        try:
            for model in order * 3:
                ask(box, model)
        except BaseException as exc:  # reported below, on the test's thread
            failures.append(exc)

    def watch() -> None:
        while not done.is_set():
            cards = devices(box)
            seen.append((cards["gpu0"]["used_mb"], cards["gpu1"]["used_mb"]))

    orders = [["dense", "moe", "small"], ["moe", "small", "dense"], ["small", "dense", "moe"]]
    clients = [threading.Thread(target=client, args=(order,)) for order in orders]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(timeout=600)
    done.set()
    watcher.join(timeout=30)
    assert not any(t.is_alive() for t in clients), "a client never finished"
    assert not failures, failures
    assert seen, "the watcher saw no status"
    assert all(g0 <= BUDGET_MB and g1 <= BUDGET_MB for g0, g1 in seen), max(seen)
    wait_for(lambda: all(d["queue"] == 0 for d in devices(box).values()), "the queues empty")
