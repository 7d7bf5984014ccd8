"""`persistence-worker check | config`: the operator's look before `run`, at the servers and at the settings.

`check` is the pre-flight, and the container's exec probe.

Kafka: the cluster answers and has every topic the worker needs (it creates none); with
--max-replicas N, the input topics with fewer partitions than N. MongoDB: it answers, the
collections' indexes, the write concern in force. One line per finding, `ok:`, `warning:` or
`not ok:`; exit 0 if nothing is not ok, 1 if a topic is missing or an index conflicts, 3 if a
server does not answer. Both servers are asked at once, each for at most SERVER_TIMEOUT_S.

`config` prints every setting's value (secrets hidden) and whether it came from the
environment or is the default, then the variables that look like misspelled settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from enum import Enum

from pydantic import SecretStr

from worker.commands.exits import ExitCode
from worker.errors import WorkerError
from worker.kafka.diagnose import KafkaRefused, KafkaUnavailable
from worker.kafka.probe import cluster_topics
from worker.kafka.topics import TopicFinding, compare_topics, needed_topics
from worker.mongo.diagnose import mongodb_failure
from worker.mongo.gateway import MongoGateway, open_gateway
from worker.mongo.indexes import CollectionIndexReport, expected_indexes, inspect_collection, ttl_only_differs
from worker.mongo.write_concern import WriteConcern, write_concern_in_force
from worker.ops.about import worker_version
from worker.ops.library_logs import mute_library_logs
from worker.ops.messages import ServerFailure, report_failure
from worker.ops.redaction import scrub
from worker.settings import Settings, unknown_variables
from worker.settings_typos import UnknownVariable

SERVER_TIMEOUT_S = 1.5
"""The bound on each server's questions, connecting included; both servers are asked at once."""
MONGODB_SELECTION_TIMEOUT_S = 1.0
"""MongoDB's server-selection and connect timeouts: below SERVER_TIMEOUT_S, so that a refused
connection is told as PyMongo saw it ("connection refused"), not as a bare timeout."""
CREATE_TOPICS = "the worker creates none: create them before `run`"
INDEXES_AT_START_UP = "`run` sees to them at start-up (`persistence-worker indexes ensure` now)"
OK, WARNING, NOT_OK = "ok", "warning", "not ok"
Line = tuple[str, str]
"""(OK, WARNING or NOT_OK, what was found)."""
HIDDEN = "<hidden>"
VALUE_COLUMN = 40
"""`config` pads values to this width so the sources line up; longer ones push theirs out."""


@dataclass(frozen=True, slots=True)
class MongoFindings:
    indexes: list[CollectionIndexReport]
    write_concern: WriteConcern


def check(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(check_command(settings, unknown_variables(), args.max_replicas))


async def check_command(settings: Settings, unknown: list[UnknownVariable], max_replicas: int | None) -> int:
    """Ask both servers, print one line per finding; 0, 1 (a finding not ok) or 3 (no answer)."""
    for variable in unknown:
        print(f"warning: {variable.describe()}", file=sys.stderr)
    if settings.log_level != "DEBUG":
        mute_library_logs()  # aiokafka's "Unable connect" would repeat our own line
    kafka, mongodb = await asyncio.gather(inspect_kafka(settings), inspect_mongodb(settings))
    lines = [] if isinstance(kafka, ServerFailure) else kafka_lines(kafka, settings, max_replicas)
    lines += [] if isinstance(mongodb, ServerFailure) else mongodb_lines(mongodb, settings)
    for status, text in lines:
        print(f"{status}: {text}")
    failures = [found for found in (kafka, mongodb) if isinstance(found, ServerFailure)]
    for failure in failures:
        report_failure(failure, prefix=NOT_OK)
    if failures:
        return ExitCode.UNREACHABLE
    return ExitCode.PROBLEM if any(status == NOT_OK for status, _ in lines) else ExitCode.OK


async def inspect_kafka(settings: Settings) -> list[TopicFinding] | ServerFailure:
    """Each topic the worker needs, as the cluster has it; or why the cluster did not answer."""
    try:
        cluster = await cluster_topics(settings, timeout_s=SERVER_TIMEOUT_S)
    except (KafkaUnavailable, KafkaRefused) as exc:
        return exc.failure
    return compare_topics(needed_topics(settings), cluster)


async def inspect_mongodb(settings: Settings) -> MongoFindings | ServerFailure:
    """The indexes and the write concern; or why MongoDB did not answer."""
    async with open_gateway(settings, timeout_ms=int(MONGODB_SELECTION_TIMEOUT_S * 1000)) as gateway:
        try:
            async with asyncio.timeout(SERVER_TIMEOUT_S):
                return await _mongodb_findings(gateway, settings)
        except WorkerError as exc:
            return mongodb_failure(exc, settings)
        except TimeoutError as exc:
            return mongodb_failure(exc, settings, timeout_s=SERVER_TIMEOUT_S)


async def _mongodb_findings(gateway: MongoGateway, settings: Settings) -> MongoFindings:
    database = await gateway.connect()
    expected = expected_indexes(settings).items()
    indexes = [await inspect_collection(database, name, specs) for name, specs in expected]
    return MongoFindings(indexes, await write_concern_in_force(gateway, settings))


def kafka_lines(findings: list[TopicFinding], settings: Settings, max_replicas: int | None) -> list[Line]:
    """The cluster answers; a line per needed topic; how many are missing, if any."""
    answers = (OK, f"Kafka at {scrub(settings.kafka_bootstrap_servers)} answers")
    lines = [answers, *(topic_line(finding, max_replicas) for finding in findings)]
    missing = sum(finding.partitions is None for finding in findings)
    if missing:
        lines.append((NOT_OK, f"{missing} of {len(findings)} topics missing; {CREATE_TOPICS}"))
    return lines


def topic_line(finding: TopicFinding, max_replicas: int | None) -> Line:
    """Not ok when missing; a warning when an input topic has fewer partitions than `max_replicas`."""
    topic = f"topic {finding.topic.name} ({finding.topic.role})"
    if finding.partitions is None:
        return NOT_OK, f"{topic} does not exist"
    count = f"{finding.partitions} partition{'' if finding.partitions == 1 else 's'}"
    if finding.fewer_partitions_than(max_replicas):
        beyond = f"replicas beyond {finding.partitions} read none of it"
        return WARNING, f"{topic}: {count}, fewer than --max-replicas {max_replicas}: {beyond}"
    return OK, f"{topic}: {count}"


def mongodb_lines(findings: MongoFindings, settings: Settings) -> list[Line]:
    """MongoDB answers; the indexes of each collection; the write concern."""
    lines = [(OK, f"MongoDB at {settings.mongodb_hosts()} answers")]
    for report in findings.indexes:
        lines += index_lines(report)
    return [*lines, write_concern_line(findings.write_concern)]


def index_lines(report: CollectionIndexReport) -> list[Line]:
    """A line per conflict `ensure` leaves to an operator; one for what `run` creates or updates itself."""
    where = f"indexes of {report.collection}"
    expected = len(report.present) + len(report.missing) + len(report.conflicts)
    lines = [
        (
            NOT_OK,
            f"{where}: expected {wanted.describe()}, found {found.describe()}; drop or change it by hand",
        )
        for wanted, found in report.conflicts
        if not ttl_only_differs(wanted, found)
    ]
    other_ttl = sum(ttl_only_differs(*pair) for pair in report.conflicts)
    pending = [f"{len(report.missing)} of {expected} missing"] if report.missing else []
    pending += [f"{other_ttl} with another TTL"] if other_ttl else []
    if pending:
        lines.append((WARNING, f"{where}: {', '.join(pending)}; {INDEXES_AT_START_UP}"))
    return lines or [(OK, f"{where}: {expected} of {expected} as expected")]


def write_concern_line(concern: WriteConcern) -> Line:
    """The write concern in force; a warning when it waits for fewer than a majority of the members."""
    text = f"write concern {concern.describe()}"
    if not concern.below_majority:
        return OK, text
    if concern.members is None:
        return WARNING, f"{text}: a number, and a mongos does not say how many a majority is; use w=majority"
    why = "a failover can lose writes already acknowledged (and their offsets committed); use w=majority"
    return WARNING, f"{text}: fewer than a majority of the {concern.members} members the server lists: {why}"


def config(settings: Settings, _args: argparse.Namespace) -> int:
    return config_command(settings, unknown_variables())


def config_command(settings: Settings, unknown: list[UnknownVariable]) -> int:
    """Print the table and the suspect variables; exit 0 (strict mode has stopped earlier)."""
    rows = effective_settings(settings)
    width = max(len(name) for name, _, _ in rows)
    value_width = min(VALUE_COLUMN, max(len(value) for _, value, _ in rows))
    print(f"# persistence-worker {worker_version()}: effective settings (secrets hidden)")
    for name, value, source in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  {source}")
    if unknown:
        print("# variables that are not settings (ignored):")
    for variable in unknown:
        print(variable.describe())
    return ExitCode.OK


def effective_settings(settings: Settings) -> list[tuple[str, str, str]]:
    """(variable, value as shown, "environment" or "default") for every setting, secrets hidden."""
    given = settings.model_fields_set
    rows = []
    for field in Settings.model_fields:
        source = "environment" if field in given else "default"
        rows.append((field.upper(), shown_value(settings, field), source))
    return rows


def shown_value(settings: Settings, field: str) -> str:
    """A setting's value as `config` prints it: the URI without credentials, other secrets hidden,
    the rest as an operator would type it."""
    value = getattr(settings, field)
    if field == "mongodb_uri":
        return settings.mongodb_uri_for_logs()
    if isinstance(value, SecretStr):
        return HIDDEN
    return scrub(as_typed(value))


def as_typed(value: object) -> str:
    """`value` as its environment variable would be written: an enum by its value, a list
    comma-separated (a set sorted), true/false, and nothing for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return as_typed(value.value)
    if isinstance(value, frozenset | set):
        return ",".join(sorted(as_typed(item) for item in value))
    if isinstance(value, tuple | list):
        return ",".join(as_typed(item) for item in value)
    return str(value)
