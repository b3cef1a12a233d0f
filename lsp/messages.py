"""What a frame's body must be before pygls sees it, and the JSON-RPC error for each
way it is not. Pure: bytes and a little lifecycle state in, a verdict out.

pygls answers an unknown method (-32601) and a command it does not know (-32602), but a
body that is not JSON, not an object, not JSON-RPC 2.0, or whose params do not fit the
method is logged and dropped: the client waits for an answer that never comes. Here each
of those gets its answer — JSON-RPC 2.0 and LSP say which code:

- -32700 parse error (id null): not UTF-8, not JSON, nested too deeply, a number too long;
- -32600 invalid request: not an object, a batch, no `jsonrpc: "2.0"`, an id that is not
  an integer or a string, a method that is not a string, params that are neither an
  object nor an array, a request after `shutdown`, `initialize` twice;
- -32002 server not initialized: a request before `initialize`;
- -32602 invalid params: params that do not fit the method (raised when pygls structures
  them; `invalid_params()` words the answer), and command arguments that are not an
  array (lsprotocol would quietly take an object's keys as the arguments).

A notification is never answered (JSON-RPC forbids it): a bad one is dropped, and the
verdict says so, so the caller can log it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from cattrs import transform_error
from cattrs.errors import BaseValidationError

from host.json_text import json_kind

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
SERVER_NOT_INITIALIZED = -32002

_ARRAYS = {"workspace/executeCommand": "arguments"}
"""Params that must be arrays where lsprotocol's converter would take any iterable (an
object's keys, a string's characters) as one."""

Id = int | str | None
Kind = Literal["request", "notification", "response"]


@dataclass(frozen=True)
class Message:
    """A body that is a JSON-RPC 2.0 message in shape (its params are pygls's business)."""

    data: dict[str, Any]
    kind: Kind
    id: Id = None
    method: str | None = None


@dataclass(frozen=True)
class Rejection:
    """A body refused, the error that says why, and whether to answer it (never a
    notification)."""

    code: int
    message: str
    id: Id = None
    answer: bool = True

    def response(self) -> dict[str, Any]:
        return {
            "jsonrpc": "2.0",
            "id": self.id,
            "error": {"code": self.code, "message": self.message},
        }


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(body: bytes) -> Any | Rejection:
    """The JSON in a body, or the parse error that says what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(PARSE_ERROR, f"the message is not UTF-8 (byte {exc.start} is not)")
    if not text.strip():
        return Rejection(PARSE_ERROR, "the message is empty: a frame's body must be JSON")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        return Rejection(
            PARSE_ERROR, f"the message is not JSON: {exc.msg} at line {exc.lineno} col {exc.colno}"
        )
    except RecursionError:
        return Rejection(PARSE_ERROR, "the message is not JSON the bridge reads: nested too deeply")
    except ValueError as exc:  # NaN / Infinity, integers of thousands of digits
        return Rejection(PARSE_ERROR, f"the message is not JSON the bridge reads: {exc}")


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def shape(value: Any) -> Message | Rejection:
    """A decoded body as a request, a notification or a response, or why it is none."""
    if isinstance(value, list):
        return Rejection(
            INVALID_REQUEST,
            "a batch (a JSON array of messages) is not part of LSP: send each message "
            "in its own frame",
        )
    if not isinstance(value, dict):
        return Rejection(
            INVALID_REQUEST, f"a message must be a JSON object, got {json_kind(value)}"
        )
    raw_id = value.get("id")
    has_id = "id" in value
    id_: Id = raw_id if _valid_id(raw_id) else None
    method = value.get("method")
    is_notification = "method" in value and not has_id
    if value.get("jsonrpc") != "2.0":
        got = "none" if "jsonrpc" not in value else repr(value["jsonrpc"])
        return Rejection(
            INVALID_REQUEST,
            f'a message must carry "jsonrpc": "2.0", got {got}',
            id_,
            answer=not is_notification,
        )
    if "method" in value:
        if not isinstance(method, str):
            return Rejection(
                INVALID_REQUEST,
                f"method must be a string, got {json_kind(method)}",
                id_,
                answer=not is_notification,
            )
        if has_id and not _valid_id(raw_id):
            return Rejection(
                INVALID_REQUEST,
                f"a request's id must be an integer or a string, got {json_kind(raw_id)}",
            )
        params = value.get("params")
        if "params" in value and not isinstance(params, dict | list):
            return Rejection(
                INVALID_REQUEST,
                f"{method}: params must be an object or an array, got {json_kind(params)}",
                id_,
                answer=not is_notification,
            )
        kind: Kind = "notification" if is_notification else "request"
        listed = _ARRAYS.get(method)
        if listed and isinstance(params, dict) and not isinstance(params.get(listed), list | None):
            return Rejection(
                INVALID_PARAMS,
                f"{method}: invalid params: {listed} must be an array, "
                f"got {json_kind(params[listed])} @ $.params.{listed}",
                id_,
                answer=not is_notification,
            )
        return Message(value, kind, id_, method)
    if has_id and ("result" in value or "error" in value):
        if raw_id is not None and not _valid_id(raw_id):
            return Rejection(
                INVALID_REQUEST, "a response's id must be an integer, a string or null", None
            )
        return Message(value, "response", id_)
    return Rejection(
        INVALID_REQUEST,
        "a message must have a method (a request or a notification) or an id with a "
        "result or an error (a response)",
        id_,
    )


def read(body: bytes) -> Message | Rejection:
    """One frame's body, checked: `decode`, then `shape`."""
    value = decode(body)
    if isinstance(value, Rejection):
        return value
    return shape(value)


def _wire_names(reason: str) -> str:
    """cattrs names fields as lsprotocol's attributes (`text_document`); the client
    wrote them as LSP names them (`textDocument`)."""
    text, at, path = reason.rpartition(" @ ")
    if not at:
        return reason
    return f"{text} @ " + re.sub(r"_([a-z])", lambda m: m.group(1).upper(), path)


def invalid_params(message: Message, error: BaseException) -> Rejection:
    """The answer to params pygls could not structure: what cattrs found wrong, by path
    (`$.params.textDocument: required field missing`), else the error's own words."""
    cause = error.__cause__ or error
    if isinstance(cause, BaseValidationError):
        reasons = transform_error(cause, path="$")
    else:
        reasons = [str(cause) or type(cause).__name__]
    reasons = [_wire_names(reason) for reason in reasons]
    shown = "; ".join(reasons[:5]) + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")
    return Rejection(
        INVALID_PARAMS,
        f"{message.method}: invalid params: {shown}",
        message.id,
        answer=message.kind == "request",
    )


@dataclass
class Lifecycle:
    """LSP's order: `initialize` first, once; after `shutdown` only `exit`."""

    initialized: bool = False
    shutting_down: bool = False

    def admit(self, message: Message) -> Rejection | None:
        """None when the message may go to pygls now; else the answer (a notification's
        rejection is not answered)."""
        if message.kind == "response" or message.method == "exit":
            return None
        request = message.kind == "request"
        if self.shutting_down:
            return Rejection(
                INVALID_REQUEST,
                f"{message.method}: the server is shutting down (shutdown was received); "
                "only exit is accepted now",
                message.id,
                answer=request,
            )
        if not self.initialized:
            if request and message.method == "initialize":
                return None
            return Rejection(
                SERVER_NOT_INITIALIZED,
                f"{message.method}: the server is not initialized yet: send initialize first",
                message.id,
                answer=request,
            )
        if request and message.method == "initialize":
            return Rejection(
                INVALID_REQUEST, "initialize was already received: it is sent once", message.id
            )
        return None

    def passed(self, message: Message) -> None:
        """A message pygls took: note the lifecycle steps."""
        if message.kind != "request":
            return
        if message.method == "initialize":
            self.initialized = True
        elif message.method == "shutdown":
            self.shutting_down = True
