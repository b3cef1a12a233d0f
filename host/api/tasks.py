"""The task endpoints of the control API: submit, list, inspect, cancel."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from host.core.routing import RoutingError
from host.core.task_states import TaskStatus
from host.daemon import Host
from host.errors import ApiError, query_int, query_text, read_model, shorten
from host.store import UnknownTask
from host.wire import TaskSubmission


def _host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


async def submit(request: Request) -> Response:
    submission = await read_model(request, TaskSubmission)
    try:
        task = await _host(request).tasks.submit(submission.model_dump())
    except RoutingError as exc:
        raise ApiError(exc.status, exc.kind, exc.message) from None
    return JSONResponse(task, status_code=201)


async def list_tasks(request: Request) -> Response:
    status = query_text(request, "status")
    if status is not None and status not in {s.value for s in TaskStatus}:
        valid = ", ".join(s.value for s in TaskStatus)
        raise ApiError(400, "invalid_request", f"unknown status {shorten(status)}; one of: {valid}")
    limit = query_int(request, "limit", default=100, low=1, high=10000)
    tasks = await _host(request).tasks.list(
        status=status, type=query_text(request, "type"), limit=limit
    )
    return JSONResponse({"tasks": tasks})


async def get_task(request: Request) -> Response:
    return JSONResponse(await _task_or_404(request, _host(request).tasks.get))


async def cancel_task(request: Request) -> Response:
    return JSONResponse(await _task_or_404(request, _host(request).tasks.cancel))


async def _task_or_404(request: Request, action: Any) -> dict[str, Any]:
    task_id = request.path_params["task_id"]
    try:
        result: dict[str, Any] = await action(task_id)
    except UnknownTask as exc:
        raise ApiError(404, "task_not_found", str(exc)) from None
    return result


routes = [
    Route("/api/tasks", submit, methods=["POST"]),
    Route("/api/tasks", list_tasks, methods=["GET"]),
    Route("/api/tasks/{task_id}", get_task, methods=["GET"]),
    Route("/api/tasks/{task_id}/cancel", cancel_task, methods=["POST"]),
]
