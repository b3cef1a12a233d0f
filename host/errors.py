"""JSON errors: `{"error": {"type", "message"}}` with a status that says whose fault it is."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MAX_BODY_BYTES = 32 * 1024 * 1024


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


def error_response(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": kind, "message": message}}, status_code=status, headers=headers
    )


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or an ApiError that says what is wrong."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(
            413, "request_too_large", f"the body is {declared} bytes; the limit is {MAX_BODY_BYTES}"
        )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(
                413, "request_too_large", f"the body is over the {MAX_BODY_BYTES}-byte limit"
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise ApiError(400, "invalid_request", "the request has no body; send a JSON object")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(
            400, "invalid_request", f"the body must be a JSON object, not {type(body).__name__}"
        )
    request.state.raw_body = raw
    return body


ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_model(request: Request, model: type[ModelT]) -> ModelT:
    """The body validated as `model`, or a 422 naming the first field that is wrong."""
    body = await read_json_object(request)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        elif first["type"] == "missing":
            message = "required field is missing"
        raise ApiError(422, "invalid_request", f"{where}: {message}") from None


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.kind, exc.message, exc.headers)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed"}
    message = {
        404: f"no such endpoint: {request.method} {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, kinds.get(exc.status_code, "http_error"), message)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    return error_response(
        500, "internal_error", f"the host hit an unexpected error: {type(exc).__name__}: {exc}"
    )
