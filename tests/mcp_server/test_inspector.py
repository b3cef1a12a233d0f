"""The official MCP Inspector (command-line mode) drives the stdio server.

An independent client implementation (TypeScript) catches what a Python-only test
cannot: wire-format drift that the Python client tolerates. npm must be able to fetch
the Inspector; where it cannot (offline box, no npx), the test is skipped and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import Daemon

pytestmark = pytest.mark.real

PACKAGE = "@modelcontextprotocol/inspector@2"
FETCH_TIMEOUT_S = 180


def _npx() -> str:
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("npx is not installed, so the MCP Inspector cannot run")
    try:
        fetched = subprocess.run(
            [npx, "-y", PACKAGE, "--version"],
            capture_output=True,
            text=True,
            timeout=FETCH_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm could not fetch {PACKAGE} within {FETCH_TIMEOUT_S} s")
    if fetched.returncode != 0:
        pytest.skip(f"npm could not fetch {PACKAGE}: {fetched.stderr.strip()[-300:]}")
    return npx


def _inspect(npx: str, daemon: Daemon, *method: str) -> Any:
    argv = [npx, "-y", PACKAGE, "--cli", "-e", f"TIERHOST_URL={daemon.url}"]
    argv += [sys.executable, "-m", "mcp_server", *method]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TIERHOST_URL": daemon.url},
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def test_the_inspector_lists_tools_and_calls_one(shared_daemon: Daemon) -> None:
    npx = _npx()
    listed = _inspect(npx, shared_daemon, "--method", "tools/list")
    names = {tool["name"] for tool in listed["tools"]}
    assert {"route_task", "submit_task", "wait_task", "host_status"} <= names
    called = _inspect(
        npx,
        shared_daemon,
        "--method",
        "tools/call",
        "--tool-name",
        "route_task",
        "--tool-arg",
        "prompt=Plan the schema.",
    )
    assert called.get("isError") in (None, False), called
    assert called["structuredContent"]["tier"] == "architect"
    assert "architect-demo" in called["content"][0]["text"]
