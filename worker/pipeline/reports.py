"""The pipeline's log lines about records: rejected, refused, saved, blocked or failed."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import structlog

from worker.dead_letters.letters import DeadLetter, error_class
from worker.errors import TransientError, WorkerError
from worker.mongo.writers import WriteOutcome
from worker.pipeline.prepare import Refused
from worker.pipeline.records import Prepared, coordinates
from worker.pipeline.routes import Route

log = structlog.get_logger(__name__)


def log_rejection(letter: DeadLetter, refused: Refused) -> None:
    """Warning for input the contract refuses; error, with the stack, for an unforeseen failure."""
    fields: dict[str, Any] = {
        **coordinates(letter.record),
        "event_id": refused.event_id,
        "reason": letter.reason,
        "detail": letter.message,
        "dlq_topic": letter.dlq_topic,
    }
    if refused.error is None:
        log.warning("event_rejected", **fields)
        return
    fields.update(error_type=refused.error_type, error_class=error_class(refused.error))
    log.error("event_rejected", **fields, exc_info=refused.error)


def log_refused_by_mongodb(letter: DeadLetter) -> None:
    log.error("event_refused_by_mongodb", **coordinates(letter.record), error=letter.message)


def log_saved(route: Route, items: list[Prepared], outcome: WriteOutcome) -> None:
    """The canonical line: one per partition of the batch, with offsets and counts."""
    by_partition: dict[int, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_partition[item.tp.partition].append(index)
    for partition, indexes in by_partition.items():
        first, last = items[indexes[0]], items[indexes[-1]]
        log.info(
            route.saved_event,
            topic=route.topic,
            partition=partition,
            offset=first.record.offset,
            last_offset=last.record.offset,
            event_id=first.event_id if len(indexes) == 1 else None,
            stored=sum(1 for i in indexes if i not in outcome.skipped and i not in outcome.refused),
            skipped=sum(1 for i in indexes if i in outcome.skipped),
            refused=sum(1 for i in indexes if i in outcome.refused),
        )


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
