"""The write concern of the worker's writes (MONGODB_URI's `w`, else MONGODB_WRITE_CONCERN), and
whether it waits for a majority of the members the server lists: below that, a failover can
lose writes the worker was told were safe, and whose offsets it committed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.mongo.gateway import MongoGateway
from worker.mongo.uri import uri_sets
from worker.settings import Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteConcern:
    """The write concern in force, where it comes from, and the members it is measured against."""

    w: int | str
    journal: bool | None
    source: str
    """The variable it comes from: MONGODB_URI or MONGODB_WRITE_CONCERN."""
    members: int | None
    """The members `hello` lists (1: a standalone server; None: not known, behind a mongos)."""

    @property
    def below_majority(self) -> bool:
        """A number of members below a majority, or not known to be one; `majority`, tag sets: never."""
        if not isinstance(self.w, int):
            return False
        return self.members is None or self.w < self.members // 2 + 1

    def describe(self) -> str:
        journal = "" if self.journal is None else f", j={str(self.journal).lower()}"
        return f"w={self.w}{journal} (from {self.source})"


def listed_members(hello: Mapping[str, Any]) -> int | None:
    """The replica set's members a `hello` answer lists: electable, passive, arbiters (not hidden ones)."""
    if hello.get("msg") == "isdbgrid":
        return None
    if "setName" not in hello:
        return 1
    return sum(len(hello.get(kind, ())) for kind in ("hosts", "passives", "arbiters"))


async def write_concern_in_force(gateway: MongoGateway, settings: Settings) -> WriteConcern:
    """The client's write concern and the server's members (one `hello`); TransientError/PermanentError."""
    document = gateway.write_concern()
    hello = await gateway.hello()
    in_uri = uri_sets(settings.mongodb_uri.get_secret_value(), "w")
    return WriteConcern(
        w=document.get("w", 1),
        journal=document.get("j"),
        source="MONGODB_URI" if in_uri else "MONGODB_WRITE_CONCERN",
        members=listed_members(hello),
    )
