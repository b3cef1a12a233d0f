"""Shared fixtures: a real daemon started as users start it, in a temp data dir."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

pytest_plugins = ["tests.remote_box"]
"""The other box's fixtures (`remote_box`, `remote_daemon`), for every test package."""

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Daemon:
    """A `tierhost serve` subprocess and what a test needs to talk to it."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    stderr_path: Path
    children_seen: set[int] = field(default_factory=set)

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def status(self) -> dict:  # type: ignore[type-arg]
        with self.client() as client:
            response = client.get("/api/status")
            response.raise_for_status()
            return response.json()  # type: ignore[no-any-return]

    def note_children(self) -> set[int]:
        """Remember the daemon's model servers so teardown can prove they are gone."""
        try:
            kids = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return set()
        self.children_seen.update(k.pid for k in kids)
        return {k.pid for k in kids}

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.note_children()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)
            raise AssertionError("daemon did not exit within the grace period") from None


def alive(pids: set[int]) -> set[int]:
    """The pids still running (zombies count as gone)."""
    result = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                result.add(pid)
        except psutil.NoSuchProcess:
            pass
    return result


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll `predicate` until it returns something true, and return that (bounded: fails
    saying `what` was not seen within `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def model_status(daemon: Daemon, name: str) -> dict[str, Any]:
    """One model's entry of the daemon's `/api/status`."""
    models: list[dict[str, Any]] = daemon.status()["models"]
    return next(m for m in models if m["name"] == name)


def wait_until_gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout
    left = alive(pids)
    while left and time.monotonic() < deadline:
        psutil.wait_procs([psutil.Process(p) for p in left if psutil.pid_exists(p)], timeout=0.2)
        left = alive(pids)
    return left


def start_daemon(
    tmp_path: Path,
    config_text: str | None = None,
    *,
    data_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Daemon:
    port = free_port()
    data = data_dir or tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "host", "serve", "--port", str(port), "--data-dir", str(data)]
    if config_text is not None:
        config_path = tmp_path / f"tierhost-{port}.toml"
        config_path.write_text(config_text)
        argv += ["--config", str(config_path)]
    stderr_path = tmp_path / f"daemon-{port}.log"
    env = {**os.environ, **(extra_env or {})}
    env.pop("TIERHOST_DATA_DIR", None)
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=stderr_path.open("wb"), env=env
    )
    daemon = Daemon(f"http://127.0.0.1:{port}", data, process, stderr_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"daemon exited at start:\n{daemon.log()}")
            try:
                if client.get(f"{daemon.url}/health").status_code == 200:
                    daemon.note_children()
                    return daemon
            except httpx.TransportError:
                pass
            time.sleep(0.02)
    process.kill()
    raise AssertionError(f"daemon not healthy within {START_TIMEOUT_S} s:\n{daemon.log()}")


def stop_checked(daemon: Daemon) -> None:
    """Stop a daemon and fail if any of its model servers outlived it."""
    daemon.stop()
    left = wait_until_gone(daemon.children_seen)
    assert not left, f"model servers outlived the daemon: {left}"


@contextlib.contextmanager
def running_demo(tmp_path: Path) -> Iterator[Daemon]:
    """The demo daemon with its persistent models ready, for a module or a session of
    tests; stopped and checked at the end."""
    daemon = start_daemon(tmp_path)
    try:
        wait_for_models(daemon, {"operator-demo", "validator-demo"}, "ready")
        yield daemon
    finally:
        stop_checked(daemon)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[list[Daemon]]:
    """Start daemons with `start_daemon(...)`; every one is stopped and checked at the end."""
    started: list[Daemon] = []
    yield started
    leftovers: set[int] = set()
    for daemon in started:
        daemon.stop()
        leftovers |= wait_until_gone(daemon.children_seen)
    assert not leftovers, f"model servers outlived the daemon: {leftovers}"


@pytest.fixture
def demo_daemon(tmp_path: Path, daemon_factory: list[Daemon]) -> Daemon:
    """The packaged demo config, as `make serve` runs it."""
    daemon = start_daemon(tmp_path)
    daemon_factory.append(daemon)
    wait_for_models(daemon, {"operator-demo", "validator-demo"}, "ready")
    return daemon


def wait_for_models(daemon: Daemon, names: set[str], state: str, timeout: float = 60.0) -> None:
    """Poll /api/status until every named model is in `state` (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {m["name"]: m["state"] for m in daemon.status()["models"]}
        if all(states.get(n) == state for n in names):
            daemon.note_children()
            return
        time.sleep(0.02)
    raise AssertionError(f"models {sorted(names)} not {state} within {timeout} s: {states}")
