"""`host.client`: how every client finds the token, and what HostClient sends with it.

The contract tests read every answer of a real daemon (the demo's models, a sleeping
one, a remote box that is down) into the `host.wire` model HostClient returns, and
require the model to give back the very document the daemon sent: a key the daemon
adds and the wire model lacks would be dropped for every client without a word.

The header tests use a real HTTP server on 127.0.0.1 that records what reaches it. A
URL that is not loopback (`http://box.lan:8788`) reaches it as an HTTP proxy named by
`HTTP_PROXY`, the way httpx sends through any proxy: so the request really leaves the
client addressed to the LAN name, with whatever headers the client put on it.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from host.client import (
    TOKEN_ENV,
    HostClient,
    HostError,
    TokenError,
    discover_token,
    find_token,
    is_loopback_url,
    read_token_file,
)
from host.wire import (
    TERMINAL,
    Decision,
    Health,
    HostStatus,
    Swap,
    SwapList,
    Task,
    TaskList,
)
from tests.conftest import Daemon, free_port, start_daemon, wait_for, wait_for_models
from tests.host.fake_command_server import command

DEMO_CONFIG = Path(__file__).parents[2] / "host" / "data" / "demo.toml"
TOKEN = "Zq3-x_9vJ0bLw2Ue7TtYkPq1sRgHnMf4aC8dE6iOuA0"


@dataclass
class Recorder:
    """What the test server saw, and what it answers."""

    url: str
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    status: int = 200
    body: bytes = b'{"status": "ok"}'


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    state = Recorder(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(state.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean environment: no token variable, no proxies, an empty data dir."""
    for name in (TOKEN_ENV, "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TIERHOST_DATA_DIR", str(tmp_path))
    return tmp_path


# -- finding the token -----------------------------------------------------------------


def test_the_environment_comes_before_the_token_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-the-file\n")
    assert find_token({TOKEN_ENV: TOKEN}, tmp_path) == (TOKEN, f"${TOKEN_ENV}")


def test_the_token_file_is_read_without_its_line_end(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\r\n")
    assert find_token({}, tmp_path) == (TOKEN, str(tmp_path / "token"))
    assert find_token({TOKEN_ENV: ""}, tmp_path) == (TOKEN, str(tmp_path / "token"))
    assert discover_token({}, tmp_path) == TOKEN


@pytest.mark.parametrize("content", ["", "\n", " \t \n"])
def test_an_empty_token_file_means_no_token(tmp_path: Path, content: str) -> None:
    (tmp_path / "token").write_text(content)
    assert find_token({}, tmp_path) is None
    assert read_token_file(tmp_path / "token") is None


def test_no_variable_and_no_file_means_no_token(tmp_path: Path) -> None:
    assert find_token({}, tmp_path) is None
    assert read_token_file(tmp_path / "missing") is None


@pytest.mark.parametrize(
    "content",
    [
        "\u00a0".encode(),  # a no-break space: Unicode strip would make it empty
        f"{TOKEN}\u00a0".encode(),
        b"two words",
        b"tab\tinside",
        b"\xff\xfe garbage",
        b"x" * 5000,
    ],
)
def test_a_token_file_an_http_header_cannot_carry_is_refused(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "token").write_bytes(content)
    with pytest.raises(TokenError) as caught:
        find_token({}, tmp_path)
    assert str(tmp_path / "token") in str(caught.value)


def test_a_bad_token_variable_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match=r"\$TIERHOST_TOKEN"):
        find_token({TOKEN_ENV: "caf\u00e9"}, tmp_path)


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8788", True),
        ("http://localhost:8788", True),
        ("http://[::1]:8788", True),
        ("http://127.0.0.2:8788", True),
        ("http://192.168.1.5:8788", False),
        ("http://box.lan:8788", False),
        ("http://[::1", False),  # malformed: not trusted as loopback
    ],
)
def test_loopback_urls(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


# -- what HostClient sends -------------------------------------------------------------


async def test_the_token_goes_to_a_url_off_loopback(
    recorder: Recorder, token_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", recorder.url)
    (token_env / "token").write_text(TOKEN + "\n")
    async with HostClient("http://box.lan:8788") as client:
        assert await client.health() == Health(status="ok")
    [(path, headers)] = recorder.requests
    assert path == "http://box.lan:8788/health"  # addressed to the LAN name
    assert headers["authorization"] == f"Bearer {TOKEN}"


async def test_the_token_goes_to_loopback_too_and_never_through_a_proxy(
    recorder: Recorder, token_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon bound beyond loopback wants the token from 127.0.0.1 as well; and a
    proxy from the environment must not see loopback traffic or its token."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    async with HostClient(recorder.url) as client:
        assert await client.health() == Health(status="ok")
    [(path, headers)] = recorder.requests
    assert path == "/health"
    assert headers["authorization"] == f"Bearer {TOKEN}"


async def test_no_token_found_sends_no_header(recorder: Recorder, token_env: Path) -> None:
    async with HostClient(recorder.url) as client:
        await client.health()
    async with HostClient(recorder.url, token="") as client:  # explicitly none
        await client.health()
    assert [h.get("authorization") for _, h in recorder.requests] == [None, None]


async def test_a_token_given_explicitly_wins(
    recorder: Recorder, token_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment")
    async with HostClient(recorder.url, token=TOKEN) as client:
        await client.health()
    assert recorder.requests[0][1]["authorization"] == f"Bearer {TOKEN}"


async def test_a_401_says_how_to_send_the_token(recorder: Recorder, token_env: Path) -> None:
    recorder.status = 401
    recorder.body = json.dumps(
        {"error": {"type": "unauthorized", "message": "send the token\n(see `tierhost token`)"}}
    ).encode()
    async with HostClient(recorder.url) as client:
        with pytest.raises(HostError) as caught:
            await client.status()
    message = str(caught.value)
    assert caught.value.status == 401 and caught.value.kind == "unauthorized"
    assert "\n" not in message
    assert "TIERHOST_TOKEN" in message and str(token_env / "token") in message


async def test_a_refused_token_is_named_by_where_it_came_from(
    recorder: Recorder, token_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder.status = 401
    recorder.body = b'{"error": {"type": "unauthorized", "message": "wrong token"}}'
    monkeypatch.setenv(TOKEN_ENV, "stale")
    async with HostClient(recorder.url) as client:
        with pytest.raises(HostError, match=r"the token from \$TIERHOST_TOKEN was refused"):
            await client.status()


async def test_an_answer_that_is_not_json_is_a_clear_error(
    recorder: Recorder, token_env: Path
) -> None:
    recorder.body = b"<html>some other server</html>"
    async with HostClient(recorder.url) as client:
        with pytest.raises(HostError, match="not JSON: is it a Tierhost daemon"):
            await client.status()


async def test_an_error_not_in_the_daemon_s_shape_says_who_may_have_answered(
    recorder: Recorder, token_env: Path
) -> None:
    recorder.status = 404
    recorder.body = b"File not found"
    async with HostClient(recorder.url) as client:
        with pytest.raises(
            HostError,
            match=r"answered HTTP 404 Not Found: File not found, not "
            r"in a Tierhost daemon's words: is it one\?",
        ) as caught:
            await client.status()
    assert caught.value.status == 404 and caught.value.kind == "http_error"


async def test_an_answer_that_does_not_fit_its_model_says_where(
    recorder: Recorder, token_env: Path
) -> None:
    recorder.body = b'{"devices": [{"name": "gpu0", "queue": "three"}], "models": []}'
    async with HostClient(recorder.url) as client:
        with pytest.raises(HostError, match=r"HostStatus that does not fit: devices\.0\.queue"):
            await client.status()


# -- the contract: each answer read whole -------------------------------------------


def _contract_config(dead_port: int) -> str:
    """The demo, and beside it a model that sleeps instead of stopping and a remote box
    nothing answers for: every kind of entry `/api/status` can hold."""
    sleeper = command("--name", "dozer", "--sleep-mode")
    return (
        DEMO_CONFIG.read_text()
        + f"""
[models.dozer]
kind = "command"
device = "cpu"
memory_mb = 50
command = {json.dumps(sleeper)}
sleep = {{ path = "/sleep?level=1", wake_path = "/wake_up", memory_mb = 20 }}

[models.far-box]
kind = "remote"
base_url = "http://127.0.0.1:{dead_port}/v1"
"""
    )


def _whole(model: type[BaseModel], sent: Any) -> None:
    """The model keeps every key the daemon sent, at every depth, with its value."""
    read = model.model_validate(sent)
    assert read.model_dump(mode="json", exclude_unset=True) == sent


async def test_every_answer_reads_whole_into_the_wire_model_the_client_returns(
    tmp_path: Path, daemon_factory: list[Daemon]
) -> None:
    daemon = start_daemon(tmp_path, _contract_config(free_port()))
    daemon_factory.append(daemon)
    wait_for_models(daemon, {"operator-demo", "validator-demo"}, "ready")
    with daemon.client() as raw:
        # an implementation task whose answer is cut at 8 tokens: it fails validation,
        # so it carries a decision with its evidence, events, findings and a scratchpad
        body = {"prompt": "write a python function that adds two numbers", "params": {}}
        body["params"] = {"max_tokens": 8}
        submitted = raw.post("/api/tasks", json=body).json()
        _whole(Task, submitted)
        task_id = submitted["id"]
        ended = wait_for(
            lambda: (t := raw.get(f"/api/tasks/{task_id}").json())["status"] in TERMINAL and t,
            "the task to end",
            timeout=120,
        )
        assert ended["scratchpad"] and ended["events"] and ended["decision"]["type_evidence"]
        _whole(Task, ended)
        _whole(TaskList, raw.get("/api/tasks").json())
        _whole(Task, raw.post(f"/api/tasks/{task_id}/cancel").json())
        decision = raw.post("/api/route", json={"prompt": "plan the release"}).json()
        _whole(Decision, decision)
        status = raw.get("/api/status").json()
        kinds = {m["name"]: m for m in status["models"]}
        assert kinds["dozer"]["sleep"] is not None and kinds["far-box"]["kind"] == "remote"
        _whole(HostStatus, status)
        _whole(SwapList, raw.get("/api/swaps").json())
        _whole(Health, raw.get("/health").json())

    async with HostClient(daemon.url) as client:
        assert isinstance(await client.status(), HostStatus)
        assert isinstance(await client.get_task(task_id), Task)
        assert all(isinstance(t, Task) for t in await client.list_tasks())
        assert (await client.route("plan the release")).tier == decision["tier"]
        assert all(isinstance(s, Swap) for s in await client.swaps())
        assert (await client.health()).status == "ok"
