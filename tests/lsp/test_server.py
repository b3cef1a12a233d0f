"""End to end: VS Code's capabilities → `python -m lsp` → a real daemon → llama-server.

Each test drives the bridge only through LSP messages and checks what an editor would
see (progress, a shown document, a workspace edit, errors) and what the host recorded.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from lsp import diff
from tests.conftest import Daemon
from tests.lsp.conftest import SOURCE, WAIT_S, Editor, open_editor, wait_until

pytestmark = pytest.mark.real

MEAN_STUB = {"start": {"line": 5, "character": 0}, "end": {"line": 8, "character": 0}}
"""The unfinished `def mean(values):` … `pass` in SOURCE: the selection an editor sends
(0-based, end exclusive) when it asks for the function to be written."""

SMALL = {"maxTokens": 12, "temperature": 0, "seed": 1}

COMMANDS = {
    "tierhost.plan",
    "tierhost.design",
    "tierhost.review",
    "tierhost.implement",
    "tierhost.explain",
    "tierhost.setMode",
    "tierhost.status",
    "tierhost.cancel",
}


def as_range(value: dict[str, Any]) -> types.Range:
    start, end = value["start"], value["end"]
    return types.Range(
        start=types.Position(line=start["line"], character=start["character"]),
        end=types.Position(line=end["line"], character=end["character"]),
    )


def kinds(reports: list[Any]) -> list[str]:
    return [type(r).__name__.removeprefix("WorkDoneProgress").lower() for r in reports]


def action_command(action: types.CodeAction | types.Command) -> tuple[str, list[Any]]:
    """The command a code action runs, and its arguments.

    lsprotocol structures a CodeAction that carries a command as a `Command` on the
    Python client side, with the nested command object as the repr in `command` (VS
    Code is unaffected: it reads the JSON). Undo that here.
    """
    if isinstance(action, types.CodeAction):
        assert action.command is not None
        return action.command.command, list(action.command.arguments or [])
    if action.command.startswith("{"):
        nested = ast.literal_eval(action.command)
        return nested["command"], nested["arguments"]
    return action.command, list(action.arguments or [])


def host_task(daemon: Daemon, task_id: str) -> dict[str, Any]:
    with daemon.client() as http:
        response = http.get(f"/api/tasks/{task_id}")
        response.raise_for_status()
        task: dict[str, Any] = response.json()
        return task


async def test_initialize_advertises_commands_and_code_actions(editor: Editor) -> None:
    caps = editor.initialized.capabilities
    assert caps.execute_command_provider is not None
    assert set(caps.execute_command_provider.commands) == COMMANDS
    assert caps.code_action_provider
    assert editor.initialized.server_info is not None
    assert editor.initialized.server_info.name == "tierhost-lsp"


async def test_code_actions_on_a_selection(editor: Editor) -> None:
    selection = as_range(MEAN_STUB)
    params = types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=editor.uri),
        range=selection,
        context=types.CodeActionContext(diagnostics=[]),
    )
    actions = await asyncio.wait_for(editor.client.text_document_code_action_async(params), WAIT_S)
    assert actions is not None
    offered = [(a.title, *action_command(a)) for a in actions]
    assert [(title, command) for title, command, _ in offered] == [
        ("Plan with architect", "tierhost.plan"),
        ("Implement with builder", "tierhost.implement"),
        ("Review with architect", "tierhost.review"),
    ]
    for _, _, arguments in offered:
        assert arguments[0] == editor.uri
        assert as_range(arguments[1]) == selection

    empty = types.Range(start=selection.start, end=selection.start)
    none = await editor.client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=params.text_document, range=empty, context=params.context
        )
    )
    assert not none


async def test_plan_reports_progress_and_opens_markdown(editor: Editor, lsp_daemon: Daemon) -> None:
    reply = await editor.command("tierhost.plan", editor.uri, MEAN_STUB, SMALL)

    assert reply["status"] == "done", reply
    assert reply["tier"] == "architect"
    task_id = reply["taskId"]
    # progress: begin, at least one report, end — on one token the bridge created
    tokens = [t for t, r in editor.client.progress_reports.items() if r]
    assert len(tokens) == 1
    sequence = kinds(editor.client.progress_reports[tokens[0]])
    assert sequence[0] == "begin" and sequence[-1] == "end" and "report" in sequence
    begin = editor.client.progress_reports[tokens[0]][0]
    assert begin.cancellable is True and "plan" in begin.title
    assert task_id in editor.client.progress_reports[tokens[0]][-1].message
    # the plan: a Markdown file under .tierhost/, shown to the user
    expected = editor.root / ".tierhost" / f"plan-{task_id}.md"
    assert expected.is_file()
    text = expected.read_text()
    assert task_id in text and "stats.py" in text and "lines 6–8" in text
    assert [d.uri for d in editor.client.shown_documents] == [reply["document"]]
    assert reply["document"].endswith(f".tierhost/plan-{task_id}.md")
    # the host ran it on the architect tier, with the selection as context
    task = host_task(lsp_daemon, task_id)
    assert task["status"] == "done" and task["type"] == "planning"


async def test_implement_offers_a_workspace_edit(editor: Editor, lsp_daemon: Daemon) -> None:
    # no validator pass: this test is about the edit, whatever SmolLM2 writes in 12 tokens
    options = {**SMALL, "validation": "none"}
    reply = await editor.command("tierhost.implement", editor.uri, MEAN_STUB, options)

    assert reply["status"] == "done", reply
    assert reply["tier"] == "builder"
    assert reply["applied"] is True
    assert len(editor.recorder.applied) == 1
    applied = editor.recorder.applied[0]
    assert applied.label is not None and reply["taskId"] in applied.label
    changes = applied.edit.document_changes
    assert changes is not None and len(changes) == 1
    change = changes[0]
    assert isinstance(change, types.TextDocumentEdit)
    assert change.text_document.uri == editor.uri
    assert change.text_document.version == 1  # refused by the editor if the file moved on
    (edit,) = change.edits
    assert isinstance(edit, types.TextEdit)
    if reply["origin"] == "code block":
        assert edit.range == as_range(MEAN_STUB)
        assert edit.new_text.endswith("\n")  # whole lines selected: the next line stays put
    new_text = diff.apply(SOURCE, [edit])
    assert new_text.startswith("def add(a, b):")  # the code outside the selection is kept
    assert host_task(lsp_daemon, reply["taskId"])["type"] == "implementation"


async def test_progress_cancel_cancels_the_task_in_the_host(
    editor: Editor, lsp_daemon: Daemon
) -> None:
    """gpu0 pinned to the builder holds a plan in the queue: the task is provably in
    flight when the user presses cancel, whatever the machine's speed."""
    await editor.command("tierhost.setMode", "builder", "gpu0")
    try:
        running = asyncio.create_task(editor.command("tierhost.plan", editor.uri, MEAN_STUB, SMALL))

        def held_token() -> Any:
            for token, reports in editor.client.progress_reports.items():
                messages = [getattr(r, "message", "") or "" for r in reports]
                if any("pinned to builder" in m for m in messages):
                    return token
            return None

        token = await wait_until(held_token, "a progress report saying the plan waits")
        editor.client.window_work_done_progress_cancel(
            types.WorkDoneProgressCancelParams(token=token)
        )
        reply = await asyncio.wait_for(running, WAIT_S)
    finally:
        await editor.command("tierhost.setMode", "auto", "gpu0")

    assert reply["status"] == "cancelled" and reply["cancelledByUser"] is True
    assert host_task(lsp_daemon, reply["taskId"])["status"] == "cancelled"
    assert kinds(editor.client.progress_reports[token])[-1] == "end"
    assert not editor.client.shown_documents  # nothing to show for a cancelled plan


async def test_cancel_command_stops_the_tasks_of_a_document(
    editor: Editor, lsp_daemon: Daemon
) -> None:
    """`tierhost.cancel [uri]` (the palette's "Cancel a task" sends `[]`: every task)."""
    await editor.command("tierhost.setMode", "builder", "gpu0")
    try:
        running = asyncio.create_task(editor.command("tierhost.design", editor.uri, None, SMALL))

        def task_id() -> Any:
            for reports in editor.client.progress_reports.values():
                messages = [getattr(r, "message", "") or "" for r in reports]
                if any("pinned to builder" in m for m in messages):
                    return next(m for m in messages if m.startswith("task t-")).split()[1]
            return None

        held = await wait_until(task_id, "the design task to wait for gpu0")
        assert await editor.command("tierhost.cancel", "file:///some/other.py") == {"cancelled": []}
        reply = await editor.command("tierhost.cancel", editor.uri)
        assert reply == {"cancelled": [{"taskId": held, "status": "cancelled"}]}
        design = await asyncio.wait_for(running, WAIT_S)
    finally:
        await editor.command("tierhost.setMode", "auto", "gpu0")
    assert design["status"] == "cancelled" and design["cancelledByUser"] is False
    assert host_task(lsp_daemon, held)["status"] == "cancelled"
    assert await editor.command("tierhost.cancel") == {"cancelled": []}  # nothing left


async def test_request_cancel_cancels_a_running_task(editor: Editor, lsp_daemon: Daemon) -> None:
    """`$/cancelRequest` (the editor dropped the request) also cancels the host's task."""
    long = {"maxTokens": 4000, "temperature": 0.8, "seed": 7}
    params = types.ExecuteCommandParams(
        command="tierhost.explain", arguments=[editor.uri, None, long]
    )
    request = asyncio.ensure_future(
        editor.client.protocol.send_request_async(
            types.WORKSPACE_EXECUTE_COMMAND, params, msg_id="explain-to-cancel"
        )
    )

    def running_task_id() -> Any:
        for reports in editor.client.progress_reports.values():
            messages = [getattr(r, "message", "") or "" for r in reports]
            if any(m.startswith("running on") for m in messages):
                first = next(m for m in messages if m.startswith("task t-"))
                return first.split()[1]
        return None

    task_id = await wait_until(running_task_id, "the task to start running")
    editor.client.cancel_request(types.CancelParams(id="explain-to-cancel"))
    with pytest.raises(JsonRpcException) as caught:
        await asyncio.wait_for(request, WAIT_S)
    assert caught.value.code == types.LSPErrorCodes.RequestCancelled.value

    seen: list[str] = []

    def cancelled_in_host() -> bool:
        seen.append(host_task(lsp_daemon, task_id)["status"])
        return seen[-1] == "cancelled"

    await wait_until(cancelled_in_host, f"the host to record {task_id} cancelled", timeout=30)
    assert "done" not in seen, seen


async def test_set_mode_and_status_send_tierhost_status(editor: Editor) -> None:
    await wait_until(lambda: editor.recorder.statuses, "the first tierhost/status notification")
    try:
        reply = await editor.command("tierhost.setMode", "gaming")
        assert reply["modes"]["gpu0"] == "gaming"
        status = await wait_until(
            lambda: [s for s in editor.recorder.statuses if s.get("mode") == "gaming"],
            "a tierhost/status notification with mode gaming",
            timeout=10,
        )
        assert status[-1]["devices"][0]["name"] == "gpu0"
    finally:
        await editor.command("tierhost.setMode", "auto")
    summary = await editor.command("tierhost.status")
    assert summary["reachable"] is True and summary["mode"] == "auto"
    assert any("gpu0: auto" in m.message for m in editor.client.messages)


@pytest.mark.parametrize(
    ("command", "arguments", "expected"),
    [
        ("tierhost.plan", [], "tierhost.plan: got 0 argument(s); expected [uri]"),
        ("tierhost.plan", [42], "the first argument must be the document URI"),
        ("tierhost.plan", ["stats.py"], "is not a document URI"),
        ("tierhost.review", ["URI", {"start": {"line": -1, "character": 0}}], "range.start"),
        (
            "tierhost.plan",
            ["URI", {"start": {"line": 3, "character": 0}, "end": {"line": 1, "character": 0}}],
            "range.end (1:0) is before range.start (3:0)",
        ),
        ("tierhost.plan", ["URI", None, {"maxTokens": "many"}], "option 'maxTokens' must be int"),
        ("tierhost.plan", ["URI", None, {"colour": "red"}], "unknown option(s) 'colour'"),
        (
            "tierhost.plan",
            ["URI", {"start": {"line": 90, "character": 0}, "end": {"line": 99, "character": 0}}],
            "the document has 8 line(s)",
        ),
        ("tierhost.explain", ["MISSING"], "it is not open in the editor and missing on disk"),
        ("tierhost.explain", ["file:///nowhere/missing.py"], "outside every workspace folder"),
        ("tierhost.setMode", [], "expected [mode] or [mode, device]"),
        ("tierhost.setMode", ["warp-speed"], "tierhost.setMode: the host refused"),
        ("tierhost.cancel", ["t-doesnotexist"], "t-doesnotexist"),
        ("tierhost.status", ["extra"], "tierhost.status takes no arguments"),
    ],
)
async def test_bad_arguments_are_invalid_params_with_a_clear_message(
    editor: Editor, command: str, arguments: list[Any], expected: str
) -> None:
    missing = (editor.root / "missing.py").as_uri()
    placeholders = {"URI": editor.uri, "MISSING": missing}
    arguments = [placeholders.get(a, a) if isinstance(a, str) else a for a in arguments]
    with pytest.raises(JsonRpcException) as caught:
        await editor.command(command, *arguments)
    assert caught.value.code == types.ErrorCodes.InvalidParams.value
    assert expected in caught.value.message
    assert "Traceback" not in caught.value.message


async def test_findings_are_published_as_diagnostics(editor: Editor, lsp_daemon: Daemon) -> None:
    options = {**SMALL, "maxTokens": 48, "validation": "final"}
    reply = await editor.command("tierhost.implement", editor.uri, MEAN_STUB, options)
    task = host_task(lsp_daemon, reply["taskId"])
    assert "findings" in task, "the host sent no findings field"
    await wait_until(lambda: editor.uri in editor.client.diagnostics, "published diagnostics")
    published = editor.client.diagnostics[editor.uri]
    assert len(published) == len(task["findings"]) == reply["diagnostics"]
    for diagnostic in published:
        assert diagnostic.code == reply["taskId"]
        assert diagnostic.code_description is not None
        assert diagnostic.code_description.href.endswith(f"/api/tasks/{reply['taskId']}")


async def test_without_a_workspace_folder_the_plan_is_shown_not_written(
    lsp_daemon: Daemon, workspace: Path
) -> None:
    """VS Code with one file open and no folder: nowhere the bridge may write, so the
    plan comes back in the reply and in a message that says why — not as a file next
    to the document, as it used to."""
    client, _, _ = await open_editor(lsp_daemon.url, None)
    uri = (workspace / "stats.py").as_uri()
    try:
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=SOURCE
                )
            )
        )
        params = types.ExecuteCommandParams(
            command="tierhost.plan", arguments=[uri, MEAN_STUB, SMALL]
        )
        reply = await asyncio.wait_for(client.workspace_execute_command_async(params), WAIT_S)
        messages = [m.message for m in client.messages]
    finally:
        await asyncio.wait_for(client.shutdown_session(), WAIT_S)
        await client.stop()

    assert reply["status"] == "done", reply
    assert reply["written"] is False
    assert "no workspace folder is open" in reply["reason"]
    assert reply["taskId"] in reply["markdown"] and "lines 6–8" in reply["markdown"]
    assert not (workspace / ".tierhost").exists()
    assert not client.shown_documents
    (message,) = [m for m in messages if "was not written to a file" in m]
    assert "no workspace folder is open" in message and reply["taskId"] in message
    assert host_task(lsp_daemon, reply["taskId"])["status"] == "done"
