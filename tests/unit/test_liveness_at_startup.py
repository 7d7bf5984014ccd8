"""/healthz while start-up still waits for MongoDB: alive (the redelivery loop has not started, so it cannot be stuck)."""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.standins import free_port
from worker.app import run_worker
from worker.settings import Settings


async def http_status(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return int(status_line.split()[1])


async def test_healthz_stays_alive_past_the_stuck_limit_while_mongodb_is_awaited() -> None:
    """With MongoDB refusing and HEALTH_STUCK_AFTER_S long past, /healthz answers 200 and /readyz 503."""
    port = free_port()
    settings = Settings(
        mongodb_uri=f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=100&connectTimeoutMS=100",
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        http_port=port, http_host="127.0.0.1", health_stuck_after_s=0.2, redelivery_enabled=True,
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop))
    try:
        await asyncio.sleep(1.0)  # five times the stuck limit, MongoDB still not reached
        assert not task.done()
        assert await http_status(port, "/healthz") == 200
        assert await http_status(port, "/readyz") == 503
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
