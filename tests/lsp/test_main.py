"""`python -m lsp` with no daemon to talk to: it still serves, and says why nothing works.

An editor starts the bridge itself; a bridge that exits at once leaves the user with
"the server crashed" and nothing else. So with `--no-start` (or a failed start) it
serves anyway: the reason arrives as a message, the status as offline, and each
command fails with an error that names the URL.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from tests.conftest import free_port
from tests.lsp.conftest import WAIT_S, open_editor, wait_until


async def test_without_a_daemon_the_bridge_explains(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    (tmp_path / "a.py").write_text("x = 1\n")
    client, recorder, _ = await open_editor(url, tmp_path)
    try:
        message = await wait_until(
            lambda: [m for m in client.messages if m.type == types.MessageType.Error],
            "the error message about the missing daemon",
            timeout=30,
        )
        assert "no Tierhost daemon answers at" in message[0].message
        assert "--no-start" in message[0].message
        assert message[0].message.startswith("tierhost lsp:")
        status = await wait_until(lambda: recorder.statuses, "a tierhost/status notification")
        assert status[0]["reachable"] is False and status[0]["url"] == url

        uri = (tmp_path / "a.py").as_uri()
        params = types.ExecuteCommandParams(command="tierhost.plan", arguments=[uri])
        with pytest.raises(JsonRpcException) as caught:
            await asyncio.wait_for(client.workspace_execute_command_async(params), WAIT_S)
        assert caught.value.code == types.LSPErrorCodes.RequestFailed.value
        assert f"tierhost.plan: no Tierhost daemon answers at {url}" in caught.value.message
        # the progress the command began is ended, not left spinning
        (reports,) = client.progress_reports.values()
        assert isinstance(reports[-1], types.WorkDoneProgressEnd)
    finally:
        await asyncio.wait_for(client.shutdown_session(), WAIT_S)
        await client.stop()


def test_tierhost_lsp_is_a_cli_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "host", "lsp", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--tcp" in result.stdout and "--no-start" in result.stdout
