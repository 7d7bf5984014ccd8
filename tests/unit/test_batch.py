"""Specification of worker.pipeline.batch.BatchProcessor: one polled batch in, writes, dead letters and commits out."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from aiokafka.structs import TopicPartition
from pymongo import AsyncMongoClient
from structlog.testing import capture_logs

from tests.support.events import EventFactory
from tests.support.mongo import FakeGateway
from tests.support.pipeline import (
    INC,
    RES,
    TEL,
    VAL,
    Pipeline,
    good_record,
    letters_summary,
    make_pipeline,
    record,
)
from tests.support.routes import TOPICS
from worker.errors import DocumentRefused, OperationRefused, PermanentError, TransientError
from worker.mongo.writers import InsertWriter
from worker.pipeline.assembly import batch_processor
from worker.pipeline.batch import BatchOutcome
from worker.settings import RouteName, Settings


@pytest.fixture
def factory() -> EventFactory:
    return EventFactory(seed=11)


@pytest.fixture
def pipeline(fast_settings: Settings) -> Pipeline:
    return make_pipeline(fast_settings)


# Good records


@pytest.mark.parametrize("name", list(RouteName))
async def test_good_records_reach_their_writer_as_documents(
    pipeline: Pipeline, factory: EventFactory, name: RouteName
) -> None:
    """Each valid record becomes its route's document, written in one call, and nothing is dead-lettered."""
    events = [factory.good(name) for _ in range(3)]
    result = await pipeline.process(*(record(name, 10 + i, event) for i, event in enumerate(events)))
    assert pipeline.writers[name].calls == [[pipeline.document(name, event) for event in events]]
    assert pipeline.dead_letters.letters == []
    assert result == BatchOutcome(
        commits={TopicPartition(TOPICS[name], 0): 13}, blocked={}, stored=3, dead_lettered=0
    )


async def test_commits_are_the_last_offset_plus_one_per_partition(
    pipeline: Pipeline, factory: EventFactory
) -> None:
    """Every partition of the batch commits its last record's offset + 1."""
    result = await pipeline.process(
        good_record(factory, RouteName.INCIDENTS, 5, partition=0),
        good_record(factory, RouteName.INCIDENTS, 6, partition=0),
        good_record(factory, RouteName.INCIDENTS, 40, partition=3),
        good_record(factory, RouteName.RESULTS, 0, partition=1),
    )
    assert result.commits == {
        TopicPartition(TOPICS[RouteName.INCIDENTS], 0): 7,
        TopicPartition(TOPICS[RouteName.INCIDENTS], 3): 41,
        TopicPartition(TOPICS[RouteName.RESULTS], 1): 1,
    }
    assert result.blocked == {}
    assert len(pipeline.writers[RouteName.INCIDENTS].calls) == 1


async def test_one_canonical_saved_line_per_partition(pipeline: Pipeline, factory: EventFactory) -> None:
    """Each written partition logs one `<route saved event>` line with its offsets and counts."""
    incidents = [factory.incident() for _ in range(2)]
    with capture_logs() as logs:
        await pipeline.process(
            record(RouteName.INCIDENTS, 7, incidents[0], partition=2),
            record(RouteName.INCIDENTS, 8, incidents[1], partition=2),
            good_record(factory, RouteName.INCIDENTS, 3, partition=0),
        )
    saved = sorted((e for e in logs if e["event"] == "incident_saved"), key=lambda e: e["partition"])
    assert [(e["partition"], e["offset"], e["last_offset"], e["stored"], e["skipped"]) for e in saved] == [
        (0, 3, 3, 1, 0),
        (2, 7, 8, 2, 0),
    ]
    assert saved[1]["event_id"] is None  # several records: no single event id
    assert saved[0]["event_id"] is not None
    assert all(e["topic"] == TOPICS[RouteName.INCIDENTS] and e["log_level"] == "info" for e in saved)


# Rejected records

MALFORMED = {
    "empty_value": None,
    "not_utf8": b'{"plan_id": "\xff\xfe"}',
    "not_json": b"{not json",
    "not_object": b"[1, 2, 3]",
    "forbidden_key": b'{"plan_id": "p", "$where": "sleep(1000)"}',
}


@pytest.mark.parametrize(("reason", "value"), MALFORMED.items(), ids=MALFORMED.keys())
async def test_unreadable_records_are_dead_lettered_as_validation(
    pipeline: Pipeline, factory: EventFactory, reason: str, value: bytes | None
) -> None:
    """An unreadable record is dead-lettered (error_type validation, its reason), its neighbours are written."""
    with capture_logs() as logs:
        result = await pipeline.process(
            good_record(factory, RouteName.VALIDATION, 0),
            record(RouteName.VALIDATION, 1, value, key=b"wf-9", headers=(("event_id", b"val-99"),)),
            good_record(factory, RouteName.VALIDATION, 2),
        )
    assert letters_summary(pipeline.dead_letters.letters) == [
        (TOPICS[RouteName.VALIDATION], 0, 1, "orchestrator.validation.dlq", "validation", reason)
    ]
    assert len(pipeline.writers[RouteName.VALIDATION].documents) == 2
    assert result.commits == {VAL: 3}
    assert result.dead_lettered == 1
    [rejected] = [e for e in logs if e["event"] == "event_rejected"]
    assert dict(rejected) | {"detail": None} == {
        "event": "event_rejected",
        "log_level": "warning",
        "topic": TOPICS[RouteName.VALIDATION],
        "partition": 0,
        "offset": 1,
        "event_id": "val-99",  # from the record's `event_id` header
        "reason": reason,
        "detail": None,
        "dlq_topic": "orchestrator.validation.dlq",
    }
    assert rejected["detail"] == pipeline.dead_letters.letters[0].message


async def test_a_schema_violation_is_dead_lettered_naming_the_field(
    pipeline: Pipeline, factory: EventFactory
) -> None:
    """A record violating its contract is dead-lettered as schema_violation, logged with its payload's event_id."""
    event = factory.result() | {"sla_status": {"violations_count": "3"}}
    with capture_logs() as logs:
        result = await pipeline.process(record(RouteName.RESULTS, 4, event))
    [letter] = pipeline.dead_letters.letters
    assert (letter.error_type, letter.reason) == ("validation", "schema_violation")
    assert "sla_status.violations_count" in letter.message
    assert pipeline.writers[RouteName.RESULTS].documents == []
    assert result.commits == {RES: 5}
    [rejected] = [e for e in logs if e["event"] == "event_rejected"]
    assert rejected["event_id"] == event["event_id"]
    assert rejected["offset"] == 4


async def test_too_large_and_too_deep_records_are_rejected(make_settings: Any, factory: EventFactory) -> None:
    """Records over MAX_EVENT_BYTES or nested deeper than MAX_NESTING_DEPTH are dead-lettered with that reason."""
    pipeline = make_pipeline(make_settings(max_event_bytes=2048, max_nesting_depth=4))
    deep = factory.telemetry() | {"metrics": {"a": {"b": {"c": {"d": 1}}}}}
    large = factory.telemetry() | {"source": "x" * 3000}
    await pipeline.process(record(RouteName.TELEMETRY, 0, deep), record(RouteName.TELEMETRY, 1, large))
    assert [(dl.record.offset, dl.reason) for dl in pipeline.dead_letters.letters] == [
        (0, "too_deep"),
        (1, "too_large"),
    ]


# Fail-open routes whose writes fail


async def test_fail_open_route_dead_letters_its_records_when_mongodb_stays_down(
    pipeline: Pipeline, factory: EventFactory, fast_settings: Settings
) -> None:
    """After RETRY_MAX_ATTEMPTS transient failures, every record of the route is dead-lettered as persist_failed."""
    writer = pipeline.writers[RouteName.INCIDENTS]
    writer.always_fail = TransientError("AutoReconnect: connection refused")
    with capture_logs() as logs:
        result = await pipeline.process(
            good_record(factory, RouteName.INCIDENTS, 0),
            good_record(factory, RouteName.INCIDENTS, 1),
            good_record(factory, RouteName.INCIDENTS, 9, partition=1),
            good_record(factory, RouteName.RESULTS, 3),
        )
    assert len(writer.calls) == fast_settings.retry_max_attempts
    assert letters_summary(pipeline.dead_letters.letters) == [
        (
            TOPICS[RouteName.INCIDENTS],
            0,
            0,
            "orchestrator.incidents.dlq",
            "persist_failed",
            "retries_exhausted",
        ),
        (
            TOPICS[RouteName.INCIDENTS],
            0,
            1,
            "orchestrator.incidents.dlq",
            "persist_failed",
            "retries_exhausted",
        ),
        (
            TOPICS[RouteName.INCIDENTS],
            1,
            9,
            "orchestrator.incidents.dlq",
            "persist_failed",
            "retries_exhausted",
        ),
    ]
    assert all("connection refused" in letter.message for letter in pipeline.dead_letters.letters)
    assert result.commits == {INC: 2, TopicPartition(TOPICS[RouteName.INCIDENTS], 1): 10, RES: 4}
    assert result.blocked == {}
    assert (result.stored, result.dead_lettered) == (1, 3)
    [failed] = [e for e in logs if e["event"] == "incidents_persist_failed"]
    assert failed["log_level"] == "error"
    assert (failed["topic"], failed["partitions"], failed["records"]) == (
        TOPICS[RouteName.INCIDENTS],
        [0, 1],
        3,
    )
    assert (failed["transient"], failed["dlq_topic"]) == (True, "orchestrator.incidents.dlq")
    assert [e["attempt"] for e in logs if e["event"] == "mongodb_write_retry"] == [1, 2]


async def test_a_permanent_write_failure_is_not_retried(pipeline: Pipeline, factory: EventFactory) -> None:
    """A PermanentError from the writer dead-letters the route's records at once, reason write_error."""
    writer = pipeline.writers[RouteName.VALIDATION]
    writer.always_fail = PermanentError("OperationFailure: not authorized")
    with capture_logs() as logs:
        result = await pipeline.process(good_record(factory, RouteName.VALIDATION, 0))
    assert len(writer.calls) == 1
    assert letters_summary(pipeline.dead_letters.letters) == [
        (TOPICS[RouteName.VALIDATION], 0, 0, "orchestrator.validation.dlq", "persist_failed", "write_error")
    ]
    assert result.commits == {VAL: 1}
    assert [e["transient"] for e in logs if e["event"] == "validation_audit_persist_failed"] == [False]


async def test_a_transient_failure_that_clears_within_the_retries_stores_the_batch(
    pipeline: Pipeline, factory: EventFactory
) -> None:
    """A write that fails transiently and then succeeds stores everything and dead-letters nothing."""
    writer = pipeline.writers[RouteName.TELEMETRY]
    writer.errors = [TransientError("NotPrimaryError")]
    result = await pipeline.process(good_record(factory, RouteName.TELEMETRY, 0))
    assert len(writer.calls) == 2
    assert writer.calls[0] == writer.calls[1]
    assert pipeline.dead_letters.letters == []
    assert result.commits == {TEL: 1}


# Fail-closed routes


async def test_fail_closed_route_blocks_its_partitions_without_dead_letters_or_commits(
    fast_settings: Settings, factory: EventFactory
) -> None:
    """A failing fail-closed route reports its partitions blocked at their first offset; other routes commit."""
    pipeline = make_pipeline(fast_settings, fail_closed=frozenset({RouteName.RESULTS}))
    pipeline.writers[RouteName.RESULTS].always_fail = TransientError("ServerSelectionTimeoutError")
    results_p1 = TopicPartition(TOPICS[RouteName.RESULTS], 1)
    with capture_logs() as logs:
        result = await pipeline.process(
            good_record(factory, RouteName.RESULTS, 20),
            record(RouteName.RESULTS, 21, b"{not json"),
            good_record(factory, RouteName.RESULTS, 22),
            good_record(factory, RouteName.RESULTS, 5, partition=1),
            good_record(factory, RouteName.INCIDENTS, 8),
            record(RouteName.INCIDENTS, 9, b"[]"),
        )
    assert result.blocked == {RES: 20, results_p1: 5}
    assert result.commits == {INC: 10}
    assert letters_summary(pipeline.dead_letters.letters) == [
        (TOPICS[RouteName.INCIDENTS], 0, 9, "orchestrator.incidents.dlq", "validation", "not_object")
    ]
    assert [e["offset"] for e in logs if e["event"] == "event_rejected"] == [9]
    [blocked] = [e for e in logs if e["event"] == "workflow_results_persist_blocked"]
    assert (blocked["partitions"], blocked["records"], blocked["log_level"]) == ([0, 1], 3, "warning")
    assert not [e for e in logs if e["event"] == "workflow_results_persist_failed"]
    assert len(pipeline.writers[RouteName.INCIDENTS].documents) == 1


async def test_fail_closed_route_that_writes_commits_normally(
    fast_settings: Settings, factory: EventFactory
) -> None:
    """When MongoDB answers, a fail-closed route behaves like any other: written, rejected records dead-lettered."""
    pipeline = make_pipeline(fast_settings, fail_closed=frozenset({RouteName.RESULTS}))
    result = await pipeline.process(
        good_record(factory, RouteName.RESULTS, 0), record(RouteName.RESULTS, 1, b"x")
    )
    assert result.commits == {RES: 2}
    assert result.blocked == {}
    assert [dl.reason for dl in pipeline.dead_letters.letters] == ["not_json"]


async def test_blocked_records_are_not_counted_as_stored(
    fast_settings: Settings, factory: EventFactory
) -> None:
    """Records held back by a blocked fail-closed route do not count as stored."""
    pipeline = make_pipeline(fast_settings, fail_closed=frozenset({RouteName.RESULTS}))
    pipeline.writers[RouteName.RESULTS].always_fail = TransientError("down")
    result = await pipeline.process(good_record(factory, RouteName.RESULTS, 0))
    assert result.stored == 0


# Refusals and duplicates


async def test_refused_documents_are_dead_lettered_as_persist_refused(
    pipeline: Pipeline, factory: EventFactory
) -> None:
    """A document MongoDB refuses is dead-lettered (persist_refused); skipped duplicates are not."""
    writer = pipeline.writers[RouteName.INCIDENTS]
    writer.refused = {1: "121: Document failed validation"}
    writer.skipped = frozenset({2})
    with capture_logs() as logs:
        result = await pipeline.process(*(good_record(factory, RouteName.INCIDENTS, n) for n in range(3)))
    [letter] = pipeline.dead_letters.letters
    assert (letter.record.offset, letter.error_type, letter.reason, letter.message) == (
        1,
        "persist_refused",
        "refused",
        "121: Document failed validation",
    )
    assert result.commits == {INC: 3}
    assert result.dead_lettered == 1
    [refusal] = [e for e in logs if e["event"] == "event_refused_by_mongodb"]
    assert (refusal["topic"], refusal["partition"], refusal["offset"]) == (TOPICS[RouteName.INCIDENTS], 0, 1)
    [saved] = [e for e in logs if e["event"] == "incident_saved"]
    assert (saved["stored"], saved["skipped"], saved["refused"]) == (1, 1, 1)


# The dead-letter topic


async def test_a_dead_letter_publish_failure_propagates(
    fast_settings: Settings, factory: EventFactory
) -> None:
    """If the dead-letter topic cannot be written, process raises TransientError so the batch is re-read."""
    pipeline = make_pipeline(fast_settings, dlq_error=TransientError("dead-letter publish failed"))
    with pytest.raises(TransientError, match="dead-letter"):
        await pipeline.process(
            good_record(factory, RouteName.VALIDATION, 0), record(RouteName.VALIDATION, 1, b"x")
        )


async def test_dead_letters_are_published_once_per_batch(pipeline: Pipeline, factory: EventFactory) -> None:
    """All of a batch's dead letters, from every route, go to the publisher in a single call."""
    pipeline.writers[RouteName.TELEMETRY].always_fail = PermanentError("bad")
    await pipeline.process(
        record(RouteName.VALIDATION, 0, b"x"),
        good_record(factory, RouteName.TELEMETRY, 0),
        record(RouteName.INCIDENTS, 0, None),
    )
    assert pipeline.dead_letters.calls == 1
    assert sorted((dl.dlq_topic, dl.error_type) for dl in pipeline.dead_letters.letters) == [
        ("orchestrator.incidents.dlq", "validation"),
        ("orchestrator.telemetry.dlq", "persist_failed"),
        ("orchestrator.validation.dlq", "validation"),
    ]


async def test_a_route_with_only_rejected_records_is_not_written(pipeline: Pipeline) -> None:
    """When no record of a route is valid its writer is not called at all."""
    result = await pipeline.process(
        record(RouteName.INCIDENTS, 0, b"x"), record(RouteName.INCIDENTS, 1, b"y")
    )
    assert result == BatchOutcome(commits={INC: 2}, blocked={}, stored=0, dead_lettered=2)
    assert pipeline.writers[RouteName.INCIDENTS].calls == []


async def test_a_lone_malformed_record_is_dead_lettered_with_the_real_insert_writer(
    fast_settings: Settings,
) -> None:
    """With the real InsertWriter, a batch holding one malformed incident dead-letters it and commits."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient("mongodb://localhost:1", connect=False)
    try:
        pipeline = make_pipeline(fast_settings)
        writer = InsertWriter(gateway=FakeGateway(client["orchestrator"]), collection="incidents")  # type: ignore[arg-type]
        routes = dict(pipeline.routes)
        routes[TOPICS[RouteName.INCIDENTS]] = dataclasses.replace(
            routes[TOPICS[RouteName.INCIDENTS]], writer=writer
        )
        processor = batch_processor(fast_settings, routes, pipeline.dead_letters)
        result = await processor.process({INC: [record(RouteName.INCIDENTS, 0, b"{not json")]})
    finally:
        await client.close()
    assert result.commits == {INC: 1}
    assert [letter.reason for letter in pipeline.dead_letters.letters] == ["not_json"]


# MongoDB errors in three kinds


async def test_an_operation_refusal_on_a_chunk_of_several_blocks_a_fail_closed_route(
    fast_settings: Settings, factory: EventFactory
) -> None:
    """A chunk-wide `not authorized` on a fail-closed route blocks its partition: no dead letter, no commit."""
    pipeline = make_pipeline(fast_settings, fail_closed=frozenset({RouteName.INCIDENTS}))
    writer = pipeline.writers[RouteName.INCIDENTS]
    writer.always_fail = OperationRefused("OperationFailure: not authorized on orchestrator")
    with capture_logs() as logs:
        result = await pipeline.process(*(good_record(factory, RouteName.INCIDENTS, n) for n in range(4)))
    assert result.blocked == {INC: 0}
    assert result.commits == {}
    assert pipeline.dead_letters.letters == []
    assert len(writer.calls) == 1  # not retried, not split record by record
    assert [e["records"] for e in logs if e["event"] == "incidents_persist_blocked"] == [4]


async def test_an_operation_refusal_on_a_fail_open_route_dead_letters_as_persist_failed(
    pipeline: Pipeline, factory: EventFactory
) -> None:
    """On a fail-open route a chunk-wide operation refusal dead-letters every record as persist_failed."""
    writer = pipeline.writers[RouteName.INCIDENTS]
    writer.always_fail = OperationRefused("OperationFailure: not authorized on orchestrator")
    result = await pipeline.process(*(good_record(factory, RouteName.INCIDENTS, n) for n in range(3)))
    assert {(dl.error_type, dl.reason) for dl in pipeline.dead_letters.letters} == {
        ("persist_failed", "operation_refused")
    }
    assert [dl.record.offset for dl in pipeline.dead_letters.letters] == [0, 1, 2]
    assert result.commits == {INC: 3}
    assert len(writer.calls) == 1


async def test_an_operation_refusal_met_while_isolating_documents_is_an_outage(
    fast_settings: Settings, factory: EventFactory
) -> None:
    """If isolating a refused document meets an operation refusal, the whole chunk is held on a fail-closed route."""
    pipeline = make_pipeline(fast_settings, fail_closed=frozenset({RouteName.INCIDENTS}))
    writer = pipeline.writers[RouteName.INCIDENTS]
    writer.errors = [DocumentRefused("DocumentTooLarge"), OperationRefused("not authorized")]
    result = await pipeline.process(*(good_record(factory, RouteName.INCIDENTS, n) for n in range(3)))
    assert (result.blocked, result.commits, pipeline.dead_letters.letters) == ({INC: 0}, {}, [])


async def test_a_lone_refused_document_is_persist_refused_even_on_a_fail_closed_route(
    fast_settings: Settings, factory: EventFactory
) -> None:
    """A batch of one record whose document is refused dead-letters it as persist_refused and commits."""
    pipeline = make_pipeline(fast_settings, fail_closed=frozenset({RouteName.INCIDENTS}))
    pipeline.writers[RouteName.INCIDENTS].always_fail = DocumentRefused("DocumentTooLarge: too large")
    result = await pipeline.process(good_record(factory, RouteName.INCIDENTS, 7))
    assert letters_summary(pipeline.dead_letters.letters) == [
        (TOPICS[RouteName.INCIDENTS], 0, 7, "orchestrator.incidents.dlq", "persist_refused", "refused")
    ]
    assert (result.commits, result.blocked) == ({INC: 8}, {})


async def test_a_refused_document_in_a_chunk_is_isolated_and_the_others_stored(
    fast_settings: Settings, factory: EventFactory
) -> None:
    """A document refusal on a chunk retries record by record: only the refused one is dead-lettered."""
    pipeline = make_pipeline(fast_settings, fail_closed=frozenset({RouteName.INCIDENTS}))
    writer = pipeline.writers[RouteName.INCIDENTS]
    writer.errors = [DocumentRefused("InvalidDocument"), DocumentRefused("InvalidDocument: offset 1")]
    result = await pipeline.process(*(good_record(factory, RouteName.INCIDENTS, n) for n in range(3)))
    assert [(dl.record.offset, dl.error_type) for dl in pipeline.dead_letters.letters] == [
        (0, "persist_refused")
    ]
    assert [len(call) for call in writer.calls] == [3, 1, 1, 1]
    assert (result.commits, result.stored) == ({INC: 3}, 2)


TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_a_rejected_record_with_a_traceparent_has_its_trace_id_in_the_log_and_the_dead_letter(
    pipeline: Pipeline, factory: EventFactory
) -> None:
    """A W3C traceparent on a record binds its trace id to the event_rejected line and to the dead letter's x-trace-id."""
    with capture_logs() as logs:
        await pipeline.process(record(RouteName.INCIDENTS, 5, b"{not json", headers=(("traceparent", TRACEPARENT),)))
    [rejected] = [e for e in logs if e["event"] == "event_rejected"]
    assert rejected["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    [letter] = pipeline.dead_letters.letters
    headers = dict(letter.headers())
    assert headers["x-trace-id"] == b"4bf92f3577b34da6a3ce929d0e0e4736"
    assert headers["traceparent"] == TRACEPARENT


async def test_a_malformed_traceparent_binds_no_trace_id(pipeline: Pipeline, factory: EventFactory) -> None:
    """A traceparent that is not W3C's format is kept as a header but gives no trace_id field nor x-trace-id."""
    with capture_logs() as logs:
        await pipeline.process(record(RouteName.INCIDENTS, 6, b"{not json", headers=(("traceparent", b"00-xyz"),)))
    [rejected] = [e for e in logs if e["event"] == "event_rejected"]
    assert "trace_id" not in rejected
    assert "x-trace-id" not in dict(pipeline.dead_letters.letters[0].headers())
