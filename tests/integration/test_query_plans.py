"""Each `persistence-worker query` subcommand, and the telemetry_buffer gauges' queries, use an index.

The very query a command sends (worker.mongo.queries) goes through `explain` (queryPlanner) on
the real server: its winning plan must read an index (IXSCAN, DISTINCT_SCAN, ...) and
never scan the collection.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from schemas.documents import (
    incident_document,
    telemetry_buffer_document,
    validation_audit_document,
    workflow_result_document,
)
from schemas.events import IncidentEvent, TelemetryEvent, ValidationEvent, WorkflowResultEvent
from tests.support.events import EventFactory
from worker.mongo import queries
from worker.mongo.indexes import ensure_indexes
from worker.mongo.queries import GUIDE_QUERIES
from worker.telemetry import stats as buffer_stats

Document = dict[str, Any]

NX_FIND_PLAN = (
    "nx-27017 explains a find with SQLite's EXPLAIN QUERY PLAN rows ({'detail': 'SEARCH <table> USING "
    "INDEX idx_...'} or 'SCAN <table>') instead of MongoDB plan stages"
)
NX_AGGREGATE_PLAN = (
    "nx-27017 explains every aggregate as {'winningPlan': {'stage': 'EOF'}}, whatever the data"
)
INDEX_STAGES = {"IXSCAN", "DISTINCT_SCAN", "COUNT_SCAN", "EXPRESS_IXSCAN"}
SCAN_STAGES = {"COLLSCAN"}


async def seed(db: AsyncDatabase[Document], count: int = 60) -> None:
    """Indexes as the worker ensures them, and documents in every collection (an empty one plans EOF)."""
    await ensure_indexes(db)
    factory = EventFactory(seed=41)
    start = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    await db.validation_audit.insert_many(
        [
            dict(validation_audit_document(ValidationEvent.model_validate(factory.validation())))
            for _ in range(count)
        ]
    )
    await db.workflow_results.insert_many(
        [
            dict(workflow_result_document(WorkflowResultEvent.model_validate(factory.result())))
            for _ in range(count)
        ]
    )
    await db.incidents.insert_many(
        [dict(incident_document(IncidentEvent.model_validate(factory.incident()))) for _ in range(count)]
    )
    buffered = []
    for index in range(count):
        event = TelemetryEvent.model_validate({**factory.telemetry(), "event_id": f"tel-{index}"})
        document = dict(telemetry_buffer_document(event, buffered_at=start + timedelta(seconds=index)))
        document["retry_count"] = index % 4
        if index % 10 == 0:  # parked as the loop parks: no due date
            document["parked"] = True
            del document["due_at"]
        buffered.append(document)
    await db.telemetry_buffer.insert_many(buffered)


def stages(plan: Any) -> list[str]:
    """Every `stage` name in an explain answer's chosen plans (rejected plans left out)."""
    found: list[str] = []
    if isinstance(plan, dict):
        for key, value in plan.items():
            if key == "rejectedPlans":
                continue
            if key == "stage" and isinstance(value, str):
                found.append(value)
            else:
                found += stages(value)
    elif isinstance(plan, list):
        for item in plan:
            found += stages(item)
    return found


async def explain(db: AsyncDatabase[Document], command: Document) -> Document:
    answer: Document = await db.command("explain", command, verbosity="queryPlanner")
    print(json.dumps(answer, default=str, indent=1)[:4000])  # shown on failure: what the server planned
    return answer


def assert_reads_an_index(answer: Document) -> None:
    found = stages(answer)
    assert set(found) & INDEX_STAGES, f"no index scan in the plan: {found}"
    assert not set(found) & SCAN_STAGES, f"a collection scan in the plan: {found}"


ARGUMENTS = {"plan_id": "plan-001", "status": "FAILED", "severity": "CRITICAL", "limit": 20}
"""A value for every parameter of the guide's queries; each takes its own."""

# `validations` groups every document on validation_result.valid, which the guide does not index:
# it reads the whole collection by design (see worker.mongo.queries).
INDEXED_SUBCOMMANDS = sorted(set(GUIDE_QUERIES) - {"validations"})


SECANTUS_SORTS_AFTER_EQUALITY = (
    "SecantusDB serves a sort only from an index led by the sort's field; mongod also serves it "
    "after an equality prefix (`{plan_id: p}` sorted by timestamp on (plan_id, timestamp), "
    "`{state: null, parked: null}` sorted by buffered_at on (state, parked, buffered_at))"
)
SECANTUS_NEEDS_EVERY_FIELD = (
    "SecantusDB uses an index only when every filter field is in it; mongod reads the sort's index "
    "and filters while fetching"
)
SECANTUS_SORTS_ONE_FIELD = (
    "SecantusDB serves a sort from an index only when it sorts on one field; mongod reads (retry_count, "
    "buffered_at) backwards for the sort (retry_count -1, buffered_at -1)"
)
SECANTUS_NO_INDEX_FOR_A_SORT = (
    "SecantusDB never uses an index for a sort alone (the $sort on type before $group); mongod reads the "
    "type index"
)
SECANTUS_DEVIATIONS = {  # subcommand: how SecantusDB plans its query otherwise
    "telemetry-retries": SECANTUS_SORTS_ONE_FIELD,
    "incident-types": SECANTUS_NO_INDEX_FOR_A_SORT,
    "plan-history": SECANTUS_SORTS_AFTER_EQUALITY,
    "workflows": SECANTUS_SORTS_AFTER_EQUALITY,
    "incidents": SECANTUS_SORTS_AFTER_EQUALITY,
    "sla-violations": SECANTUS_NEEDS_EVERY_FIELD,
}


def _subcommand(name: str) -> Any:
    """The subcommand as a parameter, with SecantusDB's deviation for its plan when it has one."""
    if name not in SECANTUS_DEVIATIONS:
        return name
    deviation = pytest.mark.standin_deviation(
        server="secantusdb", raises=AssertionError, reason=SECANTUS_DEVIATIONS[name]
    )
    return pytest.param(name, marks=deviation)


@pytest.mark.both_mongo
@pytest.mark.standin_deviation(
    server="nx-27017", raises=AssertionError, reason=f"{NX_FIND_PLAN}; {NX_AGGREGATE_PLAN}"
)
@pytest.mark.parametrize("name", [_subcommand(name) for name in INDEXED_SUBCOMMANDS])
async def test_each_query_subcommand_reads_an_index_and_sorts_nothing(
    name: str, mongo_db: AsyncDatabase[Document]
) -> None:
    """The winning plan of the subcommand's query scans an index, never the collection, and the index order
    serves its sort: no in-memory SORT stage."""
    await seed(mongo_db)
    query = GUIDE_QUERIES[name].bound(ARGUMENTS)
    answer = await explain(mongo_db, query.explain_command())
    assert_reads_an_index(answer)
    assert "SORT" not in stages(answer), "the index order serves the sort"


def test_every_subcommand_but_validations_is_checked() -> None:
    """A new subcommand joins the index test unless it is listed here as a deliberate full read."""
    assert set(INDEXED_SUBCOMMANDS) | {"validations"} == set(GUIDE_QUERIES)


def test_validations_query_has_no_filter_to_index() -> None:
    """The one whole-collection query filters nothing: it counts every validation by outcome."""
    query = queries.validations_by_outcome_query()
    assert query.collection == "validation_audit"
    assert not any("$match" in stage for stage in query.pipeline)


@pytest.mark.both_mongo
@pytest.mark.standin_deviation(server="nx-27017", raises=AssertionError, reason=NX_AGGREGATE_PLAN)
@pytest.mark.parametrize("selection", ["pending", "parked"])
async def test_buffer_gauge_counts_read_the_claim_index(
    selection: str, mongo_db: AsyncDatabase[Document]
) -> None:
    """Counting pending or parked documents (as count_documents does: $match, $group) reads (state, parked, buffered_at)."""
    await seed(mongo_db)
    match = buffer_stats.PENDING if selection == "pending" else buffer_stats.PARKED
    pipeline = [{"$match": dict(match)}, {"$group": {"_id": 1, "n": {"$sum": 1}}}]
    command = {"aggregate": "telemetry_buffer", "pipeline": pipeline, "cursor": {}}
    assert_reads_an_index(await explain(mongo_db, command))


@pytest.mark.both_mongo
@pytest.mark.standin_deviation(server="nx-27017", raises=AssertionError, reason=NX_FIND_PLAN)
@pytest.mark.standin_deviation(
    server="secantusdb", raises=AssertionError, reason=SECANTUS_SORTS_AFTER_EQUALITY
)
async def test_oldest_pending_lookup_reads_the_claim_index(mongo_db: AsyncDatabase[Document]) -> None:
    """The oldest pending document is the first (state: null, parked: null) entry of (state, parked, buffered_at)."""
    await seed(mongo_db)
    command = {
        "find": "telemetry_buffer",
        "filter": dict(buffer_stats.PENDING),
        "sort": dict(buffer_stats.OLDEST_FIRST),
        "limit": 1,
    }
    answer = await explain(mongo_db, command)
    assert_reads_an_index(answer)
    assert "SORT" not in stages(answer), "the index order serves the sort"


# On nx-27017 the tests above are expected failures (plans in another format); what its SQLite
# plan does say is whether a find searches one of the indexes the worker created. sla-violations
# filters on an unindexed field and sorts on consolidated_at: SQLite scans the table for it.
STANDIN_INDEX_SEARCHES = {
    "plan-history": "idx_validation_audit_plan_id_timestamp",
    "workflows": "idx_workflow_results_status_consolidated_at",
    "incidents": "idx_incidents_severity_timestamp",
    "telemetry-retries": "idx_telemetry_buffer_retry_count_buffered_at",
}


@pytest.mark.parametrize("name", sorted(STANDIN_INDEX_SEARCHES))
async def test_on_the_standin_each_find_searches_its_index(
    name: str, mongo_db: AsyncDatabase[Document], server_kind: Any
) -> None:
    """nx-27017's SQLite plan for a filtered subcommand is a SEARCH using the index the worker created."""
    if server_kind.mongo != "standin":
        pytest.skip("reads nx-27017's SQLite plan; real servers are covered by the explain tests above")
    await seed(mongo_db)
    query = GUIDE_QUERIES[name].bound(ARGUMENTS)
    answer = await explain(mongo_db, query.explain_command())
    details = [row["detail"] for row in answer["queryPlanner"]["winningPlan"]]
    assert any(f"USING INDEX {STANDIN_INDEX_SEARCHES[name]}" in d for d in details), details
