"""The ASGI application: routes, JSON errors and the request guard.

The guard stands in front of every route, `/v1` and `/mcp` included, and decides
from the request line and headers alone, before any handler runs:

- `Host` must be a name this host serves (421 otherwise): on loopback that refuses DNS
  rebinding, beyond loopback it is an allow-list of the bind address, the box's names
  and `host.allowed_hosts`.
- `Origin`, when a browser sends one, must be one of the host's own origins, matched
  exactly (scheme, name and port). `Origin: null` (sandboxed frames, `file:` pages,
  redirects) is refused. No editor origin is needed: the VS Code extension talks to the
  LSP bridge over stdio, and the bridge reaches the host with httpx, which sends none.
- Beyond loopback, every route but `/health` needs the bearer token: reads too, since
  the task list holds prompts, context files and results. It may come as
  `Authorization: Bearer` or as `x-api-key`, which Anthropic's SDKs send.
- A state change with a body must say `Content-Type: application/json` (415): a web page
  can send `text/plain` without a CORS preflight, never `application/json`. Only the
  pass-through endpoints (`host.api.passthrough_body`: transcriptions upload a file) also
  take `multipart/form-data`, which a page's form can send: there the Origin check (a
  browser sends Origin with every cross-site POST) and, beyond loopback, the token are
  what refuse it.
- A body may not be larger than `host.max_body_mb` (413), and a chunked one is read
  here up to that limit, so no route sees more.

Every response carries `X-Request-Id`, the id a 500 names in the log. On Anthropic's
Messages API (`/v1/messages…`, and `/v1/models` asked with `anthropic-version`) every
error, the guard's own included, is in Anthropic's shape (`host.errors.anthropic_errors`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import psutil
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from host.api import control, dashboard, proxy
from host.api import routing as routing_api
from host.api import tasks as task_api
from host.api.activity import ActivityRecorder
from host.api.passthrough_body import MULTIPART_PATHS
from host.auth import bearer_value, is_loopback, token_matches
from host.config import DEFAULT_PORT, HostSettings
from host.daemon import Host
from host.errors import (
    DEFAULT_LIMITS,
    MIB,
    ApiError,
    BodyLimits,
    anthropic_errors,
    declared_length,
    error_response,
    new_request_id,
    on_api_error,
    on_http_exception,
    on_unexpected,
    on_worker_lost,
    receive_up_to_limit,
    shorten,
    too_large,
)
from host.offload import Offload, WorkerLost
from mcp_server.http import McpEndpoint

STATE_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_PATHS = frozenset({"/health", "/", "/ui", "/ui/"})
"""Served without the token: health probes, and the dashboard's page, which holds no data
(everything it shows comes from the API, which asks for the token)."""
OPEN_PREFIXES = ("/ui/",)
"""Served without the token beyond loopback: liveness probes carry no secrets."""
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})

_AUTHORITY = re.compile(
    r"(?P<name>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?::(?P<port>[0-9]{1,5}))?", re.ASCII
)
_ORIGIN = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#\s]*)", re.ASCII)


@dataclass(frozen=True)
class Authority:
    """The `name[:port]` of a Host header or an origin, the name in canonical form."""

    name: str
    port: int | None


def normal_name(name: str) -> str:
    """Lower case, no brackets or trailing dot; IP addresses in their canonical form."""
    bare = name.strip().strip("[]").split("%", 1)[0].rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare


def parse_authority(text: str) -> Authority:
    """`name[:port]` as a Host header carries it (IPv6 in brackets); ValueError otherwise."""
    match = _AUTHORITY.fullmatch(text)
    if match is None:
        raise ValueError(f"not a host[:port]: {text!r}")
    name = match["name"]
    if name.startswith("["):
        ipaddress.IPv6Address(name[1:-1])  # raises ValueError for `[::1:::]` and the like
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port <= 65535:
        raise ValueError(f"port out of range: {port}")
    return Authority(normal_name(name), port)


def interface_addresses() -> frozenset[str]:
    """Every IPv4 and IPv6 address of this box's network interfaces."""
    families = (socket.AF_INET, socket.AF_INET6)
    return frozenset(
        normal_name(address.address)
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family in families
    )


def served_names(bind_host: str, allowed_hosts: Iterable[str] = ()) -> frozenset[str]:
    """The names a `Host` header may carry: loopback's, the bind address and the configured
    extras; beyond loopback also the box's own names, and for a wildcard bind (0.0.0.0,
    ::) the addresses of its interfaces. Computed at start: after an address change,
    restart, or list the name in `host.allowed_hosts`."""
    wildcard = bind_host.strip("[]") in WILDCARD_BINDS
    names = set(LOOPBACK_NAMES) | {normal_name(name) for name in allowed_hosts}
    if not wildcard:  # 0.0.0.0 is where to listen, not a name to ask for
        names.add(normal_name(bind_host))
    if not is_loopback(bind_host):
        hostname = socket.gethostname()
        names |= {normal_name(hostname), normal_name(socket.getfqdn(hostname))}
        if wildcard:
            names |= interface_addresses()
    names -= {"", "0.0.0.0", "::"}
    return frozenset(names)


def body_limits(settings: HostSettings) -> BodyLimits:
    return BodyLimits(
        max_bytes=settings.max_body_mb * MIB,
        max_depth=settings.max_json_depth,
        max_int_digits=settings.max_int_digits,
    )


class RequestGuard:
    """Refuses what no legitimate client of this host sends (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        bind_host: str,
        token: str | None,
        *,
        port: int = DEFAULT_PORT,
        allowed_hosts: Iterable[str] = (),
        limits: BodyLimits = DEFAULT_LIMITS,
        offload: Offload | None = None,
    ) -> None:
        if token is None and not is_loopback(bind_host):
            raise ValueError(f"a host bound to {bind_host} (beyond loopback) needs a token")
        self.app = app
        self.token = token
        self.port = port
        self.names = served_names(bind_host, allowed_hosts)
        self.limits = limits
        self.offload = offload
        self._hosts_seen: set[str] = set()
        """Host headers already admitted, as sent: every request carries one, and
        parsing it again (a regex and an IP-address parse) was a tenth of the guard."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["body_limits"] = self.limits
        state["offload"] = self.offload
        send = _with_request_id(send, request_id)
        if _speaks_anthropic(scope):
            send = anthropic_errors(send)
        try:
            admitted = await self._admit(scope, receive)
        except ApiError as refusal:
            response = error_response(
                refusal.status, refusal.kind, refusal.message, refusal.headers
            )
            await response(scope, receive, send)
            return
        if admitted is not None:  # None: the client left while its body was read
            await self.app(scope, admitted, send)

    async def _admit(self, scope: Scope, receive: Receive) -> Receive | None:
        """The receive channel to hand on, or an ApiError saying why not."""
        headers: dict[str, list[str]] = {}
        for key, value in scope["headers"]:
            name = _CHECKED_HEADERS.get(key.lower())
            if name is not None:
                headers.setdefault(name, []).append(value.decode("latin-1"))
        host = self._check_host(_single(headers, "host"))
        self._check_origin(_single(headers, "origin"), host)
        self._check_token(scope["path"], headers)
        return await self._check_body(scope["method"], scope["path"], headers, receive)

    def _check_host(self, value: str | None) -> str:
        if value is None:
            raise ApiError(400, "bad_host", "the request has no Host header")
        if value in self._hosts_seen:
            return value
        try:
            authority = parse_authority(value)
        except ValueError:
            raise ApiError(400, "bad_host", f"malformed Host header {shorten(value)}") from None
        if authority.name not in self.names:
            raise ApiError(
                421,
                "bad_host",
                f"Host {shorten(value)} is not served here (DNS rebinding guard); use "
                f"http://127.0.0.1:{self.port}, or add the name to host.allowed_hosts",
            )
        if len(self._hosts_seen) < _HOSTS_REMEMBERED:
            self._hosts_seen.add(value)
        return value

    def _check_origin(self, origin: str | None, host: str) -> None:
        if origin is None:
            return
        refused = ApiError(
            403, "bad_origin", f"cross-site requests from {shorten(origin)} are refused"
        )
        if origin == "null":
            raise ApiError(
                403,
                "bad_origin",
                "requests from an opaque origin (`Origin: null`: a sandboxed frame, a file: "
                "page, a redirect) are refused",
            )
        match = _ORIGIN.fullmatch(origin)
        if match is None:
            raise ApiError(400, "bad_origin", f"malformed Origin header {shorten(origin)}")
        scheme = match["scheme"].lower()
        if scheme not in ("http", "https"):
            raise refused
        try:
            authority = parse_authority(match["authority"])
        except ValueError:
            raise ApiError(
                400, "bad_origin", f"malformed Origin header {shorten(origin)}"
            ) from None
        port = authority.port or (443 if scheme == "https" else 80)
        own = authority.name in self.names and port == self.port
        same_origin = match["authority"].lower() == host.lower()  # e.g. behind a TLS proxy
        if not (own or same_origin):
            raise refused

    def _check_token(self, path: str, headers: dict[str, list[str]]) -> None:
        if self.token is None or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return
        presented = bearer_value(_single(headers, "authorization"))
        if token_matches(presented, self.token):
            return
        if not token_matches(_single(headers, "x-api-key"), self.token):
            raise ApiError(
                401,
                "unauthorized",
                "this host listens beyond loopback: send `Authorization: Bearer <token>` "
                "or `x-api-key: <token>` (see `tierhost token`)",
                {"WWW-Authenticate": "Bearer"},
            )

    async def _check_body(
        self, method: str, path: str, headers: dict[str, list[str]], receive: Receive
    ) -> Receive | None:
        declared = declared_length(_single(headers, "content-length"))
        if declared is not None and declared > self.limits.max_bytes:
            raise too_large(self.limits, declared)
        chunked = declared is None and "transfer-encoding" in headers
        if method not in STATE_CHANGES or not (chunked or (declared or 0) > 0):
            return receive
        content_type = _single(headers, "content-type")
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        multipart_ok = media_type == "multipart/form-data" and path in MULTIPART_PATHS
        if media_type != "application/json" and not multipart_ok:
            sent = shorten(content_type) if content_type is not None else "none"
            also = " (or multipart/form-data)" if path in MULTIPART_PATHS else ""
            raise ApiError(
                415,
                "unsupported_media_type",
                f"a {method} body must be sent as `Content-Type: application/json`{also}, "
                f"not {sent}",
            )
        return await _buffered(receive, self.limits) if chunked else receive


_CHECKED_HEADERS = {
    name.encode("latin-1"): name
    for name in (
        "host",
        "origin",
        "authorization",
        "x-api-key",
        "content-length",
        "content-type",
        "transfer-encoding",
    )
}
"""The headers the guard decides on; the others it does not decode."""

_HOSTS_REMEMBERED = 64
"""Admitted Host values kept (a client can only add ones that pass, but each port of a
served name is another value)."""


def _speaks_anthropic(scope: Scope) -> bool:
    """Whether the request is Anthropic's API, whose errors have Anthropic's shape: the
    Messages paths, and `/v1/models` asked with an `anthropic-version` header."""
    path: str = scope["path"]
    if path.startswith("/v1/messages"):
        return True
    if not path.startswith("/v1/models"):
        return False
    return any(name.lower() == b"anthropic-version" for name, _ in scope["headers"])


def _single(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, "invalid_request", f"the request has {len(values)} {name} headers")
    return values[0]


def _with_request_id(send: Send, request_id: str) -> Send:
    tag = (b"x-request-id", request_id.encode("ascii"))

    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(key.lower() == tag[0] for key, _ in headers):  # a 500 names it already
                message = {**message, "headers": [*headers, tag]}
        await send(message)

    return tagged


async def _buffered(receive: Receive, limits: BodyLimits) -> Receive | None:
    """Read a chunked body up to the limit, then replay it: no route ever reads past the
    limit. None when the client disconnects first."""
    body = await receive_up_to_limit(receive, limits)
    if body is None:
        return None
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def create_app(host: Host) -> Starlette:
    settings = host.config.host
    limits = body_limits(settings)
    mcp = McpEndpoint(settings.host, settings.port, host.token, max_body_bytes=limits.max_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await host.start()
        try:
            async with mcp.running():
                yield
        finally:
            await host.close()

    app = Starlette(
        # The proxy's first: the hot path, and a route is found by trying each in turn.
        routes=[
            *proxy.routes,
            *control.routes,
            *task_api.routes,
            *routing_api.routes,
            *dashboard.routes,
            *mcp.routes,
        ],
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_exception,
            WorkerLost: on_worker_lost,
            Exception: on_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.host = host
    app.add_middleware(
        RequestGuard,
        bind_host=settings.host,
        token=host.token,
        port=settings.port,
        allowed_hosts=settings.allowed_hosts,
        limits=limits,
        offload=host.offload,
    )
    app.add_middleware(ActivityRecorder, log=host.activity)  # outermost: sees the guard's refusals
    return app
