"""The pipeline's log lines about records: rejected (contract), refused (MongoDB), saved, blocked, failed."""

from __future__ import annotations

import itertools
from collections.abc import Collection
from typing import Any

import structlog

from worker.dead_letters.letters import DeadLetter, error_class
from worker.errors import TransientError, WorkerError
from worker.mongo.writers import WriteOutcome
from worker.pipeline.prepare import Rejected
from worker.pipeline.records import Prepared, coordinates
from worker.pipeline.routes import Route

log = structlog.get_logger(__name__)


def log_rejection(letter: DeadLetter, rejection: Rejected) -> None:
    """Warning for input the contract rejects; error, with the stack, for an unforeseen failure."""
    fields: dict[str, Any] = {
        **coordinates(letter.record),
        "event_id": rejection.event_id,
        "reason": letter.reason,
        "detail": letter.message,
        "dlq_topic": letter.dlq_topic,
    }
    if rejection.error is None:
        log.warning("event_rejected", **fields)
        return
    fields.update(error_type=rejection.error_type, error_class=error_class(rejection.error))
    log.error("event_rejected", **fields, exc_info=rejection.error)


def log_refused_by_mongodb(letter: DeadLetter) -> None:
    log.error("event_refused_by_mongodb", **coordinates(letter.record), error=letter.message)


def log_saved(route: Route, items: list[Prepared], outcome: WriteOutcome) -> None:
    """The canonical line: one per partition of the batch, with offsets and counts.

    A partition's records are next to each other in `items` (a batch is prepared partition by
    partition), so each line covers one run of them; the counts walk the indexes only when some
    document was skipped or refused.
    """
    start = 0
    for partition, run in itertools.groupby(items, key=_partition):
        count = len(list(run))
        indexes = range(start, start + count)
        start += count
        skipped = _among(outcome.skipped, indexes)
        refused = _among(outcome.refused.keys(), indexes)
        first, last = items[indexes[0]], items[indexes[-1]]
        log.info(
            route.saved_event,
            topic=route.topic,
            partition=partition,
            offset=first.record.offset,
            last_offset=last.record.offset,
            event_id=first.event_id if count == 1 else None,
            stored=count - skipped - refused,
            skipped=skipped,
            refused=refused,
        )


def _partition(item: Prepared) -> int:
    partition: int = item.tp.partition  # aiokafka's TopicPartition is untyped
    return partition


def _among(positions: Collection[int], indexes: range) -> int:
    """How many of `positions` fall in `indexes`."""
    return sum(1 for position in positions if position in indexes) if positions else 0


def log_blocked(route: Route, partitions: list[int], records: int, exc: WorkerError) -> None:
    """A fail-closed route could not be written: its partitions wait."""
    log.warning(
        f"{route.writer.collection}_persist_blocked",
        topic=route.topic, partitions=partitions, records=records, error=str(exc),
    )  # fmt: skip


def log_failed(route: Route, partitions: list[int], records: int, exc: WorkerError) -> None:
    """A fail-open route could not be written: its records go to the dead-letter topic."""
    log.error(
        route.failed_event,
        topic=route.topic, partitions=partitions, records=records, error=str(exc),
        transient=isinstance(exc, TransientError), dlq_topic=route.dlq_topic,
    )  # fmt: skip
