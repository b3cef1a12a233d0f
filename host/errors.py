"""JSON errors and hostile-proof request reading.

Every error is `{"error": {"type", "message"}}` with a status that says whose fault it
is. Bodies and query parameters are read here, once for every endpoint, so that no
request can make the host spend unbounded time or memory, or answer 500: a body over
the size limit is a 413, JSON nested too deeply or with huge integers is a 400 that
names the limit, and a 500 means a real bug, logged with the request's id.

The same kind of bad input gets the same status on every endpoint (`/v1` and `/api`):

- 400 `invalid_json`: not UTF-8, not JSON, nested too deeply, integers too long;
- 400 `invalid_request` (or a more exact kind): JSON whose fields or query parameters
  are missing, unknown, of the wrong shape or out of range, or name a task type, mode
  or device that does not exist (OpenAI's clients expect 400 for a bad field);
- 404: a model or tier (`model_not_found`, `unknown_model`, `unknown_tier`) or a task
  that does not exist, as OpenAI answers an unknown model;
- 413 too large, 415 not JSON, 401/403/421 the guard's refusals, 429 and 503 for
  capacity, never for input.

On Anthropic's Messages API (`/v1/messages…`) the same errors come in Anthropic's shape,
`{"type": "error", "error": {"type": "not_found_error", "message"}}`, the type said by the
status (`anthropic_type`), so Anthropic's SDKs raise their own classes for them.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Send

from host.json_text import json_kind
from host.offload import Offload

log = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True)
class BodyLimits:
    """What one request body may be; `host.max_body_mb` and friends in the config."""

    max_bytes: int = 8 * MIB
    max_depth: int = 64
    max_int_digits: int = 100

    def size_text(self) -> str:
        mib = self.max_bytes / MIB
        size = f"{mib:g} MiB" if mib >= 1 else f"{self.max_bytes} bytes"
        return f"{size} (`host.max_body_mb`)"


DEFAULT_LIMITS = BodyLimits()


class ApiError(Exception):
    """Raised anywhere in a handler; turned into a JSON error response."""

    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}

    def __reduce__(self) -> tuple[Any, ...]:
        """Raised in the offload worker, it must come back whole, not as `args`."""
        return (type(self), (self.status, self.kind, self.message, self.headers))


def error_response(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": kind, "message": message}}, status_code=status, headers=headers
    )


# -- Anthropic's shape -----------------------------------------------------------------

ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    """Anthropic's error type for an HTTP status: any other 4xx is the request's fault
    (`invalid_request_error`), any other 5xx the server's (`api_error`)."""
    found = ANTHROPIC_TYPES.get(status)
    if found is not None:
        return found
    return "invalid_request_error" if status < 500 else "api_error"


CONTEXT_PREFIX = "prompt is too long: "
"""How Anthropic words a prompt over the context window; Claude Code compacts the
conversation when an error's message starts so."""


def anthropic_error_body(status: int, message: str, code: object = None) -> dict[str, Any]:
    if code == "context_length_exceeded" and not message.startswith(CONTEXT_PREFIX):
        message = CONTEXT_PREFIX + message
    return {"type": "error", "error": {"type": anthropic_type(status), "message": message}}


def as_anthropic_error(status: int, payload: bytes) -> bytes | None:
    """An error body in OpenAI's (or llama-server's) shape, in Anthropic's; None when it
    is not one (already Anthropic's, not JSON, no `error` object)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or body.get("type") == "error":
        return None
    message = error.get("message")
    converted = anthropic_error_body(
        status, message if isinstance(message, str) else "", error.get("code")
    )
    return json.dumps(converted).encode()


def anthropic_errors(send: Send) -> Send:
    """`send`, with every JSON error response put in Anthropic's shape on the way out.

    One wrapper for the whole request, so every refusal (the guard's, a handler's, the
    proxy's, llama-server's own 4xx) reads the same to an Anthropic client; an answer
    that is not an error passes with one status check."""
    start: Message | None = None
    held = bytearray()

    async def converting(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            headers = message.get("headers", [])
            is_json = any(
                k.lower() == b"content-type" and v.startswith(b"application/json")
                for k, v in headers
            )
            if message["status"] >= 400 and is_json:
                start = message
                return
            await send(message)
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        held.extend(message.get("body", b""))
        if message.get("more_body", False):
            return
        status: int = start["status"]
        payload = as_anthropic_error(status, bytes(held)) or bytes(held)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({**start, "headers": headers})
        start = None
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    return converting


def shorten(text: str, limit: int = 80) -> str:
    """Client-supplied text quoted in an error, cut so an error never echoes megabytes."""
    quoted = repr(text)
    return quoted if len(quoted) <= limit else quoted[: limit - 3] + "..."


# -- request ids -----------------------------------------------------------------------


def new_request_id() -> str:
    return secrets.token_hex(8)


def request_id_of(request: Request) -> str:
    """The id the guard gave this request (one is made up if it never passed the guard)."""
    request_id = getattr(request.state, "request_id", None)
    return request_id if isinstance(request_id, str) else new_request_id()


# -- bodies ----------------------------------------------------------------------------

_ASCII_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def declared_length(value: str | None) -> int | None:
    """A Content-Length header as a number; `str.isdigit` would accept '²', so ASCII only."""
    if value is None:
        return None
    if not _ASCII_DIGITS.fullmatch(value) or len(value) > 18:
        raise ApiError(
            400,
            "invalid_request",
            f"Content-Length must be a number of bytes, not {shorten(value)}",
        )
    return int(value)


def too_large(limits: BodyLimits, size: int | None = None) -> ApiError:
    what = f"the body is {size} bytes" if size is not None else "the body is larger than that"
    return ApiError(413, "request_too_large", f"{what}; the limit is {limits.size_text()}")


def body_limits_of(request: Request) -> BodyLimits:
    limits = getattr(request.state, "body_limits", None)
    return limits if isinstance(limits, BodyLimits) else DEFAULT_LIMITS


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or an ApiError that says what is wrong.

    A big body is parsed in the offload worker (`host.offload`), so parsing it does not
    hold up other clients."""
    raw = await read_body(request)
    limits = body_limits_of(request)
    offload = offload_of(request)
    if offload is None:
        return parse_json_object(raw, limits)
    return await offload.run(len(raw), parse_json_object, raw, limits)


async def read_body(request: Request) -> bytes:
    """The request body, never more than the limit, never empty; kept on
    `request.state.raw_body` for whoever sends it on."""
    limits = body_limits_of(request)
    declared = declared_length(request.headers.get("content-length"))
    if declared is not None and declared > limits.max_bytes:
        raise too_large(limits, declared)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_bytes:
            raise too_large(limits)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise ApiError(400, "invalid_request", "the request has no body; send a JSON object")
    request.state.raw_body = raw
    return raw


async def receive_up_to_limit(receive: Receive, limits: BodyLimits) -> bytes | None:
    """Every chunk of an ASGI request body, refused (413) as soon as they pass the limit;
    None when the client disconnects first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limits.max_bytes:
            raise too_large(limits)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def receive_body(receive: Receive, limits: BodyLimits) -> bytes | None:
    """`read_body` for a bare ASGI endpoint (the proxy's, which makes no Request): the
    body, never more than the limit, never empty; None when the client left first.

    The guard has already refused a declared length over the limit and read a chunked
    body up to it, so this is the limit's second line, not its first."""
    raw = await receive_up_to_limit(receive, limits)
    if raw is None:
        return None
    if len(raw) > limits.max_bytes:
        raise too_large(limits, len(raw))
    if not raw:
        raise ApiError(400, "invalid_request", "the request has no body; send a JSON object")
    return raw


def offload_of(request: Request) -> Offload | None:
    """The daemon's offload worker, which the guard puts on every request's state."""
    offload = getattr(request.state, "offload", None)
    return offload if isinstance(offload, Offload) else None


def parse_json_object(raw: bytes, limits: BodyLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Strict JSON (UTF-8, no NaN, bounded depth and integers) that must be an object.

    The nesting depth is measured before parsing, in time linear in the body, so a body
    nested thousands deep never reaches the recursive parser.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, "invalid_json", f"the body is not UTF-8 (bad byte at offset {exc.start})"
        ) from None
    if nesting_exceeds(raw, limits.max_depth):
        raise ApiError(
            400,
            "invalid_json",
            f"the JSON is nested deeper than {limits.max_depth} levels, the limit "
            "(`host.max_json_depth`)",
        )
    try:
        body = json.loads(
            text,
            parse_int=lambda digits: _bounded_int(digits, limits.max_int_digits),
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # unreachable after the depth check; kept as the last line
        raise ApiError(400, "invalid_json", "the JSON is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(
            400, "invalid_request", f"the body must be a JSON object, not {json_kind(body)}"
        )
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(body):
        raise ApiError(
            400,
            "invalid_json",
            "the body has a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not text",
        )
    return body


def _bounded_int(digits: str, limit: int) -> int:
    if len(digits.lstrip("-")) > limit:
        _refuse_number(
            f"a JSON integer has {len(digits.lstrip('-'))} digits; the limit is {limit} "
            "(`host.max_int_digits`)"
        )
    return int(digits)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _refuse_number(f"the number {shorten(text, 40)} is out of range")
    return value


def _no_constant(name: str) -> NoReturn:
    _refuse_number(f"{name} is not JSON; send numbers only")


def _refuse_number(message: str) -> NoReturn:
    raise ApiError(400, "invalid_json", message)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(body: Any) -> bool:
    """True when decoded strings hold unpaired surrogates (they cannot be stored as UTF-8)."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_TO_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_RUNS = re.compile(rb"\(+|\)+")
_LEAVES_FOR_A_PASS = 200_000


def nesting_exceeds(raw: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays and objects more than `limit` deep.

    Linear time with the heavy lifting in C: strings are cut out, the brackets left
    are reduced to `(` and `)`, and the depth is counted over runs of equal brackets.
    When there are very many leaves (`()`), C-speed passes remove them first: each pass
    removes exactly one level, so the depth is the levels removed plus what is left.
    For text that is not JSON the answer may be wrong, but the parser then refuses it.
    """
    brackets = _brackets_outside_strings(raw)
    removed = 0
    while brackets.count(b"()") > _LEAVES_FOR_A_PASS:
        brackets = brackets.replace(b"()", b"")
        removed += 1
        if removed > limit:
            return True
    depth = 0
    for run in _RUNS.finditer(brackets):
        length = run.end() - run.start()
        if brackets[run.start()] == ord("("):
            depth += length
            if depth + removed > limit:
                return True
        else:
            depth -= length
    return False


def _brackets_outside_strings(raw: bytes) -> bytes:
    # Escaped backslashes first, then escaped quotes: what remains of `"` delimits strings.
    plain = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = plain.translate(_TO_PARENS, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' not in kept:
        return kept
    return b"".join(kept.split(b'"')[0::2])


ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_model(request: Request, model: type[ModelT]) -> ModelT:
    """The body validated as `model`, or a 400 naming the first field that is wrong."""
    body = await read_json_object(request)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        if len(where) > 120:
            where = where[:117] + "..."
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        elif first["type"] == "missing":
            message = "required field is missing"
        raise ApiError(400, "invalid_request", f"{where}: {message}") from None


# -- query parameters ------------------------------------------------------------------


def query_text(request: Request, name: str) -> str | None:
    """A query parameter given at most once."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ApiError(
            400, "invalid_request", f"give the `{name}` parameter once, not {len(values)} times"
        )
    return values[0] if values else None


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high], or a 400 that says so."""
    raw = query_text(request, name)
    if raw is None:
        return default
    if not _ASCII_DIGITS.fullmatch(raw) or len(raw) > len(str(high)) or not low <= int(raw) <= high:
        raise ApiError(
            400,
            "invalid_request",
            f"{name} must be a whole number {low}..{high}, not {shorten(raw)}",
        )
    return int(raw)


# -- exception handlers ----------------------------------------------------------------


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.kind, exc.message, exc.headers)


async def on_worker_lost(request: Request, exc: Exception) -> Response:
    """The offload worker died on this body; the daemon did not, and other work goes on."""
    return error_response(503, "worker_lost", str(exc), {"Retry-After": "5"})


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed"}
    message = {
        404: f"no such endpoint: {request.method} {request.url.path[:200]}",
        405: f"{request.method} is not allowed on {request.url.path[:200]}",
    }.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, kinds.get(exc.status_code, "http_error"), message)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """A bug: the traceback goes to the log under the request id; the client gets the id,
    not the exception text (which may hold other people's data)."""
    request_id = request_id_of(request)
    log.error(
        "request %s: %s %r failed",
        request_id,
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return error_response(
        500,
        "internal_error",
        f"the host hit an unexpected error; its log has the details under request id {request_id}",
        {"X-Request-Id": request_id},
    )
