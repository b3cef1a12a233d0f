"""Tasks fail soft: the operator tier's first model is a scripted remote that answers its
health probe but fails the request itself (a 500, or a connection dropped before any
reply: faults a real llama-server does not show on demand); its second is a real
llama-server on loopback, "the other box". The task moves on, says where from and to,
and is finished by the box; the flaky one is skipped until a probe finds it answering."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import Daemon, start_daemon, stop_checked
from tests.host.tasks.test_dispatcher_live import statuses, submit, wait_terminal
from tests.remote_box import KEY_ENV, REMOTE_ALIAS, REMOTE_KEY, RemoteBox

pytestmark = pytest.mark.real


class FlakyRemote:
    """Answers `GET /v1/models`; fails every chat completion the way `fault` says."""

    def __init__(self) -> None:
        self.fault = "500"
        self.chats = 0
        self.release = threading.Event()
        remote = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._send(200, b'{"object": "list", "data": [{"id": "flaky"}]}')

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                remote.chats += 1
                if remote.fault == "hang":
                    remote.release.wait(30)  # accepted, and silent until the test ends
                    return
                if remote.fault == "drop":
                    self.close_connection = True
                    self.connection.close()  # no status line: dropped before any reply
                    return
                if remote.fault == "drop-mid-stream":
                    self._drop_mid_stream()
                    return
                self._send(500, b'{"error": {"message": "CUDA error: out of memory"}}')

            def _drop_mid_stream(self) -> None:
                """One chunk of an SSE answer, then the connection goes, mid-chunk."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                event = b'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n'
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.write(b'40\r\ndata: {"cho')  # a torn chunk, and no more
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def flaky() -> Iterator[FlakyRemote]:
    remote = FlakyRemote()
    yield remote
    remote.close()


def config(flaky_url: str, box_url: str) -> str:
    return f"""
[devices.cpu]
kind = "cpu"

[models.flaky]
kind = "remote"
base_url = "{flaky_url}/v1"
health_interval_s = 60
read_timeout_s = 1

[models.operator-far]
kind = "remote"
base_url = "{box_url}/v1"
api_key_env = "{KEY_ENV}"
remote_model = "{REMOTE_ALIAS}"

[tiers.architect]
models = ["operator-far"]
[tiers.builder]
models = ["operator-far"]
[tiers.operator]
models = ["flaky", "operator-far"]
"""


@pytest.mark.parametrize("fault", ["500", "drop", "hang"])
def test_a_task_the_first_remote_fails_is_finished_by_the_next(
    tmp_path: Path, remote_box: RemoteBox, flaky: FlakyRemote, fault: str
) -> None:
    flaky.fault = fault
    daemon: Daemon = start_daemon(
        tmp_path, config(flaky.url, remote_box.url), extra_env={KEY_ENV: REMOTE_KEY}
    )
    try:
        with daemon.client() as http:
            task = submit(http, "reply to Dana", type="email", params={"max_tokens": 4})
        assert task["model"] == "flaky"  # it answers its probe: routing cannot know yet
        done = wait_terminal(daemon, task["id"])
        assert done["status"] == "done", done["events"]
        assert done["model"] == "operator-far" and done["tier"] == "operator"
        assert statuses(done) == [
            "queued",
            "waiting_device",
            "running",
            "queued",
            "waiting_device",
            "running",
            "done",
        ]
        moved = done["events"][3]["reason"]
        assert moved.startswith("failed over from flaky (")
        assert moved.endswith("to operator-far (operator)")
        named = {"500": "HTTP 500", "drop": "RemoteProtocolError", "hang": "ReadTimeout"}
        assert named[fault] in moved
        assert done["events"][-1]["reason"].endswith("tokens from operator-far")

        far = {m["name"]: m for m in daemon.status()["models"]}["flaky"]
        assert far["reachable"] is False  # skipped until a probe finds it answering
        with daemon.client() as http:
            again = submit(http, "reply to Sam", type="email", params={"max_tokens": 4})
        assert again["model"] == "operator-far"
        assert "health: skip flaky" in " ".join(again["decision"]["reasons"])
    finally:
        stop_checked(daemon)


def test_a_named_remote_is_not_replaced_but_is_skipped_afterwards(
    tmp_path: Path, remote_box: RemoteBox, flaky: FlakyRemote
) -> None:
    daemon = start_daemon(
        tmp_path, config(flaky.url, remote_box.url), extra_env={KEY_ENV: REMOTE_KEY}
    )
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    try:
        with daemon.client() as http:
            named = http.post("/v1/chat/completions", json={**chat, "model": "flaky"})
            assert named.status_code == 502  # the client asked for that model, and got why
            assert "model flaky answered HTTP 500" in named.json()["error"]["message"]
            routed = http.post("/v1/chat/completions", json={**chat, "model": "operator"})
        assert routed.status_code == 200, routed.text
        assert routed.headers["X-Tierhost-Model"] == "operator-far"
        assert "X-Tierhost-Failover" not in routed.headers  # skipped: marked down already
        assert flaky.chats == 1
    finally:
        stop_checked(daemon)


@pytest.mark.parametrize(("fault", "why"), [("500", "answered HTTP 500"), ("hang", "ReadTimeout")])
def test_a_routed_request_fails_over_before_any_byte_and_says_so(
    tmp_path: Path, remote_box: RemoteBox, flaky: FlakyRemote, fault: str, why: str
) -> None:
    flaky.fault = fault
    daemon = start_daemon(
        tmp_path, config(flaky.url, remote_box.url), extra_env={KEY_ENV: REMOTE_KEY}
    )
    try:
        with daemon.client() as http:
            response = http.post(
                "/v1/chat/completions",
                json={
                    "model": "operator",
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 2,
                    "stream": True,
                },
            )
        assert response.status_code == 200, response.text
        assert flaky.chats == 1
        assert response.headers["X-Tierhost-Model"] == "operator-far"
        assert response.headers["X-Tierhost-Failover"].startswith(f"flaky ({why}")
        assert "data: [DONE]" in response.text
        assert "request failed over from flaky" in daemon.log()
    finally:
        stop_checked(daemon)


def test_a_remote_that_drops_mid_stream_ends_it_with_an_error_event_that_says_what_next(
    tmp_path: Path, remote_box: RemoteBox, flaky: FlakyRemote
) -> None:
    """Bytes reached the client: too late to fail over. The stream keeps what was sent,
    ends with an error event (a remote is not ours to restart, so it says to retry), and
    the next request is answered."""
    flaky.fault = "drop-mid-stream"
    daemon = start_daemon(
        tmp_path, config(flaky.url, remote_box.url), extra_env={KEY_ENV: REMOTE_KEY}
    )
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    try:
        with daemon.client() as http:
            torn = http.post(
                "/v1/chat/completions", json={**chat, "model": "flaky", "stream": True}
            )
            assert torn.status_code == 200
            assert torn.headers["X-Tierhost-Model"] == "flaky"
            events = [line for line in torn.text.split("\n\n") if line.startswith("data: {")]
            assert '"Hel"' in events[0]
            error = json.loads(events[-1].removeprefix("data: "))["error"]
            assert error["type"] == "upstream_failed"
            assert "model flaky stopped answering mid-stream" in error["message"]
            assert "retry: if its box is down" in error["message"]
            assert "restarted" not in error["message"]  # not ours to restart
            flaky.fault = "500"
            routed = http.post("/v1/chat/completions", json={**chat, "model": "operator"})
        assert routed.status_code == 200, routed.text
        assert routed.headers["X-Tierhost-Model"] == "operator-far"
    finally:
        stop_checked(daemon)
