"""How tansu's CPU per fetch grows with the record batches already in a partition.

`python -m tests.benchmarks.standin_fetch_cost` starts a tansu of its own, fills one partition
with single-record batches (each produced alone) or with the same records in large batches, then
for 5 s runs a produce + fetch round every 10 ms at the partition's end and reports tansu's CPU
(/proc) per round. Kafka finds a fetch's start through its offset index; the stand-in's cost
grows with the batches before it, which is what lifts its CPU share through the benchmark's
steady load (docs/standins.md).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.benchmarks.measure import cpu_seconds
from tests.support.standins import LocalKafka

VALUE = b"x" * 600
CASES = ((0, False), (3_000, True), (9_000, True), (9_000, False))
"""(records, one batch per record) filled before the rounds."""


async def fill(bootstrap: str, topic: str, records: int, *, one_per_batch: bool) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0 if one_per_batch else 50,
                                max_batch_size=256 * 1024)  # fmt: skip
    await producer.start()
    try:
        await (await producer.send(topic, VALUE, partition=0))  # the topic exists before the rounds
        for _ in range(records - 1):
            sent = await producer.send(topic, VALUE, partition=0)
            if one_per_batch:
                await sent
        await producer.flush()
    finally:
        await producer.stop()


async def cpu_ms_per_round(bootstrap: str, pid: int, topic: str, seconds: float = 5.0) -> float:
    """Tansu's CPU milliseconds per round of one record produced and one fetch at the end."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=topic, enable_auto_commit=False,
                                auto_offset_reset="latest", fetch_max_wait_ms=100)  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        while not consumer.assignment():  # the group join
            await consumer.getmany(timeout_ms=100)
        await consumer.getmany(timeout_ms=300)
        before, started, rounds = cpu_seconds(pid), time.monotonic(), 0
        while time.monotonic() - started < seconds:
            await producer.send(topic, VALUE, partition=0)
            await consumer.getmany(timeout_ms=50)
            rounds += 1
            await asyncio.sleep(0.01)
        return (cpu_seconds(pid) - before) / rounds * 1000
    finally:
        await producer.stop()
        await consumer.stop()


async def measure(bootstrap: str, pid: int) -> None:
    for records, one_per_batch in CASES:
        topic = f"fetch-cost-{records}-{int(one_per_batch)}-{time.time_ns() % 100_000}"
        await fill(bootstrap, topic, max(records, 1), one_per_batch=one_per_batch)
        ms = await cpu_ms_per_round(bootstrap, pid, topic)
        layout = "one record per batch" if one_per_batch else "large batches"
        print(f"{records:>6,} records before ({layout}): tansu {ms:.2f} ms CPU per produce + fetch round")


def main() -> None:
    with LocalKafka(log_dir=Path(tempfile.mkdtemp())) as kafka:
        assert kafka.pid is not None
        asyncio.run(measure(kafka.bootstrap, kafka.pid))


if __name__ == "__main__":
    main()
