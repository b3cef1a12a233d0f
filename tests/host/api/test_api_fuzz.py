"""Fuzz every JSON endpoint of a live demo daemon: never a 5xx, and /health keeps answering.

Bodies of random shape, depth and size (JSON built by hypothesis, raw bytes, megabyte
strings, nesting thousands deep, integers of thousands of digits) go to every route
that changes state. The answer must be a 2xx for a body that happens to be valid (a
created task is cancelled at once, a changed mode or routing table put back) or a 4xx
with an error body, never a 5xx; meanwhile a second thread asks `/health` all along,
each time with a bounded wait, so that a request that stalls the event loop fails.

The daemon is in gaming mode, so valid work runs on the CPU models only, and every
valid `/v1` body asks for at most three tokens: the fuzz stays fast and reproducible.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from host.api import control, proxy
from host.api import routing as routing_api
from host.api import tasks as task_api
from host.api.passthrough_body import PASSTHROUGH_PATHS
from tests.conftest import Daemon, start_daemon, wait_for_models, wait_until_gone

pytestmark = pytest.mark.real

HEALTH_WAIT_S = 5.0
PROBE_EVERY_S = 0.2
MCP_ACCEPT = "application/json, text/event-stream"

ENDPOINTS = [
    ("POST", "/api/route"),
    ("POST", "/api/tasks"),
    ("POST", "/api/tasks/{task_id}/cancel"),
    ("PUT", "/api/mode"),
    ("PUT", "/api/routing"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    *(("POST", path) for path in PASSTHROUGH_PATHS),
    ("POST", "/mcp"),
]
ANTHROPIC = {"/v1/messages", "/v1/messages/count_tokens"}
"""Anthropic's API: errors in its shape."""
V1 = {"/v1/chat/completions", "/v1/completions", *ANTHROPIC}


def test_the_fuzz_covers_every_route_that_changes_state() -> None:
    routes = set()
    for route in [*control.routes, *task_api.routes, *routing_api.routes, *proxy.routes]:
        routes |= {
            (m, route.path) for m in route.methods or () if m in {"POST", "PUT", "PATCH", "DELETE"}
        }
    assert routes | {("POST", "/mcp")} == set(ENDPOINTS)


# -- bodies ----------------------------------------------------------------------------

leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)
huge_text = st.builds(
    lambda unit, count: unit * count,
    st.sampled_from(["x", "\n", " \n", "word ", "é", "{[", "plan the design\n"]),
    st.sampled_from([1_000, 50_000, 400_000, 2_000_000, 5_000_000]),
)
texts = st.text(max_size=200) | huge_text
task_types = st.sampled_from(["planning", "implementation", "infra", "review", "poetry", ""])
# Only models that live on the CPU: in gaming mode a GPU model is a (correct) 503.
models = st.sampled_from(
    ["operator-demo", "validator-demo", "operator", "auto", "gpt-9", "", "claude-haiku-4-5"]
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "system", "assistant", "tool", "wizard"]),
            "content": texts | json_values,
        }
    ),
    max_size=3,
)
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "prompt": texts,
    "type": task_types,
    "tier": st.sampled_from(["architect", "builder", "operator", "wizard"]),
    "model": models,
    "force_big": st.booleans(),
    "priority": st.integers(-200, 200),
    "validation": st.sampled_from(["none", "final", "block_by_block", "maybe"]),
    "context": st.fixed_dictionaries(
        {},
        optional={
            "files": st.lists(
                st.fixed_dictionaries({"path": st.text(max_size=20), "content": texts}),
                max_size=3,
            ),
            "selection": texts,
        },
    ),
    "context_files": st.lists(st.text(max_size=30), max_size=5),
    "params": st.fixed_dictionaries(
        {}, optional={"max_tokens": st.integers(-5, 5), "seed": st.integers()}
    ),
    "mode": st.sampled_from(["auto", "gaming", "architect", "builder", "party"]),
    "device": st.sampled_from(["gpu0", "cpu", "gpu9"]),
    "routes": st.dictionaries(
        task_types, st.sampled_from(["architect", "builder", "operator", "x"]), max_size=4
    ),
    "messages": messages,
    "stream": st.booleans(),
    "temperature": st.floats(0, 2),
    "jsonrpc": st.just("2.0"),
    "method": st.sampled_from(["initialize", "tools/list", "ping"]),
    "id": st.integers(0, 5),
}
"""Values of the right kind for each field, so that many bodies are valid."""
FIELDS = {name: values | json_values for name, values in PLAUSIBLE.items()}
"""The same fields with values of any kind."""
REQUIRED = {
    "/api/route": ["prompt"],
    "/api/tasks": ["prompt"],
    "/api/mode": ["mode"],
    "/api/routing": ["routes"],
    "/v1/chat/completions": ["model", "messages"],
    "/v1/completions": ["model", "prompt"],
    "/v1/messages": ["model", "messages"],
    "/v1/messages/count_tokens": ["model", "messages"],
    **{path: ["model"] for path in PASSTHROUGH_PATHS},
    "/mcp": ["jsonrpc", "method", "id"],
}
shaped_objects = st.fixed_dictionaries({}, optional=FIELDS)
loose_objects = st.dictionaries(
    st.sampled_from(sorted(FIELDS)) | st.text(max_size=10), json_values, max_size=6
)
raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.integers(1, 200_000).map(lambda d: b'{"prompt": ' + b"[" * d + b"]" * d + b"}"),
    st.integers(1, 20_000).map(
        lambda n: b'{"priority": ' + b"9" * n + b', "mode": ' + b"1" * n + b"}"
    ),
    st.tuples(json_values, st.integers(0, 200)).map(lambda vt: json.dumps(vt[0]).encode()[: vt[1]]),
    st.sampled_from(
        [b"", b"{}", b"[]", b"null", b'{"prompt": "\\ud800"}', b'{"a": NaN}', b"\xef\xbb\xbf{}"]
    ),
)
content_types = st.sampled_from(
    ["application/json"] * 6 + ["application/json; charset=utf-8", "text/plain", None]
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, str | None]:
    method, path = draw(st.sampled_from(ENDPOINTS))
    path = path.replace("{task_id}", draw(st.sampled_from(["t-nope", "..%2F..", "x" * 300])))
    kind = draw(st.sampled_from(["plausible", "plausible", "shaped", "loose", "any", "raw"]))
    if kind == "raw":
        body = draw(raw_bodies)
    else:
        if kind == "plausible":
            required = REQUIRED.get(path, [])
            others = {k: v for k, v in PLAUSIBLE.items() if k not in required}
            kinds = st.fixed_dictionaries({k: PLAUSIBLE[k] for k in required}, optional=others)
        else:
            kinds = {"shaped": shaped_objects, "loose": loose_objects, "any": json_values}[kind]
        value = draw(kinds)
        if path in V1 and isinstance(value, dict):
            value["max_tokens"] = draw(st.integers(1, 3))  # valid bodies generate, briefly
        body = json.dumps(value).encode()
    return method, path, body, draw(content_types)


# -- the daemon and the probe ----------------------------------------------------------


@pytest.fixture(scope="module")
def gaming_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = start_daemon(tmp_path_factory.mktemp("fuzz"))
    try:
        wait_for_models(daemon, {"operator-demo", "validator-demo"}, "ready")
        with daemon.client() as http:
            assert http.put("/api/mode", json={"mode": "gaming"}).status_code == 200
        yield daemon
    finally:
        daemon.stop()
        left = wait_until_gone(daemon.children_seen)
        assert not left, f"model servers outlived the daemon: {left}"


class HealthProbe:
    """Asks /health every PROBE_EVERY_S, each time waiting at most HEALTH_WAIT_S."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answered = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=HEALTH_WAIT_S * 2)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=HEALTH_WAIT_S) as http:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    response = http.get("/health")
                    if response.status_code == 200:
                        self.answered += 1
                    else:
                        self.failures.append(f"/health answered {response.status_code}")
                except httpx.TransportError as exc:
                    waited = time.monotonic() - began
                    self.failures.append(f"/health: {type(exc).__name__} after {waited:.1f} s")
                self._stop.wait(PROBE_EVERY_S)


@pytest.fixture(scope="module")
def probe(gaming_daemon: Daemon) -> Iterator[HealthProbe]:
    with HealthProbe(gaming_daemon.url) as running:
        yield running
    assert not running.failures, running.failures[:5]
    assert running.answered > 0


# -- the fuzz --------------------------------------------------------------------------


def check(response: httpx.Response, path: str) -> None:
    """4xx with an error body, or 2xx; never 5xx, but for a pass-through endpoint's 501:
    the model's own server saying it does not serve it (llama-server without
    `--embeddings`), passed back as it came."""
    status = response.status_code
    not_served = status == 501 and path in PASSTHROUGH_PATHS
    assert status < 500 or not_served, (path, status, response.text[:500])
    if response.status_code < 400:
        return
    if path in ANTHROPIC:
        body = response.json()
        assert body["type"] == "error", body
    error = response.json()["error"]
    if path == "/mcp" and "code" in error:  # a JSON-RPC error from the MCP SDK
        assert isinstance(error["message"], str)
        return
    assert isinstance(error["type"], str) and isinstance(error["message"], str), error


def undo(http: httpx.Client, path: str, response: httpx.Response, routes: dict[str, str]) -> None:
    """Leave the daemon as the fuzz found it after a body that happened to be valid."""
    if path == "/api/tasks" and response.status_code == 201:
        cancelled = http.post(f"/api/tasks/{response.json()['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
    elif path == "/api/mode" and response.is_success:
        assert http.put("/api/mode", json={"mode": "gaming"}).status_code == 200
    elif path == "/api/routing" and response.is_success:
        assert http.put("/api/routing", json={"routes": routes}).status_code == 200


@settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=requests())
def test_every_json_endpoint_answers_any_body_with_a_2xx_or_a_4xx(
    gaming_daemon: Daemon, probe: HealthProbe, request: tuple[str, str, bytes, str | None]
) -> None:
    method, path, body, content_type = request
    headers = {"content-type": content_type} if content_type else {}
    if path == "/mcp":
        headers["accept"] = MCP_ACCEPT
    with gaming_daemon.client(timeout=60) as http:
        routes = http.get("/api/routing").json()["routes"]
        with http.stream(method, path, content=body, headers=headers) as response:
            response.read()
        event(f"{method} {path if '/cancel' not in path else 'cancel'} -> {response.status_code}")
        check(response, path)
        undo(http, path, response, routes)
    assert not probe.failures, probe.failures[:5]
