"""The invariant checker itself, on hand-made findings (no servers): what counts as stored,
dead-lettered, duplicated, lost and unexpected."""

from __future__ import annotations

from tests.chaos.invariant import CHAOS_HEADER, Deliveries, Published, judge
from tests.support.kafka import FakeRecord
from worker.settings import RouteName


def dead(chaos_id: str, reason: str = "not_json", error_type: str = "validation") -> FakeRecord:
    """A record read from a dead-letter topic, as its headers describe it."""
    headers = ((CHAOS_HEADER, chaos_id.encode()), ("x-error-reason", reason.encode()),
               ("x-error-type", error_type.encode()))  # fmt: skip
    return FakeRecord(topic="t.incidents.dlq", offset=0, headers=headers)


GOOD_INCIDENT = Published("a", RouteName.INCIDENTS, b"{}", document_id="inc-a")
GOOD_RESULT = Published("b", RouteName.RESULTS, b"{}", document_id="wf-b")
POISON = Published("c", RouteName.INCIDENTS, b"{oops", expected_reason="not_json")
NO_DOCUMENTS: dict[str, set[str]] = {
    "validation_audit": set(), "workflow_results": set(), "incidents": set(), "telemetry_buffer": set(),
}  # fmt: skip


def found(**ids: set[str]) -> dict[str, set[str]]:
    return {**NO_DOCUMENTS, **ids}


def test_every_record_stored_or_dead_lettered_holds() -> None:
    """Good events whose `_id` is in their collection count as stored, a poison record in a dead-letter topic as dead-lettered."""
    verdict = judge([GOOD_INCIDENT, GOOD_RESULT, POISON],
                    found(incidents={"inc-a"}, workflow_results={"wf-b"}), 0, [dead("c")])  # fmt: skip
    assert verdict.holds
    assert (verdict.counts.stored, verdict.counts.dead_lettered, verdict.counts.lost) == (2, 1, 0)
    assert verdict.wrong_reasons([POISON]) == []


def test_a_record_neither_stored_nor_dead_lettered_is_lost() -> None:
    """A good event missing from MongoDB and from every dead-letter topic is lost, and the invariant fails."""
    verdict = judge([GOOD_INCIDENT, POISON], found(), 0, [dead("c")])
    assert not verdict.holds
    assert verdict.counts.lost == 1 and verdict.lost_ids == ["a"]


def test_a_document_in_the_wrong_collection_is_unexpected_and_its_event_lost() -> None:
    """Identity is (collection, _id): the right `_id` in another collection is an unexpected document."""
    verdict = judge([GOOD_INCIDENT], found(telemetry_buffer={"inc-a"}), 0, [])
    assert (verdict.counts.unexpected, verdict.counts.lost) == (1, 1)


def test_extra_dead_letter_copies_count_as_duplicates_but_keep_the_invariant() -> None:
    """A record dead-lettered twice (re-read after a crash) is one dead-lettered record and one duplicate."""
    verdict = judge([POISON], found(), 0, [dead("c"), dead("c")])
    assert verdict.holds
    assert (verdict.counts.dead_lettered, verdict.counts.duplicates) == (1, 1)


def test_extra_documents_per_identity_break_the_invariant() -> None:
    """More documents than distinct `_id`s (counted by the caller) are duplicates and the invariant fails."""
    verdict = judge([GOOD_INCIDENT], found(incidents={"inc-a"}), 1, [])
    assert not verdict.holds and verdict.counts.duplicates == 1


def test_stored_and_dead_lettered_is_counted_apart() -> None:
    """An event both stored and dead-lettered (acknowledgement lost in an outage) is stored, and counted in `both`."""
    verdict = judge(
        [GOOD_INCIDENT], found(incidents={"inc-a"}), 0, [dead("a", "retries_exhausted", "persist_failed")]
    )
    assert verdict.holds
    assert (verdict.counts.stored, verdict.counts.dead_lettered, verdict.counts.both) == (1, 0, 1)
    assert verdict.error_types["persist_failed"] == 1


def test_a_dead_letter_with_an_unknown_chaos_id_is_unexpected() -> None:
    """A dead letter that matches no published record is unexpected."""
    verdict = judge([POISON], found(), 0, [dead("c"), dead("zzz")])
    assert not verdict.holds and verdict.counts.unexpected == 1


def test_a_poison_record_dead_lettered_for_another_reason_is_reported() -> None:
    """The reason a poison record was built to trigger is compared with its `x-error-reason`."""
    verdict = judge([POISON], found(), 0, [dead("c", reason="too_large")])
    assert verdict.wrong_reasons([POISON]) == [("c", "not_json", "too_large")]


GOOD_TELEMETRY = Published("d", RouteName.TELEMETRY, b"{}", document_id="tel-d")


def test_delivered_telemetry_counts_as_stored() -> None:
    """With the redelivery loop on, a telemetry event gone from the buffer but delivered (by `buffer_id`) is stored."""
    verdict = judge([GOOD_TELEMETRY], found(), 0, [], Deliveries(sent={"tel-d": [1]}))
    assert verdict.holds
    assert (verdict.counts.stored, verdict.counts.lost, verdict.counts.duplicates) == (1, 0, 0)


def test_one_document_sent_again_is_a_duplicate_that_keeps_the_invariant() -> None:
    """A buffer document delivered again after a lapsed lease (higher `retry_count`), or still buffered at its last delivered count, is an at-least-once duplicate."""
    again = Deliveries(sent={"tel-d": [1, 2]})
    unsettled = Deliveries(sent={"tel-d": [1]}, buffered={"tel-d": 1})
    for deliveries in (again, unsettled):
        verdict = judge([GOOD_TELEMETRY], found(telemetry_buffer=set(deliveries.buffered)), 0, [], deliveries)
        assert verdict.holds, verdict.explain()
        assert (verdict.counts.stored, verdict.counts.duplicates) == (1, 1)


def test_telemetry_buffered_again_after_delivery_breaks_the_invariant() -> None:
    """An event delivered twice at one `retry_count`, or buffered anew behind its delivered attempts, lived twice: the invariant fails."""
    twice = Deliveries(sent={"tel-d": [1, 1]})
    rebuffered = Deliveries(sent={"tel-d": [1]}, buffered={"tel-d": 0})
    for deliveries in (twice, rebuffered):
        verdict = judge([GOOD_TELEMETRY], found(telemetry_buffer=set(deliveries.buffered)), 0, [], deliveries)
        assert not verdict.holds
        assert verdict.rebuffered == ["tel-d"]


def test_a_delivered_message_of_no_published_event_is_unexpected() -> None:
    """A delivery whose `buffer_id` matches no published telemetry event is unexpected."""
    verdict = judge([GOOD_TELEMETRY], found(telemetry_buffer={"tel-d"}), 0, [], Deliveries(sent={"zzz": [1]}))
    assert not verdict.holds and verdict.counts.unexpected == 1
