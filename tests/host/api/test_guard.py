"""The request guard: Host and Origin, the token beyond loopback, content types, ids.

The off-loopback rules are tested on the guard itself, as an ASGI app in front of a
small app that records what reached it (a test cannot leave loopback); the loopback
rules, the no-preflight attack and the token on a wildcard bind against real daemons.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from host.api.app import RequestGuard, normal_name, served_names
from host.client import HostClient
from host.config import HostSettings
from host.errors import ApiError, BodyLimits, on_api_error, on_unexpected, read_json_object
from tests.conftest import Daemon, running_demo, start_daemon, stop_checked

TOKEN = "t0ken-" + "x" * 40
PORT = 8788
AUTH = {"authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json"}


# -- the guard as an ASGI app ----------------------------------------------------------


class Inner:
    """What gets past the guard: requests are recorded, bodies read as the API reads them."""

    def __init__(self) -> None:
        self.reached: list[tuple[str, str, Any]] = []

        async def record(request: Request) -> Response:
            body = None
            if request.method != "GET":
                raw = await request.body()
                body = await read_json_object(request) if raw else None
            self.reached.append((request.method, request.url.path, body))
            return JSONResponse({"ok": True, "request_id": request.state.request_id})

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        self.app = Starlette(
            routes=[
                Route("/health", record, methods=["GET"]),
                Route("/api/tasks", record, methods=methods),
                Route("/api/tasks/{task_id}/cancel", record, methods=["POST"]),
                Route("/mcp", record, methods=methods),
            ],
            exception_handlers={ApiError: on_api_error},
        )


def guarded(bind: str = "127.0.0.1", token: str | None = None, **options: Any) -> tuple[Any, Inner]:
    inner = Inner()
    return RequestGuard(inner.app, bind, token, port=PORT, **options), inner


def client_of(app: Any, host: str = f"127.0.0.1:{PORT}") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")


async def raw_call(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One request as a server hands it over: headers exactly as given, duplicates too."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", PORT),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], response_headers, content


def error_of(response: httpx.Response) -> dict[str, str]:
    error: dict[str, str] = response.json()["error"]
    assert error["type"] and error["message"]
    return error


@pytest.mark.parametrize("path", ["/api/tasks", "/mcp", "/api/status", "/nothing"])
async def test_off_loopback_every_route_but_health_needs_the_token(path: str) -> None:
    app, inner = guarded("0.0.0.0", TOKEN)
    async with client_of(app) as http:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            response = await http.get(path, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert "tierhost token" in error_of(response)["message"]
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/api/tasks", headers=AUTH)).status_code == 200
    assert [r[1] for r in inner.reached] == ["/health", "/api/tasks"]


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {TOKEN}\xa0",
        f"Bearer  {TOKEN}",
        f"Bearer {TOKEN} ",
        f"Bearer\t{TOKEN}",
        "Bearer \xa0",
    ],
)
async def test_off_loopback_only_the_exact_bearer_value_opens(value: str) -> None:
    app, inner = guarded("0.0.0.0", TOKEN)
    status, _, _ = await raw_call(
        app,
        "GET",
        "/api/tasks",
        [(b"host", b"127.0.0.1:8788"), (b"authorization", value.encode("latin-1"))],
    )
    assert status == 401 and inner.reached == []


def test_a_guard_beyond_loopback_without_a_token_refuses_to_exist() -> None:
    with pytest.raises(ValueError, match="needs a token"):
        guarded("0.0.0.0", None)


async def test_off_loopback_the_host_must_be_one_of_the_box_s_names() -> None:
    app, inner = guarded("0.0.0.0", TOKEN, allowed_hosts=["tierhost.example.lan"])
    own_address = next(iter(served_names("0.0.0.0") - {"127.0.0.1", "::1", "localhost"}), None)
    served = [
        f"127.0.0.1:{PORT}",
        socket.gethostname(),
        f"{socket.gethostname().upper()}:{PORT}",
        "tierhost.example.lan",
        f"TierHost.Example.LAN.:{PORT}",
    ]
    if own_address is not None and ":" not in own_address:
        served.append(f"{own_address}:{PORT}")
    for host in served:
        async with client_of(app, host) as http:
            response = await http.get("/api/tasks", headers=AUTH)
            assert response.status_code == 200, (host, response.text)
    for host in ("evil.example", f"evil.example:{PORT}", "tierhost.example.lan.evil.example"):
        async with client_of(app, host) as http:
            for path in ("/api/tasks", "/health"):
                response = await http.get(path, headers=AUTH)
                assert response.status_code == 421, host
                assert error_of(response)["type"] == "bad_host"
    assert len(inner.reached) == len(served)


def test_a_wildcard_bind_serves_its_interface_addresses_and_a_fixed_bind_its_own() -> None:
    addresses = {
        normal_name(a.address)
        for entries in psutil.net_if_addrs().values()
        for a in entries
        if a.family in (socket.AF_INET, socket.AF_INET6)
    }
    wildcard = served_names("0.0.0.0")
    assert addresses <= wildcard
    assert normal_name(socket.gethostname()) in wildcard
    assert "0.0.0.0" not in wildcard and "::" not in served_names("::")
    fixed = served_names("192.0.2.77", ["Box.Example"])
    assert {"192.0.2.77", "box.example", "localhost"} <= fixed
    assert served_names("127.0.0.1") == {"127.0.0.1", "::1", "localhost"}
    assert "fd00::1" in served_names("127.0.0.1", ["[FD00:0::1]"])


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("null", 403),
        ("vscode-evil://x", 403),
        ("vscode-webview://0123abcd", 403),
        ("vscode-file://vscode-app", 403),
        ("file://", 403),
        ("chrome-extension://abcdef", 403),
        ("http://evil.example", 403),
        (f"http://127.0.0.1.evil.example:{PORT}", 403),
        (f"http://localhost.evil.example:{PORT}", 403),
        ("http://localhost:3000", 403),  # another local web app is another site
        ("http://127.0.0.1", 403),
        (f"ftp://127.0.0.1:{PORT}", 403),
        ("http://[::1", 400),
        ("http://", 400),
        ("127.0.0.1:8788", 400),
        (f"http://127.0.0.1:{PORT}/", 400),
        ("http://127.0.0.1:99999", 400),
        (f"http://127.0.0.1:{PORT}", 200),
        (f"https://127.0.0.1:{PORT}", 200),
        (f"http://localhost:{PORT}", 200),
        (f"HTTP://LOCALHOST:{PORT}", 200),
        (f"http://[::1]:{PORT}", 200),
        (f"http://[0:0::1]:{PORT}", 200),
    ],
)
@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0"])
async def test_only_the_host_s_own_origins_are_served(bind: str, origin: str, status: int) -> None:
    token = TOKEN if bind == "0.0.0.0" else None
    app, inner = guarded(bind, token)
    async with client_of(app) as http:
        for method in ("GET", "POST"):
            response = await http.request(
                method, "/api/tasks", headers={"origin": origin, **AUTH, **JSON}, content=b"{}"
            )
            assert response.status_code == status, (method, response.text)
            if status != 200:
                assert error_of(response)["type"] == "bad_origin"
    assert len(inner.reached) == (2 if status == 200 else 0)


async def test_an_origin_equal_to_its_host_is_served_as_behind_a_tls_proxy() -> None:
    app, _ = guarded("127.0.0.1", None, allowed_hosts=["tierhost.example.lan"])
    async with client_of(app, "tierhost.example.lan") as http:
        same = await http.get("/api/tasks", headers={"origin": "https://tierhost.example.lan"})
        assert same.status_code == 200
        other = await http.get("/api/tasks", headers={"origin": "https://evil.example"})
        assert other.status_code == 403


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("[::1", 400),
        ("[::1]x", 400),
        ("[::g]:8788", 400),
        ("", 400),
        ("a b", 400),
        ("127.0.0.1:99999", 400),
        ("127.0.0.1:port", 400),
        ("::1", 400),  # IPv6 in Host goes in brackets
        ("127.0.0.1@evil.example", 400),
        ("127.0.0.1/evil", 400),
        ("evil.example", 421),
        ("127.0.0.2", 421),
        ("[::1]:8788", 200),
        ("LocalHost:1", 200),
    ],
)
async def test_the_host_header_is_parsed_strictly(host: str, status: int) -> None:
    app, _ = guarded()
    code, headers, content = await raw_call(app, "GET", "/api/tasks", [(b"host", host.encode())])
    assert code == status, content
    if status != 200:
        assert json.loads(content)["error"]["type"] == "bad_host"
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("name", [b"host", b"origin", b"authorization", b"content-type"])
async def test_a_header_sent_twice_is_ambiguous_and_refused(name: str) -> None:
    app, inner = guarded("0.0.0.0", TOKEN)
    values = {
        b"host": b"127.0.0.1",
        b"origin": b"http://127.0.0.1:8788",
        b"authorization": b"Bearer x",
        b"content-type": b"application/json",
    }
    headers = [(b"host", b"127.0.0.1")] if name != b"host" else []
    if name != b"authorization":
        headers.append((b"authorization", AUTH["authorization"].encode()))
    headers += [(name, values[name]), (name, values[name])]
    headers.append((b"content-length", b"2"))
    status, _, content = await raw_call(app, "POST", "/api/tasks", headers, b"{}")
    assert status == 400 and name.decode() in json.loads(content)["error"]["message"]
    assert inner.reached == []


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json-seq",
        "application/jsonx",
        "json",
    ],
)
async def test_a_state_change_with_a_body_must_be_json(
    method: str, content_type: str | None
) -> None:
    app, inner = guarded()
    headers = {"content-type": content_type} if content_type else {}
    async with client_of(app) as http:
        response = await http.request(
            method, "/api/tasks", content=b'{"prompt": "x"}', headers=headers
        )
    assert response.status_code == 415
    error = error_of(response)
    assert error["type"] == "unsupported_media_type" and "application/json" in error["message"]
    assert inner.reached == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "Application/JSON", "application/json; charset=utf-8"]
)
async def test_json_bodies_and_body_less_posts_pass(content_type: str) -> None:
    app, inner = guarded()
    async with client_of(app) as http:
        sent = await http.post(
            "/api/tasks", content=b'{"prompt": "x"}', headers={"content-type": content_type}
        )
        assert sent.status_code == 200
        bare = await http.post("/api/tasks/t-1/cancel")  # what HostClient.cancel_task sends
        assert bare.status_code == 200
        text_but_empty = await http.post(
            "/api/tasks/t-1/cancel", headers={"content-type": "text/plain"}
        )
        assert text_but_empty.status_code == 200
    assert inner.reached == [
        ("POST", "/api/tasks", {"prompt": "x"}),
        ("POST", "/api/tasks/t-1/cancel", None),
        ("POST", "/api/tasks/t-1/cancel", None),
    ]


async def test_every_response_carries_its_own_request_id() -> None:
    app, _ = guarded()
    async with client_of(app) as http:
        served = await http.get("/api/tasks")
        refused = await http.get("/api/tasks", headers={"origin": "null"})
        missing = await http.get("/nothing")
    ids = [r.headers["x-request-id"] for r in (served, refused, missing)]
    assert len(set(ids)) == 3 and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    assert served.json()["request_id"] == ids[0]  # the handler sees the same id


async def test_a_bug_is_a_500_naming_the_request_id_and_the_log_has_the_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("a secret from another user's prompt")

    inner = Starlette(
        routes=[Route("/api/broken", broken)],
        exception_handlers={ApiError: on_api_error, Exception: on_unexpected},
    )
    transport = httpx.ASGITransport(
        app=RequestGuard(inner, "127.0.0.1", None), raise_app_exceptions=False
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        with caplog.at_level(logging.ERROR, logger="host.errors"):
            response = await http.get("/api/broken")
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    error = error_of(response)
    assert error["type"] == "internal_error" and request_id in error["message"]
    assert "secret" not in response.text
    logged = [r for r in caplog.records if r.name == "host.errors"]
    assert len(logged) == 1 and request_id in logged[0].getMessage()
    assert logged[0].exc_info is not None and "RuntimeError" in caplog.text


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_bodies_over_the_limit_are_refused_before_any_route_reads_them() -> None:
    app, inner = guarded(limits=BodyLimits(max_bytes=1000))
    body = json.dumps({"prompt": "x" * 2000}).encode()
    async with client_of(app) as http:
        declared = await http.post("/api/tasks", content=body, headers=JSON)
        chunked = await http.post("/mcp", content=chunks_of(body, 100), headers=JSON)
        small = json.dumps({"prompt": "y" * 500}).encode()
        fits = await http.post("/mcp", content=chunks_of(small, 64), headers=JSON)
    for response in (declared, chunked):
        assert response.status_code == 413
        assert "1000 bytes (`host.max_body_mb`)" in error_of(response)["message"]
    assert fits.status_code == 200
    assert inner.reached == [("POST", "/mcp", {"prompt": "y" * 500})]


@pytest.mark.parametrize("length", ["²", "1e3", "-1", " 2", "0x10", "٣", "99999999999999999999999"])
async def test_a_content_length_that_is_not_ascii_digits_is_a_400(length: str) -> None:
    app, inner = guarded()
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", length.encode()),
    ]
    status, _, content = await raw_call(app, "POST", "/api/tasks", headers, b"{}")
    assert status == 400 and "Content-Length" in json.loads(content)["error"]["message"]
    assert inner.reached == []


# -- real daemons ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def loopback_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_demo(tmp_path_factory.mktemp("guard")) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def open_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The demo daemon bound to every interface: the token on every route but /health."""
    text = (resources.files("host") / "data" / "demo.toml").read_text()
    config = text.replace('host = "127.0.0.1"', 'host = "0.0.0.0"', 1)
    daemon = start_daemon(tmp_path_factory.mktemp("open-guard"), config)
    try:
        yield daemon
    finally:
        stop_checked(daemon)


def port_of(daemon: Daemon) -> int:
    return int(daemon.url.rsplit(":", 1)[1])


@pytest.mark.real
def test_on_loopback_browsers_reach_the_host_only_from_its_own_origins(
    loopback_daemon: Daemon,
) -> None:
    port = port_of(loopback_daemon)
    refused = [
        "null",
        "vscode-evil://x",
        "vscode-webview://0123abcd",
        f"http://localhost:{port + 1}",
        f"http://127.0.0.1.evil.example:{port}",
    ]
    with loopback_daemon.client() as http:
        for origin in refused:
            for method, path in (("GET", "/api/status"), ("POST", "/api/tasks"), ("POST", "/mcp")):
                response = http.request(
                    method, path, json={"prompt": "x"}, headers={"origin": origin}
                )
                assert response.status_code == 403, (origin, path)
                assert error_of(response)["type"] == "bad_origin"
        for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
            assert http.get("/api/status", headers={"origin": origin}).status_code == 200
        for host, status in (("evil.example", 421), (f"evil.example:{port}", 421), ("[::1", 400)):
            response = http.get("/api/status", headers={"host": host})
            assert response.status_code == status and error_of(response)["type"] == "bad_host"
        malformed = http.get("/api/status", headers={"origin": "http://[::1"})
        assert malformed.status_code == 400 and error_of(malformed)["type"] == "bad_origin"
        ids = {http.get("/health").headers["x-request-id"] for _ in range(3)}
        assert len(ids) == 3


@pytest.mark.real
def test_a_text_plain_body_cannot_force_the_gpu_while_gaming(loopback_daemon: Daemon) -> None:
    """The no-preflight attack: a page may POST `text/plain` anywhere without asking."""
    attack = json.dumps({"prompt": "#force_big Plan a heist.", "force_big": True}).encode()
    chat = json.dumps(
        {"model": "builder-demo", "messages": [{"role": "user", "content": "#force_big hi"}]}
    ).encode()
    with loopback_daemon.client() as http:
        assert http.put("/api/mode", json={"mode": "gaming"}).status_code == 200
        try:
            before = http.get("/api/tasks").json()["tasks"]
            for path, body in (("/api/tasks", attack), ("/v1/chat/completions", chat)):
                for content_type in ("text/plain", None, "application/x-www-form-urlencoded"):
                    headers = {"content-type": content_type} if content_type else {}
                    response = http.post(path, content=body, headers=headers)
                    assert response.status_code == 415, response.text
            assert http.get("/api/tasks").json()["tasks"] == before
            gpu0 = next(d for d in http.get("/api/status").json()["devices"] if d["name"] == "gpu0")
            assert gpu0["residents"] == [] and gpu0["mode"] == "gaming"
        finally:
            assert http.put("/api/mode", json={"mode": "auto"}).status_code == 200


@pytest.mark.real
async def test_our_own_client_still_submits_and_cancels(loopback_daemon: Daemon) -> None:
    async with HostClient(loopback_daemon.url, token="") as client:
        task = await client.submit_task(
            "Plan a tiny tool.", model="operator-demo", params={"max_tokens": 4}
        )
        cancelled = await client.cancel_task(task.id)  # a POST with no body
    assert cancelled.status in {"cancelled", "done"}


@pytest.mark.real
def test_off_loopback_the_token_guards_every_read_but_health(
    open_daemon: Daemon, tmp_path: Path
) -> None:
    token = (open_daemon.data_dir / "token").read_text().strip()
    assert len(token) >= 32
    with open_daemon.client() as http:
        assert http.get("/health").status_code == 200
        for path in ("/api/tasks", "/api/status", "/metrics", "/v1/models", "/api/mode"):
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == "Bearer"
            no_break_space = f"Bearer {token}\u00a0".encode()  # as a browser would: UTF-8
            assert http.get(path, headers={"authorization": no_break_space}).status_code == 401
            assert http.get(path, headers={"authorization": f"Bearer {token}"}).status_code == 200
        by_name = http.get(
            "/api/tasks",
            headers={"authorization": f"Bearer {token}", "host": f"{socket.gethostname()}:1"},
        )
        assert by_name.status_code == 200
        rebound = http.get(
            "/api/tasks", headers={"authorization": f"Bearer {token}", "host": "evil.example"}
        )
        assert rebound.status_code == 421


def test_allowed_hosts_are_names_without_ports() -> None:
    settings = HostSettings(allowed_hosts=["Box.Example.", "[FD00::1]", "10.0.0.2"])
    assert settings.allowed_hosts == ["box.example", "fd00::1", "10.0.0.2"]
    for bad in ("box.example:8788", "http://box.example", "box/x", ""):
        with pytest.raises(ValidationError, match="allowed_hosts"):
            HostSettings(allowed_hosts=[bad])


@pytest.mark.real
def test_the_configured_limits_and_names_are_what_the_daemon_enforces(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    text = (resources.files("host") / "data" / "demo.toml").read_text()
    settings = 'max_body_mb = 1\nmax_json_depth = 3\nallowed_hosts = ["tierhost.test"]\n'
    config = text.replace("port = 8788\n", "port = 8788\n" + settings, 1)
    daemon = start_daemon(tmp_path, config)
    daemon_factory.append(daemon)
    with daemon.client() as http:
        big = http.post("/api/route", json={"prompt": "x" * (1024 * 1024)})
        assert big.status_code == 413 and "1 MiB" in error_of(big)["message"]
        deep = http.post("/api/route", json={"prompt": [[["x"]]]})
        assert deep.status_code == 400 and "deeper than 3 levels" in error_of(deep)["message"]
        named = http.get("/api/mode", headers={"host": "tierhost.test:443"})
        assert named.status_code == 200
        assert http.get("/api/mode", headers={"host": "other.test"}).status_code == 421
