"""A sleeping llama-server left asleep instead of stopped, live with the real SmolLM2.

llama-server's `--sleep-idle-seconds` frees the model and its KV cache after that many
idle seconds and reloads on the next request; `/props` says `is_sleeping`. Two models
of 300 MiB share a 400 MiB budget-only gpu0: a swap leaves the idle one asleep (same
pid, nothing counted on the card) and its next request wakes it. A model not yet idle
for its sleep time is stopped as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import Daemon, model_status, start_daemon, wait_for

DEMO_ARGS = '["--ctx-size", "2048", "--parallel", "1", "--no-warmup"]'

CONFIG = f"""
[devices.gpu0]
kind = "gpu"
memory_mb = 400

[models.early]
gguf = "demo:smollm2"
device = "gpu0"
memory_mb = 300
args = {DEMO_ARGS}
start_timeout_s = 60
sleep = {{ idle_s = 1 }}

[models.late]
gguf = "demo:smollm2"
device = "gpu0"
memory_mb = 300
args = {DEMO_ARGS}
start_timeout_s = 60
sleep = {{ idle_s = 1 }}

[models.wakeful]
gguf = "demo:smollm2"
device = "gpu0"
memory_mb = 300
args = {DEMO_ARGS}
start_timeout_s = 60
sleep = {{ idle_s = 3600 }}

[tiers.architect]
models = ["early"]
[tiers.builder]
models = ["late"]
[tiers.operator]
models = ["wakeful"]
"""


@pytest.fixture
def box(tmp_path: Path, daemon_factory: list[Daemon]) -> Daemon:
    daemon = start_daemon(tmp_path, CONFIG)
    daemon_factory.append(daemon)
    return daemon


def ask(daemon: Daemon, model: str) -> str:
    with daemon.client(timeout=120) as http:
        response = http.post(
            "/v1/completions",
            json={"model": model, "prompt": "Hi", "max_tokens": 3, "temperature": 0},
        )
    assert response.status_code == 200, response.text
    daemon.note_children()
    return str(response.json()["choices"][0]["text"])


def props(daemon: Daemon, model: str) -> dict[str, Any]:
    port = model_status(daemon, model)["port"]
    return httpx.get(f"http://127.0.0.1:{port}/props", timeout=30).json()  # type: ignore[no-any-return]


def fallen_asleep(daemon: Daemon, model: str) -> None:
    wait_for(lambda: props(daemon, model).get("is_sleeping") is True, f"{model} asleep by itself")


def gpu0(daemon: Daemon) -> dict[str, Any]:
    return next(d for d in daemon.status()["devices"] if d["name"] == "gpu0")


def test_an_idle_llama_server_is_left_asleep_by_a_swap_and_woken_by_its_next_request(
    box: Daemon,
) -> None:
    first = ask(box, "early")
    pid = model_status(box, "early")["pid"]
    fallen_asleep(box, "early")

    ask(box, "late")

    early = model_status(box, "early")
    assert (early["state"], early["pid"]) == ("asleep", pid)
    assert gpu0(box)["used_mb"] == 300 and gpu0(box)["asleep"] == ["early"]
    awake_mb = psutil.Process(model_status(box, "late")["pid"]).memory_info().rss // 2**20
    assert early["sleep"]["rss_mb"] is not None
    assert early["sleep"]["rss_mb"] < awake_mb / 2  # it let go of its weights
    fallen_asleep(box, "late")

    assert ask(box, "early") == first  # greedy: the woken server answers as before

    early = model_status(box, "early")
    assert (early["state"], early["pid"]) == ("ready", pid)
    assert early["sleep"]["wakes"] == 1
    assert model_status(box, "late")["state"] == "asleep"
    assert props(box, "early")["is_sleeping"] is False


def test_a_llama_server_not_idle_for_its_sleep_time_is_stopped(box: Daemon) -> None:
    ask(box, "wakeful")
    pid = model_status(box, "wakeful")["pid"]

    ask(box, "early")

    assert model_status(box, "wakeful")["state"] == "stopped"
    wait_for(lambda: not psutil.pid_exists(pid), "the wakeful server gone")
