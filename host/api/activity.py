"""The ASGI layer of the activity log (`host.activity`): times each request, reads its
status, its `X-Tierhost-*` headers and a refusal's message, and hands the record over."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from host.activity import (
    ERROR_BODY_BYTES,
    Activity,
    RequestLog,
    error_message,
    note_of,
    text,
    worth_keeping,
)


@dataclass
class _Exchange:
    started: float
    at: float
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    error_body: bytearray = field(default_factory=bytearray)


class ActivityRecorder:
    """ASGI middleware: records each HTTP request once its answer is sent (or fails)."""

    def __init__(self, app: ASGIApp, log: RequestLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(time.monotonic(), time.time())
        note_of(scope)
        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            self._record(scope, exchange, status)

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = int(message["status"])
                exchange.headers = {
                    k.lower(): v
                    for k, v in message.get("headers", [])
                    if k.lower().startswith(b"x-tierhost-")
                }
            elif message["type"] == "http.response.body":
                if exchange.status >= 400 and len(exchange.error_body) < ERROR_BODY_BYTES:
                    exchange.error_body += message.get("body", b"")[:ERROR_BODY_BYTES]
                if not message.get("more_body", False):
                    record(exchange.status)
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except BaseException:
            record(exchange.status or 500)
            raise
        record(exchange.status or 499)  # no answer: the client left first

    def _record(self, scope: Scope, exchange: _Exchange, status: int) -> None:
        method, path = str(scope.get("method", "")), str(scope.get("path", ""))
        served = exchange.headers.get(b"x-tierhost-model")
        model = served.decode("latin-1") if served else None
        self.log.counted(model, status)
        if not worth_keeping(method, path, status):
            return
        headers = dict(scope.get("headers") or [])
        wait = exchange.headers.get(b"x-tierhost-wait-ms")
        client = scope.get("client")
        self.log.add(
            Activity(
                at=exchange.at,
                method=method,
                path=text(path) or "",
                status=status,
                duration_ms=round((time.monotonic() - exchange.started) * 1000, 1),
                client=str(client[0]) if client else None,
                agent=text(headers.get(b"user-agent")),
                asked=None,
                model=model,
                tier=text(exchange.headers.get(b"x-tierhost-tier")) or None,
                wait_ms=_float(wait),
                prompt_tokens=None,
                completion_tokens=None,
                tokens_per_s=None,
                error=error_message(bytes(exchange.error_body)) if status >= 400 else None,
            ),
            note_of(scope),
        )


def _float(raw: bytes | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None
