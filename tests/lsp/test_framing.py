"""Frames on the wire: `lsp.framing` alone (pure, table-driven), then the real bridge
(`python -m lsp` as a subprocess) fed bad frames through its stdin.

A frame the stream cannot be read past must end the bridge promptly, with a message on
stderr (and one error answer, id null, on stdout); a body that is not a message must be
answered and the bridge must go on serving. Every wait is bounded; the "within a few
seconds" ones are the liveness checks the issue asks for (a hang fails them).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lsp import framing
from lsp.framing import MAX_BODY, MAX_HEADER, FrameError, Frames
from tests.conftest import free_port

START_S = 60.0
"""Bound on the bridge starting (imports on a busy two-core box) and answering initialize."""

PROMPT_S = 5.0
"""Bound on the bridge ending (or answering) after a bad frame: "within a few seconds"."""


def frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n%b" % (len(body), body)


def message(value: Any) -> bytes:
    return frame(json.dumps(value).encode())


def bodies(chunks: list[bytes]) -> list[bytes]:
    frames = Frames()
    out = []
    for chunk in chunks:
        frames.feed(chunk)
        while (body := frames.next()) is not None:
            out.append(body)
    return out


# -- the parser ----------------------------------------------------------------------


def test_frames_in_any_chunking() -> None:
    stream = frame(b'{"a":1}') + b"Content-Type: application/vscode-jsonrpc\r\n" + frame(b"[]")
    stream += b"content-length:3\n\n{ }"  # any case, bare newlines, no space
    expected = [b'{"a":1}', b"[]", b"{ }"]
    assert bodies([stream]) == expected
    assert bodies([bytes([b]) for b in stream]) == expected  # byte by byte
    assert bodies([stream[:17], stream[17:40], stream[40:]]) == expected


def test_a_body_may_hold_anything_even_headers() -> None:
    inner = frame(b"Content-Length: 99\r\n\r\n")
    assert bodies([inner + frame(b"x")]) == [b"Content-Length: 99\r\n\r\n", b"x"]


def test_the_end_between_frames_is_clean() -> None:
    frames = Frames()
    frames.feed(frame(b"{}"))
    assert frames.next() == b"{}"
    assert frames.next() is None
    frames.close()


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b'{"jsonrpc": "2.0", "id": 1}', "is the Content-Length header missing?"),
        (b"[1, 2]", "is the Content-Length header missing?"),
        (b"Content-Type: application/json\r\n\r\n{}", "ended without a Content-Length"),
        (b"\r\n", "ended without a Content-Length"),
        (b"Content-Length: twelve\r\n\r\n", "must be a decimal number"),
        (b"Content-Length: -5\r\n", "must be a decimal number"),
        (b"Content-Length: 0x10\r\n", "must be a decimal number"),
        (b"Content-Length: 1e3\r\n", "must be a decimal number"),
        (b"Content-Length: \xd9\xa1\xd9\xa2\r\n", "must be a decimal number"),  # Arabic digits
        (b"Content-Length: \r\n", "must be a decimal number"),
        (b"Content-Length: 67108865\r\n", "over the limit of 67108864 bytes (64 MiB)"),
        (b"Content-Length: 18446744073709551617\r\n", "over the limit"),
        (b"Content-Length: " + b"9" * 5000 + b"\r\n", "over the limit"),
        (b"Content-Length: 2\r\nContent-Length: 2\r\n", "two Content-Length headers"),
        (b"Content-Length 2\r\n", "expected a header line"),
        (b": 2\r\n", "no name before its colon"),
        (b"Content-Length: 2\rX", "carriage return"),
        (b"X-Pad: " + b"a" * MAX_HEADER, "header block is over 8192 bytes"),
        (b"X-Pad: a\r\n" * (MAX_HEADER // 10 + 1), "header block is over 8192 bytes"),
    ],
)
def test_bad_frames_fail_at_once(stream: bytes, expected: str) -> None:
    """At once: no more bytes are needed to see it (the bridge need not wait for any)."""
    frames = Frames()
    frames.feed(stream)
    with pytest.raises(FrameError) as caught:
        while frames.next() is not None:
            pass
    assert expected in str(caught.value)


def test_a_huge_length_is_refused_before_its_body_arrives() -> None:
    frames = Frames()
    frames.feed(b"Content-Length: 1000000000000\r\n")
    with pytest.raises(FrameError, match="over the limit"):
        frames.next()


def test_the_limits_themselves_are_accepted() -> None:
    assert framing.content_length(str(MAX_BODY).encode()) == MAX_BODY
    assert framing.content_length(b" 007 ") == 7
    padding = b"X-Pad: " + b"a" * (MAX_HEADER - 9 - 24) + b"\r\n"
    head = padding + b"Content-Length: 2\r\n\r\n"
    assert len(head) <= MAX_HEADER
    assert bodies([head + b"{}"]) == [b"{}"]


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"Content-Length: 100\r\n\r\n" + b"x" * 10, "ended 10 bytes into a body of 100 bytes"),
        (b"Content-Length: 10\r\n", "ended inside a header block"),
        (b"Content-Len", "ended inside a header block"),
    ],
)
def test_input_that_ends_inside_a_frame(stream: bytes, expected: str) -> None:
    frames = Frames()
    frames.feed(stream)
    assert frames.next() is None
    with pytest.raises(FrameError, match=expected):
        frames.close()


def test_frame_writes_what_it_reads() -> None:
    out = framing.frame({"jsonrpc": "2.0", "id": None, "error": {"code": -1, "message": "é"}})
    (body,) = bodies([out])
    assert json.loads(body)["error"]["message"] == "é"


# -- the bridge, as a process --------------------------------------------------------


class Bridge:
    """`python -m lsp` on pipes, with stdout and stderr collected by threads (so no
    read blocks the test), and an independent reader of its frames."""

    def __init__(self, data_dir: Path) -> None:
        env = {**os.environ, "TIERHOST_DATA_DIR": str(data_dir)}
        env.pop("TIERHOST_TOKEN", None)
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens: no daemon is needed
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lsp", "--no-start", "--url", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._out = bytearray()
        self._err = bytearray()
        self._lock = threading.Lock()
        for stream, sink in ((self.process.stdout, self._out), (self.process.stderr, self._err)):
            threading.Thread(target=self._collect, args=(stream, sink), daemon=True).start()

    def _collect(self, stream: Any, sink: bytearray) -> None:
        while chunk := stream.read1(65536):
            with self._lock:
                sink += chunk

    @property
    def stderr(self) -> str:
        with self._lock:
            return self._err.decode(errors="replace")

    def messages(self) -> list[dict[str, Any]]:
        """What the bridge wrote so far, parsed without `lsp.framing` (which is under test)."""
        with self._lock:
            data = bytes(self._out)
        out = []
        for match in re.finditer(rb"Content-Length: (\d+)\r\n(?:[^\r\n]+\r\n)*\r\n", data):
            start = match.end()
            body = data[start : start + int(match.group(1))]
            if len(body) == int(match.group(1)):
                out.append(json.loads(body))
        return out

    def write(self, data: bytes, close: bool = False) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()
        if close:
            self.process.stdin.close()

    def answer(self, msg_id: Any, timeout: float = PROMPT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.messages() if m.get("id") == msg_id and "method" not in m]
            if found:
                return found[0]
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(
            f"no answer to id {msg_id!r} within {timeout:g} s; stderr:\n{self.stderr}"
        )

    def initialize(self) -> None:
        self.write(
            message(
                {
                    "jsonrpc": "2.0",
                    "id": "init",
                    "method": "initialize",
                    "params": {"processId": None, "rootUri": None, "capabilities": {}},
                }
            )
        )
        assert "result" in self.answer("init", timeout=START_S)

    def exit_status(self, timeout: float = PROMPT_S) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the bridge still runs {timeout:g} s later; stderr:\n{self.stderr}"
            ) from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None and not stream.closed:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Bridge]:
    started = Bridge(tmp_path)
    try:
        started.initialize()
        yield started
    finally:
        started.stop()


UNREADABLE = [
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 2, "method": "shutdown"}',
        "is the Content-Length header missing?",
        id="raw-json-without-headers",
    ),
    pytest.param(
        b'Content-Type: application/vscode-jsonrpc\r\n\r\n{"jsonrpc": "2.0"}',
        "without a Content-Length",
        id="no-content-length",
    ),
    pytest.param(b"Content-Length: twelve\r\n\r\n{}", "decimal number", id="non-numeric"),
    pytest.param(b"Content-Length: -1\r\n\r\n{}", "decimal number", id="negative"),
    pytest.param(b"Content-Length: 1000000000000\r\n\r\n", "over the limit", id="huge"),
    pytest.param(
        b"Content-Length: 99999999999999999999999999\r\n\r\n", "over the limit", id="huger"
    ),
    pytest.param(b"X-Pad: aaaaaaaa\r\n" * 600, "header block is over", id="header-never-ends"),
    pytest.param(b"X-Pad: " + b"a" * 10_000, "header block is over", id="header-line-never-ends"),
]


@pytest.mark.parametrize(("stream", "expected"), UNREADABLE)
def test_an_unreadable_frame_ends_the_bridge_with_a_message(
    bridge: Bridge, stream: bytes, expected: str
) -> None:
    bridge.write(stream)  # and stdin stays open: an end of input would not prove it
    assert bridge.exit_status() == 1
    assert expected in bridge.stderr
    assert "tierhost lsp:" in bridge.stderr and "so the bridge stops" in bridge.stderr
    assert "Traceback" not in bridge.stderr
    (error,) = [m for m in bridge.messages() if m.get("id") is None]
    assert error["error"]["code"] == -32700 and expected in error["error"]["message"]


def test_raw_json_as_the_very_first_bytes_ends_the_bridge(tmp_path: Path) -> None:
    """The hang that was reported: a client that sends JSON without any header."""
    started = Bridge(tmp_path)
    try:
        started.write(b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}')
        assert started.exit_status(timeout=START_S) == 1
        assert "is the Content-Length header missing?" in started.stderr
    finally:
        started.stop()


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b'Content-Length: 100\r\n\r\n{"jsonrpc"', "ended 10 bytes into a body of 100 bytes"),
        (b"Content-Length: 10\r\n", "ended inside a header block"),
    ],
)
def test_input_that_ends_inside_a_frame_ends_the_bridge_with_a_message(
    bridge: Bridge, stream: bytes, expected: str
) -> None:
    bridge.write(stream, close=True)
    assert bridge.exit_status() == 1
    assert expected in bridge.stderr


def test_input_that_ends_between_frames_ends_the_bridge_quietly(bridge: Bridge) -> None:
    bridge.write(b"", close=True)
    assert bridge.exit_status() == 0
    assert "so the bridge stops" not in bridge.stderr


def test_shutdown_and_exit_end_the_bridge_with_status_0(bridge: Bridge) -> None:
    bridge.write(message({"jsonrpc": "2.0", "id": 9, "method": "shutdown"}))
    assert bridge.answer(9) == {"jsonrpc": "2.0", "id": 9, "result": None}
    bridge.write(message({"jsonrpc": "2.0", "method": "exit"}))
    assert bridge.exit_status() == 0


NOT_MESSAGES = [
    pytest.param(b"{oops", -32700, None, "not JSON", id="invalid-json"),
    pytest.param(b"", -32700, None, "empty", id="empty-body"),
    pytest.param(b"\xff\xfe{}", -32700, None, "not UTF-8", id="not-utf8"),
    pytest.param(b"[" * 100_000, -32700, None, "nested too deeply", id="deep"),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 3, "method": "x", "params": [' + b"9" * 5000 + b"]}",
        -32700,
        None,
        "not JSON the bridge reads",
        id="huge-integer",
    ),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 3, "method": "x", "params": [NaN]}',
        -32700,
        None,
        "NaN is not JSON",
        id="nan",
    ),
    pytest.param(b"42", -32600, None, "must be a JSON object, got a number", id="number"),
    pytest.param(b'"shutdown"', -32600, None, "got a string", id="string"),
    pytest.param(b"null", -32600, None, "got null", id="null"),
    pytest.param(b'[{"jsonrpc": "2.0", "id": 4}]', -32600, None, "batch", id="batch"),
    pytest.param(b'{"id": 5, "method": "shutdown"}', -32600, 5, '"jsonrpc": "2.0"', id="no-v"),
    pytest.param(b'{"jsonrpc": "1.0", "id": 6, "method": "shutdown"}', -32600, 6, "'1.0'", id="v1"),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "shutdown"}',
        -32600,
        None,
        "id must be an integer or a string",
        id="object-id",
    ),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 1.5, "method": "shutdown"}', -32600, None, "id", id="float-id"
    ),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 7, "method": 7}', -32600, 7, "method must be a string", id="m"
    ),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 8, "method": "workspace/executeCommand", "params": "x"}',
        -32600,
        8,
        "params must be an object or an array",
        id="string-params",
    ),
    pytest.param(b'{"jsonrpc": "2.0", "id": 10}', -32600, 10, "must have a method", id="bare"),
    pytest.param(b'{"jsonrpc": "2.0", "id": 11, "method": "x/y"}', -32601, 11, "x/y", id="unk"),
]


@pytest.mark.parametrize(("body", "code", "msg_id", "expected"), NOT_MESSAGES)
def test_a_body_that_is_not_a_request_is_answered_and_the_bridge_goes_on(
    bridge: Bridge, body: bytes, code: int, msg_id: Any, expected: str
) -> None:
    bridge.write(frame(body))
    deadline = time.monotonic() + PROMPT_S
    while time.monotonic() < deadline:
        errors = [m for m in bridge.messages() if "error" in m and m.get("id") == msg_id]
        if errors:
            break
        time.sleep(0.02)
    else:
        raise AssertionError(f"no error answer within {PROMPT_S:g} s; stderr:\n{bridge.stderr}")
    assert errors[0]["error"]["code"] == code
    assert expected in errors[0]["error"]["message"]
    # still serving: a request after it is answered
    bridge.write(message({"jsonrpc": "2.0", "id": "after", "method": "shutdown"}))
    assert bridge.answer("after")["result"] is None
    assert bridge.process.poll() is None


def test_a_bad_notification_is_not_answered(bridge: Bridge) -> None:
    """JSON-RPC: a notification never gets an answer, even an error."""
    bridge.write(message({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": "x"}))
    bridge.write(message({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {}}))
    bridge.write(message({"jsonrpc": "2.0", "id": "after", "method": "shutdown"}))
    assert bridge.answer("after")["result"] is None
    assert [m for m in bridge.messages() if "error" in m] == []


def test_over_tcp_a_bad_frame_ends_the_bridge_too(tmp_path: Path) -> None:
    """`--tcp` reads its socket with the same loop: answered once, then it ends."""
    port = free_port()
    env = {**os.environ, "TIERHOST_DATA_DIR": str(tmp_path)}
    url = f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "lsp", "--no-start", "--url", url, "--tcp", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=PROMPT_S)
                break
            except OSError:
                assert process.poll() is None, "the bridge ended before it listened"
                assert time.monotonic() < deadline, f"nothing listens on {port} after {START_S} s"
                time.sleep(0.05)
        with connection:
            connection.sendall(b"Content-Length: 99999999999\r\n\r\n")
            received = b""
            while chunk := connection.recv(65536):  # the bridge closes its end: EOF
                received += chunk
        assert b'"id":null' in received and b"over the limit" in received
        assert process.wait(PROMPT_S) == 1
        assert process.stderr is not None
        assert b"over the limit" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if process.stderr is not None:
            process.stderr.close()
