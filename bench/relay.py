"""The least any proxy written in Python can add: a byte relay on uvloop.

`python -m bench.relay LISTEN_PORT TARGET_PORT` accepts connections on 127.0.0.1 and
pipes each one, byte for byte, to a connection of its own to the target: no HTTP
parsing, no routing, no copies but the kernel's. What it adds to a request is the price
of one more hop in this runtime on this machine (two sockets, the wake-ups of one more
process), the floor under the proxy's own figure in `bench.swap` (d).
"""

from __future__ import annotations

import asyncio
import sys

import uvloop


class _Side(asyncio.Protocol):
    """One end of a relayed pair: what it receives, its peer writes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)  # the upstream connection is still being made

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Client(_Side):
    def __init__(self, target_port: int) -> None:
        super().__init__()
        self.target_port = target_port
        self.connecting: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(_Side, "127.0.0.1", self.target_port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        upstream.peer, self.peer = self, upstream
        for data in self.pending:
            assert upstream.transport is not None
            upstream.transport.write(data)
        self.pending.clear()


async def serve(listen_port: int, target_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(target_port), "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
