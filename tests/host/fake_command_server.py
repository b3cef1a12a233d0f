"""A scripted OpenAI-style server, stdlib only, for `kind = "command"` models.

It stands for vLLM, whisper.cpp's server or a TTS server: whatever a command model's
argv starts. Run it as `python fake_command_server.py --port N --host H [flags]`:

- `--health-path P` (default `/health`): where it answers 200 once ready; any other
  path of a GET (`/health` included, when P is not it) is a 404, so a test proves the
  host polled the configured path.
- `--never-healthy`: the health path answers 503 forever.
- `--crash-on PATH`: a POST to PATH kills the process (`os._exit(1)`) before it answers,
  a server crashing mid-request. With `--state FILE` it crashes once: the crash creates
  FILE, and no life of the server crashes while FILE exists.
- `--hang-on PATH`: a POST to PATH is read and never answered (a long generation), so
  a test can leave while it is in flight.
- `--ignore-sigterm`: SIGTERM is logged and ignored (only SIGKILL stops it).
- `--name NAME`: put in every answer, so a test sees which server answered.
- `--sleep-mode`: vLLM's sleep mode. `POST /sleep?level=1` frees the card (its
  `--memory-mb` moves to RAM), `POST /wake_up` takes it back; while asleep every other
  POST is a 503, so a test proves the host woke it first. `GET /debug/memory` reports
  `{"asleep", "device_mb", "ram_mb", "sleeps", "wakes", "pid"}`. `--sleep-fails` and
  `--wake-fails` make those calls answer 500.

Endpoints: `POST /v1/chat/completions` (a plain JSON answer, or SSE when `stream`),
`/v1/embeddings` (one vector per input: its length and byte sum), `/v1/audio/speech`
(`audio/wav` bytes made by `speech_bytes`, so the test can rebuild them), and
`/v1/audio/transcriptions` (a multipart upload in; `{"text": ...}` naming the file's
name and size, and the form's `model`, out). `GET /debug/env` answers its environment,
argv and pid.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()


def speech_bytes(text: str, voice: str) -> bytes:
    """What `/v1/audio/speech` answers for `text` in `voice`: a RIFF/WAVE header, every
    byte value once (so a proxy that decodes or re-encodes anything breaks it), then the
    request's words."""
    payload = b"WAVEfake" + bytes(range(256)) + f"{voice}:{text}".encode()
    return b"RIFF" + len(payload).to_bytes(4, "little") + payload


def command(*flags: str) -> list[str]:
    """The argv a command model's config gives to run this fake."""
    return [sys.executable, str(SCRIPT), "--port", "{port}", "--host", "{host}", *flags]


def embedding_of(text: str) -> list[float]:
    data = text.encode()
    return [float(len(data)), float(sum(data) % 997)]


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], args: argparse.Namespace) -> None:
        self.args = args
        self.asleep = False
        self.sleeps = 0
        self.wakes = 0
        super().__init__(address, Handler)

    def memory(self) -> dict[str, Any]:
        held = self.args.memory_mb
        return {
            "asleep": self.asleep,
            "device_mb": 0 if self.asleep else held,
            "ram_mb": held if self.asleep else 0,
            "sleeps": self.sleeps,
            "wakes": self.wakes,
            "pid": os.getpid(),
        }

    def crash_if_asked(self, path: str) -> None:
        """Die before answering a POST to `--crash-on`, unless `--state` says a life of
        this server already did."""
        args = self.args
        if path != args.crash_on:
            return
        if args.state is not None:
            if Path(args.state).exists():
                return
            Path(args.state).touch()
        os._exit(1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        print(f"fake-command: {format % args}", file=sys.stderr, flush=True)

    def send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, payload: dict[str, Any]) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:
        args = self.server.args
        if self.path == args.health_path:
            if args.never_healthy:
                self.send_json(503, {"error": {"message": "loading"}})
            else:
                self.send_json(200, {"status": "ok"})
        elif self.path == "/debug/env":
            self.send_json(200, {"env": dict(os.environ), "argv": sys.argv, "pid": os.getpid()})
        elif self.path == "/debug/memory":
            self.send_json(200, self.server.memory())
        else:
            self.send_json(404, {"error": {"message": f"no {self.path} here"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        self.server.crash_if_asked(self.path)
        if self.path == self.server.args.hang_on:
            threading.Event().wait()  # never set: this request is never answered
        if self.server.args.sleep_mode and self.sleep_or_wake():
            return
        name = self.server.args.name
        content_type = self.headers.get("Content-Type", "")
        if self.path == "/v1/audio/transcriptions":
            self.transcribe(raw, content_type, name)
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self.send_json(400, {"error": {"message": f"not JSON: {content_type}"}})
            return
        if self.path == "/v1/chat/completions":
            self.chat(body, name)
        elif self.path == "/v1/embeddings":
            inputs = body.get("input")
            texts = inputs if isinstance(inputs, list) else [inputs]
            data = [
                {"object": "embedding", "index": i, "embedding": embedding_of(str(t))}
                for i, t in enumerate(texts)
            ]
            self.send_json(200, {"object": "list", "data": data, "model": body.get("model")})
        elif self.path == "/v1/audio/speech":
            audio = speech_bytes(str(body.get("input")), str(body.get("voice")))
            self.send_bytes(200, audio, "audio/wav")
        else:
            self.send_json(404, {"error": {"message": f"no {self.path} here"}})

    def sleep_or_wake(self) -> bool:
        """Answer a sleep or wake call, or refuse work while asleep; False: go on."""
        server, args = self.server, self.server.args
        if self.path.split("?")[0] == "/sleep":
            if args.sleep_fails:
                self.send_json(500, {"error": {"message": "cannot sleep"}})
                return True
            if not server.asleep:
                server.asleep, server.sleeps = True, server.sleeps + 1
            self.send_json(200, server.memory())
        elif self.path == "/wake_up":
            if args.wake_fails:
                self.send_json(500, {"error": {"message": "cannot wake"}})
                return True
            if server.asleep:
                server.asleep, server.wakes = False, server.wakes + 1
            self.send_json(200, server.memory())
        elif server.asleep:
            self.send_json(503, {"error": {"message": f"asleep: POST /wake_up before {self.path}"}})
        else:
            return False
        return True

    def chat(self, body: dict[str, Any], name: str) -> None:
        text = f"Hello from {name}."
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            self.send_json(
                200,
                {
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        for event in events:
            event.update(object="chat.completion.chunk", model=body.get("model"))
            self.chunk(f"data: {json.dumps(event)}\n\n".encode())
        self.chunk(b"data: [DONE]\n\n")
        self.chunk(b"")

    def chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def transcribe(self, raw: bytes, content_type: str, name: str) -> None:
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        fields: dict[str, str] = {}
        upload: tuple[str, int] | None = None
        for part in form.iter_parts():
            field = part.get_param("name", header="content-disposition")
            content = part.get_payload(decode=True)
            assert isinstance(content, bytes)
            filename = part.get_filename()
            if filename is not None:
                upload = (filename, len(content))
            elif isinstance(field, str):
                fields[field] = content.decode()
        if upload is None:
            self.send_json(400, {"error": {"message": "no file in the form"}})
            return
        text = f"{name} heard {upload[0]} of {upload[1]} bytes"
        self.send_json(200, {"text": text, "model": fields.get("model")})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--health-path", default="/health")
    parser.add_argument("--never-healthy", action="store_true")
    parser.add_argument("--crash-on")
    parser.add_argument("--state")
    parser.add_argument("--hang-on")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--name", default="fake")
    parser.add_argument("--sleep-mode", action="store_true")
    parser.add_argument("--sleep-fails", action="store_true")
    parser.add_argument("--wake-fails", action="store_true")
    parser.add_argument("--memory-mb", type=int, default=300)
    args = parser.parse_args()
    if args.ignore_sigterm:
        signal.signal(
            signal.SIGTERM, lambda *_: print("fake-command: ignoring SIGTERM", file=sys.stderr)
        )
    print(f"fake-command {args.name} listening on {args.host}:{args.port}", file=sys.stderr)
    Server((args.host, args.port), args).serve_forever()


if __name__ == "__main__":
    main()
