"""Start-up, stopping and outages, on real servers: no consuming before MongoDB answers, a taken
HTTP port is fatal, SIGTERM works with a broken stderr, a Kafka outage shows in /readyz and the logs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo import AsyncMongoClient

from tests.demo.publish import read_until_idle
from tests.integration.harness import (
    RedeliverProcess,
    WorkerProcess,
    committed_offsets,
    ensure_topics,
    input_topics,
    prepare_topics,
    publish_good,
    settings_env,
    settings_for,
    wait_until,
)
from tests.support.faultproxy import FaultProxy
from tests.support.standins import LocalKafka, StandInError, find_tansu, free_port
from worker.settings import RouteName


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """Status and body of GET `path` on the worker's HTTP port (0 when nothing answers)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0, b""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def ready_is(port: int, status: int, containing: bytes = b"") -> bool:
    code, body = await http_get(port, "/readyz")
    return code == status and containing in body


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


def non_json_lines(text: str) -> list[str]:
    """Lines of stderr that are not JSON objects."""
    plain = []
    for line in text.splitlines():
        try:
            if isinstance(orjson.loads(line), dict):
                continue
        except orjson.JSONDecodeError:
            pass
        plain.append(line)
    return plain


def events(worker: WorkerProcess) -> list[str]:
    return [line["event"] for line in json_lines(worker.log_text())]


async def logged(worker: WorkerProcess, event: str, at_least: int = 1) -> bool:
    return events(worker).count(event) >= at_least


async def test_worker_never_consumes_before_mongodb_first_answers(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, tmp_path: Path
) -> None:
    """With MONGODB_URI pointing where nothing listens the worker waits: nothing dead-lettered, nothing committed, /readyz 503 naming MongoDB; restarted with the right URI it stores every event."""
    port = free_port()
    wrong = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=f"mongodb://127.0.0.1:{free_port()}",
                         http_port=port)  # fmt: skip
    await prepare_topics(create_topics, wrong)
    await publish_good(wrong, RouteName.INCIDENTS, 20, seed=71)
    worker = WorkerProcess(wrong, tmp_path / "wrong.log")
    worker.start()
    try:
        dlq_topics = [wrong.dlq_topic(t) for t in input_topics(wrong)]

        async def waited_or_leaked() -> bool:
            """Three start-up attempts made, or (the defect) records already dead-lettered."""
            if await logged(worker, "mongodb_client_not_initialized", 3):
                return True
            return bool(await read_until_idle(dlq_topics, idle_ms=300, bootstrap_servers=kafka_bootstrap))

        await wait_until(waited_or_leaked, within=90, what="three start-up attempts")
        dead = await read_until_idle(dlq_topics, idle_ms=1500, bootstrap_servers=kafka_bootstrap)
        assert dead == []
        assert await ready_is(port, 503, b'"server":"mongodb"')
        for topic in input_topics(wrong):
            assert set((await committed_offsets(wrong, topic, 3)).values()) == {None}
        assert "mongodb_unavailable" in events(worker)
    finally:
        assert worker.terminate() == 0
    right = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri)
    worker = WorkerProcess(right, tmp_path / "right.log")
    worker.start()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    try:
        incidents = client[unique_name]["incidents"]
        await wait_until(lambda: _count_is(incidents, 20), within=60, what="the 20 incidents stored")
        started = next(line for line in json_lines(worker.log_text()) if line["event"] == "worker_started")
        assert started["gc_frozen_objects"] > 10_000  # worker.ops.gc_tuning: startup objects out of GC scans
    finally:
        assert worker.terminate() == 0
        await client.drop_database(unique_name)
        await client.close()


async def _count_is(collection: Any, count: int) -> bool:
    return bool(await collection.count_documents({}) == count)


@pytest.mark.parametrize("process", [WorkerProcess, RedeliverProcess], ids=["run", "redeliver"])
async def test_bounded_wait_for_mongodb_exits_3_with_one_line(
    process: type[WorkerProcess], unique_name: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With MONGODB_STARTUP_TIMEOUT_S set and MongoDB never answering, `run` and `redeliver` exit 3 with one `error:` line."""
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap,
                            mongo_uri=f"mongodb://u:pw@127.0.0.1:{free_port()}", mongodb_startup_timeout_s=2)  # fmt: skip
    worker = process(settings, tmp_path / "worker.log")
    worker.start()
    assert worker.process is not None
    try:
        code = await asyncio.to_thread(worker.process.wait, 60)
    finally:
        if worker.process.poll() is None:
            worker.kill()
    assert code == 3
    plain = non_json_lines(worker.log_text())
    assert len(plain) == 1 and plain[0].startswith("error: MongoDB at mongodb://***@127.0.0.1:")
    assert "MONGODB_STARTUP_TIMEOUT_S" in plain[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other process listens on, on all interfaces."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_taken_http_port_exits_3_before_consuming(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, taken_port: int, tmp_path: Path
) -> None:
    """When the HTTP port is taken the worker exits 3 with one `error:` line instead of running blind."""
    settings = settings_for(
        name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri, http_port=taken_port
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    assert worker.process is not None
    try:
        code = await asyncio.to_thread(worker.process.wait, 60)
    finally:
        if worker.process.poll() is None:
            worker.kill()
    assert code == 3
    plain = non_json_lines(worker.log_text())
    assert plain == [f"error: cannot serve HTTP on 0.0.0.0:{taken_port}: Address already in use"]
    assert "worker_started" not in events(worker)


async def test_sigterm_stops_the_worker_when_stderr_is_a_closed_pipe(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any
) -> None:
    """With stderr a pipe nobody reads any more, SIGTERM still drains the worker and it exits 0."""
    port = free_port()
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri, http_port=port)
    await prepare_topics(create_topics, settings)
    read_end, write_end = os.pipe()
    os.close(read_end)
    process = _start_worker(settings_env(settings), stderr=write_end)
    os.close(write_end)
    try:
        await wait_until(lambda: ready_is(port, 200), within=60, what="the worker consuming")
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0


def _start_worker(env: dict[str, str], *, stderr: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env, stderr=stderr)


class _AdvertisedKafka(LocalKafka):
    """tansu advertising another address (a proxy in front of it) to its clients."""

    def __init__(self, *, advertised: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._advertised = advertised

    def _command(self) -> list[str]:
        command = super()._command()
        command[command.index("--advertised-listener-url") + 1] = f"tcp://{self._advertised}"
        return command


async def test_kafka_outage_shows_in_readyz_and_json_logs_then_clears(
    unique_name: str, mongo_uri: str, tmp_path: Path
) -> None:
    """With the broker cut off, /readyz answers 503 naming Kafka, `kafka_unavailable` is logged and every stderr line is JSON; after healing, 200 and `kafka_available`."""
    try:
        find_tansu()
    except StandInError as exc:
        pytest.skip(f"no tansu: {exc}")
    broker_port, http_port = free_port(), free_port()
    async with FaultProxy(upstream=("127.0.0.1", broker_port)) as proxy:
        with _AdvertisedKafka(advertised=proxy.address, port=broker_port, log_dir=tmp_path):
            settings = settings_for(name=unique_name, bootstrap=proxy.address, mongo_uri=mongo_uri,
                                    http_port=http_port, kafka_health_interval_s=1)  # fmt: skip
            await ensure_topics(proxy.address, input_topics(settings), partitions=1)
            worker = WorkerProcess(settings, tmp_path / "worker.log")
            worker.start()
            try:
                await _outage_and_recovery(worker, proxy, http_port)
            finally:
                assert worker.terminate() == 0
    assert non_json_lines(worker.log_text()) == []
    assert events(worker).count("kafka_unavailable") == 1


async def _outage_and_recovery(worker: WorkerProcess, proxy: FaultProxy, http_port: int) -> None:
    await wait_until(lambda: ready_is(http_port, 200), within=60, what="ready before the outage")
    proxy.cut()
    await wait_until(
        lambda: ready_is(http_port, 503, b'"server":"kafka"'), within=15, what="/readyz naming Kafka"
    )
    await wait_until(lambda: logged(worker, "kafka_unavailable"), within=5, what="kafka_unavailable")
    await asyncio.sleep(5)  # let the clients retry (and log) for a while
    proxy.heal()
    await wait_until(lambda: logged(worker, "kafka_available"), within=30, what="kafka_available")
    await wait_until(lambda: ready_is(http_port, 200), within=60, what="ready after the outage")


async def test_mongodb_outage_after_start_shows_in_readyz_and_logs_then_clears(
    unique_name: str, kafka_bootstrap: str, controllable_mongo: Any, create_topics: Any, tmp_path: Path
) -> None:
    """MongoDB stopped while the worker runs: /readyz 503 naming MongoDB and one `mongodb_unavailable`; restarted: 200 and `mongodb_available`."""
    port = free_port()
    settings = settings_for(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=controllable_mongo.uri,
                            http_port=port, mongodb_health_interval_s=1)  # fmt: skip
    await prepare_topics(create_topics, settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        await wait_until(lambda: ready_is(port, 200), within=60, what="ready before the outage")
        controllable_mongo.stop()
        await wait_until(
            lambda: ready_is(port, 503, b'"server":"mongodb"'), within=30, what="/readyz naming MongoDB"
        )
        controllable_mongo.start()
        await wait_until(lambda: logged(worker, "mongodb_available"), within=30, what="mongodb_available")
        await wait_until(lambda: ready_is(port, 200), within=30, what="ready after the outage")
    finally:
        assert worker.terminate() == 0
    assert events(worker).count("mongodb_unavailable") == 1
    assert non_json_lines(worker.log_text()) == []
