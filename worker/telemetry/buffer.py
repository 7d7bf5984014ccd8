"""Leases on `telemetry_buffer` documents: claim a batch, then settle it: delivered (a tombstone), released,
rescheduled or parked.

A claim takes a whole batch in two round trips (three when contended), whatever the buffer holds:
 1. read the next documents in `due_at` order (`{due_at: {$exists: true}}`, with a limit) from the
    sparse index `due_at`, which holds pending documents only: tombstones and parked documents are
    not in it, so they cost a claim nothing;
 2. claim the due ones with one `bulk_write` of compare-and-set replacements: each replaces the
    document as read, only if what a claim decides on is unchanged (`retry_count`, which every
    claim raises, `lease_owner`, `due_at`, `parked`, `state`), by the same document with
    `retry_count` + 1 (so `retry_count` counts delivery attempts), a lease, and `due_at` at the
    lease's end;
 3. when some replacements did not match (another claimant was first), read back the documents
    the batch's lease owner won.
Two claimants that read the same documents split them: each replacement goes to one. Only the
holder of a lease (`lease_owner`, unique per claiming batch) can settle the document, again by
replacement; a claimant that dies leaves `due_at` at its lease's end, and the document is due
again then. Every change of state replaces the whole document, so the dates in it stay dates
on every server (nx-27017, a stand-in, stores a date given by `$set` as text).

Fields the redelivery adds to a buffered document (absent until they apply):
    due_at             when the loop may next claim it; present exactly while the document is pending
                       (neither delivered nor parked): `buffered_at` at first, then a lease's end, then
                       the next attempt after a failure
    lease_owner        "<host>:<pid>/<claim id>" while claimed
    lease_expires_at   when the claim lapses
    next_attempt_at    not tried again before this time (exponential backoff)
    last_error         why the last attempt failed; last_attempt_at, when
    parked             true once it may no longer be tried by the loop; parked_at, when
    state              "delivered" once the broker acknowledged it: a tombstone of three fields
                       (`_id`, `state`, `delivered_at`), kept TELEMETRY_DEDUP_WINDOW_S so that the same
                       event read again (a crash before the commit, `dlq replay`) collides on `_id` and
                       is not buffered nor delivered twice; then purged by the redelivery loop
                       (`purge_tombstones`). Claims, stats, queries and replay never see tombstones.
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

from pymongo import ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from worker.mongo.collections import TELEMETRY_BUFFER, Document
from worker.mongo.errors import converted
from worker.mongo.indexes import CollectionIndexReport
from worker.retry import RetryPolicy

_LEASE_FIELDS = ("lease_owner", "lease_expires_at")


DELIVERED = "delivered"
TOMBSTONE_FREE: dict[str, Any] = {"state": None}
"""The condition every reader of buffered (still deliverable) documents adds."""
PENDING_ONLY: dict[str, Any] = {"due_at": {"$exists": True}}
"""Pending (neither delivered nor parked): what the sparse `due_at` index holds."""
OLDEST_FIRST = [("buffered_at", 1)]
DUE_FIRST = [("due_at", 1)]


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


@dataclass(frozen=True, slots=True)
class Claim:
    """What one claim round won, and whether another round may find more."""

    documents: list[Document]
    more: bool
    """The read found as many due documents as asked, but others won some of them."""


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

    `lease_s` is how long a claim holds a document: the batches and the loop pace themselves by it.
    `retry_policy` schedules the next attempt after a failed one and parks a document after
    `retry_policy.attempts` claims; `dedup_window_s` 0 deletes the delivered instead of keeping tombstones.
    """

    def __init__(
        self,
        *,
        database: Callable[[], AsyncDatabase[Document]],
        lease_s: float,
        retry_policy: RetryPolicy,
        dedup_window_s: float,
    ) -> None:
        self._database = database
        self._lease_s = lease_s
        self._retry_policy = retry_policy
        self.dedup_window_s = dedup_window_s
        self._replica = replica_name()

    @property
    def lease_s(self) -> float:
        return self._lease_s

    @property
    def max_attempts(self) -> int:
        return self._retry_policy.attempts

    def _collection(self) -> AsyncCollection[Document]:
        return self._database()[TELEMETRY_BUFFER]

    def new_lease_owner(self) -> str:
        """A lease owner for one batch of claims: the replica plus a random claim id."""
        return f"{self._replica}/{uuid.uuid4().hex[:12]}"

    async def claim_due(self, owner: str, limit: int) -> Claim:
        """Up to `limit` of the due documents, earliest `due_at` first, claimed by `owner`."""
        now = datetime.now(UTC)
        heads = self._collection().find(PENDING_ONLY).sort(DUE_FIRST).limit(limit)
        due = [head for head in await converted(heads.to_list()) if _is_due(head.get("due_at"), now)]
        won = await self._claim(due, owner, now)
        return Claim(documents=won, more=len(due) == limit and len(won) < len(due))

    async def claim_ids(self, ids: Sequence[Any], owner: str, parked: ParkedScope) -> list[Document]:
        """Claim the chosen documents whatever their schedule, in `ids` order; those gone or held are left."""
        now = datetime.now(UTC)
        chosen = {"$and": [{"_id": {"$in": list(ids)}}, parked.condition()]}
        found = {doc["_id"]: doc for doc in await converted(self._collection().find(chosen).to_list())}
        free = [found[i] for i in ids if i in found and not _is_later(found[i].get("lease_expires_at"), now)]
        return await self._claim(free, owner, now)

    async def _claim(self, documents: list[Document], owner: str, now: datetime) -> list[Document]:
        """Replace each document as read by itself under `owner`'s lease; the documents won, in order."""
        if not documents:
            return []
        expires = now + timedelta(seconds=self._lease_s)
        leased = [_leased(doc, owner, expires) for doc in documents]
        claims = [ReplaceOne(_as_read(doc), new) for doc, new in zip(documents, leased, strict=True)]
        written = await converted(self._collection().bulk_write(claims, ordered=False))
        if written.matched_count == len(claims):  # every compare-and-set held: all won, as written
            return leased
        ids = [doc["_id"] for doc in documents]
        won = self._collection().find({"_id": {"$in": ids}, "lease_owner": owner})
        by_id = {document["_id"]: document for document in await converted(won.to_list())}
        return [by_id[document_id] for document_id in ids if document_id in by_id]

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

    async def settle(self, owner: str, attempts: Sequence[Attempt], *, keep: bool = False) -> Settled:
        """Delete (or with `keep` release) the delivered; reschedule or park the rest."""
        settled = Settled()
        delivered = [a.document for a in attempts if a.delivered]
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

    async def _remove(self, owner: str, delivered: list[Document], *, keep: bool) -> int:
        """Delivered: tombstones (deleted at once without a dedup window), or released with `keep`."""
        now = datetime.now(UTC)
        if keep:
            released = [_freed(doc, now, last_delivered_at=now) for doc in delivered]
            return await self._replace_held(owner, released)
        if self.dedup_window_s > 0:
            tombstones = [{"_id": doc["_id"], "state": DELIVERED, "delivered_at": now} for doc in delivered]
            return await self._replace_held(owner, tombstones)
        mine = {"_id": {"$in": [doc["_id"] for doc in delivered]}, "lease_owner": owner}
        return (await converted(self._collection().delete_many(mine))).deleted_count

    async def purge_tombstones(self) -> int:
        """Delete the tombstones older than TELEMETRY_DEDUP_WINDOW_S (index `delivered_at`); how many went."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.dedup_window_s)
        purge = self._collection().delete_many({"state": DELIVERED, "delivered_at": {"$lt": cutoff}})
        return (await converted(purge)).deleted_count

    async def release(self, owner: str) -> int:
        """Free every document `owner` still holds (an abandoned batch); retry counts stay raised."""
        held = await converted(self._collection().find({"lease_owner": owner}).to_list())
        return await self._replace_held(owner, [_freed(doc, datetime.now(UTC)) for doc in held])

    async def _replace_held(self, owner: str, replacements: list[Document]) -> int:
        """Replace each document `owner` still holds by its replacement (same `_id`); how many were."""
        if not replacements:
            return 0
        writes = [ReplaceOne({"_id": new["_id"], "lease_owner": owner}, new) for new in replacements]
        return (await converted(self._collection().bulk_write(writes, ordered=False))).matched_count

    def exhausted(self, document: Mapping[str, Any]) -> bool:
        """More claims than attempts allowed: earlier claimants died before an outcome."""
        return int(document["retry_count"]) > self.max_attempts

    def _must_park(self, attempt: Attempt) -> bool:
        attempts = int(attempt.document["retry_count"])
        return attempt.permanent or attempts >= self.max_attempts

    async def _record_failures(self, owner: str, failed: list[Attempt]) -> tuple[int, list[Document]]:
        now = datetime.now(UTC)
        parked = []
        for attempt in filter(self._must_park, failed):  # rare: one write each, so each is known
            mine = {"_id": attempt.document["_id"], "lease_owner": owner}
            park = self._collection().replace_one(mine, _parked(attempt.document, attempt.error or "", now))
            if (await converted(park)).matched_count:
                parked.append(attempt.document)
        retries = [self._rescheduled(a, now) for a in failed if not self._must_park(a)]
        return await self._replace_held(owner, retries), parked

    def _rescheduled(self, attempt: Attempt, now: datetime) -> Document:
        """Free again after the backoff; a parked document (replayed) stays out of the loop's claims."""
        next_attempt = now + timedelta(
            seconds=self._retry_policy.backoff_s(int(attempt.document["retry_count"]))
        )
        document = _without(attempt.document, *_LEASE_FIELDS)
        document.update(next_attempt_at=next_attempt, last_error=attempt.error, last_attempt_at=now)
        if not document.get("parked"):
            document["due_at"] = next_attempt
        return document


CLAIM_INDEX_KEYS = (("due_at", 1),)


def claim_index_created(reports: Sequence[CollectionIndexReport]) -> bool:
    """Whether `ensure_indexes` has just created the claim index: the first start on this database of a
    version that claims by `due_at`."""
    return any(report.collection == TELEMETRY_BUFFER and any(spec.keys == CLAIM_INDEX_KEYS
               for spec in report.created) for report in reports)  # fmt: skip


async def date_the_undated(database: AsyncDatabase[Document], *, lease_s: float) -> int:
    """Give a `due_at` to the pending documents buffered before claims read it (they would never be
    claimed): due now, or when a lease an older version holds lapses; how many were dated."""
    collection, now = database[TELEMETRY_BUFFER], datetime.now(UTC)
    undated = {"parked": None, **TOMBSTONE_FREE, "due_at": {"$exists": False}}
    held = {"$and": [undated, {"lease_owner": {"$exists": True}}]}
    after_lease = {"$set": {"due_at": now + timedelta(seconds=lease_s)}}
    dated = (await converted(collection.update_many(held, after_lease))).modified_count
    due_now = await converted(collection.update_many(undated, {"$set": {"due_at": now}}))
    return dated + due_now.modified_count


def _without(document: Mapping[str, Any], *names: str) -> Document:
    return {name: value for name, value in document.items() if name not in names}


def _as_read(document: Mapping[str, Any]) -> dict[str, Any]:
    """The compare-and-set condition: what a claim decides on is as it was read (None: absent)."""
    condition = {"_id": document["_id"], **TOMBSTONE_FREE}
    decided_on = ("retry_count", "lease_owner", "due_at", "parked")
    condition.update({name: document.get(name) for name in decided_on})
    return condition


def _leased(document: Mapping[str, Any], owner: str, expires: datetime) -> Document:
    """The document claimed: one more attempt, `owner`'s lease, due again when the lease lapses."""
    count = document.get("retry_count")
    leased = dict(document)
    leased.update(retry_count=(count if isinstance(count, int) else 0) + 1, lease_owner=owner,
                  lease_expires_at=expires)  # fmt: skip
    if "due_at" in document:  # pending; a parked document has no due date and gets none
        leased["due_at"] = expires
    return leased


def _freed(document: Mapping[str, Any], now: datetime, **fields: Any) -> Document:
    """The document without its lease; due at once unless parked."""
    freed = _without(document, *_LEASE_FIELDS)
    freed.update(fields)
    if not freed.get("parked"):
        freed["due_at"] = now
    return freed


def _parked(document: Mapping[str, Any], error: str, now: datetime) -> Document:
    parked = _without(document, *_LEASE_FIELDS, "next_attempt_at", "due_at")
    parked.update(parked=True, parked_at=now, last_error=error, last_attempt_at=now)
    return parked


def stored_moment(value: object) -> datetime | None:
    """A stored date as an aware UTC datetime; ISO text too (a server that stored a date as text);
    None when it is neither."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _is_due(due_at: object, now: datetime) -> bool:
    moment = stored_moment(due_at)
    return moment is not None and moment <= now


def _is_later(moment: object, now: datetime) -> bool:
    """A lease still running (None or unreadable: no lease)."""
    parsed = stored_moment(moment)
    return parsed is not None and parsed > now
