"""Dead-letter publishing: every letter acknowledged by the broker, none stalling the flow.

A dead letter never stalls the flow: one larger than the producer's max_request_size, or
refused as such by the broker (too large, invalid record), is sent again truncated. The
publisher remembers which dead letters the broker acknowledged, by source coordinates, until
their offsets are committed: a batch retried after a failure does not publish them twice.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from worker.dead_letters.letters import DeadLetter, Outgoing
from worker.errors import DocumentRefused, TransientError
from worker.kafka.consumer import TopicPartition
from worker.kafka.producer import Delivery, Producer, acknowledged, enqueue
from worker.pipeline.records import source_of

DEFAULT_MAX_REQUEST_BYTES = 1_048_576
"""aiokafka's default max_request_size."""
DEFAULT_TRUNCATED_VALUE_BYTES = 65_536


class DeadLetterPublisher:
    """Sends dead letters and waits until the broker acknowledges every one."""

    def __init__(
        self,
        *,
        producer: Producer,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        truncated_value_bytes: int = DEFAULT_TRUNCATED_VALUE_BYTES,
    ) -> None:
        self._producer = producer
        self._max_request_bytes = max_request_bytes
        self._truncated_value_bytes = truncated_value_bytes
        self._acknowledged: dict[TopicPartition, set[int]] = defaultdict(set)

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Send those not acknowledged yet; raises TransientError if any cannot be sent."""
        pending = [letter for letter in letters if not self._was_acknowledged(letter)]
        # As they are if they fit; then truncated; then with no value (coordinates only).
        for keep in (None, self._truncated_value_bytes, 0):
            if not pending:
                return
            pending = await self._attempt(pending, keep)
        if pending:
            raise TransientError(f"dead-letter publish failed: {len(pending)} refused even without a value")

    def settled(self, commits: Mapping[TopicPartition, int]) -> None:
        """Offsets committed: their dead letters need not be remembered any more."""
        for tp, offset in commits.items():
            self._acknowledged[tp] = {done for done in self._acknowledged.get(tp, ()) if done >= offset}
            if not self._acknowledged[tp]:
                del self._acknowledged[tp]

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions revoked: their new owner re-reads and re-publishes what was not committed."""
        for tp in partitions:
            self._acknowledged.pop(tp, None)

    def _was_acknowledged(self, letter: DeadLetter) -> bool:
        return letter.record.offset in self._acknowledged.get(source_of(letter.record), ())

    def _outgoing(self, letter: DeadLetter, keep: int | None) -> Outgoing:
        if keep is not None:
            return letter.truncated(keep)
        whole = letter.outgoing()
        if whole.size() <= self._max_request_bytes:
            return whole
        return letter.truncated(self._truncated_value_bytes)

    async def _attempt(self, letters: Sequence[DeadLetter], keep: int | None) -> list[DeadLetter]:
        """Send `letters` (truncated to `keep` if given); return those refused for their size or form."""
        sent, refused, failure = await self._enqueue(letters, keep)
        outcomes = await asyncio.gather(
            *(acknowledged(delivery) for _, delivery in sent), return_exceptions=True
        )
        for (letter, _), outcome in zip(sent, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                self._acknowledged[source_of(letter.record)].add(letter.record.offset)
            elif isinstance(outcome, DocumentRefused):
                refused.append(letter)
            elif isinstance(outcome, TransientError):
                failure = failure or outcome
            else:
                raise outcome
        if failure is not None:
            raise TransientError(f"dead-letter publish failed: {failure}") from failure
        return refused

    async def _enqueue(
        self, letters: Sequence[DeadLetter], keep: int | None
    ) -> tuple[list[tuple[DeadLetter, Delivery]], list[DeadLetter], TransientError | None]:
        """Hand letters to the producer until one cannot be (then the rest wait for a retry)."""
        sent: list[tuple[DeadLetter, Delivery]] = []
        refused: list[DeadLetter] = []
        for letter in letters:
            out = self._outgoing(letter, keep)
            try:
                delivery = await enqueue(
                    self._producer, out.topic, key=out.key, value=out.value, headers=out.headers
                )
            except DocumentRefused:
                refused.append(letter)
                continue
            except TransientError as exc:
                return sent, refused, exc
            sent.append((letter, delivery))
        return sent, refused, None
