"""The dashboard: its page (`/ui`), its live feed (`/api/events`), and the model controls
it adds (`/api/models/{name}/load`, `/unload`).

The page is static files from the package (no build step, nothing fetched at run time)
served with a Content-Security-Policy that allows only this origin's own script and
style: nothing inline, so a model name or a result holding markup can never run. It is
served without the token (it holds no data); everything it shows comes from the API,
which asks for the token as usual. The feed is Server-Sent Events, one per page, fed by
the host's `EventHub`; it ends when the host begins to stop, so it never holds up a
graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from importlib import resources

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from host.api.proxy import shutdown_of
from host.config import LocalModel
from host.daemon import Host
from host.errors import ApiError
from host.models.arbiter import ModelUnavailable, QueueFull, TooManyRequests, WaitTimedOut

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only this origin's own files; no inline script or style, no frames around the page."""

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}


def _assets() -> dict[str, bytes]:
    """The page's files, read once: the only names `/ui/...` serves (no path is ever
    joined from a request)."""
    folder = resources.files("host") / "ui"
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and any(entry.name.endswith(ext) for ext in _TYPES)
    }


ASSETS = _assets()

KEEPALIVE_S = 15.0
"""A comment this often keeps idle proxies and the page's reader from timing out."""


def _host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


def _asset(name: str) -> Response:
    body = ASSETS.get(name)
    if body is None:
        raise ApiError(404, "not_found", f"no /ui/{name} here")
    kind = next(t for ext, t in _TYPES.items() if name.endswith(ext))
    headers = {
        "content-security-policy": CSP,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
    }
    return Response(body, media_type=kind, headers=headers)


async def root(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=307)


async def page(request: Request) -> Response:
    return _asset("index.html")


async def asset(request: Request) -> Response:
    return _asset(request.path_params["name"])


async def events(request: Request) -> Response:
    """The live feed: `event: KIND` and `data: JSON` per change, a comment every
    KEEPALIVE_S; the first event (`hello`) says the stream is open."""
    host = _host(request)
    stopping = shutdown_of(request.app).stopping

    async def stream() -> AsyncIterator[bytes]:
        with host.events.subscribe() as feed:
            yield _sse("hello", {"at": time.time()}, retry_ms=2000)
            while not stopping.is_set():
                waiting = asyncio.ensure_future(feed.next(KEEPALIVE_S))
                stop = asyncio.ensure_future(stopping.wait())
                try:
                    await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    if not waiting.done():
                        waiting.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await waiting
                if not waiting.done() or waiting.cancelled():
                    return
                event = waiting.result()
                if event is None:
                    if feed.closed:
                        return
                    yield b": keepalive\n\n"
                    continue
                yield _sse(event.kind, {**event.data, "at": event.at})

    headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def _sse(kind: str, data: dict[str, object], retry_ms: int | None = None) -> bytes:
    retry = f"retry: {retry_ms}\n" if retry_ms is not None else ""
    return f"{retry}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _local(host: Host, name: str) -> LocalModel:
    model = host.config.models.get(name)
    if model is None:
        known = ", ".join(sorted(host.config.models))
        raise ApiError(404, "unknown_model", f"no model {name!r} here (models: {known})")
    if not isinstance(model, LocalModel):
        raise ApiError(
            409,
            "remote_model",
            f"{name} runs on another box ({model.base_url}): it is loaded there, not here",
        )
    return model


async def load(request: Request) -> Response:
    """Load a model now and leave it resident, as a request would (a swap if need be)."""
    host = _host(request)
    name = request.path_params["name"]
    _local(host, name)
    held = host.fleet.hold_reason(name)
    if held is not None:
        raise ApiError(409, "held", f"{name} cannot be loaded now: {held}")
    began = time.monotonic()
    try:
        lease = await host.fleet.lease(name, work="request")
    except ModelUnavailable as exc:
        raise ApiError(409, "cannot_load", str(exc)) from None
    except (WaitTimedOut, QueueFull) as exc:
        raise ApiError(503, "busy", str(exc)) from None
    except TooManyRequests as exc:
        raise ApiError(429, "busy", str(exc)) from None
    lease.release()
    state = host.processes[name].state.value
    return JSONResponse({"model": name, "state": state, "took_s": time.monotonic() - began})


async def unload(request: Request) -> Response:
    """Stop a model now, freeing its memory; refused (409) while it serves or is wanted."""
    host = _host(request)
    name = request.path_params["name"]
    model = _local(host, name)
    refusal, stop = host.arbiters[model.device].unload(name, "unloaded on request")
    if refusal is not None:
        raise ApiError(409, "cannot_unload", refusal)
    if stop is not None:
        await asyncio.shield(stop)
    return JSONResponse({"model": name, "state": host.processes[name].state.value})


routes = [
    Route("/", root, methods=["GET"]),
    Route("/ui", page, methods=["GET"]),
    Route("/ui/", page, methods=["GET"]),
    Route("/ui/{name:str}", asset, methods=["GET"]),
    Route("/api/events", events, methods=["GET"]),
    Route("/api/models/{name:str}/load", load, methods=["POST"]),
    Route("/api/models/{name:str}/unload", unload, methods=["POST"]),
]
