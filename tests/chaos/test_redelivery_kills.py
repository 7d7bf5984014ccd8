"""Telemetry redelivery loops (`persistence-worker redeliver`, real processes) killed with SIGKILL
mid-delivery, again and again, while another loop keeps running. Every buffered document is
delivered at least once; a document comes twice only if a killed loop held it when it died;
the buffer ends empty."""

from __future__ import annotations

import asyncio
import random
import signal
import socket
from collections import Counter
from pathlib import Path
from typing import Any

from tests.chaos.conftest import Record, Scale, servers_label
from tests.chaos.invariant import Counts
from tests.integration.harness import RedeliverProcess, WorkerProcess, wait_until
from tests.integration.telemetry_support import buffered_documents, read_delivered, redelivery_settings
from tests.support.servers import ServerKinds

# Two loops drain about 1,500 documents/s here (claims by the batch) and a victim takes a second
# or two to come up; a round that starts with fewer buffered documents than this is topped up
# first, so that the steady loop cannot empty the buffer before the victim claims anything (at
# 2,000 it did: the victims came up to an empty buffer and were killed holding nothing).
REFILL_BELOW = 10_000


async def buffered(db: Any) -> int:
    return int(await db.telemetry_buffer.count_documents({"state": None}))  # not the delivered tombstones


async def held_by(db: Any, pid: int) -> set[str]:
    """The documents whose claim belongs to process `pid` (lease_owner is "<host>:<pid>/<claim>")."""
    mine = {"lease_owner": {"$regex": f"^{socket.gethostname()}:{pid}/"}}
    return {document["_id"] async for document in db.telemetry_buffer.find(mine, {"_id": 1})}


async def test_redelivery_loops_killed_mid_delivery(
    unique_name: str, kafka_bootstrap: str, mongo_uri: str, create_topics: Any, mongo_db: Any,
    tmp_path: Path, processes: list[WorkerProcess], scale: Scale, server_kind: ServerKinds,
    chaos_result: Record,
) -> None:  # fmt: skip
    """One loop runs throughout while another is killed with SIGKILL mid-delivery and restarted: all documents delivered, duplicates only from the killed loops' claims, buffer empty."""
    # A live loop settles each batch within its lease: 8 s leaves room for a stand-in MongoDB slowed
    # by a loaded machine (tests in parallel), where 3 s let a live loop's lease lapse mid-batch.
    settings = redelivery_settings(name=unique_name, bootstrap=kafka_bootstrap, mongo_uri=mongo_uri,
                                   redelivery_lease_s=8.0, redelivery_batch_size=50)  # fmt: skip
    await create_topics(settings.kafka_telemetry_delivery_topic, partitions=3)
    documents = buffered_documents(scale.pick(3000, 20_000), seed=91)
    await mongo_db.telemetry_buffer.insert_many(documents)
    steady = RedeliverProcess(settings, tmp_path / "steady.log")
    processes.append(steady)
    steady.start()
    kills, chooser = scale.pick(3, 10), random.Random(92)
    windows: list[set[str]] = []
    for round_ in range(kills):
        if await buffered(mongo_db) < REFILL_BELOW:  # the victim must find work when it comes up
            more = buffered_documents(REFILL_BELOW, seed=1000 + round_)
            await mongo_db.telemetry_buffer.insert_many(more)
            documents += more
        victim = RedeliverProcess(settings, tmp_path / f"victim-{round_}.log")
        processes.append(victim)
        before = await buffered(mongo_db)
        victim.start()
        await wait_until(lambda v=victim: _delivering(v), within=60, what="the victim to deliver")
        await asyncio.sleep(chooser.uniform(0.0, 0.5))
        await _kill_holding_claims(mongo_db, victim, chooser)
        windows.append(await held_by(mongo_db, victim.pid))
        assert await buffered(mongo_db) < before, "the victim ran while the buffer was draining"
    await wait_until(lambda: _is_empty(mongo_db), within=scale.pick(180, 900), what="an empty buffer")
    assert steady.terminate() == 0
    delivered = await read_delivered(kafka_bootstrap, settings.kafka_telemetry_delivery_topic, idle_ms=2000)
    copies = Counter(message.buffer_id for message in delivered)
    expected = {document["_id"] for document in documents}
    killed_window = set().union(*windows)
    counts = Counts(
        published=len(documents), stored=len(expected & set(copies)), dead_lettered=0,
        duplicates=sum(n - 1 for n in copies.values()), lost=len(expected - set(copies)),
        unexpected=len(set(copies) - expected),
    )  # fmt: skip
    chaos_result(f"redelivery loop SIGKILL x{kills} mid-delivery (stored = delivered)", counts,
                 servers=servers_label(server_kind))  # fmt: skip
    assert counts.lost == 0 and counts.unexpected == 0
    assert {buffer_id for buffer_id, n in copies.items() if n > 1} <= killed_window
    assert all(len(window) <= settings.redelivery_batch_size for window in windows)
    assert sum(1 for window in windows if window) >= 1, "at least one kill must land with claims in hand"
    assert await buffered(mongo_db) == 0


async def _kill_holding_claims(db: Any, victim: RedeliverProcess, chooser: random.Random) -> None:
    """SIGKILL `victim` while it holds claims, if it can be caught so within a few tries.

    A batch holds its claims only between its compare-and-set and its settle (tens of ms), and a
    settle already sent still lands after a kill (the server finishes what it received). So the
    victim is frozen (SIGSTOP), its in-flight commands are let land, and it is killed if it
    still holds claims; otherwise it runs on a little and is tried again."""
    for _ in range(20):
        victim.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(0.3)
        if await held_by(db, victim.pid):
            break
        victim.process.send_signal(signal.SIGCONT)
        await asyncio.sleep(chooser.uniform(0.0, 0.05))
    victim.kill()


async def _delivering(victim: RedeliverProcess) -> bool:
    return '"telemetry_redelivered"' in victim.log_text()


async def _is_empty(db: Any) -> bool:
    return await buffered(db) == 0
