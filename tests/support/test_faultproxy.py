"""Specifications of the test harness's fault-injecting TCP proxy (it judges other tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.faultproxy import FaultProxy, framed_by_length


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def _roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 1.0)
    finally:
        writer.close()


async def test_proxy_forwards_until_cut_then_refuses_and_heals(echo_port: int) -> None:
    """Bytes pass through; after cut() connections fail; after heal() they pass again."""
    async with FaultProxy(upstream=("127.0.0.1", echo_port)) as proxy:
        assert await _roundtrip(proxy.port, b"hello") == b"hello"
        proxy.cut()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await _roundtrip(proxy.port, b"hello")
        proxy.heal()
        assert await _roundtrip(proxy.port, b"again") == b"again"


async def test_frozen_proxy_forwards_nothing_until_healed(echo_port: int) -> None:
    """A frozen proxy holds the connection open but no reply arrives until heal()."""
    async with FaultProxy(upstream=("127.0.0.1", echo_port)) as proxy:
        proxy.freeze()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"ping")
        await writer.drain()
        reply = asyncio.ensure_future(reader.readexactly(4))
        done, _ = await asyncio.wait({reply}, timeout=0.3)
        assert not done
        proxy.heal()
        assert await asyncio.wait_for(reply, 1.0) == b"ping"
        writer.close()


async def test_rewriter_sees_whole_length_framed_messages(echo_port: int) -> None:
    """framed_by_length hands the handler complete messages, however the bytes were split."""
    seen: list[bytes] = []

    def handle(message: bytes) -> bytes:
        seen.append(message)
        return message.upper()

    async with FaultProxy(upstream=("127.0.0.1", echo_port)) as proxy:
        proxy.rewriter = lambda: framed_by_length(handle)
        message = (9).to_bytes(4, "little") + b"abcde"
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(message[:6])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(message[6:])
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(9), 1.0) == message.upper()
        writer.close()
    assert seen == [message]
