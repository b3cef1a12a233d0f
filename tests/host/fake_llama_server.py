"""A scripted stand-in for llama.cpp's `llama-server`, stdlib only, for fault tests.

It takes llama-server's argv (`--model X --host H --port P ... --n-gpu-layers 0`),
ignores the arguments it does not know, and behaves as `--fake-mode MODE` says:

- `ok`: `/health` answers 503 "loading" for `--fake-ready-delay` seconds, then 200;
  `/v1/chat/completions` and `/v1/completions` answer in OpenAI format, streamed as
  SSE (chunked, like llama-server) or as one JSON body.
- `crash-mid-stream`: like `ok`, but a streaming request gets a few SSE chunks and then
  the process dies with `os._exit(1)`. Here `max_tokens` is honoured, so a request with
  `max_tokens` under 3 ends before the crash (a test makes the server resident with it).
- `never-ready`: `/health` stays 503 forever.
- `exit-at-start`: prints `error: failed to load model '<path>'` to stderr, exits 1.
- `oom-at-start`: prints a CUDA out-of-memory line to stderr, exits 1.
- `exit-quietly`: exits 3 at start without a word.
- `illegal-instruction`: dies of SIGILL at start, as a build for another CPU does.
- `ignore-sigterm`: like `ok`, but SIGTERM is ignored (only SIGKILL stops it).

With `--fake-script FILE` (a JSON list of strings) the chat and completion answers come
from the script, one entry per request in order (the last one repeats once the list is
used up), so a test can make a builder answer broken then fixed code and a validator
answer FAIL then PASS.

`/v1/messages` answers in Anthropic's format, streamed (`event:` + `data:` SSE, like
llama-server) or not, and `/v1/messages/count_tokens` with `{"input_tokens": N}` (N the
words of the messages). A script entry there may also be an object
`{"tool_use": {"name": ..., "input": {...}}}`: the answer is then that tool call (a
`tool_use` block, `stop_reason` tool_use), as llama-server with `--jinja` gives a model
that calls a tool, which the demo model's template cannot.

With `--fake-log FILE` every request body is appended to FILE as one JSON line, so a test
can read what each model was asked, or that it was not asked.

With `--fake-state FILE` the mode applies to the first start only: that start creates
FILE, and every later start (FILE exists) behaves `ok`. So a model configured with
`crash-mid-stream` crashes once and then serves normally after its restart.

The daemon runs `host.llama_server` directly, so tests point it at a wrapper shell
script made by `write_wrapper()`, which execs this file with the test's interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODES = (
    "ok",
    "crash-mid-stream",
    "never-ready",
    "exit-at-start",
    "oom-at-start",
    "exit-quietly",
    "illegal-instruction",
    "ignore-sigterm",
)
REPLY_WORDS = ("Hello", " from", " the", " fake", " server", ".")
CHUNKS_BEFORE_CRASH = 3


def write_wrapper(directory: Path) -> Path:
    """An executable `llama-server` in `directory` that runs this fake."""
    wrapper = directory / "llama-server"
    wrapper.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{Path(__file__).resolve()}' \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def fake_args(
    mode: str,
    state: Path | None = None,
    ready_delay: float | None = None,
    *,
    script: Path | None = None,
    request_log: Path | None = None,
) -> list[str]:
    """The model `args` that select a behaviour."""
    args = ["--fake-mode", mode]
    if script is not None:
        args += ["--fake-script", str(script)]
    if request_log is not None:
        args += ["--fake-log", str(request_log)]
    if state is not None:
        args += ["--fake-state", str(state)]
    if ready_delay is not None:
        args += ["--fake-ready-delay", str(ready_delay)]
    return args


def config_head(directory: Path, queue_timeout_s: float) -> tuple[str, Path]:
    """The `[host]` and `[devices]` part of a test config that runs this fake (a 400 MiB
    budget-only gpu0 and the cpu), and a placeholder GGUF for its models."""
    gguf = directory / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    head = (
        f'[host]\nllama_server = "{write_wrapper(directory)}"\n'
        f"queue_timeout_s = {queue_timeout_s}\nstop_grace_s = 5\n\n"
        '[devices.gpu0]\nkind = "gpu"\nmemory_mb = 400\n\n[devices.cpu]\nkind = "cpu"\n'
    )
    return head, gguf


def model_entry(
    gguf: Path,
    device: str,
    memory_mb: int,
    args: list[str],
    *,
    start_timeout_s: float = 10,
    persistent: bool = False,
) -> str:
    """The keys of one `[models.NAME]` table that runs this fake."""
    return (
        f'gguf = "{gguf}"\ndevice = "{device}"\nmemory_mb = {memory_mb}\n'
        f"args = {json.dumps(args)}\nstart_timeout_s = {start_timeout_s}\n"
        f"persistent = {str(persistent).lower()}\n"
    )


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        mode: str,
        model: str,
        ready_at: float,
        script: Path | None = None,
        request_log: Path | None = None,
    ) -> None:
        self.mode = mode
        self.model = model
        self.ready_at = ready_at
        self.script = script
        self.request_log = request_log
        self.served = 0
        self.lock = threading.Lock()
        super().__init__(address, Handler)

    def ready(self) -> bool:
        return self.mode != "never-ready" and time.monotonic() >= self.ready_at

    def log_request(self, body: dict[str, Any]) -> None:
        if self.request_log is not None:
            with self.request_log.open("a") as log_file:
                log_file.write(json.dumps(body) + "\n")

    def next_entry(self, body: dict[str, Any]) -> object:
        """The next script entry (None without a script); logs the request first when
        asked to."""
        with self.lock:
            self.log_request(body)
            if self.script is None:
                return None
            replies = json.loads(self.script.read_text())
            entry: object = replies[min(self.served, len(replies) - 1)]
            self.served += 1
        return entry

    def next_reply(self, body: dict[str, Any]) -> list[str]:
        """The words of the next answer."""
        return words_of(self.next_entry(body))


def words_of(entry: object) -> list[str]:
    if entry is None:
        return list(REPLY_WORDS)
    return re.findall(r"\s*\S+|\s+", str(entry)) or [""]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:
        log(f"srv  log_server_r: {format % args}")

    # -- helpers ------------------------------------------------------------------

    def send_json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def read_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return {}
        return body if isinstance(body, dict) else {}

    # -- routes -------------------------------------------------------------------

    def do_GET(self) -> None:
        if self.path == "/health":
            if self.server.ready():
                self.send_json(200, {"status": "ok"})
            else:
                self.send_json(503, {"error": {"code": 503, "message": "Loading model"}})
        elif self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": self.server.model}]})
        else:
            self.send_json(404, {"error": {"code": 404, "message": "File Not Found"}})

    def do_POST(self) -> None:
        body = self.read_body()
        if self.path in ("/v1/messages", "/v1/messages/count_tokens"):
            self.messages(body)
            return
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            self.send_json(404, {"error": {"code": 404, "message": "File Not Found"}})
            return
        if not self.server.ready():
            self.send_json(503, {"error": {"code": 503, "message": "Loading model"}})
            return
        chat = self.path == "/v1/chat/completions"
        words = self.server.next_reply(body)
        limit = body.get("max_tokens")
        if self.server.mode == "crash-mid-stream" and isinstance(limit, int):
            words = words[:limit]
        if body.get("stream"):
            self.stream(chat, words)
        else:
            self.answer(chat, words)

    def answer(self, chat: bool, words: list[str]) -> None:
        text = "".join(words)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        self.send_json(
            200,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": self.server.model,
                "choices": [choice],
                "usage": {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9},
            },
        )

    def stream(self, chat: bool, words: list[str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, word in enumerate(words):
            if self.server.mode == "crash-mid-stream" and index == CHUNKS_BEFORE_CRASH:
                log("fake: crashing mid-stream")
                os._exit(1)
            delta: dict[str, Any] = {"content": word}
            if chat and index == 0:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "finish_reason": None}
            if chat:
                choice["delta"] = delta
            else:
                choice["text"] = word
            event = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()),
                "model": self.server.model,
                "choices": [choice],
            }
            self.send_chunk(f"data: {json.dumps(event)}\n\n".encode())
        self.send_chunk(b"data: [DONE]\n\n")
        self.send_chunk(b"")

    # -- Anthropic's Messages API ------------------------------------------------------

    def messages(self, body: dict[str, Any]) -> None:
        for header in ("anthropic-version", "anthropic-beta"):
            if header in self.headers:  # logged with the body, for tests of forwarding
                body = {**body, f"_{header}": self.headers[header]}
        if not self.server.ready():
            self.send_json(503, {"error": {"code": 503, "message": "Loading model"}})
            return
        if self.path.endswith("/count_tokens"):
            self.server.log_request(body)
            words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
            self.send_json(200, {"input_tokens": words})
            return
        entry = self.server.next_entry(body)
        tool = entry.get("tool_use") if isinstance(entry, dict) else None
        if isinstance(tool, dict):
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": f"toolu_fake{self.server.served}",
                "name": tool["name"],
                "input": tool.get("input", {}),
            }
            stop = "tool_use"
        else:
            words = words_of(entry)
            limit = body.get("max_tokens")
            if self.server.mode == "crash-mid-stream" and isinstance(limit, int):
                words = words[:limit]
            block = {"type": "text", "text": "".join(words)}
            stop = "end_turn"
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": self.server.model,
            "content": [block],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 6},
        }
        if body.get("stream"):
            self.stream_message(message, words_of(block["text"]) if stop == "end_turn" else [])
        else:
            self.send_json(200, message)

    def send_event(self, kind: str, data: dict[str, Any]) -> None:
        self.send_chunk(f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode())

    def stream_message(self, message: dict[str, Any], words: list[str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        block = message["content"][0]
        start = {**message, "content": [], "stop_reason": None}
        start["usage"] = {"input_tokens": 3, "output_tokens": 0}
        self.send_event("message_start", {"message": start})
        if block["type"] == "tool_use":
            opening = {**block, "input": {}}
            self.send_event("content_block_start", {"index": 0, "content_block": opening})
            arguments = json.dumps(block["input"])
            for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                delta = {"type": "input_json_delta", "partial_json": piece}
                self.send_event("content_block_delta", {"index": 0, "delta": delta})
        else:
            opening = {"type": "text", "text": ""}
            self.send_event("content_block_start", {"index": 0, "content_block": opening})
            for index, word in enumerate(words):
                if self.server.mode == "crash-mid-stream" and index == CHUNKS_BEFORE_CRASH:
                    log("fake: crashing mid-stream")
                    os._exit(1)
                delta = {"type": "text_delta", "text": word}
                self.send_event("content_block_delta", {"index": 0, "delta": delta})
        self.send_event("content_block_stop", {"index": 0})
        stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        self.send_event("message_delta", {"delta": stop, "usage": {"output_tokens": 6}})
        self.send_event("message_stop", {})
        self.send_chunk(b"")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--model", "-m", default="model.gguf")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--fake-mode", choices=MODES, default="ok")
    parser.add_argument("--fake-state", type=Path)
    parser.add_argument("--fake-ready-delay", type=float, default=0.05)
    parser.add_argument("--fake-script", type=Path)
    parser.add_argument("--fake-log", type=Path)
    args, _unknown = parser.parse_known_args(argv)

    mode: str = args.fake_mode
    if args.fake_state is not None:
        if args.fake_state.exists():
            mode = "ok"
        else:
            args.fake_state.write_text(f"{os.getpid()}\n")
    log(f"fake: pid {os.getpid()} mode {mode} port {args.port}")

    if mode == "exit-at-start":
        log(f"error: failed to load model '{args.model}'")
        return 1
    if mode == "illegal-instruction":
        signal.signal(signal.SIGILL, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGILL)
    if mode == "oom-at-start":
        log(
            "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 20480.00 MiB on device 0: "
            "cudaMalloc failed: out of memory"
        )
        return 1
    if mode == "exit-quietly":
        return 3

    def on_sigterm(signum: int, frame: object) -> None:
        if mode == "ignore-sigterm":
            log("fake: ignoring SIGTERM")
            return
        log("fake: got SIGTERM, exiting")
        os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    server = FakeServer(
        (args.host, args.port),
        mode,
        Path(args.model).name,
        time.monotonic() + args.fake_ready_delay,
        args.fake_script,
        args.fake_log,
    )
    log(f"main: server is listening on http://{args.host}:{args.port}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # The main thread only waits, so signal handlers run promptly.
    while thread.is_alive():
        thread.join(1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
