"""The bridge's end of the byte stream, on stdio or TCP: frames in, messages to pygls,
an answer for each one refused.

It replaces pygls's read loop (`pygls.io_.run_async`), which hangs on a frame without a
Content-Length, tries to read any length it is told, and drops a body it cannot parse
without an answer. Here `framing` cuts the stream and `messages` checks each body; what
they refuse is answered with its JSON-RPC error, and a frame that leaves the stream
unreadable (there is no telling where the next one starts) is answered once (id null),
said on stderr, and ends the bridge with status 1 at once — an editor restarts a bridge
that exits; it cannot restart one that hangs.

stdin is read in a daemon thread of its own, not the event loop's default executor:
those threads are joined when the interpreter exits, so a read blocked on a silent
client would keep a bridge that has finished alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import BinaryIO

from pygls.exceptions import JsonRpcException
from pygls.io_ import StdoutWriter
from pygls.protocol import JsonRPCProtocol
from pygls.server import JsonRPCServer

from lsp import framing, messages

CHUNK = 64 * 1024
PREFIX = "tierhost lsp:"

Read = Callable[[], Awaitable[bytes]]
Write = Callable[[bytes], object]

logger = logging.getLogger(__name__)


class _AnsweredHere(logging.Filter):
    """pygls logs a whole traceback for params it cannot structure; the bridge answers
    those and logs one line itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable to deserialize message")


_PYGLS_LOG = logging.getLogger("pygls.protocol.json_rpc")
if not any(isinstance(f, _AnsweredHere) for f in _PYGLS_LOG.filters):
    _PYGLS_LOG.addFilter(_AnsweredHere())


def say(text: str) -> None:
    """A line for the person reading the editor's log of this server (stderr)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"{PREFIX} {text}", file=sys.stderr, flush=True)


class Channel:
    """One connection's messages: read, checked, handed to pygls or answered."""

    def __init__(self, protocol: JsonRPCProtocol, write: Write) -> None:
        self.protocol = protocol
        self._write = write
        self.lifecycle = messages.Lifecycle()

    def send(self, message: dict[str, object]) -> None:
        self._write(framing.frame(message))

    def refuse(self, rejection: messages.Rejection) -> None:
        logger.warning("refused a message: %s", rejection.message)
        if rejection.answer:
            self.send(rejection.response())

    def dispatch(self, body: bytes) -> None:
        """One frame's body: answered here when it is refused, else pygls's."""
        verdict = messages.read(body)
        if isinstance(verdict, messages.Rejection):
            self.refuse(verdict)
            return
        refusal = self.lifecycle.admit(verdict)
        if refusal is not None:
            self.refuse(refusal)
            return
        data = verdict.data
        if (
            verdict.method
            and "params" not in data
            and not self.protocol.get_message_type(verdict.method)
        ):
            data = {**data, "params": None}  # JSON-RPC lets params be left out; pygls's
            # generic message types (for methods it does not know) require the key
        try:
            structured = self.protocol.structure_message(data)
        except JsonRpcException as exc:  # pygls's InvalidParams / InternalError
            self.refuse(messages.invalid_params(verdict, exc))
            return
        self.lifecycle.passed(verdict)
        try:
            self.protocol.handle_message(structured)
        except Exception:  # pygls answers a request's failures itself; this is a bug
            logger.exception("pygls failed on a %s", verdict.kind)

    def fatal(self, error: framing.FrameError) -> None:
        """A frame the stream cannot be read past: answer once, say it, stop."""
        with contextlib.suppress(OSError, ValueError):
            self.send(
                messages.Rejection(
                    messages.PARSE_ERROR, f"{error}; the bridge stops reading this stream"
                ).response()
            )
        say(
            f"{error}. The stream cannot be read past this point (a frame is "
            "'Content-Length: N', a blank line, then N bytes of JSON), so the bridge stops."
        )

    async def run(self, read: Read) -> int:
        """Serve until the input ends (0), or a bad frame ends it (1). `exit` leaves
        through SystemExit, as pygls makes it."""
        frames = framing.Frames()
        while True:
            data = await read()
            if not data:
                try:
                    frames.close()
                except framing.FrameError as exc:
                    say(f"{exc}: the client closed its end inside a frame; the bridge stops.")
                    return 1
                return 0
            frames.feed(data)
            try:
                while (body := frames.next()) is not None:
                    self.dispatch(body)
                    await asyncio.sleep(0)  # the handlers it started get their turn
            except framing.FrameError as exc:
                self.fatal(exc)
                return 1


class ThreadedReader:
    """A blocking stream read in a daemon thread, one chunk per `read()` (so the pipe
    keeps its back-pressure: nothing is read ahead of the loop)."""

    def __init__(self, read_chunk: Callable[[], bytes]) -> None:
        self._read_chunk = read_chunk
        self._loop = asyncio.get_running_loop()
        self._wanted = threading.Semaphore(0)
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        threading.Thread(target=self._run, name="tierhost-lsp-stdin", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._wanted.acquire()
            try:
                data = self._read_chunk()
            except (OSError, ValueError):  # closed under us: the end of input
                data = b""
            try:
                self._loop.call_soon_threadsafe(self._chunks.put_nowait, data)
            except RuntimeError:  # the loop is closed: nobody reads any more
                return
            if not data:
                return

    async def read(self) -> bytes:
        self._wanted.release()
        return await self._chunks.get()


def _chunk_reader(stream: BinaryIO) -> Callable[[], bytes]:
    """Whatever is available, up to CHUNK bytes: `os.read` on the descriptor (no lock
    a daemon thread could hold at exit), else the stream's `read1`."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        read1 = getattr(stream, "read1", None)
        if read1 is None:
            return lambda: stream.read(1)
        return lambda: bytes(read1(CHUNK))
    return lambda: os.read(fd, CHUNK)


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def serve_stdio(
    server: JsonRPCServer, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None
) -> int:
    """Serve LSP on stdin/stdout until the input ends, `exit`, or a bad frame; the
    process's exit status."""
    writer = StdoutWriter(stdout or sys.stdout.buffer)
    server.protocol.set_writer(writer)
    channel = Channel(server.protocol, writer.write)
    read_chunk = _chunk_reader(stdin or sys.stdin.buffer)

    async def serve() -> int:
        return await channel.run(ThreadedReader(read_chunk).read)

    try:
        return asyncio.run(serve())
    except SystemExit as exc:
        return _exit_status(exc)
    except BrokenPipeError:
        say("the client closed stdout; the bridge stops.")
        return 1
    finally:
        server.shutdown()  # type: ignore[no-untyped-call]


def serve_tcp(server: JsonRPCServer, host: str, port: int) -> int:
    """Serve one client on TCP (like pygls: the bridge belongs to one editor) until its
    connection ends, `exit`, or a bad frame."""

    async def serve() -> int:
        finished: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            server.protocol.set_writer(writer)

            async def read() -> bytes:
                try:
                    return await reader.read(CHUNK)
                except ConnectionError:
                    return b""

            status = 1
            try:
                status = await Channel(server.protocol, writer.write).run(read)
            finally:
                writer.close()
                if not finished.done():
                    finished.set_result(status)

        listener = await asyncio.start_server(connection, host, port)
        async with listener:
            return await finished

    try:
        return asyncio.run(serve())
    except SystemExit as exc:
        return _exit_status(exc)
    finally:
        server.shutdown()  # type: ignore[no-untyped-call]
