"""On a real NVIDIA card: offload, pinning, auto-yield and sleep, read back through NVML.

Everything else in the suite runs with budget-only devices, because CI has no GPU; these
tests need one and are skipped without it, saying so. They ran on a lent H200 (see
docs/BENCHMARKS.md, "On a real GPU"): `bench/gpu_check.sh` builds llama-server for CUDA
there and runs this module.

What only a card can show:
- a model on `gpu0` (NVML index 0) is started with its layers offloaded and
  `CUDA_VISIBLE_DEVICES=0`, and NVML lists its pid on that card with memory; once it is
  unloaded, NVML no longer lists it;
- a process this host did not start (the "game", here a CUDA allocation by another
  process) that holds more than `yield_above_mb` turns `auto_yield` on: the device goes to
  gaming mode with a reason naming the process, and back after it exits and the grace;
- a llama-server that sleeps (`--sleep-idle-seconds`) gives its weights' card memory back
  while its process stays, and the swap that leaves it asleep wakes it again.

`TIERHOST_TEST_GGUF` names the model file (default: the demo SmolLM2).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from host.models.gpu import gpu_count, read_processes
from tests.conftest import Daemon, model_status, start_daemon, wait_for

pytestmark = pytest.mark.skipif(
    gpu_count() == 0, reason="no NVIDIA GPU here (NVML finds none): run on a lent GPU box"
)

GGUF = os.environ.get("TIERHOST_TEST_GGUF", "demo:smollm2")
ARGS = '["--ctx-size", "2048", "--parallel", "1", "--no-warmup"]'
GAME_MB = 1536


def _model(name: str, extra: str = "") -> str:
    return (
        f'[models.{name}]\ngguf = "{GGUF}"\ndevice = "gpu0"\nmemory_mb = 1000\n'
        f"args = {ARGS}\nstart_timeout_s = 120\n{extra}"
    )


TIERS = (
    '[tiers.architect]\nmodels = ["first"]\n[tiers.builder]\nmodels = ["second"]\n'
    '[tiers.operator]\nmodels = ["second"]\n'
)


def _box(tmp_path: Path, daemons: list[Daemon], device: str, models: str) -> Daemon:
    daemon = start_daemon(tmp_path, f"[devices.gpu0]\nindex = 0\n{device}\n{models}{TIERS}")
    daemons.append(daemon)
    return daemon


def ask(daemon: Daemon, model: str) -> None:
    with daemon.client(timeout=180) as http:
        response = http.post(
            "/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 3}
        )
    assert response.status_code == 200, response.text
    daemon.note_children()


def card_mb(pid: int) -> int | None:
    """NVML's memory for `pid` on card 0, or None when NVML does not list it."""
    listed = {p.pid: p.used_mb for p in read_processes(0) or []}
    return listed.get(pid)


def mode_of(daemon: Daemon) -> dict[str, Any]:
    with daemon.client() as http:
        document: dict[str, Any] = http.get("/api/mode").json()
    return document


@pytest.mark.real
def test_a_model_on_the_card_is_offloaded_pinned_and_listed_by_nvml(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    box = _box(tmp_path, daemon_factory, "memory_mb = 4000", _model("first") + _model("second"))
    ask(box, "first")
    first = model_status(box, "first")
    process = psutil.Process(first["pid"])
    argv = process.cmdline()
    assert argv[argv.index("--n-gpu-layers") + 1] == "999"
    assert process.environ().get("CUDA_VISIBLE_DEVICES") == "0"
    used = wait_for(lambda: card_mb(first["pid"]), "NVML lists the server on card 0", 30)
    assert used > 0
    card = next(d for d in box.status()["devices"] if d["name"] == "gpu0")
    print(f"\nfirst on card 0: {used} MiB by NVML; device reading {card}")

    with box.client() as http:
        assert http.post("/api/models/first/unload").status_code == 200
    wait_for(lambda: card_mb(first["pid"]) is None, "the card no longer lists it", 30)


def _game(mb: int) -> subprocess.Popen[str]:
    """Another process holding `mb` MiB of card 0, as a game would (a plain cudaMalloc
    through PyTorch), until its stdin closes."""
    code = (
        "import sys, torch\n"
        f"held = torch.empty({mb} * 2**20, dtype=torch.uint8, device='cuda')\n"
        "torch.cuda.synchronize()\n"
        "print('holding', flush=True)\n"
        "sys.stdin.read()\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


@pytest.fixture
def game() -> Iterator[subprocess.Popen[str]]:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("the game stand-in allocates card memory with PyTorch, not installed")
    process = _game(GAME_MB)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "holding"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


@pytest.mark.real
def test_a_game_on_the_card_makes_it_yield_and_its_exit_brings_it_back(
    tmp_path: Path, daemon_factory: list[Daemon], game: subprocess.Popen[str]
) -> None:
    device = (
        "memory_mb = 4000\nauto_yield = true\nyield_above_mb = 1024\n"
        "yield_grace_s = 1\nyield_poll_s = 0.2"
    )
    box = _box(tmp_path, daemon_factory, device, _model("first") + _model("second"))
    gaming = wait_for(
        lambda: (doc := mode_of(box))["modes"]["gpu0"] == "gaming" and doc,
        "gpu0 yields to the game",
        30,
    )
    print(f"\nyielded: {gaming}")
    yielded = next(line for line in box.log().splitlines() if "gpu0 yields" in line)
    assert f"(pid {game.pid}) holds" in yielded, yielded
    with box.client() as http:
        refused = http.post(
            "/v1/completions", json={"model": "first", "prompt": "Hi", "max_tokens": 2}
        )
    assert refused.status_code in (409, 503), refused.text

    game.kill()
    game.wait(timeout=30)
    back = wait_for(
        lambda: (doc := mode_of(box))["modes"]["gpu0"] == "auto" and doc,
        "gpu0 back in auto after the game and the grace",
        30,
    )
    print(f"returned: {back}")
    ask(box, "first")


def _props(daemon: Daemon, model: str) -> dict[str, Any]:
    port = model_status(daemon, model)["port"]
    with httpx.Client(timeout=10) as http:
        document: dict[str, Any] = http.get(f"http://127.0.0.1:{port}/props").json()
    return document


@pytest.mark.real
def test_a_sleeping_server_gives_the_card_back_and_wakes_in_the_same_process(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    sleepy = "sleep = { idle_s = 1 }\n"
    box = _box(
        tmp_path,
        daemon_factory,
        "memory_mb = 1500",
        _model("first", sleepy) + _model("second", sleepy),
    )
    ask(box, "first")
    pid = model_status(box, "first")["pid"]
    awake_mb = wait_for(lambda: card_mb(pid), "NVML lists first", 30)
    wait_for(lambda: _props(box, "first").get("is_sleeping"), "first falls asleep", 30)
    asleep_mb = wait_for(
        lambda: (mb := card_mb(pid)) is not None and mb < awake_mb and mb, "its card memory drops"
    )
    print(f"\nfirst awake {awake_mb} MiB on the card, asleep {asleep_mb} MiB")

    ask(box, "second")  # the budget holds one awake: first is left asleep, not stopped
    assert model_status(box, "first")["pid"] == pid
    assert model_status(box, "first")["state"] == "asleep"
    ask(box, "first")
    assert model_status(box, "first")["pid"] == pid
    assert not _props(box, "first").get("is_sleeping")
