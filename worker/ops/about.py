"""What this worker is: its version, and the facts `worker_started` logs about where it points."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from worker.settings import Settings

DISTRIBUTION = "persistence-worker"


def worker_version() -> str:
    """The installed distribution's version ("unknown" when run from a bare source tree)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def startup_facts(settings: Settings) -> dict[str, str]:
    """Fields for the `worker_started` line: version and servers, never credentials."""
    return {
        "version": worker_version(),
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "mongodb_hosts": settings.mongodb_hosts(),
        "database": settings.mongodb_database,
    }
