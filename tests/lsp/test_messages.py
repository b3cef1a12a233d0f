"""`lsp.messages`: each body that is not a JSON-RPC message gets the error JSON-RPC and
LSP name for it, and the lifecycle gate keeps LSP's order. Pure: no server."""

from __future__ import annotations

from typing import Any

import pytest
from lsprotocol import types
from lsprotocol.converters import get_converter
from pygls.exceptions import JsonRpcInvalidParams

from lsp import messages
from lsp.messages import Lifecycle, Message, Rejection


def verdict(value: Any) -> Message | Rejection:
    return messages.shape(value)


def test_a_request_a_notification_and_a_response() -> None:
    request = verdict({"jsonrpc": "2.0", "id": 1, "method": "shutdown"})
    assert request == Message(
        {"jsonrpc": "2.0", "id": 1, "method": "shutdown"}, "request", 1, "shutdown"
    )
    note = verdict({"jsonrpc": "2.0", "method": "exit", "params": []})
    assert isinstance(note, Message) and note.kind == "notification" and note.id is None
    response = verdict({"jsonrpc": "2.0", "id": "x", "result": None})
    assert isinstance(response, Message) and response.kind == "response"
    error = verdict({"jsonrpc": "2.0", "id": None, "error": {"code": 1, "message": "m"}})
    assert isinstance(error, Message) and error.kind == "response"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{", "not JSON: Expecting property name"),
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"\xc3\x28", "not UTF-8 (byte 0 is not)"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        (b'{"a": ' + b"1" * 5000 + b"}", "not JSON the bridge reads"),
        (b"[Infinity]", "Infinity is not JSON"),
        (b"[-Infinity]", "-Infinity is not JSON"),
    ],
)
def test_parse_errors_have_id_null(body: bytes, expected: str) -> None:
    rejection = messages.read(body)
    assert isinstance(rejection, Rejection)
    assert rejection.code == messages.PARSE_ERROR and rejection.id is None and rejection.answer
    assert expected in rejection.message
    assert rejection.response() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": rejection.message},
    }


@pytest.mark.parametrize(
    ("value", "msg_id", "answer", "expected"),
    [
        ([], None, True, "batch"),
        (7, None, True, "got a number"),
        (True, None, True, "got a boolean"),
        ({"id": 1, "method": "m"}, 1, True, "got none"),
        ({"jsonrpc": 2.0, "id": 1, "method": "m"}, 1, True, "got 2.0"),
        ({"jsonrpc": "2.0", "method": "m", "params": 3}, None, False, "params must be"),
        ({"jsonrpc": "2.0", "id": 2, "method": "m", "params": None}, 2, True, "got null"),
        ({"jsonrpc": "2.0", "id": True, "method": "m"}, None, True, "got a boolean"),
        ({"jsonrpc": "2.0", "id": [1], "method": "m"}, None, True, "got an array"),
        ({"jsonrpc": "2.0", "id": None, "method": "m"}, None, True, "got null"),
        ({"jsonrpc": "2.0", "id": 3, "method": None}, 3, True, "method must be a string"),
        ({"jsonrpc": "2.0", "method": ["m"]}, None, False, "method must be a string"),
        ({"jsonrpc": "2.0", "id": 4}, 4, True, "must have a method"),
        ({"jsonrpc": "2.0"}, None, True, "must have a method"),
        ({"jsonrpc": "2.0", "id": {}, "result": 1}, None, True, "a response's id"),
    ],
)
def test_invalid_requests(value: Any, msg_id: Any, answer: bool, expected: str) -> None:
    rejection = verdict(value)
    assert isinstance(rejection, Rejection), rejection
    assert rejection.code == messages.INVALID_REQUEST
    assert (rejection.id, rejection.answer) == (msg_id, answer)
    assert expected in rejection.message


def test_invalid_params_name_the_fields_as_lsp_does() -> None:
    data = {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "textDocument/codeAction",
        "params": {"textDocument": {"uri": "file:///a.py"}, "range": {"start": 1}},
    }
    try:
        get_converter().structure(data, types.CodeActionRequest)
    except Exception as exc:
        try:
            raise JsonRpcInvalidParams() from exc  # as pygls raises it
        except JsonRpcInvalidParams as raised:
            error = raised
    message = verdict(data)
    assert isinstance(message, Message)
    rejection = messages.invalid_params(message, error)
    assert rejection.code == messages.INVALID_PARAMS and rejection.id == 5 and rejection.answer
    assert rejection.message.startswith("textDocument/codeAction: invalid params: ")
    assert "$.params.range.start" in rejection.message
    assert "$.params.context" in rejection.message
    assert "text_document" not in rejection.message


def test_invalid_params_of_a_notification_are_not_answered() -> None:
    message = verdict({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {}})
    assert isinstance(message, Message)
    assert not messages.invalid_params(message, ValueError("no")).answer


def request(method: str, msg_id: int = 1) -> Message:
    return Message({}, "request", msg_id, method)


def notification(method: str) -> Message:
    return Message({}, "notification", None, method)


def test_the_lifecycle_initialize_first() -> None:
    gate = Lifecycle()
    early = gate.admit(request("workspace/executeCommand", 3))
    assert early is not None and early.code == messages.SERVER_NOT_INITIALIZED and early.id == 3
    dropped = gate.admit(notification("textDocument/didOpen"))
    assert dropped is not None and not dropped.answer
    assert gate.admit(notification("exit")) is None  # exit is always heard
    assert gate.admit(request("initialize")) is None
    gate.passed(request("initialize"))
    assert gate.admit(request("workspace/executeCommand")) is None
    again = gate.admit(request("initialize", 4))
    assert again is not None and again.code == messages.INVALID_REQUEST and "once" in again.message


def test_the_lifecycle_nothing_but_exit_after_shutdown() -> None:
    gate = Lifecycle(initialized=True)
    gate.passed(request("shutdown"))
    late = gate.admit(request("workspace/executeCommand", 8))
    assert late is not None and late.code == messages.INVALID_REQUEST and late.id == 8
    assert "shutting down" in late.message
    note = gate.admit(notification("textDocument/didChange"))
    assert note is not None and not note.answer
    assert gate.admit(notification("exit")) is None
    assert gate.admit(Message({}, "response", 1)) is None  # answers to the bridge's requests


def test_a_failed_initialize_does_not_count() -> None:
    """`passed` is called only for what pygls took: an initialize refused for its params
    leaves the server uninitialized, and the client may send it again."""
    gate = Lifecycle()
    assert gate.admit(request("initialize")) is None
    assert not gate.initialized


def test_command_arguments_must_be_an_array() -> None:
    """lsprotocol would take an object's keys (or a string's characters) as arguments."""
    for arguments in ({"uri": "file:///a.py"}, "file:///a.py"):
        rejection = verdict(
            {
                "jsonrpc": "2.0",
                "id": 9,
                "method": "workspace/executeCommand",
                "params": {"command": "tierhost.plan", "arguments": arguments},
            }
        )
        assert isinstance(rejection, Rejection) and rejection.code == messages.INVALID_PARAMS
        assert "arguments must be an array" in rejection.message and rejection.id == 9
    fine = {"command": "tierhost.status"}
    assert isinstance(
        verdict({"jsonrpc": "2.0", "id": 1, "method": "workspace/executeCommand", "params": fine}),
        Message,
    )
