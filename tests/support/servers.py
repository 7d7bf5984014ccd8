"""Which servers a test session talks to, and the `standin_deviation` marker that depends on it.

Each server is chosen in this order: the one named by KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI; else a
testcontainers container when a Docker engine answers; else a local stand-in (tests/support/standins.py).
tests/conftest.py turns the markers into strict xfails with `deviation_xfail`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

import pytest

KAFKA_ENV = "KAFKA_BOOTSTRAP_SERVERS"
MONGO_ENV = "MONGODB_URI"
Kind = Literal["env", "container", "standin"]


@dataclass(frozen=True)
class ServerKinds:
    """Which kind of server backs `kafka_bootstrap` and `mongo_uri` in this session."""

    kafka: Kind
    mongo: Kind

    @property
    def any_standin(self) -> bool:
        return "standin" in (self.kafka, self.mongo)


@functools.cache
def docker_answers() -> bool:
    """True when a Docker engine answers a ping within a few seconds."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no SDK, no socket, no engine: all mean "no Docker here"
        return False


def _kind(env_var: str) -> Kind:
    if os.environ.get(env_var):
        return "env"
    return "container" if docker_answers() else "standin"


@functools.cache
def current_kinds() -> ServerKinds:
    return ServerKinds(kafka=_kind(KAFKA_ENV), mongo=_kind(MONGO_ENV))


TANSU, NX27017, SECANTUS = "tansu", "nx-27017", "secantusdb"
STANDINS = (TANSU, NX27017, SECANTUS)
MONGO_STANDINS = (NX27017, SECANTUS)
REAL_KAFKA, REAL_MONGO = "kafka", "mongod"


def session_implementations(kinds: ServerKinds) -> tuple[str, str]:
    """The Kafka and MongoDB implementations behind the session's servers: a stand-in's name, else the real one's."""
    return (
        TANSU if kinds.kafka == "standin" else REAL_KAFKA,
        NX27017 if kinds.mongo == "standin" else REAL_MONGO,
    )


def item_implementations(item: pytest.Item, kinds: ServerKinds) -> frozenset[str]:
    """Every server implementation a collected test talks to: the session's Kafka, its MongoDB (the one
    `mongo_server` chose for a `both_mongo` test), and SecantusDB when it asks for `mongod_like_uri`."""
    kafka, mongo = session_implementations(kinds)
    callspec = getattr(item, "callspec", None)
    chosen = callspec.params.get("mongo_server", mongo) if callspec is not None else mongo
    found = {kafka, chosen}
    if kinds.mongo == "standin" and "mongod_like_uri" in getattr(item, "fixturenames", ()):
        found.add(SECANTUS)
    return frozenset(found)


def deviation_xfail(item: pytest.Item, implementations: Collection[str]) -> pytest.MarkDecorator | None:
    """The strict xfail the `standin_deviation` markers stand for on a test that runs against `implementations`;
    None when none is marked for one of them.

    Raises pytest.UsageError (an error at collection) for a marker without a known stand-in as `server`,
    an exception type as `raises`, or a `reason`.
    """
    applying: list[tuple[str, Any, str]] = []
    for marker in item.iter_markers("standin_deviation"):
        server, raises, reason = (marker.kwargs.get(key) for key in ("server", "raises", "reason"))
        if server not in STANDINS or not _exception_types(raises) or not reason or marker.args:
            raise pytest.UsageError(
                f"{item.nodeid}: standin_deviation needs keywords server={' or '.join(map(repr, STANDINS))}, "
                f"raises=<exception type> and reason=<how the stand-in deviates>; got {marker.kwargs}"
            )
        if server in implementations:
            applying.append((server, raises, reason))
    if not applying:
        return None
    raised: tuple[type[BaseException], ...] = ()
    for _, raises, _ in applying:
        raised += raises if isinstance(raises, tuple) else (raises,)
    reasons = "; ".join(f"{server} deviates: {reason}" for server, _, reason in applying)
    return pytest.mark.xfail(strict=True, raises=raised[0] if len(raised) == 1 else raised, reason=reasons)


def _exception_types(raises: object) -> bool:
    types = raises if isinstance(raises, tuple) else (raises,)
    return bool(types) and all(isinstance(t, type) and issubclass(t, BaseException) for t in types)
