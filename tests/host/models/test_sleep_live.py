"""Sleep instead of stop, against a real daemon and scripted servers with vLLM's sleep
endpoints (`tests/host/fake_command_server.py --sleep-mode`).

Each model takes 300 MiB of a 400 MiB budget-only gpu0, so only one is awake at a time;
asleep each holds 100 MiB of RAM and nothing on the card, and the box's RAM for
sleepers (150 MiB) holds one sleeper. A server asleep answers every request with a 503,
so a 200 proves the host woke it first; its pid proves the process was kept.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import Daemon, model_status, start_daemon, stop_checked, wait_for
from tests.host.fake_command_server import command

BOUND_S = 30.0
SLEEPER = '{ path = "/sleep?level=1", wake_path = "/wake_up", memory_mb = 100 }'


def model(name: str, *flags: str) -> str:
    argv = command("--name", name, "--sleep-mode", *flags)
    return f"""
[models.{name}]
kind = "command"
device = "gpu0"
memory_mb = 300
command = {json.dumps(argv)}
start_timeout_s = {BOUND_S}
sleep = {SLEEPER}
"""


def config() -> str:
    return (
        f"""
[host]
queue_timeout_s = {BOUND_S}
stop_grace_s = 5
sleep_ram_mb = 150

[devices.gpu0]
kind = "gpu"
memory_mb = 400

[tiers.architect]
models = ["alpha"]

[tiers.builder]
models = ["beta"]

[tiers.operator]
models = ["gamma"]
"""
        + model("alpha")
        + model("beta")
        + model("gamma")
        + model("restless", "--sleep-fails")
        + model("groggy", "--wake-fails")
    )


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("sleep")
    running = start_daemon(tmp, config())
    try:
        yield running
    finally:
        stop_checked(running)


def chat(daemon: Daemon, name: str) -> str:
    with daemon.client(timeout=BOUND_S) as client:
        body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
        answer = client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    daemon.note_children()
    return str(answer.json()["choices"][0]["message"]["content"])


def memory_of(daemon: Daemon, name: str) -> dict[str, Any]:
    """What the scripted server itself says it holds (asked directly, not via the host)."""
    port = model_status(daemon, name)["port"]
    answer = httpx.get(f"http://127.0.0.1:{port}/debug/memory", timeout=BOUND_S)
    return answer.json()  # type: ignore[no-any-return]


def gpu0(daemon: Daemon) -> dict[str, Any]:
    devices: list[dict[str, Any]] = daemon.status()["devices"]
    return next(d for d in devices if d["name"] == "gpu0")


def test_a_swap_puts_the_old_model_to_sleep_and_its_next_request_wakes_it(
    daemon: Daemon,
) -> None:
    assert chat(daemon, "alpha") == "Hello from alpha."
    pid = model_status(daemon, "alpha")["pid"]

    assert chat(daemon, "beta") == "Hello from beta."

    alpha = model_status(daemon, "alpha")
    assert (alpha["state"], alpha["pid"]) == ("asleep", pid)
    assert alpha["sleep"]["asleep"] and alpha["sleep"]["sleeps"] >= 1
    assert alpha["sleep"]["last_sleep_s"] is not None
    assert memory_of(daemon, "alpha")["asleep"] is True
    device = gpu0(daemon)
    assert device["residents"] == ["beta"] and "alpha" in device["asleep"]
    assert device["used_mb"] == 300  # alpha asleep holds nothing on the card
    assert daemon.status()["sleep_ram"]["used_mb"] == 100

    assert chat(daemon, "alpha") == "Hello from alpha."  # the fake 503s unless woken

    alpha = model_status(daemon, "alpha")
    assert (alpha["state"], alpha["pid"]) == ("ready", pid)
    assert alpha["sleep"]["wakes"] >= 1 and alpha["sleep"]["last_wake_s"] is not None
    assert memory_of(daemon, "alpha") | {"pid": 0} == {
        "asleep": False,
        "device_mb": 300,
        "ram_mb": 0,
        "sleeps": alpha["sleep"]["sleeps"],
        "wakes": alpha["sleep"]["wakes"],
        "pid": 0,
    }
    assert model_status(daemon, "beta")["state"] == "asleep"
    with daemon.client() as client:
        metrics = client.get("/metrics").text
    assert 'tierhost_wake_duration_seconds_count{model="alpha"}' in metrics
    assert 'tierhost_sleep_duration_seconds_count{model="alpha"}' in metrics
    assert 'tierhost_model_asleep{model="beta"} 1.0' in metrics


def test_when_the_ram_for_sleepers_is_full_the_least_recently_used_one_is_stopped(
    daemon: Daemon,
) -> None:
    chat(daemon, "alpha")
    chat(daemon, "beta")  # alpha asleep: 100 of the 150 MiB
    alpha_pid = model_status(daemon, "alpha")["pid"]
    assert model_status(daemon, "alpha")["state"] == "asleep"

    chat(daemon, "gamma")  # beta to sleep: alpha, the older sleeper, must go

    assert model_status(daemon, "alpha")["state"] == "stopped"
    assert not psutil.pid_exists(alpha_pid) or psutil.Process(alpha_pid).status() == "zombie"
    assert model_status(daemon, "beta")["state"] == "asleep"
    sleep_ram = daemon.status()["sleep_ram"]
    assert sleep_ram["used_mb"] == 100 and sleep_ram["budget_mb"] == 150
    assert [s["model"] for s in sleep_ram["sleepers"]] == ["beta"]


def test_a_server_that_does_not_fall_asleep_is_stopped_instead(daemon: Daemon) -> None:
    chat(daemon, "restless")
    pid = model_status(daemon, "restless")["pid"]

    chat(daemon, "alpha")  # restless answers its sleep call with a 500

    restless = model_status(daemon, "restless")
    assert restless["state"] == "stopped"
    wait_for(lambda: not psutil.pid_exists(pid), "the restless server gone")
    assert "did not fall asleep" in daemon.log()
    assert chat(daemon, "restless") == "Hello from restless."  # a fresh start
    assert model_status(daemon, "restless")["pid"] != pid


def test_a_wake_that_fails_starts_the_server_afresh(daemon: Daemon) -> None:
    chat(daemon, "groggy")
    pid = model_status(daemon, "groggy")["pid"]
    chat(daemon, "alpha")
    assert model_status(daemon, "groggy")["state"] == "asleep"

    assert chat(daemon, "groggy") == "Hello from groggy."  # its wake_up answers 500

    groggy = model_status(daemon, "groggy")
    assert groggy["state"] == "ready" and groggy["pid"] != pid
    assert "wake failed" in daemon.log()


def test_a_sleeper_that_dies_is_seen_and_started_afresh_by_its_next_request(
    daemon: Daemon,
) -> None:
    chat(daemon, "beta")
    chat(daemon, "alpha")  # beta asleep
    pid = model_status(daemon, "beta")["pid"]
    assert model_status(daemon, "beta")["state"] == "asleep"

    os.kill(pid, signal.SIGKILL)

    wait_for(lambda: model_status(daemon, "beta")["state"] == "failed", "beta seen dead")
    assert daemon.status()["sleep_ram"]["used_mb"] == 0
    assert chat(daemon, "beta") == "Hello from beta."
    assert model_status(daemon, "beta")["pid"] not in (None, pid)


def test_a_sleep_config_without_its_ram_size_is_refused_naming_the_key(tmp_path: Path) -> None:
    from host.config import ConfigError, load_config

    path = tmp_path / "tierhost.toml"
    path.write_text(
        config().replace(SLEEPER, '{ path = "/sleep?level=1", wake_path = "/wake_up" }', 1)
    )
    with pytest.raises(ConfigError, match=r"sleep\.memory_mb: required"):
        load_config(path)
