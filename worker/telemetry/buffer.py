"""Leases on `telemetry_buffer` documents: claim one, then settle it: delivered (a tombstone), released,
rescheduled or parked.

A claim is one `find_one_and_update` that takes a free document, raises its `retry_count`
(so `retry_count` counts delivery attempts) and writes a lease. Only the holder of the
lease (`lease_owner`, unique per claiming batch) can settle the document; a claimant that
dies leaves a lease that lapses at `lease_expires_at`, and the document is free again.

Fields the redelivery adds to a buffered document (absent until they apply):
    lease_owner        "<host>:<pid>/<claim id>" while claimed
    lease_expires_at   when the claim lapses
    next_attempt_at    not tried again before this time (exponential backoff)
    last_error         why the last attempt failed; last_attempt_at, when
    parked             true once it may no longer be tried by the loop; parked_at, when
    state              "delivered" once the broker acknowledged it (a tombstone; delivered_at,
                       when): kept TELEMETRY_DEDUP_WINDOW_S so that the same event read again
                       (a crash before the commit, `dlq replay`) collides on `_id` and is not
                       buffered nor delivered twice; then purged. Claims, stats, queries and
                       replay never see tombstones (TOMBSTONE_FREE).
Clocks: leases and schedules compare the claimants' UTC clocks, so replicas need NTP;
a lease must be far longer than the clock skew between them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from worker.mongo.collections import TELEMETRY_BUFFER, Document
from worker.mongo.errors import converted
from worker.retry import RetryPolicy

_LEASE_FIELDS = {"lease_owner": "", "lease_expires_at": ""}


DELIVERED = "delivered"
TOMBSTONE_FREE: dict[str, Any] = {"state": None}
"""The condition every reader of buffered (still deliverable) documents adds."""
OLDEST_FIRST = [("buffered_at", 1)]
_TOMBSTONE_DROPS = {**_LEASE_FIELDS, "next_attempt_at": "", "parked": "", "parked_at": "", "metrics": ""}


class ParkedScope(StrEnum):
    """Which documents a claim may take with respect to parking."""

    EXCLUDE = "exclude"
    ONLY = "only"
    INCLUDE = "include"

    def condition(self) -> dict[str, Any]:
        # Parking sets `parked: true` and nothing ever sets it false: "not parked" is "absent".
        if self is ParkedScope.EXCLUDE:
            return {"parked": None, **TOMBSTONE_FREE}
        return {"parked": True, **TOMBSTONE_FREE} if self is ParkedScope.ONLY else dict(TOMBSTONE_FREE)


def replica_name() -> str:
    """This process, as it appears in `lease_owner`."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One claimed document and how its delivery went."""

    document: Document
    error: str | None = None
    """None: the broker acknowledged it."""
    permanent: bool = False
    """The document itself can never be delivered (too large, malformed): park it now."""
    unknown: bool = False
    """No answer from Kafka in time: the send may still land. The document is left claimed,
    so nobody sends it again before its lease lapses (then it is sent again: at-least-once)."""

    @property
    def delivered(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class Settled:
    removed: int = 0
    """Delivered and made tombstones (or deleted; or released, with keep)."""
    rescheduled: int = 0
    parked: list[Document] = field(default_factory=list)
    unknown: int = 0
    """Sends without an answer in time, left to their leases."""
    lost: int = 0
    """Leases that lapsed before settling: another claimant has (or had) the document."""


class TelemetryBuffer:
    """Claims and settles buffered telemetry; every PyMongo error leaves as Transient/PermanentError.

    `backoff` schedules the next attempt after a failed one and parks a document after
    `backoff.attempts` claims; `dedup_window_s` 0 deletes the delivered instead of keeping tombstones.
    """

    def __init__(
        self,
        *,
        database: Callable[[], AsyncDatabase[Document]],
        lease_s: float,
        backoff: RetryPolicy,
        dedup_window_s: float,
    ) -> None:
        self._database = database
        self._lease_s = lease_s
        self._backoff = backoff
        self.dedup_window_s = dedup_window_s
        self._replica = replica_name()

    @property
    def max_attempts(self) -> int:
        return self._backoff.attempts

    def _collection(self) -> AsyncCollection[Document]:
        return self._database()[TELEMETRY_BUFFER]

    def new_lease_owner(self) -> str:
        """A lease owner for one batch of claims: the replica plus a random claim id."""
        return f"{self._replica}/{uuid.uuid4().hex[:12]}"

    def _lease(self, owner: str, now: datetime) -> dict[str, Any]:
        expires = now + timedelta(seconds=self._lease_s)
        return {"$inc": {"retry_count": 1}, "$set": {"lease_owner": owner, "lease_expires_at": expires}}

    async def claim_next_due(self, owner: str) -> Document | None:
        """The oldest free, due, unparked document, claimed by `owner`; None if there is none."""
        now = datetime.now(UTC)
        due = {
            "parked": None,
            **TOMBSTONE_FREE,
            "$and": [
                {"$or": [{"lease_expires_at": None}, {"lease_expires_at": {"$lte": now}}]},
                {"$or": [{"next_attempt_at": None}, {"next_attempt_at": {"$lte": now}}]},
            ],
        }
        return await self._claim(due, owner, now)

    async def claim_by_id(self, document_id: Any, owner: str, parked: ParkedScope) -> Document | None:
        """Claim one chosen document whatever its schedule; None if it is gone or held by another."""
        now = datetime.now(UTC)
        free = {
            "_id": document_id,
            **parked.condition(),
            "$or": [{"lease_expires_at": None}, {"lease_expires_at": {"$lte": now}}],
        }
        return await self._claim(free, owner, now)

    async def ids_matching(self, query: Mapping[str, Any], limit: int | None = None) -> list[Any]:
        """The `_id`s of the documents matching `query`, oldest `buffered_at` first, at most `limit`."""
        cursor = self._collection().find(query, {"_id": 1}).sort(OLDEST_FIRST)
        if limit is not None:
            cursor = cursor.limit(limit)
        return [document["_id"] for document in await converted(cursor.to_list())]

    async def documents(self, ids: Sequence[Any]) -> dict[Any, Document]:
        """The documents of `ids` still in the buffer, by `_id`."""
        found = await converted(self._collection().find({"_id": {"$in": list(ids)}}).to_list())
        return {document["_id"]: document for document in found}

    async def _claim(self, query: Mapping[str, Any], owner: str, now: datetime) -> Document | None:
        claim = self._collection().find_one_and_update(
            query, self._lease(owner, now), sort=OLDEST_FIRST, return_document=ReturnDocument.AFTER
        )
        return await converted(claim)

    async def settle(self, owner: str, attempts: Sequence[Attempt], *, keep: bool = False) -> Settled:
        """Delete (or with `keep` release) the delivered; reschedule or park the rest."""
        settled = Settled()
        delivered = [a.document["_id"] for a in attempts if a.delivered]
        failed = [a for a in attempts if not a.delivered and not a.unknown]
        settled.unknown = sum(1 for a in attempts if a.unknown)
        if delivered:
            settled.removed = await self._remove(owner, delivered, keep=keep)
        if failed:
            settled.rescheduled, settled.parked = await self._record_failures(owner, failed)
        settled.lost = (
            len(attempts) - settled.removed - settled.rescheduled - len(settled.parked) - settled.unknown
        )
        return settled

    async def _remove(self, owner: str, ids: list[Any], *, keep: bool) -> int:
        """Delivered: tombstones (deleted at once without a dedup window), or released with `keep`."""
        mine = {"_id": {"$in": ids}, "lease_owner": owner}
        now = datetime.now(UTC)
        if keep:
            update = {"$unset": _LEASE_FIELDS, "$set": {"last_delivered_at": now}}
        elif self.dedup_window_s > 0:
            update = {"$unset": _TOMBSTONE_DROPS, "$set": {"state": DELIVERED, "delivered_at": now}}
        else:
            return (await converted(self._collection().delete_many(mine))).deleted_count
        return (await converted(self._collection().update_many(mine, update))).modified_count

    async def purge_tombstones(self) -> int:
        """Delete the tombstones older than TELEMETRY_DEDUP_WINDOW_S; how many went."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.dedup_window_s)
        purge = self._collection().delete_many({"state": DELIVERED, "delivered_at": {"$lt": cutoff}})
        return (await converted(purge)).deleted_count

    async def release(self, owner: str) -> int:
        """Free every document `owner` still holds (an abandoned batch); retry counts stay raised."""
        release = self._collection().update_many({"lease_owner": owner}, {"$unset": _LEASE_FIELDS})
        return (await converted(release)).modified_count

    def exhausted(self, document: Mapping[str, Any]) -> bool:
        """More claims than attempts allowed: earlier claimants died before an outcome."""
        return int(document["retry_count"]) > self.max_attempts

    def _must_park(self, attempt: Attempt) -> bool:
        attempts = int(attempt.document["retry_count"])
        return attempt.permanent or attempts >= self.max_attempts

    async def _record_failures(self, owner: str, failed: list[Attempt]) -> tuple[int, list[Document]]:
        now = datetime.now(UTC)
        parked = []
        for attempt in filter(self._must_park, failed):  # rare: one update each, so each is known
            mine = {"_id": attempt.document["_id"], "lease_owner": owner}
            park = self._collection().update_one(mine, _park(attempt.error or "", now))
            if (await converted(park)).matched_count:
                parked.append(attempt.document)
        retries = [
            UpdateOne({"_id": a.document["_id"], "lease_owner": owner}, self._reschedule(a, now))
            for a in failed
            if not self._must_park(a)
        ]
        if not retries:
            return 0, parked
        return (await converted(self._collection().bulk_write(retries, ordered=False))).matched_count, parked

    def _reschedule(self, attempt: Attempt, now: datetime) -> dict[str, Any]:
        wait = self._backoff.backoff_s(int(attempt.document["retry_count"]))
        fields = {
            "next_attempt_at": now + timedelta(seconds=wait),
            "last_error": attempt.error,
            "last_attempt_at": now,
        }
        return {"$unset": _LEASE_FIELDS, "$set": fields}


def _park(error: str, now: datetime) -> dict[str, Any]:
    return {
        "$unset": {**_LEASE_FIELDS, "next_attempt_at": ""},
        "$set": {"parked": True, "parked_at": now, "last_error": error, "last_attempt_at": now},
    }
