"""The Kafka fakes: a record, a consumer and a producer, each with the calls the worker makes of aiokafka's.

    FakeRecord("orchestrator.incidents", 0, 41, value=b"{...}")
    FakeConsumer(logs=partitions("in", [30, 7]))        # two partitions of 30 and 7 records, read like a broker
    FakeConsumer(stop=stop, batches=[{tp: [record]}])    # getmany's answers in turn, then `stop` is set
    FakeProducer(delivery_error=KafkaConnectionError())  # every send enqueued, none delivered
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import IllegalStateError, KafkaConnectionError, MessageSizeTooLargeError
from aiokafka.structs import TopicPartition

from worker.dead_letters.letters import Outgoing
from worker.dead_letters.publisher import DEFAULT_MAX_REQUEST_BYTES

Headers = Sequence[tuple[str, bytes]]
Batch = dict[TopicPartition, list[Any]]


@dataclass(frozen=True)
class FakeRecord:
    """The parts of aiokafka's ConsumerRecord the worker reads."""

    topic: str = "topic"
    partition: int = 0
    offset: int = 0
    value: bytes | None = None
    key: bytes | None = None
    headers: Headers = ()


def partitions(topic: str, sizes: Sequence[int]) -> dict[TopicPartition, int]:
    """`topic`'s partitions 0, 1, ... holding `sizes` records: a FakeConsumer's `logs`."""
    return {TopicPartition(topic, partition): size for partition, size in enumerate(sizes)}


class InOrder(Set[TopicPartition]):
    """A set that iterates in the order given: a real assignment's order is the hash seed's."""

    def __init__(self, items: Iterable[TopicPartition]) -> None:
        self._items = list(dict.fromkeys(items))

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[TopicPartition]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class FakeConsumer:
    """aiokafka's AIOKafkaConsumer in memory; records the commits, seeks, pauses and resumes asked of it.

    Its records come one of two ways:
    - `logs`, each partition's length (offsets 0 to n-1), read from the partition's position as a
      broker serves them: `getmany` drains the unpaused partitions (those it names, if any) in
      `drained_in` order (else the assignment's), up to `max_records` in all and to offset `served`
      at most; an offset in `bad[tp]` raises `error` out of the call, as an undecodable record batch
      does (what the call drained is lost, its partitions' positions moved past it), and
      `whole_batch_fails` makes a call naming no partition raise `error` anyway. A partition's high
      watermark is known once fetched (or set in `highwaters`).
    - `batches`, getmany's answers in turn; once they are served `stop` is set and getmany answers {}.

    `assigned` (default: the partitions of `logs`) is the assignment, in that order; `assign` replaces
    it. Partition `revoking` is revoked during awaited call number `revoke_at` (getmany or position).
    A partition not assigned makes seek, pause and position raise IllegalStateError, and highwater
    fail its assertion, as aiokafka's do. `commit_error` is raised by every commit.
    """

    logs: dict[TopicPartition, int] = field(default_factory=dict)
    batches: list[Batch] = field(default_factory=list)
    stop: asyncio.Event | None = None
    assigned: list[TopicPartition] | None = None
    served: int | None = None
    bad: dict[TopicPartition, set[int]] = field(default_factory=dict)
    error: Exception = field(default_factory=lambda: ValueError("undecodable record batch"))
    drained_in: list[TopicPartition] = field(default_factory=list)
    whole_batch_fails: bool = False
    revoking: TopicPartition | None = None
    revoke_at: int | None = None
    commit_error: Exception | None = None
    highwaters: dict[TopicPartition, int] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    calls: int = 0
    """Awaited calls so far (getmany, position): where a rebalance can come in."""
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)
    paused_set: set[TopicPartition] = field(default_factory=set)
    resumed: list[TopicPartition] = field(default_factory=list)
    subscribed: list[str] = field(default_factory=list)
    listener: Any = None

    def __post_init__(self) -> None:
        if self.assigned is None:
            self.assigned = list(self.logs)

    # The assignment

    def subscribe(self, *, topics: list[str], listener: Any) -> None:
        self.subscribed, self.listener = list(topics), listener

    async def topics(self) -> set[str]:
        return {tp.topic for tp in self.logs}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.logs if tp.topic == topic}

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self.assigned = list(partitions)
        self.positions = dict.fromkeys(self.assigned, 0)

    def assignment(self) -> InOrder:
        return InOrder(tp for tp in self.assigned or () if not self._revoked(tp))

    def paused(self) -> set[TopicPartition]:
        return self.paused_set & set(self.assignment())

    # Positions

    async def position(self, tp: TopicPartition) -> int:
        self._awaited()
        return self.positions.setdefault(self._assigned(tp), 0)

    async def committed(self, tp: TopicPartition) -> int | None:
        return None

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((self._assigned(tp), offset))
        self.positions[tp] = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.positions[self._assigned(tp)] = 0

    def highwater(self, tp: TopicPartition) -> int | None:
        assert tp in self.assignment(), "Partition is not assigned"  # as aiokafka's does
        return self.highwaters.get(tp)

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.logs[tp] for tp in partitions}

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_set.update(self._assigned(tp) for tp in tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_set.difference_update(tps)
        self.resumed.extend(tps)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.commit_error is not None:
            raise self.commit_error
        self.commits.append(dict(offsets))

    # Fetching

    async def getmany(self, *tps: TopicPartition, timeout_ms: int = 0, max_records: int | None = None) -> Batch:
        self._awaited()
        if not self.logs:
            return self._scripted()
        fetched: Batch = {}
        budget = max_records or 1_000_000
        for tp in self._drainable(tps):
            offsets = self._drain(tp, budget - sum(map(len, fetched.values())))
            if offsets:
                fetched[tp] = [FakeRecord(tp.topic, tp.partition, offset) for offset in offsets]
        if self.whole_batch_fails and not tps:
            raise self.error
        return fetched

    def _scripted(self) -> Batch:
        if self.batches:
            return self.batches.pop(0)
        if self.stop is not None:
            self.stop.set()
        return {}

    def _drainable(self, named: tuple[TopicPartition, ...]) -> list[TopicPartition]:
        readable = self.assignment() - self.paused_set
        order = self.drained_in or list(self.assignment())
        return [tp for tp in order if tp in readable and (not named or tp in named)]

    def _drain(self, tp: TopicPartition, budget: int) -> range:
        if budget <= 0:
            return range(0)
        self.highwaters[tp] = self.logs[tp]
        start = self.positions.setdefault(tp, 0)
        end = self.logs[tp] if self.served is None else min(self.logs[tp], self.served)
        offsets = range(start, min(end, start + budget))
        if self.bad.get(tp, set()) & set(offsets):
            raise self.error
        self.positions[tp] = max(start, offsets.stop)
        return offsets

    def _awaited(self) -> None:
        self.calls += 1

    def _revoked(self, tp: TopicPartition) -> bool:
        return tp == self.revoking and self.revoke_at is not None and self.calls >= self.revoke_at

    def _assigned(self, tp: TopicPartition) -> TopicPartition:
        if tp not in self.assignment():
            raise IllegalStateError(f"Partition {tp} is not assigned")
        return tp


class FakeProducer:
    """aiokafka's AIOKafkaProducer.send: enqueue (may fail), then a delivery future (may fail).

    Like aiokafka it refuses to enqueue a record larger than `max_request_size`; the broker refuses
    a value larger than `broker_max_bytes` at delivery (with `broker_refusal`); a dead letter whose
    x-source-offset is in `fail_offsets` fails its delivery once. Records what was enqueued (`sent`)
    and what was delivered (`acknowledged`), as (topic, send's keyword arguments).
    """

    def __init__(
        self,
        *,
        send_error: Exception | None = None,
        delivery_error: Exception | None = None,
        max_request_size: int = DEFAULT_MAX_REQUEST_BYTES,
        broker_max_bytes: int | None = None,
        fail_offsets: frozenset[int] = frozenset(),
        broker_refusal: Exception | None = None,
    ) -> None:
        self.send_error = send_error
        self.delivery_error = delivery_error
        self.max_request_size = max_request_size
        self.broker_max_bytes = broker_max_bytes
        self.fail_offsets = set(fail_offsets)
        self.broker_refusal = broker_refusal or MessageSizeTooLargeError()
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.acknowledged: list[tuple[str, dict[str, Any]]] = []

    async def send(self, topic: str, **kwargs: Any) -> asyncio.Future[None]:
        if self.send_error is not None:
            raise self.send_error
        key, value, headers = kwargs.get("key"), kwargs.get("value"), list(kwargs.get("headers") or [])
        if Outgoing(topic, key, value, headers).size() > self.max_request_size:
            raise MessageSizeTooLargeError("larger than max_request_size")
        self.sent.append((topic, kwargs))
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failure = self._delivery_failure(value, headers)
        if failure is not None:
            delivery.set_exception(failure)
        else:
            delivery.set_result(None)
            self.acknowledged.append((topic, kwargs))
        return delivery

    def _delivery_failure(self, value: bytes | None, headers: Headers) -> Exception | None:
        if self.delivery_error is not None:
            return self.delivery_error
        if self.broker_max_bytes is not None and len(value or b"") > self.broker_max_bytes:
            return self.broker_refusal
        offset = dict(headers).get("x-source-offset")
        if offset is not None and int(offset) in self.fail_offsets:
            self.fail_offsets.discard(int(offset))
            return KafkaConnectionError("broker went away")
        return None
