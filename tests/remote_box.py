"""A remote model for the tests: a second real llama-server on loopback as "the other box".

`kind = "remote"` models are OpenAI-compatible endpoints on another machine. The tests
stand one in with the demo GGUF on a loopback port, behind its own API key, and start a
daemon whose tiers all route there (`remote_config`), so every client (the HTTP API in
tests/host, MCP in tests/mcp_server, the LSP bridge in tests/lsp) can be shown to run a
task to its end on it. A remote that is down is a port nothing listens on.

The root conftest loads this module as a plugin (`pytest_plugins`), so its fixtures
reach tests/host, tests/mcp_server and tests/lsp alike, as a package's conftest could not.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from host.config import DEMO_MODEL_REF
from host.paths import find_llama_server, resolve_gguf
from tests.conftest import Daemon, free_port, start_daemon, stop_checked

READY_S = 60.0
"""The longest the remote box may take to answer its health check."""
STOP_S = 10.0
REMOTE_KEY = "remote-box-key-for-the-test-0123456789"
REMOTE_ALIAS = "smol-on-the-other-box"
"""The name the remote box serves its model under (what `remote_model` must say)."""
KEY_ENV = "TIERHOST_TEST_REMOTE_KEY"
"""Where the daemon reads the remote's key from: the config names it, never holds it."""


@dataclass
class RemoteBox:
    """The other box's llama-server: its base URL, its process and its log."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_S)


def _wait_healthy(box: RemoteBox) -> None:
    """Poll `/health` until the model is loaded, failing with its log if it exits."""
    deadline = time.monotonic() + READY_S
    with httpx.Client(timeout=2.0) as client:
        while True:
            assert box.process.poll() is None, box.log_path.read_text(errors="replace")
            try:
                if client.get(f"{box.url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the remote box did not get ready"
            time.sleep(0.05)


@contextlib.contextmanager
def running_remote_box(tmp: Path, port: int | None = None) -> Iterator[RemoteBox]:
    """A real llama-server with the demo model, as another box on the LAN would run it;
    stopped at the end whatever happened. `port`: the same box again after a restart."""
    port = port or free_port()
    log_path = tmp / "remote-box.log"
    argv = [
        str(find_llama_server(None)),
        "--model",
        str(resolve_gguf(DEMO_MODEL_REF, "remote-box")),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--alias",
        REMOTE_ALIAS,
        "--api-key",
        REMOTE_KEY,
        "--ctx-size",
        "2048",
        "--parallel",
        "2",
        "--no-warmup",
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    box = RemoteBox(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_healthy(box)
        yield box
    finally:
        _stop(process)


def remote_config(box_url: str, dead_port: int) -> str:
    """Every tier on remote models: the daemon itself starts no model server."""
    return f"""
[host]
queue_timeout_s = 30

[devices.cpu]
kind = "cpu"

[models.operator-far]
kind = "remote"
base_url = "{box_url}/v1"
api_key_env = "{KEY_ENV}"
remote_model = "{REMOTE_ALIAS}"

[models.operator-gone]
kind = "remote"
base_url = "http://127.0.0.1:{dead_port}/v1"

[tiers.architect]
models = ["operator-far"]

[tiers.builder]
models = ["operator-far"]

[tiers.operator]
models = ["operator-far"]

[tiers.gone]
models = ["operator-gone"]
"""


def start_remote_daemon(tmp: Path, box: RemoteBox) -> Daemon:
    """A daemon on `remote_config`, holding the remote's key in its environment only.
    The caller stops it (`stop_checked`, or the `daemon_factory` fixture)."""
    return start_daemon(tmp, remote_config(box.url, free_port()), extra_env={KEY_ENV: REMOTE_KEY})


@pytest.fixture
def remote_box(tmp_path: Path) -> Iterator[RemoteBox]:
    """The other box, for one test."""
    with running_remote_box(tmp_path) as box:
        yield box


@pytest.fixture
def remote_daemon(tmp_path: Path, daemon_factory: list[Daemon], remote_box: RemoteBox) -> Daemon:
    """A daemon whose tiers all run on `remote_box`, for one test."""
    daemon = start_remote_daemon(tmp_path, remote_box)
    daemon_factory.append(daemon)
    return daemon


@pytest.fixture(scope="module")
def shared_remote_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A remote box and its daemon shared by a module's tests (the transports of one
    case, say), which change nothing but add tasks: a start costs seconds on two
    cores. The daemon stops first, so it never outlives the box it points at."""
    tmp = tmp_path_factory.mktemp("remote")
    with running_remote_box(tmp) as box:
        daemon = start_remote_daemon(tmp, box)
        try:
            yield daemon
        finally:
            stop_checked(daemon)
