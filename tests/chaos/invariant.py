"""The one invariant every chaos scenario checks, and the events it is checked over.

Every published record carries a unique `chaos-id` header, which the worker keeps on a
dead-lettered record. A good event's expected document identity is what
schemas/documents.py derives: `workflow_results` documents are keyed by `workflow_id`
(latest wins), so each good result gets a workflow id of its own; the other routes key by
`event_id`, which each good event gets from its chaos id.

Counts, per scenario:
    published      records published (distinct chaos ids)
    stored         published good events whose document is in MongoDB
    dead_lettered  published records present in a dead-letter topic and not stored
    duplicates     extra copies: dead-letter copies beyond the first per record, and documents
                   beyond one per expected identity
    both           stored and also dead-lettered (e.g. written, but the acknowledgement was lost
                   in an outage; or dead-lettered, then replayed)
    lost           published records neither stored nor dead-lettered
    unexpected     documents or dead letters that match no published record
The invariant holds when lost == unexpected == 0 and MongoDB holds exactly one document per
stored identity (documents == distinct expected ids stored).

With the redelivery loop on (REDELIVERY_ENABLED, as in production) a telemetry event leaves
`telemetry_buffer` once delivered to KAFKA_TELEMETRY_DELIVERY_TOPIC: it counts as stored when
its document is in the buffer OR a message with its `buffer_id` (the event id) was delivered.
Delivery is at-least-once: one buffer document sent again (after a lapsed lease, an unsettled
batch, a killed loop) arrives with a higher `retry_count` header each time, or stays in the
buffer with the count of its last delivered attempt; those extra copies are duplicates that
keep the invariant, like extra dead-letter copies. The same event buffered a second time after
it was delivered (a re-read record written again) starts a second life at the same counts:
two deliveries with one `retry_count`, or a buffered document behind its delivered attempts.
That event is `rebuffered`, and breaks the invariant as a second document would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.documents import document_id
from schemas.events import IncidentEvent, TelemetryEvent, ValidationEvent, WorkflowResultEvent
from tests.integration.harness import publish_records, read_topic
from tests.integration.telemetry_support import read_delivered
from tests.support.events import EventFactory
from tests.support.routes import COLLECTION
from worker.settings import RouteName, Settings

CHAOS_HEADER = "chaos-id"
MODEL = {
    RouteName.VALIDATION: ValidationEvent,
    RouteName.RESULTS: WorkflowResultEvent,
    RouteName.INCIDENTS: IncidentEvent,
    RouteName.TELEMETRY: TelemetryEvent,
}


@dataclass(frozen=True, slots=True)
class Published:
    """One record a scenario publishes, and what must become of it."""

    chaos_id: str
    route: RouteName
    value: bytes
    key: bytes | None = None
    document_id: str | None = None
    """The `_id` its document must have; None: it must be dead-lettered."""
    expected_reason: str | None = None
    """For a poison record: the `x-error-reason` it must be dead-lettered with."""

    def outgoing(self) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
        return self.key, self.value, [(CHAOS_HEADER, self.chaos_id.encode())]


def expected_document_id(route: RouteName, payload: dict[str, Any]) -> str:
    """The `_id` the worker gives this good event's document (schemas/documents.py)."""
    event = MODEL[route].model_validate(payload)
    if isinstance(event, WorkflowResultEvent):
        return event.workflow_id
    return document_id(event)


def good_events(run: str, count: int, *, seed: int) -> list[Published]:
    """`count` good events over the four routes, each with an identity of its own."""
    factory = EventFactory(seed=seed)
    routes = list(RouteName)
    published = []
    for index in range(count):
        route = routes[index % len(routes)]
        chaos_id = f"{run}-{index}"
        payload = {**factory.good(route), "event_id": chaos_id}
        if route is RouteName.RESULTS:
            payload["workflow_id"] = f"wf-{chaos_id}"
        workflow = payload.get("workflow_id") or payload["correlation"]["workflow_id"]
        published.append(Published(chaos_id, route, orjson.dumps(payload), key=str(workflow).encode(),
                                   document_id=expected_document_id(route, payload)))  # fmt: skip
    return published


async def publish_all(settings: Settings, records: Iterable[Published]) -> int:
    """Publish each record to its route's topic, in the given order per topic."""
    by_route: dict[RouteName, list[Published]] = {}
    for record in records:
        by_route.setdefault(record.route, []).append(record)
    total = 0
    for route, mine in by_route.items():
        total += await publish_records(
            settings.kafka_bootstrap_servers, settings.topic_for(route), (r.outgoing() for r in mine)
        )
    return total


async def read_dead_letters(settings: Settings) -> list[Any]:
    """Every record of the four dead-letter topics."""
    found: list[Any] = []
    for route in RouteName:
        dlq = settings.dlq_topic(settings.topic_for(route))
        found += await read_topic(settings.kafka_bootstrap_servers, dlq, idle_ms=2000)
    return found


@dataclass(frozen=True, slots=True)
class Deliveries:
    """What the redelivery loop did with buffered telemetry, by event id (= `buffer_id`)."""

    sent: dict[str, list[int]] = field(default_factory=dict)
    """buffer_id -> the `retry_count` header of each delivered copy."""
    buffered: dict[str, int] = field(default_factory=dict)
    """_id -> `retry_count` of each document still to deliver in telemetry_buffer (not a tombstone)."""

    def extra_copies(self, event_id: str) -> int:
        """Copies beyond one of a delivered event, counting its buffered document as a copy."""
        copies = len(self.sent.get(event_id, ()))
        return max(0, copies - 1 + (event_id in self.buffered)) if copies else 0

    def rebuffered(self, event_id: str) -> bool:
        """Delivered in two lives: one `retry_count` twice, or buffered again behind its deliveries."""
        counts = self.sent.get(event_id, [])
        if not counts:
            return False
        if len(set(counts)) < len(counts):
            return True
        return event_id in self.buffered and self.buffered[event_id] < max(counts)


PENDING = {"state": None}
"""Buffered telemetry still to deliver; a delivered document stays as a tombstone (`state: delivered`)."""


async def read_deliveries(settings: Settings, db: Any) -> Deliveries:
    """The delivery topic's messages and the buffer's retry counts (empty when the loop is off)."""
    if not settings.redelivery_enabled:
        return Deliveries()
    return Deliveries(
        sent=sent_counts(await read_delivered(settings.kafka_bootstrap_servers,
                                              settings.kafka_telemetry_delivery_topic, idle_ms=2000)),
        buffered={d["_id"]: int(d.get("retry_count") or 0)
                  async for d in db[COLLECTION[RouteName.TELEMETRY]].find(PENDING, {"retry_count": 1})},
    )  # fmt: skip


def sent_counts(
    delivered: Iterable[Any], earlier: Mapping[str, list[int]] | None = None
) -> dict[str, list[int]]:
    """buffer_id -> retry counts of `delivered` messages (plus `earlier` ones, read before a broker restart)."""
    sent: dict[str, list[int]] = {key: list(value) for key, value in (earlier or {}).items()}
    for message in delivered:
        sent.setdefault(message.buffer_id, []).append(message.retry_count)
    return sent


@dataclass(frozen=True, slots=True)
class Counts:
    published: int
    stored: int
    dead_lettered: int
    duplicates: int
    lost: int
    unexpected: int
    both: int = 0

    def line(self, scenario: str) -> str:
        return (
            f"{scenario}: published={self.published} stored={self.stored} "
            f"dead_lettered={self.dead_lettered} duplicates={self.duplicates} lost={self.lost} "
            f"unexpected={self.unexpected} both={self.both}"
        )


@dataclass(slots=True)
class Verdict:
    """The counts, and the details an assertion message needs."""

    counts: Counts
    mongo_duplicates: int
    lost_ids: list[str] = field(default_factory=list)
    unexpected_items: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    """chaos id -> `x-error-reason` of its (latest) dead letter."""
    error_types: Counter[str] = field(default_factory=Counter)
    rebuffered: list[str] = field(default_factory=list)
    """Telemetry events delivered in two lives (buffered again after delivery)."""
    error_type_of: dict[str, str] = field(default_factory=dict)
    """chaos id -> `x-error-type` of its (latest) dead letter."""
    stored_ids: set[str] = field(default_factory=set)
    """chaos ids of the published records counted as stored."""
    extra_dead_letters: int = 0
    """Dead-letter copies beyond the first per record (part of `counts.duplicates`)."""

    @property
    def holds(self) -> bool:
        return (
            self.counts.lost == 0 and self.counts.unexpected == 0 and self.mongo_duplicates == 0
            and not self.rebuffered
        )  # fmt: skip

    def explain(self) -> str:
        return (
            f"{self.counts.line('invariant')}; mongo_duplicates={self.mongo_duplicates}; "
            f"lost e.g. {self.lost_ids[:5]}; unexpected e.g. {self.unexpected_items[:5]}; "
            f"telemetry delivered twice over (rebuffered) e.g. {self.rebuffered[:5]} of {len(self.rebuffered)}"
        )

    def wrong_reasons(self, published: Sequence[Published]) -> list[tuple[str, str | None, str | None]]:
        """Poison records dead-lettered with another reason than the one they were built to trigger."""
        return [
            (p.chaos_id, p.expected_reason, self.reasons.get(p.chaos_id))
            for p in published
            if p.expected_reason is not None and self.reasons.get(p.chaos_id) != p.expected_reason
        ]


async def stored_ids(db: Any) -> tuple[dict[str, set[str]], int]:
    """The `_id`s per collection, and how many documents exceed one per `_id`."""
    ids: dict[str, set[str]] = {}
    extra = 0
    for collection in COLLECTION.values():
        found = [document["_id"] async for document in db[collection].find({}, {"_id": 1})]
        ids[collection] = set(found)
        extra += len(found) - len(ids[collection])
        extra += await db[collection].count_documents({}) - len(ids[collection])
    return ids, extra


async def check_invariant(
    settings: Settings, db: Any, published: Sequence[Published], *, earlier_dead: Sequence[Any] = (),
    earlier_delivered: Sequence[Any] = (),
) -> Verdict:  # fmt: skip
    """Compare the published records with MongoDB, the dead-letter topics and (loop on) the
    delivery topic, plus `earlier_dead` / `earlier_delivered`, read before a broker lost them."""
    ids, mongo_duplicates = await stored_ids(db)
    dead = [*earlier_dead, *await read_dead_letters(settings)]
    deliveries = await read_deliveries(settings, db)
    if earlier_delivered:
        deliveries = Deliveries(sent_counts(earlier_delivered, deliveries.sent), deliveries.buffered)
    return judge(published, ids, mongo_duplicates, dead, deliveries)


def judge(
    published: Sequence[Published], ids: dict[str, set[str]], mongo_duplicates: int, dead: Sequence[Any],
    deliveries: Deliveries | None = None,
) -> Verdict:  # fmt: skip
    """The verdict of the invariant over what was found (pure; see the module docstring)."""
    copies: Counter[str] = Counter()
    reasons: dict[str, str] = {}
    error_types: Counter[str] = Counter()
    error_type_of: dict[str, str] = {}
    unexpected_items: list[str] = []
    known = {p.chaos_id for p in published}
    for record in dead:
        headers = {key: bytes(value).decode("utf-8", "replace") for key, value in record.headers}
        chaos_id = headers.get(CHAOS_HEADER)
        if chaos_id not in known:
            unexpected_items.append(f"dead letter {record.topic}:{record.offset} chaos-id={chaos_id}")
            continue
        assert chaos_id is not None
        copies[chaos_id] += 1
        reasons[chaos_id] = headers.get("x-error-reason", "")
        error_type_of[chaos_id] = headers.get("x-error-type", "")
        error_types[error_type_of[chaos_id]] += 1
    deliveries = deliveries or Deliveries()
    expected = {(COLLECTION[p.route], p.document_id) for p in published if p.document_id is not None}
    for collection, present in ids.items():
        unexpected_items += [f"document {collection}/{i}" for i in present if (collection, i) not in expected]
    telemetry = COLLECTION[RouteName.TELEMETRY]
    unexpected_items += [
        f"delivered telemetry {i}" for i in deliveries.sent if (telemetry, i) not in expected
    ]
    stored = dead_lettered = both = 0
    lost_ids = []
    stored_chaos_ids = set()
    for p in published:
        is_stored = p.document_id is not None and (
            p.document_id in ids[COLLECTION[p.route]]
            or (p.route is RouteName.TELEMETRY and p.document_id in deliveries.sent)
        )
        is_dead = copies[p.chaos_id] > 0
        stored += is_stored
        if is_stored:
            stored_chaos_ids.add(p.chaos_id)
        dead_lettered += is_dead and not is_stored
        both += is_stored and is_dead
        if not is_stored and not is_dead:
            lost_ids.append(p.chaos_id)
    extra_dead = sum(n - 1 for n in copies.values())
    extra_sent = sum(deliveries.extra_copies(i) for i in deliveries.sent)
    counts = Counts(
        published=len(published), stored=stored, dead_lettered=dead_lettered,
        duplicates=extra_dead + mongo_duplicates + extra_sent, lost=len(lost_ids),
        unexpected=len(unexpected_items), both=both,
    )  # fmt: skip
    rebuffered = sorted(i for i in deliveries.sent if deliveries.rebuffered(i))
    return Verdict(
        counts,
        mongo_duplicates,
        lost_ids,
        unexpected_items,
        reasons,
        error_types,
        rebuffered,
        error_type_of,
        stored_chaos_ids,
        extra_dead,
    )
