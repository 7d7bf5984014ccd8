"""Whether Kafka and MongoDB answer: one log line per transition, a gauge, and the readiness reasons.

kafka_unavailable / kafka_available, mongodb_unavailable / mongodb_available
    logged once per transition, with the server's host:port (no credentials) and since when;
persistence_server_up{server="kafka"|"mongodb"}: 1 while it answers, 0 while it does not.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from worker.errors import WorkerError
from worker.ops.metrics import SERVER_UP
from worker.ops.waiting import wait_for_stop

log = structlog.get_logger(__name__)

Probe = Callable[[], Awaitable[None]]
"""Returns when the server answered; raises WorkerError when it did not."""

# scheme://[user:password@]hosts[/path][?query] -> hosts
_URI_HOSTS = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^@/]*@)?(?P<hosts>[^/?]*)")


def server_address(uri_or_hosts: str) -> str:
    """The host:port list of a connection string, without scheme, credentials, path or options."""
    match = _URI_HOSTS.match(uri_or_hosts.strip())
    return match.group("hosts") if match else uri_or_hosts.strip()


@dataclass
class _State:
    up: bool | None = None  # None: not probed yet
    since: datetime | None = None
    error: str = ""


class ServerReachability:
    """One server's reachability as the latest probe saw it."""

    def __init__(self, server: str, address: str) -> None:
        self.server = server
        self.address = address
        self._state = _State()

    @property
    def up(self) -> bool | None:
        return self._state.up

    def answered(self) -> None:
        """The server answered; logs `<server>_available` if it was unreachable."""
        previous = self._state
        if previous.up is True:
            return
        now = datetime.now(UTC)
        self._state = _State(up=True, since=now)
        SERVER_UP.labels(server=self.server).set(1)
        if previous.up is False and previous.since is not None:
            log.info(f"{self.server}_available", server=self.server, address=self.address,
                     unavailable_since=previous.since.isoformat(),
                     unavailable_for_s=round((now - previous.since).total_seconds(), 3))  # fmt: skip

    def failed(self, error: str) -> None:
        """The server did not answer; logs `<server>_unavailable` if it was not already down."""
        if self._state.up is False:
            self._state.error = error
            return
        since = datetime.now(UTC)
        self._state = _State(up=False, since=since, error=error)
        SERVER_UP.labels(server=self.server).set(0)
        log.warning(f"{self.server}_unavailable", server=self.server, address=self.address,
                    since=since.isoformat(), error=error)  # fmt: skip

    def reason(self) -> dict[str, str] | None:
        """The readiness reason while unreachable, else None."""
        state = self._state
        if state.up is not False or state.since is None:
            return None
        return {"server": self.server, "address": self.address, "since": state.since.isoformat(),
                "error": state.error}  # fmt: skip


class Reachability:
    """The servers a process depends on, by name."""

    def __init__(self, *servers: ServerReachability) -> None:
        self.servers = {server.server: server for server in servers}

    def __getitem__(self, server: str) -> ServerReachability:
        return self.servers[server]

    def unreachable(self) -> list[dict[str, str]]:
        """The readiness reasons of every server that does not answer now."""
        return [reason for server in self.servers.values() if (reason := server.reason()) is not None]


async def probe_once(server: ServerReachability, probe: Probe, timeout_s: float) -> bool:
    """Run `probe` (at most `timeout_s`) and record the outcome; True if the server answered."""
    try:
        await asyncio.wait_for(probe(), timeout=timeout_s)
    except WorkerError as exc:
        server.failed(str(exc) or type(exc).__name__)
        return False
    except TimeoutError:
        server.failed(f"no answer within {timeout_s:g} s")
        return False
    server.answered()
    return True


async def probe_until_stopped(
    server: ServerReachability, probe: Probe, interval_s: float, stop: asyncio.Event
) -> None:
    """Probe every `interval_s` (each probe bounded by the same) until `stop` is set."""
    while not stop.is_set():
        await probe_once(server, probe, timeout_s=interval_s)
        await wait_for_stop(stop, interval_s)
