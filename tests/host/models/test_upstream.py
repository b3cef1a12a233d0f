"""The proxy's own HTTP/1.1 client, against scripted servers on loopback: every way an
exchange with a llama-server can go that the proxy must handle (the happy path against
the real server runs in tests/host/api)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from host.models.upstream import (
    PAUSE_AT_BYTES,
    Upstream,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)

BOUND_S = 5.0
"""No step here may take this long: a wait that does is a hang, reported as one."""


@dataclass
class Peer:
    """One connection the server accepted, and what it read on it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self) -> bytes:
        """One request: its head, and a body of its Content-Length."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await self.reader.readexactly(length) if length else b""
        self.requests.append(head + body)
        return head + body

    def write(self, data: bytes) -> None:
        self.writer.write(data)


Script = Callable[[Peer], Awaitable[None]]


@dataclass
class Server:
    port: int
    peers: list[Peer]


@contextlib.asynccontextmanager
async def serving(script: Script) -> AsyncIterator[Server]:
    """A server on a free port running `script` for every connection it accepts."""
    peers: list[Peer] = []
    tasks: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        peers.append(peer)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await script(peer)
            # Hold the connection open until the client closes it (keep-alive).
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            peer.closed.set()
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Server(port, peers)
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def sized(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


async def answer_each(peer: Peer, body: bytes = b'{"ok": true}', *extra: str) -> None:
    while True:
        await peer.request()
        peer.write(sized(body, *extra))


async def bounded(awaitable: Awaitable[object]) -> object:
    return await asyncio.wait_for(awaitable, BOUND_S)


async def ask(upstream: Upstream, body: bytes = b"{}") -> UpstreamResponse:
    answer = await upstream.send("POST", "/v1/chat/completions", body, {"accept": "*/*"})
    await bounded(answer.head())
    return answer


# -- answers ---------------------------------------------------------------------------


async def test_a_sized_answer_is_read_whole_and_the_request_went_in_one_piece() -> None:
    async with serving(lambda peer: answer_each(peer, b'{"ok": true}', "X-Thing: 1")) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await ask(upstream, b'{"model": "m"}')
        assert answer.status == 200
        assert answer.headers["x-thing"] == "1"
        assert await bounded(answer.read()) == b'{"ok": true}'
        assert answer.complete
        answer.close()
        request = server.peers[0].requests[0]
        assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert b"content-length: 14\r\n" in request and b"accept: */*\r\n" in request
        assert request.endswith(b'\r\n\r\n{"model": "m"}')
        upstream.close()


async def test_a_chunked_answer_comes_piece_by_piece_as_it_is_sent() -> None:
    go_on = asyncio.Event()

    async def stream(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        await go_on.wait()
        peer.write(chunk(b"data: 2\n\n") + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    async with serving(stream) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await ask(upstream)
        assert answer.headers["content-type"] == "text/event-stream"
        assert await bounded(answer.next_chunk()) == b"data: 1\n\n"
        go_on.set()
        rest = []
        while (piece := await bounded(answer.next_chunk())) is not None:
            rest.append(piece)
        assert b"".join(rest) == b"data: 2\n\ndata: [DONE]\n\n"  # one read, maybe one piece
        answer.close()
        upstream.close()


async def test_an_answer_without_length_or_chunks_ends_with_the_connection() -> None:
    async def until_close(peer: Peer) -> None:
        await peer.request()
        peer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await peer.writer.drain()
        peer.writer.close()

    async with serving(until_close) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await ask(upstream)
        assert await bounded(answer.read()) == b"all of it"
        answer.close()
        assert upstream.idle_count() == 0
        upstream.close()


async def test_a_slow_reader_pauses_the_server_and_still_gets_every_byte() -> None:
    big = bytes(range(256)) * (3 * PAUSE_AT_BYTES // 256)

    async with serving(lambda peer: answer_each(peer, big)) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await ask(upstream)
        await asyncio.sleep(0.2)  # the whole answer is sent while nobody reads
        assert await bounded(answer.read()) == big
        answer.close()
        assert upstream.idle_count() == 1
        upstream.close()


async def test_a_header_that_would_split_the_request_is_refused() -> None:
    upstream = Upstream("127.0.0.1", 9)
    with pytest.raises(ValueError, match="split"):
        await upstream.send("POST", "/", b"{}", {"accept": "*/*\r\nX-Evil: 1"})


# -- keep-alive ------------------------------------------------------------------------


async def test_a_connection_is_kept_alive_and_reused() -> None:
    async with serving(answer_each) as server:
        upstream = Upstream("127.0.0.1", server.port)
        for _ in range(3):
            answer = await ask(upstream)
            assert await bounded(answer.read()) == b'{"ok": true}'
            answer.close()
        assert len(server.peers) == 1 and len(server.peers[0].requests) == 3
        upstream.close()
        await bounded(server.peers[0].closed.wait())  # close() lets go of the idle one


async def test_an_answer_saying_connection_close_is_not_reused() -> None:
    async with serving(lambda peer: answer_each(peer, b"x", "Connection: close")) as server:
        upstream = Upstream("127.0.0.1", server.port, ahead=False)
        for _ in range(2):
            answer = await ask(upstream)
            assert await bounded(answer.read()) == b"x"
            answer.close()
        assert len(server.peers) == 2
        upstream.close()


@pytest.mark.parametrize("closes_after_stream", [True, False])
async def test_a_connection_is_kept_after_a_stream_only_for_a_server_that_keeps_it(
    closes_after_stream: bool,
) -> None:
    async def streams(peer: Peer) -> None:
        while True:
            await peer.request()
            peer.write(CHUNKED_HEAD + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    async with serving(streams) as server:
        upstream = Upstream(
            "127.0.0.1", server.port, closes_after_stream=closes_after_stream, ahead=False
        )
        for _ in range(2):
            answer = await ask(upstream)
            assert await bounded(answer.read()) == b"data: [DONE]\n\n"
            answer.close()
        assert len(server.peers) == (2 if closes_after_stream else 1)
        upstream.close()


async def test_after_a_stream_the_next_connection_is_made_ahead_and_used() -> None:
    async def streams(peer: Peer) -> None:
        while True:
            await peer.request()
            peer.write(CHUNKED_HEAD + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    async with serving(streams) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await ask(upstream)
        assert await bounded(answer.read()) == b"data: [DONE]\n\n"
        answer.close()
        await bounded(until(lambda: upstream.idle_count() == 1))
        assert len(server.peers) == 2 and not server.peers[1].requests
        answer = await ask(upstream)
        assert await bounded(answer.read()) == b"data: [DONE]\n\n"
        answer.close()
        assert len(server.peers[1].requests) == 1  # the request went on the one made ahead
        await bounded(until(lambda: upstream.idle_count() == 1))
        upstream.close()
        await bounded(server.peers[2].closed.wait())  # close() lets go of it too


async def test_no_connection_is_made_ahead_after_a_failed_answer() -> None:
    async def die(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        await peer.writer.drain()
        peer.writer.transport.abort()

    async with serving(die) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await ask(upstream)
        with pytest.raises(UpstreamError):
            await bounded(answer.read())
        answer.close()
        await asyncio.sleep(0.1)
        assert len(server.peers) == 1 and upstream.idle_count() == 0
        upstream.close()


async def until(condition: Callable[[], bool]) -> None:
    """Polled: what is awaited is the event loop's own bookkeeping, with no event to wait on."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


async def test_a_kept_alive_connection_the_server_closed_is_not_used_again() -> None:
    async def once_then_close(peer: Peer) -> None:
        await peer.request()
        peer.write(sized(b"x"))
        await peer.writer.drain()
        peer.writer.close()  # as llama-server does after its keep-alive timeout

    async with serving(once_then_close) as server:
        upstream = Upstream("127.0.0.1", server.port, ahead=False)
        answer = await ask(upstream)
        assert await bounded(answer.read()) == b"x"
        answer.close()
        await bounded(server.peers[0].closed.wait())
        await asyncio.sleep(0.05)  # the close reaches the client
        assert upstream.idle_count() == 0
        answer = await ask(upstream)
        assert await bounded(answer.read()) == b"x"
        answer.close()
        assert len(server.peers) == 2
        upstream.close()


async def test_a_server_that_closes_before_any_reply_is_an_error_before_reply() -> None:
    async def drop(peer: Peer) -> None:
        await peer.request()
        peer.writer.close()

    async with serving(drop) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await upstream.send("POST", "/v1/completions", b"{}")
        with pytest.raises(UpstreamError) as caught:
            await bounded(answer.head())
        assert caught.value.before_reply
        answer.close()
        upstream.close()


async def test_a_refused_connection_is_an_error_before_reply() -> None:
    async with serving(answer_each) as server:
        port = server.port
    upstream = Upstream("127.0.0.1", port)  # nobody listens there any more
    with pytest.raises(UpstreamError) as caught:
        await bounded(upstream.send("POST", "/v1/completions", b"{}"))
    assert caught.value.before_reply and "cannot connect" in str(caught.value)


async def test_a_closed_pool_does_not_keep_an_answer_s_connection() -> None:
    async with serving(answer_each) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await ask(upstream)
        upstream.close()  # the server stops while an answer is being read
        assert await bounded(answer.read()) == b'{"ok": true}'
        answer.close()
        assert upstream.idle_count() == 0
        await bounded(server.peers[0].closed.wait())
        with pytest.raises(UpstreamError):
            await upstream.send("POST", "/", b"{}")


# -- the ends of an exchange -----------------------------------------------------------


async def test_a_server_dying_mid_stream_is_an_error_after_what_it_sent() -> None:
    async def die(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        await peer.writer.drain()
        await asyncio.sleep(0.05)
        peer.writer.transport.abort()

    async with serving(die) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await ask(upstream)
        assert await bounded(answer.next_chunk()) == b"data: 1\n\n"
        with pytest.raises(UpstreamError) as caught:
            await bounded(answer.next_chunk())
        assert not caught.value.before_reply
        answer.close()
        assert upstream.idle_count() == 0
        upstream.close()


async def test_closing_an_unfinished_answer_aborts_the_connection() -> None:
    # As when the client leaves mid-stream: llama-server must see its reader gone.
    async def endless(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_HEAD)
        with contextlib.suppress(ConnectionError):
            while not peer.writer.is_closing():
                peer.write(chunk(b"data: token\n\n"))
                await peer.writer.drain()
                await asyncio.sleep(0.01)

    async with serving(endless) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await ask(upstream)
        assert await bounded(answer.next_chunk())
        answer.close()
        await bounded(server.peers[0].closed.wait())
        assert upstream.idle_count() == 0
        upstream.close()


async def test_an_interrupt_wakes_a_waiting_reader_and_the_connection_is_dropped() -> None:
    async def silent_after_head(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_HEAD)

    class Left(Exception):
        pass

    async with serving(silent_after_head) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await ask(upstream)
        reading = asyncio.ensure_future(answer.next_chunk())
        await asyncio.sleep(0.05)
        assert not reading.done()
        answer.interrupt(Left())
        with pytest.raises(Left):
            await bounded(reading)
        answer.close()
        await bounded(server.peers[0].closed.wait())
        upstream.close()


async def test_an_interrupt_before_the_head_ends_the_wait_for_it() -> None:
    async def never_answers(peer: Peer) -> None:
        await peer.request()

    class Stopping(Exception):
        pass

    async with serving(never_answers) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await upstream.send("POST", "/", b"{}")
        asyncio.get_running_loop().call_later(0.05, answer.interrupt, Stopping())
        with pytest.raises(Stopping):
            await bounded(answer.head())
        answer.close()
        upstream.close()


async def test_a_cancelled_read_leaves_an_answer_that_close_aborts() -> None:
    async def silent_after_head(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_HEAD)

    async with serving(silent_after_head) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await ask(upstream)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(answer.next_chunk(), 0.05)
        answer.close()
        await bounded(server.peers[0].closed.wait())
        upstream.close()


# -- timeouts --------------------------------------------------------------------------


async def test_a_server_silent_past_the_read_timeout_times_out() -> None:
    async def never_answers(peer: Peer) -> None:
        await peer.request()

    async with serving(never_answers) as server:
        upstream = Upstream("127.0.0.1", server.port, read_timeout_s=0.1)
        answer = await upstream.send("POST", "/", b"{}")
        with pytest.raises(UpstreamTimeout, match=r"within 0\.1 s"):
            await bounded(answer.head())
        answer.close()
        await bounded(server.peers[0].closed.wait())
        upstream.close()


async def test_the_read_timeout_is_between_bytes_not_for_the_whole_answer() -> None:
    async def trickle(peer: Peer) -> None:
        await peer.request()
        peer.write(CHUNKED_HEAD)
        for _ in range(6):
            await asyncio.sleep(0.05)
            peer.write(chunk(b"data: t\n\n"))
        peer.write(b"0\r\n\r\n")

    async with serving(trickle) as server:
        upstream = Upstream("127.0.0.1", server.port, read_timeout_s=0.2)
        answer = await ask(upstream)
        assert await bounded(answer.read()) == b"data: t\n\n" * 6  # 0.3 s in all
        answer.close()
        upstream.close()


async def test_without_a_read_timeout_a_slow_first_byte_is_waited_for() -> None:
    async def slow(peer: Peer) -> None:
        await peer.request()
        await asyncio.sleep(0.3)
        peer.write(sized(b"late"))

    async with serving(slow) as server:
        upstream = Upstream("127.0.0.1", server.port)
        answer = await ask(upstream)
        assert await bounded(answer.read()) == b"late"
        answer.close()
        upstream.close()


async def test_a_connection_not_made_in_time_times_out() -> None:
    # A listener that never accepts, its queue filled: the kernel drops the next SYN, so
    # the connection is neither made nor refused.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers: list[socket.socket] = []
        try:
            while len(fillers) < 8:
                filler = socket.socket()
                filler.setblocking(False)
                fillers.append(filler)
                if filler.connect_ex(address) not in (0, errno.EINPROGRESS):
                    break
                await asyncio.sleep(0.05)
            upstream = Upstream(*address, connect_timeout_s=0.2)
            with pytest.raises(UpstreamTimeout) as caught:
                await bounded(upstream.send("POST", "/", b"{}"))
            assert caught.value.before_reply and "within 0.2 s" in str(caught.value)
        finally:
            for filler in fillers:
                filler.close()


# -- control requests (Upstream.ask) ------------------------------------------------------


async def test_a_control_request_gets_its_answer_on_a_connection_of_its_own() -> None:
    """Health checks and sleep calls neither take a pooled connection nor leave one, and
    make none ahead: the pool is the proxy's, and a stop must not wait on them."""
    async with serving(lambda peer: answer_each(peer, b'{"is_sleeping": true}')) as server:
        upstream = Upstream("127.0.0.1", server.port)
        kept = await ask(upstream)
        await bounded(kept.read())
        kept.close()
        assert upstream.idle_count() == 1
        status, body = await bounded(upstream.ask("GET", "/props", BOUND_S))
        assert (status, body) == (200, b'{"is_sleeping": true}')
        assert len(server.peers) == 2 and upstream.idle_count() == 1
        request = server.peers[1].requests[0]
        assert request.startswith(b"GET /props HTTP/1.1\r\n")
        assert b"connection: close\r\n" in request
        await bounded(server.peers[1].closed.wait())  # closed after its answer
        upstream.close()


async def test_a_control_request_nobody_answers_times_out_and_closes() -> None:
    async def never_answers(peer: Peer) -> None:
        await peer.request()

    async with serving(never_answers) as server:
        upstream = Upstream("127.0.0.1", server.port)
        with pytest.raises(UpstreamTimeout, match=r"/health within 0\.1 s"):
            await bounded(upstream.ask("GET", "/health", 0.1))
        await bounded(server.peers[0].closed.wait())
        assert upstream.idle_count() == 0


async def test_a_control_request_to_a_closed_port_is_an_error_before_reply() -> None:
    async with serving(answer_each) as server:
        port = server.port
    with pytest.raises(UpstreamError) as caught:
        await bounded(Upstream("127.0.0.1", port).ask("GET", "/health", BOUND_S))
    assert caught.value.before_reply and "cannot connect" in str(caught.value)
