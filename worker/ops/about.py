"""What this worker is: its version, and the facts `worker_started` logs about where it points."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from worker.settings import Settings

DISTRIBUTION = "persistence-worker"


def installed_version(distribution: str) -> str:
    """An installed distribution's version ("unknown" when not installed, e.g. a bare source tree)."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def worker_version() -> str:
    """This worker's installed version."""
    return installed_version(DISTRIBUTION)


def startup_facts(settings: Settings) -> dict[str, str]:
    """Fields for the `worker_started` line: version and servers, never credentials."""
    return {
        "version": worker_version(),
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "mongodb_hosts": settings.mongodb_hosts(),
        "database": settings.mongodb_database,
    }
