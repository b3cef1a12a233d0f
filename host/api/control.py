"""The control API: health, status, metrics and the swap log (`/health`, `/metrics`, `/api/*`)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from host.core.modes import ModeError, valid_modes
from host.daemon import Host
from host.errors import ApiError, query_int, query_text, read_model
from host.models.status import status_document
from host.wire import ModeChange


def _host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


async def health(request: Request) -> Response:
    """Cheap on purpose: probes call it every few seconds, so no NVML read and no status
    document, just proof that the loop answers."""
    uptime_s = round(time.time() - _host(request).started_at, 3)
    return JSONResponse({"status": "ok", "uptime_s": uptime_s})


async def status(request: Request) -> Response:
    host = _host(request)
    document = status_document(host)
    document["tasks"] = await host.tasks.counts()
    return JSONResponse(document)


async def metrics(request: Request) -> Response:
    """Prometheus text format; read-only, so the guard lets it through like other GETs."""
    from host.metrics import CONTENT_TYPE

    return Response(_host(request).metrics.render(), media_type=CONTENT_TYPE)


async def swaps(request: Request) -> Response:
    host = _host(request)
    limit = query_int(request, "limit", default=100, low=1, high=10000)
    assert host.store is not None
    rows = await host.store.swaps(limit)
    return JSONResponse({"swaps": [row.as_json() for row in rows]})


async def get_mode(request: Request) -> Response:
    host = _host(request)
    return JSONResponse({"modes": host.controls.modes, "valid": valid_modes(host.config)})


async def put_mode(request: Request) -> Response:
    change = await read_model(request, ModeChange)
    try:
        result = await _host(request).controls.set_mode(change.mode, change.device)
    except ModeError as exc:
        raise ApiError(400, "invalid_mode", str(exc)) from None
    return JSONResponse({"modes": result})


async def requests(request: Request) -> Response:
    """The activity log, newest first: `limit` (1 to 1000), `model` (that served), `status`."""
    limit = query_int(request, "limit", default=100, low=1, high=1000)
    given = query_text(request, "status") is not None
    status = query_int(request, "status", default=0, low=100, high=599) if given else None
    model = query_text(request, "model")
    rows = await _host(request).activity.recent(limit, model=model, status=status)
    return JSONResponse({"requests": rows})


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/api/requests", requests, methods=["GET"]),
    Route("/api/status", status, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/api/swaps", swaps, methods=["GET"]),
    Route("/api/mode", get_mode, methods=["GET"]),
    Route("/api/mode", put_mode, methods=["PUT"]),
]
