"""Every test under tests/integration talks to real servers: mark it `integration`."""

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Add the `integration` marker to the tests collected from this directory."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
