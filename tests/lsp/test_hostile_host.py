"""A host that answers with task ids meant to escape the workspace: the bridge writes no
file for them, shows the result instead, and says why.

The real daemon only makes ids of its own form, so this is the one place a scripted
host stands in for it: a few routes on loopback that answer as a tampered (or merely
buggy) daemon across the LAN would. Everything else is real: `python -m lsp`, pytest-lsp
with VS Code's capabilities, the bridge's own HTTP client.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from host.store import new_task_id
from tests.lsp.conftest import SOURCE, WAIT_S, open_editor


class ScriptedHost:
    """Answers /health, /api/status and /api/tasks like a daemon, with `task_id` as the
    id of every task it is given (already done: the bridge follows nothing)."""

    def __init__(self) -> None:
        self.task_id = new_task_id()
        self.submitted: list[dict[str, Any]] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._answer({"status": "ok"})
                elif self.path == "/api/status":
                    self._answer({"devices": [], "models": [], "tasks": {}})
                else:
                    self._answer(host.task())

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.path == "/api/tasks":
                    host.submitted.append(json.loads(self.rfile.read(length)))
                self._answer(host.task())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def task(self) -> dict[str, Any]:
        return {
            "id": self.task_id,
            "status": "done",
            "type": "planning",
            "tier": "architect",
            "model": "architect-demo",
            "tokens": 3,
            "result": "1. Sum the values.\n2. Divide by their count.",
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def host() -> Iterator[ScriptedHost]:
    scripted = ScriptedHost()
    try:
        yield scripted
    finally:
        scripted.stop()


def markdown_files(top: Path) -> set[Path]:
    return {p for p in top.rglob("*.md")}


async def plan(host: ScriptedHost, root: Path) -> tuple[dict[str, Any], list[str]]:
    """Run `tierhost.plan` on root/stats.py (open in the editor); the reply and the
    messages the editor was shown."""
    (root / "stats.py").write_text(SOURCE)
    client, _, _ = await open_editor(host.url, root)
    try:
        uri = (root / "stats.py").as_uri()
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=SOURCE
                )
            )
        )
        params = types.ExecuteCommandParams(command="tierhost.plan", arguments=[uri])
        reply = await asyncio.wait_for(client.workspace_execute_command_async(params), WAIT_S)
        return reply, [m.message for m in client.messages]
    finally:
        await asyncio.wait_for(client.shutdown_session(), WAIT_S)
        await client.stop()


@pytest.mark.parametrize(
    "task_id",
    [
        "../../../escaped",
        "t-0193a5c2f1e4b7c9d0/../../../escaped",
        "/tmp/tierhost-escaped",
        "t-0193a5c2f1e4b7c9d0\u0000",
        "..",
    ],
)
async def test_an_id_not_of_the_hosts_form_writes_nothing(
    host: ScriptedHost, tmp_path: Path, task_id: str
) -> None:
    host.task_id = task_id
    root = tmp_path / "a" / "b" / "project"
    root.mkdir(parents=True)
    reply, shown = await plan(host, root)

    assert reply["status"] == "done"
    assert reply["written"] is False
    assert "not a task id of the host's form" in reply["reason"]
    assert "Sum the values" in reply["markdown"]  # the result still reaches the user
    assert markdown_files(tmp_path) == set()
    (message,) = [m for m in shown if "was not written to a file" in m]
    assert "not a task id of the host's form" in message and "Sum the values" in message


async def test_a_tierhost_folder_linked_out_of_the_workspace_writes_nothing(
    host: ScriptedHost, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / ".tierhost").symlink_to(outside)
    reply, shown = await plan(host, root)

    assert reply["written"] is False and "is a link" in reply["reason"]
    assert list(outside.iterdir()) == []
    assert any("is a link" in m for m in shown)


async def test_an_id_of_the_hosts_form_is_written_in_tierhost(
    host: ScriptedHost, tmp_path: Path
) -> None:
    """The control: the same scripted host with a proper id gets its file."""
    root = tmp_path / "project"
    root.mkdir()
    reply, _ = await plan(host, root)

    assert reply["written"] is True
    assert markdown_files(tmp_path) == {root / ".tierhost" / f"plan-{host.task_id}.md"}
    assert host.submitted and host.submitted[0]["type"] == "planning"
