"""`python -m mcp_server` as an editor launches it: finds, or starts, the daemon."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import psutil
import pytest

from tests.conftest import free_port, wait_until_gone
from tests.mcp_server.conftest import stdio_client_for, structured

pytestmark = pytest.mark.real

WAIT_S = 120.0


def _stop_started_daemon(pid: int) -> None:
    """The test started it through the server: stop it and prove its models went too."""
    daemon = psutil.Process(pid)
    children = {c.pid for c in daemon.children(recursive=True)}
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=30)
    assert not wait_until_gone(children), "model servers outlived the started daemon"


async def test_starts_the_daemon_when_none_answers(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    data = tmp_path / "data"
    errlog_path = tmp_path / "stdio.log"
    pid = None
    try:
        with errlog_path.open("w") as errlog, anyio.fail_after(WAIT_S):
            async with stdio_client_for(url, errlog, {"TIERHOST_DATA_DIR": str(data)}) as client:
                said = errlog_path.read_text()
                found = re.search(r"pid (\d+)", said)
                pid = int(found.group(1)) if found else None
                status = structured(await client.call_tool("host_status", {}))
        assert status["url"] == url
        assert "no daemon answered" in said and "started `tierhost serve`" in said, said
        assert "a daemon of my own" in said and "TIERHOST_URL" in said, said
        assert status["daemon"] == f"started by tierhost mcp on {url} (pid {pid})"
        assert pid is not None and (data / "daemon.log").exists()
        assert "serving on" in (data / "daemon.log").read_text()
        assert psutil.Process(pid).is_running(), "the daemon must outlive the MCP session"
    finally:
        if pid is not None:
            _stop_started_daemon(pid)


def _run_server(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_server", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TIERHOST_URL": url},
        check=False,
    )


def test_no_start_fails_clearly_when_no_daemon_answers() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = _run_server("--no-start", url=url)
    assert result.returncode == 1 and result.stdout == ""
    assert f"no Tierhost daemon answers at {url}" in result.stderr


def test_a_daemon_on_another_machine_is_not_started_here() -> None:
    result = _run_server(url="http://tierhost-box.invalid:8788")
    assert result.returncode == 1 and result.stdout == ""
    assert "not on this machine" in result.stderr
