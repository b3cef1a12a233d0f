"""The dashboard's endpoints without a browser: its page and files, the live feed, and
Load / Unload, against a real daemon (two SmolLM2 llama-servers sharing a budget-only
gpu0, a persistent one on the CPU, a model on another box that is not there); the token
rule on the guard itself (a test cannot leave loopback).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from host.api.app import RequestGuard
from host.api.dashboard import ASSETS, CSP
from tests.conftest import Daemon, free_port, model_status, start_daemon, stop_checked, wait_for

DEMO_ARGS = '["--ctx-size", "2048", "--parallel", "2", "--no-warmup"]'
BOUND_S = 60.0
CONFIG = f"""
[host]
queue_timeout_s = {BOUND_S}

[devices.gpu0]
kind = "gpu"
memory_mb = 1000

[devices.cpu]
kind = "cpu"

[models.planner]
gguf = "demo:smollm2"
device = "gpu0"
memory_mb = 600
args = {DEMO_ARGS}
start_timeout_s = 60

[models.coder]
gguf = "demo:smollm2"
device = "gpu0"
memory_mb = 600
args = {DEMO_ARGS}
start_timeout_s = 60

[models.helper]
gguf = "demo:smollm2"
device = "cpu"
persistent = true
args = {DEMO_ARGS}
start_timeout_s = 60

[models.far]
kind = "remote"
base_url = "http://127.0.0.1:{free_port()}/v1"

[tiers.architect]
models = ["planner"]
[tiers.builder]
models = ["coder"]
[tiers.operator]
models = ["helper", "far"]
"""


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("dashboard-api")
    running = start_daemon(tmp, CONFIG)
    try:
        wait_for(lambda: model_status(running, "helper")["state"] == "ready", "helper up", 60)
        yield running
    finally:
        stop_checked(running)


def post(box: Daemon, path: str) -> httpx.Response:
    with box.client(timeout=BOUND_S) as client:
        return client.post(path)


def set_mode(box: Daemon, mode: str) -> None:
    with box.client() as client:
        assert client.put("/api/mode", json={"device": "gpu0", "mode": mode}).status_code == 200


class Feed:
    """`GET /api/events` read on a thread: the events it carried, in order."""

    def __init__(self, box: Daemon) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.ended = threading.Event()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(box.url,), daemon=True)
        self._thread.start()
        assert self._opened.wait(BOUND_S), "the event stream did not open"

    def _read(self, url: str) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(BOUND_S, read=None)) as client,
                client.stream("GET", f"{url}/api/events") as response,
            ):
                assert response.headers["content-type"].startswith("text/event-stream")
                kind = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((kind, json.loads(line[6:])))
                        self._opened.set()
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def saw(self, kind: str, **fields: Any) -> bool:
        return any(
            k == kind and all(data.get(f) == v for f, v in fields.items())
            for k, data in self.events
        )


def test_the_root_redirects_to_the_page_and_its_files_carry_a_strict_policy(box: Daemon) -> None:
    with box.client() as client:
        root = client.get("/")
        page = client.get("/ui/")
        script = client.get("/ui/app.js")
    assert (root.status_code, root.headers["location"]) == (307, "/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert script.headers["content-type"].startswith("text/javascript")
    for answer in (page, script):
        assert answer.headers["content-security-policy"] == CSP
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert "unsafe-inline" not in CSP and "script-src 'self'" in CSP
    assert set(ASSETS) == {"index.html", "app.js", "style.css"}


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/..%2F..%2Fpyproject.toml", "/ui/app.py"])
def test_only_the_pages_own_files_are_served(box: Daemon, path: str) -> None:
    with box.client() as client:
        answer = client.get(path)
    assert answer.status_code == 404
    assert "content-security-policy" not in answer.headers or answer.status_code == 404


def test_the_feed_says_hello_then_tells_of_a_load_as_it_happens(box: Daemon) -> None:
    feed = Feed(box)
    assert feed.events[0][0] == "hello"

    answer = post(box, "/api/models/planner/load")

    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "ready"
    wait_for(lambda: feed.saw("model", model="planner", state="ready"), "planner ready in the feed")
    assert feed.saw("model", model="planner", state="starting")
    wait_for(lambda: feed.saw("swap", model="planner", outcome="ready"), "the swap in the feed")


def test_the_feed_tells_of_each_step_of_a_task(box: Daemon) -> None:
    feed = Feed(box)
    body = {"prompt": "Say hi.", "model": "helper", "validation": "none"}
    with box.client(timeout=BOUND_S) as client:
        submitted = client.post("/api/tasks", json={**body, "params": {"max_tokens": 4}})
    assert submitted.status_code == 201, submitted.text
    task = submitted.json()["id"]

    wait_for(lambda: feed.saw("task", id=task, status="done"), "the task done on the feed")

    steps = [data["status"] for kind, data in feed.events if kind == "task" and data["id"] == task]
    assert steps[0] == "queued" and "running" in steps and steps[-1] == "done", steps


def test_a_load_swaps_out_the_other_model_and_unload_stops_it(box: Daemon) -> None:
    assert post(box, "/api/models/planner/load").status_code == 200
    assert post(box, "/api/models/coder/load").status_code == 200
    assert model_status(box, "planner")["state"] == "stopped"  # one fits on gpu0

    answer = post(box, "/api/models/coder/unload")

    assert answer.status_code == 200 and answer.json() == {"model": "coder", "state": "stopped"}
    assert post(box, "/api/models/coder/unload").json()["state"] == "stopped"  # again: a no-op


def test_unload_is_refused_while_the_model_serves_a_request(box: Daemon) -> None:
    assert post(box, "/api/models/planner/load").status_code == 200
    body = {"model": "planner", "prompt": "Count:", "max_tokens": 2000, "stream": True}
    body |= {"ignore_eos": True}
    with (
        httpx.Client(base_url=box.url, timeout=BOUND_S) as client,
        client.stream("POST", "/v1/completions", json=body) as stream,
    ):
        lines = stream.iter_lines()  # kept: a dropped iterator closes the connection
        next(lines)  # it is generating
        refused = client.post("/api/models/planner/unload")
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == ("planner is serving 1 request; try when done")


def test_what_cannot_be_loaded_or_unloaded_is_refused_saying_why(box: Daemon) -> None:
    persistent = post(box, "/api/models/helper/unload")
    assert persistent.status_code == 409
    assert "persistent" in persistent.json()["error"]["message"]
    remote = post(box, "/api/models/far/load")
    assert remote.status_code == 409 and "another box" in remote.json()["error"]["message"]
    unknown = post(box, "/api/models/nobody/load")
    assert unknown.status_code == 404 and "planner" in unknown.json()["error"]["message"]
    set_mode(box, "gaming")
    try:
        held = post(box, "/api/models/coder/load")
    finally:
        set_mode(box, "auto")
    assert held.status_code == 409
    assert held.json()["error"]["message"].startswith(
        "coder cannot be loaded now: gpu0 is in gaming mode"
    )


def test_an_open_feed_does_not_hold_up_the_daemons_stop(tmp_path: Any) -> None:
    daemon = start_daemon(tmp_path, CONFIG.replace("persistent = true", "persistent = false"))
    feed = Feed(daemon)
    stop_checked(daemon)  # fails if the daemon does not exit within its bound
    assert feed.ended.wait(BOUND_S), "the feed was not ended by the stop"


# -- the token beyond loopback, on the guard itself -------------------------------------

TOKEN = "t0ken-" + "y" * 40


async def test_beyond_loopback_the_page_needs_no_token_and_the_feed_does() -> None:
    async def reached(request: Request) -> Response:
        return JSONResponse({"path": request.url.path})

    inner = Starlette(
        routes=[Route(p, reached) for p in ("/", "/ui/", "/ui/app.js", "/api/events")]
    )
    app = RequestGuard(inner, "0.0.0.0", TOKEN, port=8788)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8788") as http:
        for path in ("/", "/ui/", "/ui/app.js"):
            assert (await http.get(path)).status_code == 200, path
        assert (await http.get("/api/events")).status_code == 401
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/api/events", headers=bearer)).status_code == 200
