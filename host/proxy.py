"""The OpenAI-compatible endpoint: `/v1/*`, streamed through, waiting out swaps.

A request names a model or a tier; it waits in its device's queue until the model is
ready (joining a load already under way), then its body goes upstream and the answer
comes back chunk by chunk. A chat request is pinned to a KV slot (`id_slot`), which
host.kv_slots may first have restored from before a swap. A client that leaves while
queued leaves the queue; one that leaves mid-stream closes the upstream request, which
frees the slot.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from host.config import RemoteModel
from host.devices import Lease, ModelUnavailable, QueueFull, TooManyRequests, WaitTimedOut
from host.errors import ApiError, error_response, read_json_object
from host.kv_slots import Claim, SlotKeeper
from host.routing import Decision, RouteRequest, RoutingError, strip_force_big
from host.service import Host, RemoteLease, UnknownModel

_PASSED_RESPONSE_HEADERS = ("content-type", "cache-control")


class _ClientLeft(Exception):
    pass


class UpstreamStream(StreamingResponse):
    """Streams an upstream response and always closes it and frees the lease after."""

    def __init__(
        self,
        upstream: httpx.Response,
        lease: Lease | RemoteLease,
        model: str,
        log_hint: str,
        headers: dict[str, str],
        on_end: Callable[[dict[str, Any] | None, bool], None],
    ) -> None:
        self._upstream = upstream
        self._lease = lease
        self._model = model
        self._log_hint = log_hint
        self._on_end = on_end
        self._tail: collections.deque[bytes] = collections.deque(maxlen=_TAIL_CHUNKS)
        self._torn = False
        super().__init__(
            self._relay(),
            status_code=upstream.status_code,
            headers=headers,
            media_type=upstream.headers.get("content-type", "text/event-stream"),
        )

    async def _relay(self) -> Any:
        at_event_boundary = True
        try:
            async for chunk in self._upstream.aiter_raw():
                at_event_boundary = chunk.endswith(b"\n\n")
                self._tail.append(chunk)  # no copy per chunk: joined once at the end
                yield chunk
        except httpx.TransportError as exc:
            self._torn = True
            if not at_event_boundary:
                yield b"\n\n"  # end the torn event so the error event parses on its own
            error = {
                "error": {
                    "type": "upstream_failed",
                    "message": f"model {self._model} stopped answering mid-stream "
                    f"({type(exc).__name__}){self._log_hint}; it is restarted on the next "
                    "request",
                }
            }
            yield f"data: {json.dumps(error)}\n\n".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._upstream.aclose()
            timings = None if self._torn else _timings_in_stream(b"".join(self._tail))
            self._on_end(timings, timings is not None)
            self._lease.release()


_TAIL_CHUNKS = 16
"""Enough of a stream's last chunks to hold its last event, where llama-server puts
`timings` (that event and `[DONE]` usually come in one or two chunks)."""


@dataclass
class SlotUse:
    """A KV slot claimed for one chat request; `finish` tells the keeper how it went."""

    keeper: SlotKeeper
    claim: Claim
    messages: list[dict[str, Any]]

    def finish(self, answered: bool, timings: dict[str, Any] | None) -> int:
        """Hand the slot back; the number of prompt tokens a restore saved, else 0."""
        if not answered:
            self.keeper.abandon(self.claim)
            return 0
        self.keeper.release(self.claim, self.messages, timings)
        if self.claim.restored is None:
            return 0
        return int((timings or {}).get("cache_n", 0))


async def _claim_slot(host: Host, model: str, lease: Lease, body: dict[str, Any]) -> SlotUse | None:
    """Pin the request to a slot (restoring a saved one it continues), unless the client
    chose a slot itself or the model keeps no slots."""
    keeper = host.slot_keepers.get(model)
    messages = body.get("messages")
    if keeper is None or "id_slot" in body or not isinstance(messages, list):
        return None
    if not all(isinstance(m, dict) for m in messages):
        return None
    claim = await keeper.claim(lease.model.http, lease.base_url, messages)
    return SlotUse(keeper, claim, messages) if claim is not None else None


def _timings_in_body(payload: bytes) -> dict[str, Any] | None:
    try:
        timings = json.loads(payload).get("timings")
    except (ValueError, AttributeError):
        return None
    return timings if isinstance(timings, dict) else None


def _timings_in_stream(tail: bytes) -> dict[str, Any] | None:
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data: {") and b'"timings"' in line:
            return _timings_in_body(line[6:])
    return None


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _forced(request: Request) -> bool:
    return request.headers.get("x-force-big", "").strip().lower() in ("true", "1", "yes")


async def _acquire(host: Host, request: Request, model: str, forced: bool) -> Lease:
    """Wait for the model, giving up as soon as the client disconnects."""
    arbiter = host.arbiter_for(model)
    if not arbiter.permits(model, forced):
        # An OpenAI client cannot sit in a queue until the owner stops gaming: say why now.
        raise ModelUnavailable(f"model {model} is held back: {arbiter.mode_reason}")
    lease = arbiter.try_acquire_now(model, forced)
    if lease is not None:
        return lease
    acquiring = asyncio.ensure_future(host.acquire(model, forced=forced))
    disconnected = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({acquiring, disconnected}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not acquiring.done():
            acquiring.cancel()
            await asyncio.gather(acquiring, return_exceptions=True)
        disconnected.cancel()
    if acquiring.cancelled():
        raise _ClientLeft()
    return acquiring.result()


def _headers(host: Host, model: str, waited_s: float) -> dict[str, str]:
    return {
        "X-Tierhost-Model": model,
        "X-Tierhost-Tier": host.config.tier_of(model) or "",
        "X-Tierhost-Wait-Ms": f"{waited_s * 1000:.1f}",
    }


async def _forward(request: Request, path: str) -> Response:
    host: Host = request.app.state.host
    body = await read_json_object(request)
    requested = body.get("model")
    if not isinstance(requested, str) or not requested:
        raise ApiError(
            400,
            "invalid_request",
            "the request needs a `model`: one of " + ", ".join(host.known_names()),
        )
    forced = _forced(request)
    if b"#force_big" in request.state.raw_body.lower():
        body, tagged = _strip_tag(body)
        forced = forced or tagged
        request.state.raw_body = json.dumps(body).encode()
    model, decision = _route(host, request, body, requested, forced)

    began = time.monotonic()
    config = host.config.models[model]
    lease: Lease | RemoteLease
    content: bytes = request.state.raw_body
    send_headers = {
        "content-type": "application/json",
        "accept": request.headers.get("accept", "*/*"),
    }
    log_hint = ""
    try:
        if isinstance(config, RemoteModel):
            lease = host.acquire_remote(model)
            url = config.base_url + path.removeprefix("/v1")
            content = json.dumps({**body, "model": config.remote_model or model}).encode()
            if config.api_key_env:
                key = os.environ.get(config.api_key_env, "")
                send_headers["authorization"] = f"Bearer {key}"
        else:
            lease = await _acquire(host, request, model, forced or decision.force_big)
            url = lease.base_url + path
            log_hint = f" (log: {lease.model.spec.log_path})"
    except TooManyRequests as exc:
        raise ApiError(429, "rate_limited", str(exc), {"Retry-After": "1"}) from None
    except QueueFull as exc:
        raise ApiError(503, "queue_full", str(exc), {"Retry-After": "5"}) from None
    except (ModelUnavailable, WaitTimedOut) as exc:
        raise ApiError(503, "model_unavailable", str(exc)) from None
    except _ClientLeft:
        return Response(status_code=499)

    headers = _headers(host, model, time.monotonic() - began)
    if decision.type is not None and requested in ("auto", "big"):
        headers["X-Tierhost-Task-Type"] = decision.type
    http = lease.model.http if isinstance(lease, Lease) else host.http
    slot_use = None
    if isinstance(lease, Lease) and path == "/v1/chat/completions":
        slot_use = await _claim_slot(host, model, lease, body)
        if slot_use is not None:
            content = json.dumps({**body, "id_slot": slot_use.claim.slot}).encode()
    waited_s = time.monotonic() - began

    def on_end(timings: dict[str, Any] | None, answered: bool) -> None:
        """Every request's end, whatever its path: metrics, and the slot's new content."""
        host.metrics.observe_request(model, timings, waited_s)
        if slot_use is not None:
            restored = slot_use.finish(answered, timings)
            if restored:
                host.metrics.kv_restores_total.labels(model=model).inc()
                host.metrics.kv_tokens_saved_total.labels(model=model).inc(restored)

    try:
        upstream = await _send_once_more_if_dropped(
            http, http.build_request("POST", url, content=content, headers=send_headers)
        )
    except httpx.TransportError as exc:
        on_end(None, False)
        lease.release()
        return error_response(
            502,
            "upstream_failed",
            f"model {model} did not answer ({type(exc).__name__}){log_hint}",
            headers,
        )

    if body.get("stream") and upstream.headers.get("content-type", "").startswith(
        "text/event-stream"
    ):
        return UpstreamStream(upstream, lease, model, log_hint, headers, on_end)
    try:
        payload = await upstream.aread()
    except httpx.TransportError as exc:
        on_end(None, False)
        return error_response(
            502,
            "upstream_failed",
            f"model {model} stopped answering ({type(exc).__name__})"
            f"{log_hint}; it is restarted on the next request",
            headers,
        )
    finally:
        await upstream.aclose()
        lease.release()
    timings = _timings_in_body(payload) if upstream.status_code == 200 else None
    on_end(timings, upstream.status_code == 200)
    for name in _PASSED_RESPONSE_HEADERS:
        if name in upstream.headers:
            headers[name] = upstream.headers[name]
    return Response(payload, status_code=upstream.status_code, headers=headers)


def _prompt_text(body: dict[str, Any]) -> str:
    """The text a request carries, for type inference and size estimates."""
    parts: list[str] = []
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt)
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p, dict) and "text" in p)
    return "\n".join(parts)


def _strip_tag(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Remove `#force_big` from the prompt and messages before the model sees them."""
    found = False

    def clean(text: str) -> str:
        nonlocal found
        stripped, tagged = strip_force_big(text)
        found = found or tagged
        return stripped

    body = dict(body)
    if isinstance(body.get("prompt"), str):
        body["prompt"] = clean(body["prompt"])
    messages = []
    for message in body.get("messages") or []:
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            message = {**message, "content": clean(message["content"])}
        messages.append(message)
    if "messages" in body:
        body["messages"] = messages
    return body, found


def _route(
    host: Host, request: Request, body: dict[str, Any], requested: str, forced: bool
) -> tuple[str, Decision]:
    """A model name goes straight there; a tier, `auto` or `big` goes through the policy."""
    task_type = request.headers.get("x-task-type") or None
    if requested in host.config.models and task_type is None:
        return requested, Decision(
            type=None,
            tier=host.config.tier_of(requested) or "",
            model=requested,
            device=None,
            reasons=("model named by the request",),
            prompt="",
            force_big=forced,
        )
    known = {*host.config.tiers, *host.config.models, "auto", "big"}
    if requested not in known:
        raise ApiError(404, "model_not_found", str(UnknownModel(requested, host.known_names())))
    try:
        decision = host.decide(
            RouteRequest(
                prompt=_prompt_text(body),
                type=task_type,
                model=requested,
                force_big=forced,
            )
        )
    except RoutingError as exc:
        raise ApiError(exc.status, exc.kind, exc.message) from None
    if decision.wait_reason and not decision.force_big:
        raise ApiError(
            503, "model_unavailable", f"{decision.model} is held back: {decision.wait_reason}"
        )
    return decision.model, decision


async def _send_once_more_if_dropped(
    http: httpx.AsyncClient, upstream_request: httpx.Request
) -> httpx.Response:
    """Send, and send again once if a pooled connection was closed before any reply:
    the server never read the request, so a second try cannot duplicate work."""
    try:
        return await http.send(upstream_request, stream=True)
    except (httpx.RemoteProtocolError, httpx.ConnectError):
        return await http.send(upstream_request, stream=True)


async def chat_completions(request: Request) -> Response:
    return await _forward(request, "/v1/chat/completions")


async def completions(request: Request) -> Response:
    return await _forward(request, "/v1/completions")


async def list_models(request: Request) -> Response:
    host: Host = request.app.state.host
    created = int(host.started_at)
    data: list[dict[str, Any]] = []
    for name, model in host.config.models.items():
        data.append(
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "tierhost",
                "tierhost": {
                    "kind": model.kind,
                    "tier": host.config.tier_of(name),
                    "device": getattr(model, "device", None),
                },
            }
        )
    for name, tier in host.config.tiers.items():
        data.append(
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "tierhost",
                "tierhost": {"kind": "tier", "models": list(tier.models)},
            }
        )
    return JSONResponse({"object": "list", "data": data})


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
]
