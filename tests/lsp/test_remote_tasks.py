"""An LSP command whose task runs on a remote model, end to end, to `done`.

Issue 10: a task routed to a `kind = "remote"` model must end the same through every
client. Here VS Code's capabilities drive `python -m lsp` against a daemon
(`tests.remote_box`) whose tiers all run on "the other box", a second real llama-server
on loopback behind its own API key: `tierhost.plan` goes to the architect tier, which
is that remote model, so the plan the editor is shown can only have come from there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import Daemon
from tests.lsp.conftest import Editor, editing

pytestmark = pytest.mark.real

MEAN_STUB = {"start": {"line": 5, "character": 0}, "end": {"line": 8, "character": 0}}
"""The unfinished `def mean(values):` … `pass` in SOURCE, as an editor selects it."""
SMALL = {"maxTokens": 12, "temperature": 0, "seed": 1}


@pytest_asyncio.fixture
async def far_editor(remote_daemon: Daemon, workspace: Path) -> AsyncIterator[Editor]:
    """VS Code connected to a bridge of the remote daemon, with `stats.py` open."""
    async with editing(remote_daemon.url, workspace) as editor:
        yield editor


def host_task(daemon: Daemon, task_id: str) -> dict[str, Any]:
    with daemon.client() as http:
        response = http.get(f"/api/tasks/{task_id}")
        response.raise_for_status()
        task: dict[str, Any] = response.json()
        return task


async def test_plan_on_a_remote_architect_finishes_and_opens_its_answer(
    far_editor: Editor, remote_daemon: Daemon
) -> None:
    reply = await far_editor.command("tierhost.plan", far_editor.uri, MEAN_STUB, SMALL)

    assert reply["status"] == "done", reply
    assert (reply["tier"], reply["model"]) == ("architect", "operator-far")
    assert reply["tokens"] > 0
    task_id = reply["taskId"]
    # the daemon ran it there, and the editor was shown its answer as a Markdown file
    task = host_task(remote_daemon, task_id)
    assert (task["status"], task["type"], task["model"]) == ("done", "planning", "operator-far")
    assert task["result"].strip()
    plan = far_editor.root / ".tierhost" / f"plan-{task_id}.md"
    assert reply["document"].endswith(f".tierhost/plan-{task_id}.md")
    assert [d.uri for d in far_editor.client.shown_documents] == [reply["document"]]
    text = plan.read_text()
    assert task_id in text and "operator-far" in text
    assert task["result"].strip() in text
