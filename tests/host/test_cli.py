"""The `tierhost` command as a user runs it, against a real daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import Daemon, free_port

pytestmark = pytest.mark.real


def tierhost(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    if url is not None:
        env["TIERHOST_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "host", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_status_prints_devices_and_models(demo_daemon: Daemon) -> None:
    result = tierhost("status", url=demo_daemon.url)
    assert result.returncode == 0, result.stderr
    for word in ("gpu0", "cpu", "architect-demo", "validator-demo", "ready", "0 / 400"):
        assert word in result.stdout


def test_status_json_is_the_api_document(demo_daemon: Daemon) -> None:
    result = tierhost("status", "--json", url=demo_daemon.url)
    status = json.loads(result.stdout)
    assert {d["name"] for d in status["devices"]} == {"gpu0", "cpu"}
    names = {m["name"] for m in status["models"]}
    assert names == {"architect-demo", "builder-demo", "operator-demo", "validator-demo"}


def test_models_lists_every_model(demo_daemon: Daemon) -> None:
    result = tierhost("models", "--json", "--url", demo_daemon.url)
    models = json.loads(result.stdout)
    assert [m["name"] for m in models][:2] == ["architect-demo", "builder-demo"]
    table = tierhost("models", url=demo_daemon.url)
    assert "operator-demo" in table.stdout and "persistent" not in table.stderr


def test_no_daemon_is_a_one_line_error() -> None:
    result = tierhost("status", url=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert result.stderr.startswith("tierhost: no Tierhost daemon answers at")
    assert result.stderr.count("\n") == 1
