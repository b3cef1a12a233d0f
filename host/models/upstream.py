"""The proxy's own connection to a managed llama-server: HTTP/1.1 on asyncio, parsed by
httptools.

Every other caller talks to llama-server with httpx, and may go on doing so; the proxy's
hot path may not. Profiled on the 2-core demo box, httpx (httpcore over anyio and h11)
cost about 3 ms of CPU per proxied one-token request: a cancel scope per read, the
request's head and body written apart, and a new connection for every streamed answer
(the pool kept none of them). That was more than everything else the proxy does put
together, and in a stream it was paid per chunk. This client does only what the proxy
needs of a server this host runs on loopback:

- one request at a time per connection, connections kept alive in a small pool, a
  request written in one write;
- the answer parsed in C by httptools (which uvicorn already serves with), its body
  handed over as it arrives: what one read brought is one piece, no copy, no task per
  piece, no parsing of what it carries;
- a response not read to its end is aborted, which closes the connection: llama-server
  sees its reader gone and stops generating (that is how a client that leaves frees the
  slot);
- `interrupt()` wakes a reader from outside (the client left, the host is stopping)
  without a watcher task per read.

What it does not do, on purpose: TLS, proxies, redirects, cookies, `Expect`, upgrades,
pipelining. Remote endpoints (other boxes) keep using httpx.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from typing import cast

import httptools

CONNECT_TIMEOUT_S = 5.0
"""As long as httpx was given for a server on loopback: it is up or it refuses at once."""

MAX_IDLE = 32
"""Kept-alive connections per server, as many as the httpx pool kept (llama-server runs
a few slots; more idle connections would only hold its threads)."""

PAUSE_AT_BYTES = 1024 * 1024
"""Stop reading from the server while this much of its answer waits for a slow client:
the kernel's buffers then hold the rest, and llama-server waits for them to drain."""

_NO_BODY = frozenset({204, 304})


class UpstreamError(Exception):
    """The exchange failed: no connection, a connection lost, an answer that does not
    parse, or no byte within the read timeout."""

    def __init__(self, message: str, *, before_reply: bool = False) -> None:
        super().__init__(message)
        self.before_reply = before_reply
        """Nothing came back: the server cannot have answered (a kept-alive connection it
        had closed, a server between two lives), so sending once more duplicates no work."""


class UpstreamTimeout(UpstreamError):
    """No byte of the answer within the read timeout."""


class UpstreamResponse:
    """One answer: its status and headers at once, its body as it comes.

    Always `close()` it (it is synchronous, so a `finally` that may be cancelled can):
    read to its end on a kept-alive connection it gives the connection back to the pool,
    otherwise it aborts the connection."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: dict[str, str] = {}
        """Lower-case names; a repeated header's values joined by ", "."""
        self._pieces: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._headers_done = False
        self._done = False
        self._keep_alive = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._whole = False
        self._timer: asyncio.TimerHandle | None = None

    async def head(self) -> None:
        """Wait for the status and headers; raises like `next_chunk`. Close the response
        whatever this raises."""
        while not self._headers_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    @property
    def complete(self) -> bool:
        """The whole answer arrived (though not necessarily read yet)."""
        return self._done

    async def next_chunk(self) -> bytes | None:
        """The body that arrived since the last call (waiting for some), None at its end.

        Raises UpstreamError when the connection fails or times out first, or whatever
        `interrupt()` was given."""
        while True:
            if self._pieces:
                if len(self._pieces) == 1:
                    piece = self._pieces.popleft()
                else:
                    piece = b"".join(self._pieces)
                    self._pieces.clear()
                if self._buffered >= PAUSE_AT_BYTES:
                    self._connection.resume_reading()
                self._buffered = 0
                return piece
            if self._error is not None:
                raise self._error
            if self._done:
                return None
            await self._wait()

    async def read(self) -> bytes:
        """The rest of the body, to its end. The reader is woken at the end (or a failure,
        or a full buffer), not for every piece: a plain answer made from a stream comes
        in four reads or more, and nobody looks at it before its end."""
        self._whole = True
        try:
            pieces = []
            while (piece := await self.next_chunk()) is not None:
                pieces.append(piece)
            return b"".join(pieces)
        finally:
            self._whole = False

    def interrupt(self, error: BaseException) -> None:
        """Make the current or next read raise `error`, unless the answer is complete;
        the connection is then not reused."""
        if self._done or self._error is not None:
            return
        self._error = error
        self._wake()

    def close(self) -> None:
        """Done with the answer: the connection goes back to the pool, or is aborted."""
        if self._closed:
            return
        self._closed = True
        reusable = self._done and self._error is None and self._keep_alive
        self._connection.finished(self, reusable)

    # -- fed by the connection ---------------------------------------------------

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._timer = self._connection.start_timer()
        try:
            await waiter
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _arrived(self) -> None:
        if not self._whole or self._done or self._buffered >= PAUSE_AT_BYTES:
            self._wake()
        elif self._timer is not None:  # bytes came: the read timeout starts again
            self._timer.cancel()
            self._timer = self._connection.start_timer()

    def _header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def _head_complete(self, status: int) -> None:
        self.status = status
        self._headers_done = True
        self._wake()

    def _body(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._buffered += len(piece)
        if self._buffered >= PAUSE_AT_BYTES:
            self._connection.pause_reading()

    def _complete(self, keep_alive: bool) -> None:
        self._done = True
        self._keep_alive = keep_alive

    def _fail(self, error: BaseException) -> None:
        if self._done or self._error is not None:
            return
        self._error = error
        self._wake()

    def _is_event_stream(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")

    def _delimited_by_close(self) -> bool:
        """An answer with neither a length nor chunks ends where the connection does."""
        return (
            self._headers_done
            and "content-length" not in self.headers
            and "chunked" not in self.headers.get("transfer-encoding", "").lower()
            and self.status not in _NO_BODY
            and self.status >= 200
        )


class _Connection(asyncio.Protocol):
    """One connection to the server and its parser; one exchange at a time."""

    def __init__(self, upstream: Upstream, *, own: bool = False) -> None:
        self._upstream = upstream
        self._own = own
        """A control request's connection (`Upstream.ask`): never pooled, none made ahead."""
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: UpstreamResponse | None = None
        self._received = False
        self.lost = False

    # -- used by Upstream and UpstreamResponse -------------------------------------

    def begin(self, head: bytes, body: bytes) -> UpstreamResponse:
        assert self._transport is not None and self._response is None
        response = UpstreamResponse(self)
        self._response = response
        self._received = False
        self._transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self._transport.write(body)  # not copied into one buffer with the head
        return response

    def finished(self, response: UpstreamResponse, reusable: bool) -> None:
        if self._response is not response:
            return
        self._response = None
        if reusable and not self.lost and not self._own:
            self._upstream.give_back(self)
            return
        self.abort()
        if response.complete and response._error is None and not self._own:
            self._upstream.connect_ahead()  # a whole answer, a connection not kept: a stream's

    def abort(self) -> None:
        self.lost = True
        if self._transport is not None:
            self._transport.abort()

    def pause_reading(self) -> None:
        if self._transport is not None and not self.lost:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self.lost:
            self._transport.resume_reading()

    def start_timer(self) -> asyncio.TimerHandle | None:
        timeout = self._upstream.read_timeout_s
        if timeout is None:
            return None
        return asyncio.get_running_loop().call_later(timeout, self._time_out)

    def _time_out(self) -> None:
        if self._response is not None:
            self._response._fail(
                UpstreamTimeout(
                    f"no answer from {self._upstream.authority} within "
                    f"{self._upstream.read_timeout_s:g} s",
                    before_reply=False,
                )
            )
        self.abort()

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:  # nothing was asked: a server that talks out of turn
            self.abort()
            self._upstream.forget(self)
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            response._fail(UpstreamError(f"malformed answer from {self._upstream.authority}"))
            self.abort()
            return
        response._arrived()  # once per read, however many pieces it brought

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._upstream.forget(self)
        response = self._response
        if response is None:
            return
        if response._delimited_by_close():
            response._complete(keep_alive=False)
            response._wake()
            return
        why = f" ({type(exc).__name__})" if exc is not None else ""
        response._fail(
            UpstreamError(
                f"{self._upstream.authority} closed the connection{why}",
                before_reply=not self._received,
            )
        )

    # -- httptools callbacks ------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is not None:
            self._response._header(name, value)

    def on_headers_complete(self) -> None:
        if self._response is not None:
            self._response._head_complete(self._parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._body(body)

    def on_message_complete(self) -> None:
        response = self._response
        if response is not None:
            kept = self._parser.should_keep_alive()
            if self._upstream.closes_after_stream and response._is_event_stream():
                kept = False
            response._complete(kept)


class Upstream:
    """Kept-alive HTTP/1.1 connections to one server (`host:port`, plain TCP)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float | None = None,
        max_idle: int = MAX_IDLE,
        closes_after_stream: bool = True,
        ahead: bool = True,
    ) -> None:
        """`read_timeout_s`: the longest wait for the next bytes of an answer; None (the
        proxy's) waits as long as the server takes, since a long prompt may be read for
        minutes before the first token and only the client or the host ends that.

        `closes_after_stream`: the server closes a connection once it has sent a stream
        (`text/event-stream`), so none is kept after one. llama-server does, within about
        10 ms of the stream's end and whatever its `Keep-Alive` header says; a connection
        kept made one request in six fail on the demo box (it came before the close did)
        and be sent again.

        `ahead`: when a whole answer leaves its connection unkept (a stream's), open the
        next connection at once, so the next request finds one waiting: a connect made
        on its way costs it a round trip and llama-server's accept and hand-off to one
        of its threads. At most one is made ahead, only while none is idle; an idle one
        llama-server closes after its keep-alive timeout (5 s), and `close()` at once."""
        self.host = host
        self.port = port
        self.authority = f"{host}:{port}"
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_idle = max_idle
        self.closes_after_stream = closes_after_stream
        self.ahead = ahead
        self._idle: list[_Connection] = []
        self._closed = False
        self._connecting: asyncio.Task[None] | None = None

    async def send(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        """Send one request (connecting first when no connection is idle); its answer's
        status and headers are then `head()`'s to wait for, so that whoever watches the
        exchange can interrupt that wait too.

        Raises UpstreamError (`before_reply` set: the server cannot have answered)."""
        if self._closed:
            raise UpstreamError(
                f"the connections to {self.authority} are closed", before_reply=True
            )
        head = self._head(method, path, len(body), headers or {})
        connection = self._idle.pop() if self._idle else await self._connect()
        return connection.begin(head, body)

    async def ask(self, method: str, path: str, timeout_s: float) -> tuple[int, bytes]:
        """One small control request (a health check, `/props`, a sleep or wake call) on
        a connection of its own, closed after: its status and whole body.

        Not the pool's connections: a server that is loading may drop the ones it took
        meanwhile, and a stop must not wait on one. On the demo box this costs about
        0.5 ms where httpx took 3 to 10 (a swap makes two or three such calls, a start
        polls health every 5 ms). Raises UpstreamError, or UpstreamTimeout past
        `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                connection = await self._connect(own=True)
                head = self._head(method, path, 0, {"connection": "close"})
                answer = connection.begin(head, b"")
                try:
                    await answer.head()
                    return answer.status, await answer.read()
                finally:
                    answer.close()  # aborts it: an own connection is never kept
        except TimeoutError:
            raise UpstreamTimeout(
                f"no answer from {self.authority}{path} within {timeout_s:g} s"
            ) from None

    def close(self) -> None:
        """Close the idle connections, and every other as its answer ends: llama-server
        waits on open kept-alive connections when it is told to stop."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.abort()

    def idle_count(self) -> int:
        """Connections kept alive and free now."""
        return len(self._idle)

    # -- used by the connections -------------------------------------------------

    def give_back(self, connection: _Connection) -> None:
        if self._closed or len(self._idle) >= self.max_idle:
            connection.abort()
        else:
            self._idle.append(connection)

    def connect_ahead(self) -> None:
        if not self.ahead or self._closed or self._idle or self._connecting is not None:
            return
        self._connecting = asyncio.ensure_future(self._connect_ahead())

    async def _connect_ahead(self) -> None:
        try:
            connection = await self._connect()
        except UpstreamError:
            return  # the next request connects itself, and says what went wrong
        finally:
            self._connecting = None
        self.give_back(connection)

    def forget(self, connection: _Connection) -> None:
        if connection in self._idle:
            self._idle.remove(connection)

    # -- internals ---------------------------------------------------------------

    async def _connect(self, *, own: bool = False) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self, own=own), self.host, self.port
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"no connection to {self.authority} within {self.connect_timeout_s:g} s",
                before_reply=True,
            ) from None
        except OSError as exc:
            raise UpstreamError(
                f"cannot connect to {self.authority}: {exc.strerror or exc}", before_reply=True
            ) from None
        return protocol

    def _head(self, method: str, path: str, length: int, headers: Mapping[str, str]) -> bytes:
        lines = [f"{method} {path} HTTP/1.1\r\nhost: {self.authority}\r\n"]
        if length or method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {length}\r\n")
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError(f"header {name!r} would split the request")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")
