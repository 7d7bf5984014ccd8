"""The HTTP endpoints ops probe: /metrics, /healthz, /readyz (503 with the reasons as JSON)."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.ops.health import Health

log = structlog.get_logger(__name__)


def _response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def respond(path: str, health: Health) -> bytes:
    """The whole HTTP response for `path`."""
    if path == "/metrics":
        return _response(200, generate_latest(), CONTENT_TYPE_LATEST)
    if path == "/healthz":
        stuck = health.stuck_loops()
        if stuck:
            return _response(503, "".join(f"{name} loop stuck\n" for name in stuck).encode())
        return _response(200, b"ok\n")
    if path == "/readyz":
        reasons = health.not_ready_reasons()
        if not reasons:
            return _response(200, b"ready\n")
        body = orjson.dumps({"ready": False, "reasons": reasons}) + b"\n"
        return _response(503, body, "application/json")
    return _response(404, b"not found\n")


async def start_http(host: str, port: int, health: Health) -> asyncio.Server:
    """Listen on `host:port` for the three endpoints; OSError (e.g. address in use) is the caller's."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):  # a broken probe connection must not hurt the worker
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else "/"
            writer.write(respond(path, health))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host=host, port=port)
    log.info("http_listening", host=host, port=port, paths=["/metrics", "/healthz", "/readyz"])
    return server


async def serve_until(server: asyncio.Server, stop: asyncio.Event) -> None:
    """Serve on the bound `server` until `stop` is set, then close it."""
    async with server:
        await stop.wait()


async def serve_http(port: int, health: Health, stop: asyncio.Event, host: str = "0.0.0.0") -> None:
    """Serve the three endpoints on `host:port` until `stop` is set."""
    await serve_until(await start_http(host, port, health), stop)
