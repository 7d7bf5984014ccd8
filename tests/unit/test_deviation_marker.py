"""The `standin_deviation` marker: a strict xfail only where its own server is a stand-in."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ServerKinds, deviation_xfail

KAFKA_STANDIN = ServerKinds(kafka="standin", mongo="env")
MONGO_STANDIN = ServerKinds(kafka="env", mongo="standin")


class MarkedItem:
    """Just what the marker logic reads from a pytest item."""

    nodeid = "tests/integration/test_x.py::test_y"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._marker = pytest.mark.standin_deviation(*args, **kwargs).mark

    def get_closest_marker(self, name: str) -> Any:
        return self._marker if name == "standin_deviation" else None


def test_kafka_deviation_is_a_strict_xfail_expecting_its_exception_on_a_kafka_standin() -> None:
    """A kafka deviation on a kafka stand-in becomes xfail(strict=True, raises=<the exception>)."""
    item = MarkedItem(server="kafka", raises=AssertionError, reason="tansu overshoots")
    xfail = deviation_xfail(item, KAFKA_STANDIN)  # type: ignore[arg-type]
    assert xfail is not None
    assert xfail.mark.name == "xfail"
    assert xfail.mark.kwargs["strict"] is True
    assert xfail.mark.kwargs["raises"] is AssertionError
    assert "tansu overshoots" in xfail.mark.kwargs["reason"]


def test_deviation_of_the_other_server_leaves_the_test_as_it_is() -> None:
    """A kafka deviation is not excused when only MongoDB is a stand-in: the test must pass."""
    item = MarkedItem(server="kafka", raises=AssertionError, reason="tansu overshoots")
    assert deviation_xfail(item, MONGO_STANDIN) is None  # type: ignore[arg-type]


def test_real_servers_excuse_nothing() -> None:
    """With no stand-in in the session a marked test runs as an ordinary test."""
    item = MarkedItem(server="mongo", raises=AssertionError, reason="nx plans")
    assert deviation_xfail(item, ServerKinds(kafka="env", mongo="container")) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "marker",
    [
        ((), {"reason": "no server, no exception"}),
        (("old style reason",), {}),
        ((), {"server": "mongo", "reason": "no exception"}),
        ((), {"server": "redis", "raises": AssertionError, "reason": "unknown server"}),
        ((), {"server": "mongo", "raises": "AssertionError", "reason": "a name, not a type"}),
        ((), {"server": "mongo", "raises": AssertionError}),
    ],
)
def test_incomplete_marker_is_an_error_at_collection(marker: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
    """A marker without a known server, an exception type and a reason stops collection with a usage error."""
    args, kwargs = marker
    with pytest.raises(pytest.UsageError, match="standin_deviation needs"):
        deviation_xfail(MarkedItem(*args, **kwargs), KAFKA_STANDIN)  # type: ignore[arg-type]


def test_unmarked_test_is_untouched() -> None:
    """A test without the marker gets no xfail."""

    class Plain:
        nodeid = "t"

        def get_closest_marker(self, name: str) -> None:
            return None

    assert deviation_xfail(Plain(), KAFKA_STANDIN) is None  # type: ignore[arg-type]
