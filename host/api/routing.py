"""The routing endpoints of the control API: dry-run decisions and the routing table."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from host.core import routing
from host.daemon import Host
from host.errors import ApiError, read_model
from host.wire import RouteQuery, RoutingChange


def _host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


def _raise(error: routing.RoutingError) -> ApiError:
    return ApiError(error.status, error.kind, error.message)


async def route(request: Request) -> Response:
    query = await read_model(request, RouteQuery)
    host = _host(request)

    async def decide(route: routing.RouteRequest) -> routing.Decision:
        snapshot = host.controls.snapshot()
        return await host.offload.run(len(route.prompt), routing.decide, route, snapshot)

    route_request = routing.RouteRequest(
        prompt=query.prompt,
        type=query.type,
        tier=query.tier,
        model=query.model,
        force_big=query.force_big,
        context_files=tuple(query.context_files),
    )
    try:
        decision = await host.controls.decide_asking(route_request, decide)
    except routing.RoutingError as exc:
        raise _raise(exc) from None
    return JSONResponse(decision.as_json())


async def get_routing(request: Request) -> Response:
    host = _host(request)
    return JSONResponse(
        {
            "routes": host.controls.routes,
            "tiers": list(host.config.tiers),
            "standing_rules": host.config.standing_rules,
        }
    )


async def put_routing(request: Request) -> Response:
    table = await read_model(request, RoutingChange)
    try:
        routes = await _host(request).controls.set_routes(table.routes)
    except routing.RoutingError as exc:
        raise _raise(exc) from None
    return JSONResponse({"routes": routes})


routes = [
    Route("/api/route", route, methods=["POST"]),
    Route("/api/routing", get_routing, methods=["GET"]),
    Route("/api/routing", put_routing, methods=["PUT"]),
]
