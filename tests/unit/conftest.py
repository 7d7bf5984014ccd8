"""Unit-test fixtures: a clean environment for Settings and settings that retry instantly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from worker.settings import Settings

MakeSettings = Callable[..., Settings]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every worker variable from the environment, so the developer's shell cannot leak in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def make_settings() -> MakeSettings:
    """`make_settings(field=value, ...)`: Settings from defaults plus the given overrides."""

    def make(**overrides: Any) -> Settings:
        return Settings(**overrides)

    return make


@pytest.fixture
def fast_settings(make_settings: MakeSettings) -> Settings:
    """Settings whose retry waits are microseconds, so retrying tests stay fast."""
    return make_settings(retry_initial_interval_ms=0, retry_backoff_coefficient=1e-6)


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    """Put structlog's configuration back after a test that calls `configure_logging`."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
