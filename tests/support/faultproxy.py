"""A small fault-injecting TCP proxy between the worker and a real server (toxiproxy stands in).

    proxy = FaultProxy(upstream=("127.0.0.1", 27017))
    await proxy.start()           # listens on proxy.port (loopback)
    proxy.cut()                   # close every connection and refuse new ones (server "down")
    proxy.freeze()                # keep connections open but forward nothing (server "stalled")
    proxy.heal()                  # back to normal
    proxy.rewriter = lambda: framed_by_length(handle)   # optional: rewrite replies, one rewriter per connection
    proxy.request_rewriter = lambda: framed_by_length(h)  # optional: inspect or rewrite requests, likewise

It runs inside the test's event loop; a worker in another process reaches the server
through `127.0.0.1:proxy.port`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from enum import Enum

Rewrite = Callable[[bytes], bytes]


class Mode(Enum):
    PASS = "pass"
    CUT = "cut"
    FREEZE = "freeze"


class FaultProxy:
    """Forwards loopback TCP connections to `upstream`, with faults switched on demand."""

    def __init__(self, *, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._server: asyncio.Server | None = None
        self._connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.mode = Mode.PASS
        self.port = 0
        self.accepted = 0
        self.rewriter: Callable[[], Rewrite] | None = None
        """Makes, per connection, a function applied to each chunk the server sends (`framed_by_length`)."""
        self.request_rewriter: Callable[[], Rewrite] | None = None
        """Makes, per connection, a function applied to each chunk the client sends (inspect or rewrite)."""

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until `heal()`."""
        self.mode = Mode.CUT
        self._flowing.set()
        for client, upstream in list(self._connections):
            client.transport.abort()
            upstream.transport.abort()
        self._connections.clear()

    def freeze(self) -> None:
        """Keep connections (and accept new ones) but forward no byte until `heal()`."""
        self.mode = Mode.FREEZE
        self._flowing.clear()

    def heal(self) -> None:
        self.mode = Mode.PASS
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode is Mode.CUT:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._connections.add(pair)
        rewrite = self.rewriter() if self.rewriter is not None else None
        inspect = self.request_rewriter() if self.request_rewriter is not None else None
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, inspect),
                self._pump(up_reader, writer, rewrite),
            )
        finally:
            self._connections.discard(pair)
            for side in pair:
                side.transport.abort()

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, rewrite: Rewrite | None
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ConnectionError):
            while True:
                data = await source.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                if self.mode is Mode.CUT:
                    break
                if rewrite is not None:
                    data = rewrite(data)
                sink.write(data)
                await sink.drain()
        sink.transport.abort() if self.mode is Mode.CUT else _close_quietly(sink)


def _close_quietly(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


def framed_by_length(handle: Callable[[bytes], bytes]) -> Rewrite:
    """A rewrite that hands `handle` whole messages framed by a little-endian int32 length prefix
    (MongoDB wire protocol; Kafka uses big-endian and would need its own framer)."""
    pending = bytearray()

    def rewrite(chunk: bytes) -> bytes:
        pending.extend(chunk)
        out = bytearray()
        while len(pending) >= 4:
            length = int.from_bytes(pending[:4], "little")
            if len(pending) < length:
                break
            out += handle(bytes(pending[:length]))
            del pending[:length]
        return bytes(out)

    return rewrite
