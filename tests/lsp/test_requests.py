"""Invalid requests, and documents the bridge must not read, through a real LSP client
(pytest-lsp, VS Code's capabilities) and `python -m lsp`: each gets a JSON-RPC error
that says what was wrong, and the bridge goes on serving.

No daemon runs: every refusal here happens before the bridge would call the host (a
request that got that far would fail with "no Tierhost daemon answers" instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

from tests.conftest import free_port
from tests.lsp.conftest import SOURCE, WAIT_S, open_editor, start_client

INVALID_REQUEST = types.ErrorCodes.InvalidRequest.value
INVALID_PARAMS = types.ErrorCodes.InvalidParams.value
METHOD_NOT_FOUND = types.ErrorCodes.MethodNotFound.value
NOT_INITIALIZED = types.ErrorCodes.ServerNotInitialized.value


def nowhere() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """`project/` (the workspace, with stats.py) and, beside it, a secret."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "stats.py").write_text(SOURCE)
    (tmp_path / "secret.txt").write_text("hunter2\n")
    return root


@pytest_asyncio.fixture
async def client(layout: Path) -> AsyncIterator[LanguageClient]:
    started, _, _ = await open_editor(nowhere(), layout)
    try:
        yield started
    finally:
        await asyncio.wait_for(started.shutdown_session(), WAIT_S)
        await started.stop()


async def fails(client: LanguageClient, method: str, params: Any) -> JsonRpcException:
    """Send `params` as they are (a hand-built JSON object, as a careless client would),
    and return the error the bridge answers with.

    The Python client structures params by method for methods LSP defines, and cannot
    send what does not fit: for this one request it sends them untyped."""
    protocol: Any = client.protocol
    protocol.get_message_type = lambda method: None
    try:
        future = asyncio.wrap_future(protocol.send_request(method, params))
    finally:
        del protocol.get_message_type
    with pytest.raises(JsonRpcException) as caught:
        await asyncio.wait_for(future, WAIT_S)
    assert "Traceback" not in caught.value.message
    return caught.value


async def still_serving(client: LanguageClient) -> None:
    params = types.ExecuteCommandParams(command="tierhost.cancel", arguments=[])
    reply = await asyncio.wait_for(client.workspace_execute_command_async(params), WAIT_S)
    assert reply == {"cancelled": []}


async def command(client: LanguageClient, name: str, *arguments: Any) -> JsonRpcException:
    params = types.ExecuteCommandParams(command=name, arguments=list(arguments))
    with pytest.raises(JsonRpcException) as caught:
        await asyncio.wait_for(client.workspace_execute_command_async(params), WAIT_S)
    return caught.value


# -- invalid requests ----------------------------------------------------------------


async def test_an_unknown_method_is_method_not_found(client: LanguageClient) -> None:
    error = await fails(client, "tierhost/launchMissiles", {"now": True})
    assert error.code == METHOD_NOT_FOUND and "tierhost/launchMissiles" in error.message
    await still_serving(client)


async def test_params_that_do_not_fit_the_method_are_invalid_params(
    client: LanguageClient,
) -> None:
    error = await fails(
        client, "textDocument/codeAction", {"textDocument": {"uri": "file:///a.py"}}
    )
    assert error.code == INVALID_PARAMS
    assert "textDocument/codeAction: invalid params" in error.message
    assert "$.params.range" in error.message and "$.params.context" in error.message
    await still_serving(client)


async def test_command_arguments_that_are_not_an_array_are_invalid_params(
    client: LanguageClient,
) -> None:
    error = await fails(
        client, "workspace/executeCommand", {"command": "tierhost.plan", "arguments": {"u": 1}}
    )
    assert error.code == INVALID_PARAMS and "arguments must be an array" in error.message
    await still_serving(client)


async def test_an_unknown_command_is_invalid_params(client: LanguageClient) -> None:
    error = await command(client, "tierhost.launchMissiles")
    assert error.code == INVALID_PARAMS and "tierhost.launchMissiles" in error.message


async def test_a_request_before_initialize_is_not_initialized(tmp_path: Path) -> None:
    client, _ = await start_client(nowhere())
    try:
        error = await fails(
            client,
            "workspace/executeCommand",
            {"command": "tierhost.status", "arguments": []},
        )
        assert error.code == NOT_INITIALIZED and "send initialize first" in error.message
    finally:
        client.exit(None)
        await client.stop()


async def test_a_request_after_shutdown_is_an_invalid_request(layout: Path) -> None:
    client, _, _ = await open_editor(nowhere(), layout)
    try:
        await asyncio.wait_for(client.shutdown_async(None), WAIT_S)
        error = await fails(
            client, "workspace/executeCommand", {"command": "tierhost.status", "arguments": []}
        )
        assert error.code == INVALID_REQUEST and "shutting down" in error.message
    finally:
        client.exit(None)
        await client.stop()


async def test_initialize_twice_is_an_invalid_request(client: LanguageClient) -> None:
    error = await fails(client, "initialize", {"processId": None, "capabilities": {}})
    assert error.code == INVALID_REQUEST and "once" in error.message
    await still_serving(client)


# -- documents the bridge must not read ----------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "file:///etc/passwd",
        "{root}/../secret.txt",
        "{root}/%2e%2e/secret.txt",
        "{root}/%2E%2E%2Fsecret.txt",
    ],
)
async def test_a_file_outside_the_workspace_is_refused(
    client: LanguageClient, layout: Path, target: str
) -> None:
    uri = target.format(root=layout.as_uri())
    error = await command(client, "tierhost.plan", uri)
    assert error.code == INVALID_PARAMS
    assert "outside every workspace folder" in error.message
    assert "hunter2" not in error.message


async def test_a_symlink_out_of_the_workspace_is_refused(
    client: LanguageClient, layout: Path
) -> None:
    (layout / "notes.txt").symlink_to(layout.parent / "secret.txt")
    error = await command(client, "tierhost.review", (layout / "notes.txt").as_uri())
    assert error.code == INVALID_PARAMS and "outside every workspace folder" in error.message


async def test_an_open_file_outside_the_workspace_is_refused(
    client: LanguageClient, layout: Path
) -> None:
    uri = (layout.parent / "secret.txt").as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="plaintext", version=1, text="hunter2\n"
            )
        )
    )
    error = await command(client, "tierhost.plan", uri)
    assert error.code == INVALID_PARAMS and "outside every workspace folder" in error.message


async def test_an_untitled_document_not_open_is_refused(client: LanguageClient) -> None:
    error = await command(client, "tierhost.plan", "untitled:Untitled-1")
    assert error.code == INVALID_PARAMS and "not open in the editor" in error.message


async def test_a_missing_file_in_the_workspace_says_so(
    client: LanguageClient, layout: Path
) -> None:
    error = await command(client, "tierhost.explain", (layout / "gone.py").as_uri())
    assert error.code == INVALID_PARAMS and "missing on disk" in error.message


async def test_a_file_inside_gets_as_far_as_the_host(client: LanguageClient, layout: Path) -> None:
    """The control: the same command on a file in the workspace passes every check and
    fails only because no daemon answers."""
    error = await command(client, "tierhost.plan", (layout / "stats.py").as_uri())
    assert error.code == types.LSPErrorCodes.RequestFailed.value
    assert "no Tierhost daemon answers" in error.message


async def test_without_a_workspace_folder_no_file_is_read_from_disk(layout: Path) -> None:
    client, _, _ = await open_editor(nowhere(), None)
    try:
        error = await command(client, "tierhost.plan", (layout / "stats.py").as_uri())
        assert error.code == INVALID_PARAMS and "no workspace folder is open" in error.message
    finally:
        await asyncio.wait_for(client.shutdown_session(), WAIT_S)
        await client.stop()
