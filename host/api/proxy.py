"""The OpenAI-compatible endpoint and Anthropic's Messages API: `/v1/*`, streamed
through, waiting out swaps.

A request names a model or a tier; it waits in its device's queue until the model is
ready (joining a load already under way), then its body goes upstream and the answer
comes back chunk by chunk. A chat request is pinned to a KV slot (`id_slot`), which
host.models.kv_slots may first have restored from before a swap.

Nobody is served who is not listening: a client that leaves while queued leaves the
queue; one that leaves while its answer is generated (streamed or not) closes the
upstream request, which makes llama-server stop generating and free the slot, so an
abandoned request never holds a model that another client needs swapped in. llama-server
stops only a *stream* whose reader left (a plain request it finishes for nobody), so a
plain request to a managed model goes upstream as a stream and its answer is put back
together here (`host.api.assembly`). When the daemon stops, requests get a short drain window
(`Shutdown`) and then end with an error.

Bodies are checked before anything reads them (`host.api.openai_body`): a field of the wrong
shape is a 400 naming it. A prompt too long for every model that could serve it is
OpenAI's 400 `context_length_exceeded`, whether the router (`host.core.routing`, which
counts with the model's own tokenizer when it is resident) or llama-server refuses it.

This is the daemon's hot path, and it is kept lean: the proxy adds at most a millisecond
to a request that does not swap (on the 2-core demo box; `bench/swap.py` measures it).
So the two endpoints are bare ASGI apps (no Request object, no Response objects on the
way that every request takes), a managed model is reached through `host.models.upstream`
(not httpx, which cost more than everything else here together), and one task per
request watches for the client leaving while the host's stopping is a callback: the
upstream read itself is interrupted, with no task or wait per chunk. A remote model
(another box) is reached with httpx, as before.

Anthropic's `/v1/messages` and `/v1/messages/count_tokens` take the very same path, the
endpoint a parameter of it: llama-server serves both itself, so only the naming of
models (`host.api.claude_models`), the body's checks (`host.api.messages_body`) and the
shape of errors (`host.errors.anthropic_errors`, and `event: error` in a stream) differ.

The pass-through endpoints (`host.api.passthrough_body`: embeddings, speech,
transcriptions, images, rerank) take it too, for any server the host runs (a command
model: vLLM, whisper.cpp, a TTS server) or a remote: routed by their `model` (a JSON
field, or a multipart form field), leased, queued and swapped in like chat, their body
sent as it came with its own content type, their answer (JSON, audio, an image) passed
back as it is with the `X-Tierhost-*` headers. No slot, no stream assembly, no timings.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from host.activity import Note, note_of, note_timings
from host.api import claude_models
from host.api.assembly import as_stream, assembled_body, missing_start
from host.api.messages_body import COUNT_TOKENS_PATH, MESSAGES_PATH, MESSAGES_PATHS
from host.api.openai_body import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    Prepared,
    decide_for_proxy,
    encode,
    prepare,
)
from host.api.passthrough_body import (
    EMBEDDINGS_PATH,
    IMAGES_PATH,
    PASSTHROUGH_PATHS,
    RERANK_PATH,
    SPEECH_PATH,
    TRANSCRIPTIONS_PATH,
    is_multipart,
    prepare_passthrough,
)
from host.core.routing import Decision, RouteRequest, RoutingError
from host.daemon import Host, UnknownModel
from host.errors import (
    DEFAULT_LIMITS,
    ApiError,
    BodyLimits,
    anthropic_error_body,
    as_anthropic_error,
    error_response,
    receive_body,
    shorten,
)
from host.models.arbiter import ModelUnavailable, QueueFull, TooManyRequests, WaitTimedOut
from host.models.kv_slots import Claim, SlotKeeper
from host.models.leases import ModelLease
from host.models.upstream import Upstream, UpstreamError, UpstreamResponse
from host.offload import Offload

log = logging.getLogger("tierhost.proxy")

T = TypeVar("T")

_PASSED_RESPONSE_HEADERS = ("content-type", "cache-control", "content-disposition")

JSON_TYPE = "application/json"

COUNT_FROM_CHARS = 4096
"""Prompts shorter than this are not worth a tokenizer round trip: at ~1,000 tokens no
sensible context window is at risk, and the estimate decides the same."""

COUNT_UP_TO_CHARS = 1024 * 1024
"""Longer prompts are not sent to a tokenizer (its answer alone would be megabytes); the
estimate decides, and llama-server's own check backs it up."""

TOKENIZE_TIMEOUT_S = 2.0
"""A tokenizer that does not answer this fast is skipped for the estimate."""

SHUTDOWN_RETRY_AFTER_S = "5"


class _Stopped(Exception):
    """The request ended before its answer: the client left, or the host is stopping."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why

    def response(self, headers: dict[str, str]) -> Response:
        if self.why == _CLIENT_LEFT:
            return Response(status_code=499)  # nobody reads it: nginx's "client closed"
        return _shutting_down(headers)


_CLIENT_LEFT = "client_left"
_SHUTDOWN = "shutdown"
# A remote is not ours to restart: what a client can do after its answer broke off.
_REMOTE_RETRY = (
    "retry: if its box is down, the next request fails over to the next model of its route"
)


def _shutting_down(headers: dict[str, str] | None = None) -> Response:
    return error_response(
        503,
        "shutting_down",
        "the host is shutting down; retry once it is back",
        {**(headers or {}), "Retry-After": SHUTDOWN_RETRY_AFTER_S},
    )


class Shutdown:
    """The daemon stopping, as the proxy sees it.

    `begin` (SIGTERM) sets `stopping`: requests still waiting for their model leave at
    once with a 503 (no model is loaded for a host that is going away). Requests being
    answered get `drain_s` to finish on their own; then `ending` is set and they end
    with an error (a 503 before any header went out, else an error event in the stream),
    so the HTTP server's graceful shutdown never waits on a generation that may run for
    minutes. A second `begin` (a second signal) sets `ending` at once.

    A request being answered hears of the ending through `on_ending`, a callback: one set
    for all of them, where a task per request waiting on the event cost every request.
    """

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.ending = asyncio.Event()
        self._on_ending: set[Callable[[], None]] = set()

    def begin(self, drain_s: float) -> None:
        if self.stopping.is_set():
            self._end()
            return
        self.stopping.set()
        asyncio.get_running_loop().call_later(max(0.0, drain_s), self._end)

    def on_ending(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the requests must end: at once if they must already."""
        if self.ending.is_set():
            callback()
        else:
            self._on_ending.add(callback)

    def forget(self, callback: Callable[[], None]) -> None:
        self._on_ending.discard(callback)

    def _end(self) -> None:
        if self.ending.is_set():
            return
        self.ending.set()
        callbacks, self._on_ending = self._on_ending, set()
        for callback in callbacks:
            callback()


def shutdown_of(app: Starlette) -> Shutdown:
    """The app's one Shutdown, created on first use (an app built without `serve` has one
    too, that simply never begins)."""
    shutdown = getattr(app.state, "proxy_shutdown", None)
    if not isinstance(shutdown, Shutdown):
        shutdown = Shutdown()
        app.state.proxy_shutdown = shutdown
    return shutdown


async def _unless(
    work: Coroutine[Any, Any, T], stops: dict[str, Callable[[], Awaitable[object]]]
) -> T:
    """`work`'s result, unless one of `stops` completes first: then `work` is cancelled
    (closing whatever upstream request it had open) and `_Stopped(name)` raised.

    For the waits off the hot path (a lease that must wait for its model) and for httpx
    (a remote model), whose reads can only be ended by cancelling them."""
    task = asyncio.ensure_future(work)
    watchers = {asyncio.ensure_future(stop()): name for name, stop in stops.items()}
    try:
        await asyncio.wait({task, *watchers}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for watcher in watchers:
            watcher.cancel()
        if not task.done():
            task.cancel()
            await _settle(task)
    fired = []
    for watcher, name in watchers.items():
        if watcher.done() and not watcher.cancelled():
            watcher.exception()  # retrieved: a receive() that failed means the client is gone
            fired.append(name)
    if not task.cancelled():
        return task.result()
    raise _Stopped(fired[0] if fired else _SHUTDOWN)


class _Watch:
    """The client and the host, watched while a managed model's answer is read.

    One task waits for the client's `http.disconnect` (only once the body has been read:
    after that, `receive()` has nothing left to give but that), and the host's ending is
    a callback; either interrupts the upstream read it follows, whose connection is then
    aborted, so llama-server stops generating. Nothing is created per chunk."""

    def __init__(self, receive: Receive, shutdown: Shutdown) -> None:
        self.why: str | None = None
        self._answer: UpstreamResponse | None = None
        self._shutdown = shutdown
        self._task = asyncio.ensure_future(self._client_leaves(receive))
        shutdown.on_ending(self._host_ends)

    def follow(self, answer: UpstreamResponse) -> None:
        self._answer = answer
        if self.why is not None:
            answer.interrupt(_Stopped(self.why))

    def end(self) -> None:
        """No await: the request's cleanup may itself be running cancelled."""
        self._task.cancel()
        self._shutdown.forget(self._host_ends)

    async def _client_leaves(self, receive: Receive) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:
            pass
        self._stop(_CLIENT_LEFT)

    def _host_ends(self) -> None:
        self._stop(_SHUTDOWN)

    def _stop(self, why: str) -> None:
        if self.why is None:
            self.why = why
            if self._answer is not None:
                self._answer.interrupt(_Stopped(why))


class RemoteStream(StreamingResponse):
    """Streams an answer read with httpx (a remote model's) and always closes it after.

    Starlette ends the relay when the client disconnects (which closes the upstream
    request); `ending` ends it when the host stops."""

    def __init__(
        self,
        upstream: httpx.Response,
        model: str,
        log_hint: str,
        headers: dict[str, str],
        on_end: Callable[[dict[str, Any] | None, bool], None],
        ending: asyncio.Event,
        anthropic: bool = False,
    ) -> None:
        self._anthropic = anthropic
        self._upstream = upstream
        self._model = model
        self._log_hint = log_hint
        self._on_end = on_end
        self._ending = ending
        # aiter_raw is an async generator (typed as an iterator): closed explicitly below.
        self._chunks = cast(AsyncGenerator[bytes, None], upstream.aiter_raw())
        self._pending: asyncio.Task[bytes | None] | None = None
        self._tail: collections.deque[bytes] = collections.deque(maxlen=_TAIL_CHUNKS)
        self._head = b""
        self._torn = False
        super().__init__(
            self._relay(),
            status_code=upstream.status_code,
            headers=headers,
            media_type=upstream.headers.get("content-type", "text/event-stream"),
        )

    async def _relay(self) -> Any:
        at_event_boundary = True
        ending = asyncio.ensure_future(self._ending.wait())
        try:
            while True:
                self._pending = asyncio.create_task(_next_chunk(self._chunks))
                await asyncio.wait({self._pending, ending}, return_when=asyncio.FIRST_COMPLETED)
                if not self._pending.done():
                    self._torn = True
                    yield _error_event(
                        at_event_boundary,
                        "shutting_down",
                        f"the host is shutting down; model {self._model}'s answer was cut "
                        "short. Retry once it is back",
                        self._anthropic,
                    )
                    return
                chunk = self._pending.result()
                if chunk is None:
                    return
                at_event_boundary = chunk.endswith(b"\n\n")
                self._tail.append(chunk)  # no copy per chunk: joined once at the end
                self._head = self._head or chunk
                yield chunk
        except httpx.TransportError as exc:
            self._torn = True
            yield _error_event(
                at_event_boundary,
                "upstream_failed",
                f"model {self._model} stopped answering mid-stream "
                f"({type(exc).__name__}){self._log_hint}; {_REMOTE_RETRY}",
                self._anthropic,
            )
        finally:
            # No await here: a client that left cancels this generator's scope, and any
            # await would be cancelled again. __call__ collects the pending read.
            ending.cancel()
            if self._pending is not None and not self._pending.done():
                self._pending.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self._pending is not None:
                if not self._pending.done() and not self._pending.cancelling():
                    self._pending.cancel()
                await _settle(self._pending)
            await self._chunks.aclose()
            await self._upstream.aclose()
            tail = b"".join(self._tail)
            timings = None if self._torn else _timings_in_stream(tail, self._head)
            self._on_end(timings, timings is not None)


_STREAM_STATUS = {"shutting_down": 503, "upstream_failed": 502}
"""The status a mid-stream error would have had, for its Anthropic type."""


def _error_event(at_event_boundary: bool, kind: str, message: str, anthropic: bool) -> bytes:
    """An SSE error event, after ending a torn event so that it parses on its own: OpenAI's
    `data: {"error": ...}`, or Anthropic's `event: error` (which its SDKs raise)."""
    if anthropic:
        body = anthropic_error_body(_STREAM_STATUS.get(kind, 500), message)
        event = f"event: error\ndata: {json.dumps(body)}\n\n"
    else:
        event = f"data: {json.dumps({'error': {'type': kind, 'message': message}})}\n\n"
    return (b"" if at_event_boundary else b"\n\n") + event.encode()


async def _settle(task: asyncio.Future[Any]) -> None:
    """Wait for a task already told to stop, and never cancel it a second time.

    httpx closes a connection whose read was cancelled in a cleanup shielded only from
    anyio's cancel scopes; a second native cancel (which `gather` sends when its own
    waiter is cancelled) interrupts that cleanup and leaves the upstream connection open,
    and llama-server generating for nobody."""
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: the request is over, whatever the read said


async def _next_chunk(chunks: AsyncIterator[bytes]) -> bytes | None:
    """The stream's next chunk, None at its end."""
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return None


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


_SLOT_PATHS = frozenset({CHAT_PATH})
"""The endpoints whose requests are pinned to a KV slot. Not `/v1/messages`: its
llama-server drops `id_slot` when it turns the body into a chat request (a request
pinned to slot 0 is served by slot 1), so a slot saved for it would hold another
conversation. Its prompts are still reused while the model stays resident (llama-server
picks the slot by similarity, and says so in `cache_read_input_tokens`)."""


async def _claim_slot(
    host: Host, model: str, lease: ModelLease, body: dict[str, Any]
) -> SlotUse | None:
    """Pin the request to a slot (restoring a saved one it continues), unless the client
    chose a slot itself or the model keeps no slots."""
    keeper = host.slot_keepers.get(model)
    messages = body.get("messages")
    if keeper is None or "id_slot" in body or not isinstance(messages, list):
        return None
    if not all(isinstance(m, dict) for m in messages):
        return None
    assert lease.server_url is not None  # only a managed model keeps slots
    claim = await keeper.claim(lease.http, lease.server_url, messages)
    return SlotUse(keeper, claim, messages) if claim is not None else None


def usage_timings(usage: object) -> dict[str, Any] | None:
    """An Anthropic answer's `usage` as the counts of llama-server's `timings`, which its
    Messages API does not send: `input_tokens` are the prompt tokens it processed
    (`prompt_n`), `cache_read_input_tokens` those it reused from the slot (`cache_n`,
    which tells that a restored KV slot took), `output_tokens` what it generated."""
    if not isinstance(usage, dict):
        return None
    counts = {
        "prompt_n": usage.get("input_tokens"),
        "cache_n": usage.get("cache_read_input_tokens"),
        "predicted_n": usage.get("output_tokens"),
    }
    kept = {k: v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)}
    return kept or None


def _timings_in_body(payload: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(payload)
        timings = body.get("timings")
    except (ValueError, AttributeError):
        return None
    return timings if isinstance(timings, dict) else usage_timings(body.get("usage"))


def _timings_in_stream(tail: bytes, head: bytes = b"") -> dict[str, Any] | None:
    """llama-server's `timings` from a stream's last events; for a finished Anthropic
    stream, the counts of its usage (`message_start`, in the `head`, the first chunk,
    and `message_delta`, at the end)."""
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data: {") and b'"timings"' in line:
            return _timings_in_body(line[6:])
    if b'"message_stop"' not in tail:
        return None
    usage: dict[str, Any] = {}
    for line in (head + b"\n" + tail).split(b"\n"):
        if line.startswith(b"data: {") and b'"message_' in line:
            try:
                event = json.loads(line[6:])
            except ValueError:
                continue
            message = event.get("message") if isinstance(event, dict) else None
            found = (message if isinstance(message, dict) else event).get("usage")
            if isinstance(found, dict):
                usage.update(found)
    return usage_timings(usage)


async def _wait_for_disconnect(receive: Receive) -> None:
    """Returns when the client goes away. Only once the body has been read: after that,
    `receive()` has nothing left to give but `http.disconnect`."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _lease_now(host: Host, model: str, forced: bool) -> ModelLease | None:
    """A lease on the model at once, or None when it must be waited for."""
    hold = host.fleet.hold_reason(model, forced)
    if hold is not None:
        # An OpenAI client cannot sit in a queue until the owner stops gaming: say why now.
        raise ModelUnavailable(f"model {model} is held back: {hold}")
    return host.fleet.lease_now(model, forced)


async def _lease_waiting(
    host: Host, receive: Receive, shutdown: Shutdown, model: str, forced: bool, priority: int | None
) -> ModelLease:
    """A lease on the model, waiting in its device's queue at `priority` while it must be
    loaded, and giving up as soon as the client disconnects or the host stops."""
    return await _unless(
        host.fleet.lease(model, forced=forced, priority=priority),
        {_CLIENT_LEFT: lambda: _wait_for_disconnect(receive), _SHUTDOWN: shutdown.stopping.wait},
    )


class _StartedStream:
    """The sends of a stream whose answer began before its model was ready.

    A streaming request that must wait for a swap is told so at once: the 200 and the
    event-stream headers go out with a comment saying why it waits (`: …`, which every
    SSE reader skips), so an agent's user sees the wait instead of a silent socket.
    Whatever is sent after that through the usual paths arrives here: a second response
    start is dropped, and an error response (the wait timed out, the model failed to
    load) becomes an error event in the stream, the only way left to tell it."""

    def __init__(self, send: Send, anthropic: bool = False) -> None:
        self._send = send
        self._anthropic = anthropic
        self._error = False
        self._status = 200
        self._payload = bytearray()

    async def begin(self, headers: dict[str, str], comment: str) -> None:
        headers = {**headers, "content-type": "text/event-stream", "cache-control": "no-cache"}
        await self._send(_response_start(200, headers, None))
        await self.comment(comment)

    async def comment(self, text: str) -> None:
        line = " ".join(text.split())  # one line: a comment cannot span two
        body = f": tierhost: {line}\n\n".encode()
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._status = message["status"]
            self._error = self._status >= 400
            return
        if not self._error:
            await self._send(message)
            return
        self._payload += message.get("body", b"")
        if message.get("more_body", False):
            return
        payload = bytes(self._payload)
        if self._anthropic:
            converted = as_anthropic_error(self._status, payload)
            payload = b"event: error\ndata: " + (converted or payload.replace(b"\n", b" "))
        else:
            payload = b"data: " + payload.replace(b"\n", b" ").strip()
        event = payload + b"\n\n"
        await self._send({"type": "http.response.body", "body": event, "more_body": False})


def _priority(headers: dict[bytes, str]) -> int | None:
    """`X-Tierhost-Priority`, -100..100 (higher first); None: the policy's default."""
    raw = headers.get(b"x-tierhost-priority")
    if raw is None:
        return None
    try:
        priority = int(raw.strip())
    except ValueError:
        priority = None
    if priority is None or not -100 <= priority <= 100:
        raise ApiError(
            400,
            "invalid_request",
            f"X-Tierhost-Priority must be a whole number from -100 to 100, not {shorten(raw)}",
        )
    return priority


def _headers(
    host: Host, model: str, waited_s: float | None, tier: str | None = None
) -> dict[str, str]:
    """The `X-Tierhost-*` headers of an answer; no wait is known yet (None) for a stream
    that starts while it waits, which says its wait in a comment instead."""
    tier = tier or host.config.tier_of(model) or ""  # the tier it was routed by, if known
    headers = {"X-Tierhost-Model": model, "X-Tierhost-Tier": tier}
    if waited_s is not None:
        headers["X-Tierhost-Wait-Ms"] = f"{waited_s * 1000:.1f}"
    return headers


# -- the request -------------------------------------------------------------------


_FORWARDED_HEADERS = (b"anthropic-version", b"anthropic-beta")
"""Sent on upstream as the client sent them: llama-server (or a remote) may act on them."""

_READ_HEADERS = frozenset(
    {b"x-task-type", b"x-force-big", b"accept", b"x-tierhost-priority", *_FORWARDED_HEADERS}
)


def _request_headers(scope: Scope) -> dict[bytes, str]:
    """The few request headers the proxy reads, in one pass over them (the guard has
    already refused what must not be repeated)."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        name = name.lower()
        if name in _READ_HEADERS:
            found[name] = value.decode("latin-1")
    return found


def _forced(headers: dict[bytes, str]) -> bool:
    return headers.get(b"x-force-big", "").strip().lower() in ("true", "1", "yes")


def _response_start(status: int, headers: dict[str, str], length: int | None) -> Message:
    raw = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]
    if length is not None:
        raw.append((b"content-length", str(length).encode("latin-1")))
    return {"type": "http.response.start", "status": status, "headers": raw}


@dataclass
class _Exchange:
    """One proxied request, from its body read to its answer sent."""

    path: str
    scope: Scope
    receive: Receive
    send: Send
    host: Host
    shutdown: Shutdown
    passthrough: bool = False
    """A pass-through endpoint's (`host.api.passthrough_body`): its body goes upstream as
    it came, its answer comes back as it is; no slot, no stream put back together."""
    content_type: str = JSON_TYPE
    """What the body is sent upstream as: a pass-through's own (a multipart form's, with
    its boundary); every other body is JSON."""
    arrived: float = dataclasses.field(default_factory=time.monotonic)
    """When the endpoint took the request: a remote's time to begin its answer counts
    from here for the model it was routed to, as its client counts it."""

    @property
    def anthropic(self) -> bool:
        """Anthropic's Messages API, whose errors and stream events have their own shape."""
        return self.path in MESSAGES_PATHS

    async def respond(self, response: Response) -> None:
        await response(self.scope, self.receive, self.send)

    async def answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        await self.send(_response_start(status, headers, len(payload)))
        await self.send({"type": "http.response.body", "body": payload})


class _Ending:
    """A request's end, told once whatever path it takes: metrics, and the slot's new
    content (or its abandonment)."""

    def __init__(
        self,
        host: Host,
        model: str,
        waited_s: float,
        passthrough: str | None = None,
        note: Note | None = None,
    ) -> None:
        self.host = host
        self.model = model
        self.waited_s = waited_s
        self.passthrough = passthrough
        """A pass-through request's endpoint, counted by outcome; None for the others."""
        self.note = note
        """The activity log's note of this request (`host.activity`)."""
        self.slot_use: SlotUse | None = None
        self.told = False

    def __call__(self, timings: dict[str, Any] | None, answered: bool) -> None:
        if self.told:
            return
        self.told = True
        if self.note is not None:
            note_timings(self.note, timings, self.waited_s)
        metrics = self.host.metrics
        if self.passthrough is not None:
            outcome = "ok" if answered else "error"
            metrics.passthrough_requests_total.labels(self.model, self.passthrough, outcome).inc()
            return
        metrics.observe_request(self.model, timings, self.waited_s)
        if self.slot_use is not None:
            restored = self.slot_use.finish(answered, timings)
            if restored:
                metrics.kv_restores_total.labels(model=self.model).inc()
                metrics.kv_tokens_saved_total.labels(model=self.model).inc(restored)


async def _forward(x: _Exchange) -> None:
    host, shutdown, path = x.host, x.shutdown, x.path
    limits = (x.scope.get("state") or {}).get("body_limits")
    if not isinstance(limits, BodyLimits):
        limits = DEFAULT_LIMITS  # an app without the guard (a test's)
    offload: Offload = host.offload
    raw = await receive_body(x.receive, limits)
    if raw is None:
        return  # the client left while sending its body: nobody to answer
    request_headers = _request_headers(x.scope)
    task_type = request_headers.get(b"x-task-type") or None
    prepared = await offload.run(
        len(raw),
        prepare,
        raw,
        limits,
        path,
        host.known_names(),
        frozenset(host.config.models),
        task_type is not None,
    )
    if shutdown.stopping.is_set():
        await x.respond(_shutting_down())
        return
    body = prepared.body
    requested: str = body["model"]
    note_of(x.scope).asked = requested
    if x.anthropic:
        requested = _claude_target(host, requested, body)
    await _serve(x, prepared, raw, request_headers, requested, task_type)


async def _forward_passthrough(x: _Exchange) -> None:
    """A pass-through request: its `model` found (`host.api.passthrough_body`), then the
    same route, lease, wait and answer as chat's, with the body sent as it came."""
    host = x.host
    limits = (x.scope.get("state") or {}).get("body_limits")
    if not isinstance(limits, BodyLimits):
        limits = DEFAULT_LIMITS
    raw = await receive_body(x.receive, limits)
    if raw is None:
        return
    request_headers = _request_headers(x.scope)
    task_type = request_headers.get(b"x-task-type") or None
    found = await host.offload.run(
        len(raw), prepare_passthrough, raw, limits, x.content_type, host.known_names()
    )
    if x.shutdown.stopping.is_set():
        await x.respond(_shutting_down())
        return
    note_of(x.scope).asked = found.model
    if found.model in ("auto", "big"):
        raise ApiError(
            400,
            "invalid_request",
            f"`model` {found.model} routes by a prompt, which a {x.path} request has none "
            "of: name a model or a tier",
        )
    body: dict[str, Any] = found.json_body or {"model": found.model}
    prepared = Prepared(body, None, False, "")
    await _serve(x, prepared, raw, request_headers, found.model, task_type)


async def _serve(
    x: _Exchange,
    prepared: Prepared,
    raw: bytes,
    request_headers: dict[bytes, str],
    requested: str,
    task_type: str | None,
) -> None:
    """Route, then attempt the model the route gives, failing over from a remote that
    failed before answering to the next model of the route."""
    host = x.host
    forced = _forced(request_headers) or prepared.tagged
    model, decision = await _route(host, prepared, requested, task_type, forced)
    failed_over: list[str] = []
    while True:
        failed = await _attempt(
            x, prepared, raw, request_headers, requested, model, decision, forced, failed_over
        )
        if failed is None:
            return
        # A remote failed before any byte reached the client: a routed request moves on
        # to the next model of its route, the remote skipped until a probe finds it up.
        host.remote_health.mark_down(model, failed.why)
        failed_over.append(f"{model} ({failed.why})")
        routed = requested not in host.config.models
        following: tuple[str, Decision] | None = None
        if routed and len(failed_over) <= MAX_FAILOVERS:
            try:
                following = await _route(host, prepared, requested, task_type, forced)
            except ApiError:
                following = None
        if following is None or following[0] == model:
            headers = _headers(host, model, 0.0)
            if failed_over[:-1]:
                headers["X-Tierhost-Failover"] = "; ".join(failed_over[:-1])
            await x.respond(error_response(502, "upstream_failed", failed.message, headers))
            return
        log.info("request failed over from %s (%s) to %s", model, failed.why, following[0])
        model, decision = following


MAX_FAILOVERS = 3
"""The most models one request moves on to after the one it was routed to."""


def _claude_target(host: Host, requested: str, body: dict[str, Any]) -> str:
    """The name a Messages request routes by (`host.api.claude_models`), or a 404
    listing what it may say."""
    settings = host.config.anthropic
    resolved = claude_models.resolve(
        requested,
        thinking=claude_models.wants_thinking(body.get("thinking")),
        families=settings.families,
        thinking_tier=settings.thinking_tier,
        tiers=host.config.tiers,
        models=host.config.models,
    )
    if resolved is None:
        families = ", ".join(settings.families) or "none"
        tier_ids = ", ".join(claude_models.tier_id(t) for t in host.config.tiers)
        raise ApiError(
            404,
            "model_not_found",
            f"{UnknownModel(requested, host.known_names())!s}; or a Claude model id of "
            f"family {families}, or one of {tier_ids}",
        )
    return resolved.name


async def _attempt(
    x: _Exchange,
    prepared: Prepared,
    raw: bytes,
    request_headers: dict[bytes, str],
    requested: str,
    model: str,
    decision: Decision,
    forced: bool,
    failed_over: list[str],
) -> _NoAnswer | None:
    """Send the request to `model` and answer the client, or say that the model (a
    remote) failed before any byte of an answer was sent."""
    host, shutdown, path, offload = x.host, x.shutdown, x.path, x.host.offload
    body = prepared.body
    began = time.monotonic()
    started: _StartedStream | None = None
    forced = forced or decision.force_big
    priority = _priority(request_headers)
    try:
        lease = _lease_now(host, model, forced)
        waited = lease is None
        if lease is None:
            waits_on_device = host.fleet.device_for(model) is not None
            if body.get("stream") and waits_on_device and not x.passthrough:
                started = _StartedStream(x.send, x.anthropic)
                x = dataclasses.replace(x, send=started)
                early = _headers(host, model, None, decision.tier)
                if decision.type is not None and requested in ("auto", "big"):
                    early["X-Tierhost-Task-Type"] = decision.type
                await started.begin(early, f"waiting: {host.fleet.why_wait(model)}")
            lease = await _lease_waiting(host, x.receive, shutdown, model, forced, priority)
            if started is not None:
                await started.comment(
                    f"{model} is ready after {(time.monotonic() - began) * 1000:.0f} ms"
                )
    except (TooManyRequests, QueueFull, ModelUnavailable, WaitTimedOut) as exc:
        await _refuse(x, started, _lease_error(exc))
        return None
    except _Stopped as stop:
        await x.respond(stop.response({}))
        return None

    ending = _Ending(host, model, 0.0, path if x.passthrough else None, note_of(x.scope))
    try:
        headers = _headers(host, model, time.monotonic() - began, decision.tier)
        if failed_over:
            headers["X-Tierhost-Failover"] = "; ".join(failed_over)
        if decision.type is not None and requested in ("auto", "big"):
            headers["X-Tierhost-Task-Type"] = decision.type
        send_headers = {
            "content-type": x.content_type,
            "accept": request_headers.get(b"accept", "*/*"),
            **lease.headers,
        }
        for name in _FORWARDED_HEADERS:
            if name in request_headers:
                send_headers[name.decode()] = request_headers[name]
        # A managed model answers a plain request as a stream, put back together here: this
        # llama-server stops generating when a stream's reader goes away, never when a plain
        # request's does, so a plain request could not otherwise be ended.
        assemble = (
            lease.managed and not body.get("stream") and path != COUNT_TOKENS_PATH
        ) and not x.passthrough
        changes: dict[str, Any] = {}
        if lease.upstream_model is not None and x.content_type == JSON_TYPE:
            # (a multipart form goes as it came: its `model` field is not rewritten)
            changes["model"] = lease.upstream_model
        if assemble:
            changes.update(as_stream(body, path))
        if lease.server_url is not None and path in _SLOT_PATHS:
            ending.slot_use = await _claim_slot(host, model, lease, body)
            if ending.slot_use is not None:
                changes["id_slot"] = ending.slot_use.claim.slot
        content: bytes = prepared.raw if prepared.raw is not None else raw
        if changes:
            content = await offload.run(len(content), encode, {**body, **changes})
        ending.waited_s = time.monotonic() - began
        if lease.upstream is not None:
            await _from_upstream(
                x, lease.upstream, lease, content, send_headers, headers, assemble, ending
            )
            return None
        # The request's own time counts against the model it was routed to; a wait for
        # its lease (none for a remote today) or for a model failed over from does not.
        began_answer = x.arrived if not (failed_over or waited) else time.monotonic()
        return await _with_httpx(
            x, lease, content, send_headers, headers, assemble, ending, began_answer
        )
    finally:
        ending(None, False)  # a path that told it already is not counted twice
        lease.release()


def _lease_error(exc: Exception) -> ApiError:
    """The answer to a request that could get no lease."""
    if isinstance(exc, TooManyRequests):
        return ApiError(429, "rate_limited", str(exc), {"Retry-After": "1"})
    if isinstance(exc, QueueFull):
        return ApiError(503, "queue_full", str(exc), {"Retry-After": "5"})
    return ApiError(503, "model_unavailable", str(exc))


async def _refuse(x: _Exchange, started: _StartedStream | None, error: ApiError) -> None:
    """Refuse a request that could get no model: an error response, or, for a stream
    already begun while it waited, an error event in it."""
    if started is None:
        raise error
    await x.respond(error_response(error.status, error.kind, error.message))


# -- a managed model, through host.models.upstream ------------------------------------


async def _from_upstream(
    x: _Exchange,
    upstream: Upstream,
    lease: ModelLease,
    content: bytes,
    send_headers: dict[str, str],
    headers: dict[str, str],
    assemble: bool,
    ending: _Ending,
) -> None:
    log_hint = f" ({lease.where()})"

    def failed(what: str, after: str = "") -> Response:
        return error_response(
            502, "upstream_failed", f"model {lease.model} {what}{log_hint}{after}", headers
        )

    watch = _Watch(x.receive, x.shutdown)
    answer: UpstreamResponse | None = None
    try:
        try:
            answer = await _ask(upstream, x.path, content, send_headers, watch)
        except _Stopped as stop:
            await x.respond(stop.response(headers))
            return
        except UpstreamError as exc:
            await x.respond(failed(f"did not answer ({exc})"))
            return
        content_type = answer.headers.get("content-type", "")
        if content_type.startswith("text/event-stream") and not assemble:
            await _relay(x, answer, lease.model, log_hint, headers, ending)
            return
        try:
            payload = await answer.read()
        except _Stopped as stop:
            await x.respond(stop.response(headers))
            return
        except UpstreamError as exc:
            await x.respond(
                failed(f"stopped answering ({exc})", "; it is restarted on the next request")
            )
            return
        finally:
            watch.end()
        # Read to its end: the connection goes back to the pool (or, a stream's, is
        # closed) and the model is free for the next request, both as soon as the loop
        # is free again, which for an answer the socket takes at once is after it is
        # written: the close and the queue's replan are not on the client's way.
        loop = asyncio.get_running_loop()
        loop.call_soon(answer.close)
        loop.call_soon(lease.release)
        status = answer.status
        timings = None
        if content_type.startswith("text/event-stream"):
            status, answer_body = assembled_body(payload, x.path)
            found = answer_body.get("timings")
            timings = found if isinstance(found, dict) else usage_timings(answer_body.get("usage"))
            if x.anthropic:
                answer_body.setdefault("model", lease.model)
            payload = await x.host.offload.run(len(payload), encode, answer_body)
            headers["content-type"] = "application/json"
        await _pass_on(x, status, payload, answer.headers, headers, ending, timings)
    finally:
        watch.end()
        if answer is not None:
            answer.close()


async def _ask(
    upstream: Upstream, path: str, content: bytes, headers: dict[str, str], watch: _Watch
) -> UpstreamResponse:
    """Send, and send again once if the connection was closed or refused before any reply
    (a kept-alive one the server had closed, a server between two lives): the server
    never answered, so a second try cannot duplicate work."""
    for last_try in (False, True):
        try:
            answer = await upstream.send("POST", path, content, headers)
        except UpstreamError as exc:
            if exc.before_reply and not last_try:
                continue
            raise
        watch.follow(answer)
        try:
            await answer.head()
        except UpstreamError as exc:
            answer.close()
            if exc.before_reply and not last_try and watch.why is None:
                continue
            raise
        except BaseException:
            answer.close()
            raise
        return answer
    raise AssertionError("unreachable")  # pragma: no cover


async def _relay(
    x: _Exchange,
    answer: UpstreamResponse,
    model: str,
    log_hint: str,
    headers: dict[str, str],
    ending: _Ending,
) -> None:
    """The stream, relayed as it comes: one read and one send per piece, nothing parsed;
    the last pieces are kept to find llama-server's `timings` at the end."""
    headers.setdefault("content-type", answer.headers.get("content-type", "text/event-stream"))
    if "cache-control" in answer.headers:
        headers.setdefault("cache-control", answer.headers["cache-control"])
    send = x.send
    await send(_response_start(answer.status, headers, None))
    tail: collections.deque[bytes] = collections.deque(maxlen=_TAIL_CHUNKS)
    head = b""  # the first chunk: an Anthropic stream's usage begins there
    at_event_boundary = True
    torn = False
    try:
        while (chunk := await answer.next_chunk()) is not None:
            at_event_boundary = chunk.endswith(b"\n\n")
            tail.append(chunk)  # no copy per chunk: joined once at the end
            if not head:
                head = chunk
                if x.anthropic:
                    chunk = missing_start(chunk, model) + chunk
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except _Stopped as stop:
        torn = True
        note_of(x.scope).cut_short = (
            "the client left before the answer ended"
            if stop.why == _CLIENT_LEFT
            else "the host stopped before the answer ended"
        )
        if stop.why == _SHUTDOWN:
            await send(
                {
                    "type": "http.response.body",
                    "body": _error_event(
                        at_event_boundary,
                        "shutting_down",
                        f"the host is shutting down; model {model}'s answer was cut "
                        "short. Retry once it is back",
                        x.anthropic,
                    ),
                    "more_body": True,
                }
            )
    except UpstreamError as exc:
        torn = True
        note_of(x.scope).cut_short = f"model {model} stopped answering mid-stream ({exc})"
        await send(
            {
                "type": "http.response.body",
                "body": _error_event(
                    at_event_boundary,
                    "upstream_failed",
                    f"model {model} stopped answering mid-stream ({exc}){log_hint}; "
                    "it is restarted on the next request",
                    x.anthropic,
                ),
                "more_body": True,
            }
        )
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    timings = None if torn else _timings_in_stream(b"".join(tail), head)
    ending(timings, timings is not None or (x.passthrough and not torn))


async def _pass_on(
    x: _Exchange,
    status: int,
    payload: bytes,
    upstream_headers: httpx.Headers | dict[str, str],
    headers: dict[str, str],
    ending: _Ending,
    timings: dict[str, Any] | None = None,
) -> None:
    """A whole answer, as the client gets it: metrics told, a context refusal put in
    OpenAI's words, the upstream's content type kept. `timings` when the caller has them
    already (an assembled answer: not parsed again from the bytes just encoded)."""
    if status != 200:
        timings = None
    elif timings is None and not x.passthrough:  # audio or embeddings carry no timings
        timings = _timings_in_body(payload)
    ending(timings, status == 200)
    if status == 400:
        refused = _context_refusal(payload)
        if refused is not None:
            await x.respond(context_length_response(refused, x.path, headers))
            return
    for name in _PASSED_RESPONSE_HEADERS:
        if name in upstream_headers and name not in headers:
            headers[name] = upstream_headers[name]
    await x.answer(status, payload, headers)


# -- a remote model (or any lease without a managed upstream), through httpx ----------


@dataclasses.dataclass(frozen=True)
class _NoAnswer:
    """A remote failed a request before any byte of it reached the client (refused,
    dropped, silent past its read timeout, a 5xx): the proxy may try the next model."""

    why: str
    """For the reason and the remote's health: "answered HTTP 503", "ConnectError (…)"."""
    message: str
    """For the client, when no other model can take it."""
    status: int | None = None


TIMER_SLACK_S = 0.002
"""How late the event loop's timers fire at worst here (libuv counts in whole
milliseconds, and a timer runs in the loop's next turn): a remote's deadline to begin
its answer is set this much early, so that the client never waits past its configured
`read_timeout_s` for a box that hangs (1.3 ms late measured on the demo box; httpx's
own read timeout fired 3.1 ms late)."""


def _answer_deadline(lease: ModelLease, since: float) -> float | None:
    """The loop time by which a remote must have begun its answer, or None (no bound)."""
    read_s = lease.timeout.read if lease.timeout is not None else None
    if read_s is None:
        return None
    loop = asyncio.get_running_loop()
    return loop.time() + read_s - (time.monotonic() - since) - TIMER_SLACK_S


async def _with_httpx(
    x: _Exchange,
    lease: ModelLease,
    content: bytes,
    send_headers: dict[str, str],
    headers: dict[str, str],
    assemble: bool,
    ending: _Ending,
    began: float,
) -> _NoAnswer | None:
    """A remote's answer, relayed or put back together. It must begin within its
    `read_timeout_s` of `began` (the request's arrival, for the model it was routed to),
    timed here rather than by httpx's read timeout, which still bounds every later read."""
    log_hint = f" ({lease.where()})"
    # While the answer is generated, a client that leaves or a host that stops ends it:
    # cancelling the upstream request closes its connection.
    stops: dict[str, Callable[[], Awaitable[object]]] = {
        _CLIENT_LEFT: lambda: _wait_for_disconnect(x.receive),
        _SHUTDOWN: x.shutdown.ending.wait,
    }
    request = lease.http.build_request(
        "POST", lease.url(x.path), content=content, headers=send_headers, timeout=lease.timeouts()
    )
    try:
        async with asyncio.timeout_at(_answer_deadline(lease, began)):
            upstream = await _unless(_send_once_more_if_dropped(lease.http, request), stops)
    except _Stopped as stop:
        await x.respond(stop.response(headers))
        return None
    except TimeoutError:
        return _NoAnswer(
            f"ReadTimeout{log_hint}",
            f"model {lease.model} did not answer (ReadTimeout){log_hint}",
        )
    except httpx.TransportError as exc:
        return _NoAnswer(
            f"{type(exc).__name__}{log_hint}",
            f"model {lease.model} did not answer ({type(exc).__name__}){log_hint}",
        )
    if upstream.status_code >= 500:
        # Nothing has reached the client yet: another model may still answer it.
        detail = (await upstream.aread())[:300].decode(errors="replace")
        await upstream.aclose()
        return _NoAnswer(
            f"answered HTTP {upstream.status_code}",
            f"model {lease.model} answered HTTP {upstream.status_code}{log_hint}: {detail}",
            upstream.status_code,
        )
    streamed = upstream.headers.get("content-type", "").startswith("text/event-stream")
    if streamed and not assemble:
        stream = RemoteStream(
            upstream, lease.model, log_hint, headers, ending, x.shutdown.ending, x.anthropic
        )
        await x.respond(stream)
        return None
    status = upstream.status_code
    try:
        payload = await _unless(upstream.aread(), stops)
    except _Stopped as stop:
        await x.respond(stop.response(headers))
        return None
    except httpx.TransportError as exc:
        message = (
            f"model {lease.model} stopped answering ({type(exc).__name__}){log_hint}; "
            f"{_REMOTE_RETRY}"
        )
        await x.respond(error_response(502, "upstream_failed", message, headers))
        return None
    finally:
        await upstream.aclose()
    lease.release()  # read to its end: the model is free for the next request
    if streamed:
        status, answer = assembled_body(payload, x.path)
        payload = await x.host.offload.run(len(payload), encode, answer)
        headers["content-type"] = "application/json"
    await _pass_on(x, status, payload, upstream.headers, headers, ending)
    return None


async def _send_once_more_if_dropped(
    http: httpx.AsyncClient, upstream_request: httpx.Request
) -> httpx.Response:
    """Send, and send again once if a connection was closed or refused before any reply
    (a pooled one gone stale, a server between two lives): the server never read the
    request, so a second try cannot duplicate work."""
    try:
        return await http.send(upstream_request, stream=True)
    except (httpx.RemoteProtocolError, httpx.ConnectError):
        return await http.send(upstream_request, stream=True)


# -- context length ------------------------------------------------------------------


def context_length_response(message: str, path: str, headers: dict[str, str]) -> JSONResponse:
    """OpenAI's answer to a prompt over the context window, which clients recognise and do
    not retry: 400, `type` invalid_request_error (the OpenAI class of the error: the
    request must change), `code` context_length_exceeded (which one)."""
    return JSONResponse(
        {
            "error": {
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
                "param": "messages" if path == CHAT_PATH else "prompt",
                "message": message,
            }
        },
        status_code=400,
        headers=headers,
    )


def _context_refusal(payload: bytes) -> str | None:
    """llama-server's own "exceeds the available context size" 400, in OpenAI's words;
    None for any other answer."""
    try:
        error = json.loads(payload).get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict):
        return None
    text = str(error.get("message", ""))
    known = error.get("type") == "exceed_context_size_error"
    if not known and "exceeds the available context" not in text:
        return None
    n_ctx, n_prompt = error.get("n_ctx"), error.get("n_prompt_tokens")
    if isinstance(n_ctx, int) and isinstance(n_prompt, int):
        return (
            f"This model's maximum context length is {n_ctx} tokens. However, your messages "
            f"resulted in {n_prompt} tokens. Please reduce the length of the messages."
        )
    return f"This model's maximum context length was exceeded: {text}"


async def count_tokens(host: Host, model: str, text: str) -> int | None:
    """`text`'s tokens by the model's own tokenizer (llama-server `POST /tokenize`) when
    the model is a resident llama-server; None when it is not, or does not answer well
    within TOKENIZE_TIMEOUT_S, or answers something else: the estimate decides then."""
    process = host.processes.get(model)
    if process is None or not process.is_ready() or len(text) > COUNT_UP_TO_CHARS:
        return None
    if process.spec.command is not None:
        return None  # not a llama-server: it has no /tokenize of ours to ask
    try:
        response = await process.http.post(
            f"{process.base_url}/tokenize", json={"content": text}, timeout=TOKENIZE_TIMEOUT_S
        )
        tokens = response.json().get("tokens") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return len(tokens) if isinstance(tokens, list) else None


async def _decide(host: Host, route: RouteRequest) -> Decision:
    """The snapshot is taken here, on the loop that changes it; only the pure decision
    may run in a worker thread."""
    return await host.offload.run(
        len(route.prompt), decide_for_proxy, route, host.controls.snapshot()
    )


async def _decide_counting(host: Host, route: RouteRequest) -> Decision:
    """The decision on the estimate, then, for a prompt long enough that the estimate may
    be wrong, again on the count of the chosen model's tokenizer when it is resident.

    An estimate that refuses the prompt is checked the same way: the model it would have
    gone to, size aside, counts it (runs of one character pack far more than the
    estimate allows)."""
    try:
        decision = await _decide(host, route)
    except RoutingError as refused:
        if refused.kind != "context_length_exceeded" or len(route.prompt) > COUNT_UP_TO_CHARS:
            raise
        size_aside = await _decide(host, dataclasses.replace(route, prompt_tokens=0))
        counted = await count_tokens(host, size_aside.model, route.prompt)
        if counted is None:
            raise
        return await _decide(host, dataclasses.replace(route, prompt_tokens=counted))
    if len(route.prompt) < COUNT_FROM_CHARS:
        return decision
    counted = await count_tokens(host, decision.model, route.prompt)
    if counted is None:
        return decision
    return await _decide(host, dataclasses.replace(route, prompt_tokens=counted))


async def _route(
    host: Host, prepared: Prepared, requested: str, task_type: str | None, forced: bool
) -> tuple[str, Decision]:
    """A model name goes straight there; a tier, `auto` or `big` goes through the policy."""
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
    route = RouteRequest(
        prompt=prepared.text,
        type=task_type,
        model=requested,
        force_big=forced,
        intent=prepared.intent,
        context_files=prepared.intent_files,
        # A named tier routes by its name: the type is not needed (nor reported, below).
        classify=requested in ("auto", "big"),
    )
    try:
        decision = await host.controls.decide_asking(
            route, lambda asked: _decide_counting(host, asked)
        )
    except RoutingError as exc:
        if exc.kind == "context_length_exceeded":
            raise _ContextTooLong(exc.message) from None
        raise ApiError(exc.status, exc.kind, exc.message) from None
    if decision.wait_reason and not decision.force_big:
        raise ApiError(
            503, "model_unavailable", f"{decision.model} is held back: {decision.wait_reason}"
        )
    return decision.model, decision


class _ContextTooLong(Exception):
    """The router refused the prompt as longer than every candidate's context window."""


class _Completions:
    """A completions endpoint as a bare ASGI app, in Starlette's class-endpoint form (made
    per request with scope, receive and send, then awaited): no Request object, and
    none of the wrapping a function endpoint gets."""

    path: ClassVar[str]

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send

    def __await__(self) -> Generator[Any, None, None]:
        return self._run().__await__()

    async def _run(self) -> None:
        app = self.scope["app"]
        x = _Exchange(
            self.path, self.scope, self.receive, self.send, app.state.host, shutdown_of(app)
        )
        try:
            await _forward(x)
        except _ContextTooLong as exc:
            await x.respond(context_length_response(str(exc), self.path, {}))


class _Passthrough:
    """A pass-through endpoint (`host.api.passthrough_body`) as a bare ASGI app, made
    like `_Completions`: the body, JSON or a multipart form, goes upstream as it came."""

    path: ClassVar[str]

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send

    def __await__(self) -> Generator[Any, None, None]:
        return self._run().__await__()

    async def _run(self) -> None:
        app = self.scope["app"]
        content_type = JSON_TYPE
        for name, value in self.scope["headers"]:
            if name.lower() == b"content-type":
                sent = value.decode("latin-1")
                content_type = sent if is_multipart(sent) else JSON_TYPE
        x = _Exchange(
            self.path,
            self.scope,
            self.receive,
            self.send,
            app.state.host,
            shutdown_of(app),
            passthrough=True,
            content_type=content_type,
        )
        await _forward_passthrough(x)


class Embeddings(_Passthrough):
    """`POST /v1/embeddings`."""

    path = EMBEDDINGS_PATH


class Speech(_Passthrough):
    """`POST /v1/audio/speech`: audio bytes back, with the server's content type."""

    path = SPEECH_PATH


class Transcriptions(_Passthrough):
    """`POST /v1/audio/transcriptions`: a multipart upload, its `model` a form field."""

    path = TRANSCRIPTIONS_PATH


class Images(_Passthrough):
    """`POST /v1/images/generations`."""

    path = IMAGES_PATH


class Rerank(_Passthrough):
    """`POST /v1/rerank`."""

    path = RERANK_PATH


PASSTHROUGH_ENDPOINTS: tuple[type[_Passthrough], ...] = (
    Embeddings,
    Speech,
    Transcriptions,
    Images,
    Rerank,
)
assert {e.path for e in PASSTHROUGH_ENDPOINTS} == set(PASSTHROUGH_PATHS)


class ChatCompletions(_Completions):
    """`POST /v1/chat/completions`."""

    path = CHAT_PATH


class Completions(_Completions):
    """`POST /v1/completions`."""

    path = COMPLETIONS_PATH


class Messages(_Completions):
    """`POST /v1/messages`, Anthropic's Messages API (llama-server serves it itself)."""

    path = MESSAGES_PATH


class CountTokens(_Completions):
    """`POST /v1/messages/count_tokens`: counted by the routed model's own llama-server."""

    path = COUNT_TOKENS_PATH


# -- model discovery -------------------------------------------------------------------


def _openai_models(host: Host) -> list[dict[str, Any]]:
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
    return data


def _anthropic_model(host: Host, model_id: str, target: str) -> dict[str, Any]:
    """Anthropic's model object; `target` the tier or model the id routes to."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(host.started_at))
    tier = host.config.tiers.get(target)
    serves = ", ".join(tier.models) if tier is not None else target
    return {
        "type": "model",
        "id": model_id,
        "display_name": f"Tierhost {target} ({serves})",
        "created_at": started,
    }


def _anthropic_models(host: Host) -> list[dict[str, Any]]:
    """One `claude-tierhost-TIER` per tier: Claude Code's gateway discovery lists only
    ids that start with `claude`."""
    return [_anthropic_model(host, claude_models.tier_id(t), t) for t in host.config.tiers]


def _asks_anthropic(request: Request) -> bool:
    return "anthropic-version" in request.headers


async def list_models(request: Request) -> Response:
    """OpenAI's model list, or Anthropic's when asked with `anthropic-version`."""
    host: Host = request.app.state.host
    if not _asks_anthropic(request):
        return JSONResponse({"object": "list", "data": _openai_models(host)})
    data = _anthropic_models(host)
    return JSONResponse(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


async def get_model(request: Request) -> Response:
    """One model, in the shape the list has; a 404 in that shape for an unknown id (the
    guard puts it in Anthropic's)."""
    host: Host = request.app.state.host
    model_id: str = request.path_params["model_id"]
    if not _asks_anthropic(request):
        found = next((m for m in _openai_models(host) if m["id"] == model_id), None)
        if found is None:
            raise ApiError(404, "model_not_found", str(UnknownModel(model_id, host.known_names())))
        return JSONResponse(found)
    settings = host.config.anthropic
    resolved = claude_models.resolve(
        model_id,
        thinking=False,
        families=settings.families,
        thinking_tier=settings.thinking_tier,
        tiers=host.config.tiers,
        models=host.config.models,
    )
    if resolved is None:
        tier_ids = ", ".join(claude_models.tier_id(t) for t in host.config.tiers)
        raise ApiError(
            404, "model_not_found", f"no model {shorten(model_id)} here; try one of {tier_ids}"
        )
    return JSONResponse(_anthropic_model(host, model_id, resolved.name))


routes = [
    Route(CHAT_PATH, ChatCompletions, methods=["POST"]),
    Route(MESSAGES_PATH, Messages, methods=["POST"]),
    Route(COMPLETIONS_PATH, Completions, methods=["POST"]),
    Route(COUNT_TOKENS_PATH, CountTokens, methods=["POST"]),
    *(Route(e.path, e, methods=["POST"]) for e in PASSTHROUGH_ENDPOINTS),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
]
"""The completions first: the app lists these routes before all others, and a route is
found by trying each in turn."""
