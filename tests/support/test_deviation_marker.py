"""The `standin_deviation` marker: a strict xfail only where the test runs against the stand-in it names."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.servers import ServerKinds, deviation_xfail, item_implementations

ON_TANSU_AND_NX = {"tansu", "nx-27017"}
ON_TANSU_AND_SECANTUS = {"tansu", "secantusdb"}
ON_REAL_SERVERS = {"kafka", "mongod"}
STANDINS = ServerKinds(kafka="standin", mongo="standin")


class MarkedItem:
    """Just what the marker logic reads from a pytest item."""

    nodeid = "tests/integration/test_x.py::test_y"

    def __init__(self, *markers: tuple[tuple[Any, ...], dict[str, Any]], params: dict[str, str] | None = None,
                 fixturenames: tuple[str, ...] = ("mongo_uri",)) -> None:  # fmt: skip
        self._markers = [pytest.mark.standin_deviation(*args, **kwargs).mark for args, kwargs in markers]
        self.fixturenames = fixturenames
        if params is not None:
            self.callspec = type("CallSpec", (), {"params": params})()

    def iter_markers(self, name: str) -> Any:
        return iter(self._markers if name == "standin_deviation" else [])


def marked(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def test_a_deviation_is_a_strict_xfail_expecting_its_exception_on_its_implementation() -> None:
    """A tansu deviation on a test that runs on tansu becomes xfail(strict=True, raises=<the exception>)."""
    item = MarkedItem(marked(server="tansu", raises=AssertionError, reason="tansu overshoots"))
    xfail = deviation_xfail(item, ON_TANSU_AND_NX)  # type: ignore[arg-type]
    assert xfail is not None
    assert xfail.mark.name == "xfail"
    assert xfail.mark.kwargs["strict"] is True
    assert xfail.mark.kwargs["raises"] is AssertionError
    assert "tansu overshoots" in xfail.mark.kwargs["reason"]


def test_a_deviation_of_one_mongodb_standin_does_not_excuse_the_other() -> None:
    """An nx-27017 deviation leaves the same test on SecantusDB an ordinary test, and the other way round."""
    nx = MarkedItem(marked(server="nx-27017", raises=AssertionError, reason="nx plans"))
    secantus = MarkedItem(marked(server="secantusdb", raises=KeyError, reason="secantus sorts"))
    assert deviation_xfail(nx, ON_TANSU_AND_SECANTUS) is None  # type: ignore[arg-type]
    assert deviation_xfail(secantus, ON_TANSU_AND_NX) is None  # type: ignore[arg-type]


def test_each_implementation_gets_its_own_deviation() -> None:
    """A test marked for both MongoDB stand-ins expects, on each, the exception named for it."""
    item = MarkedItem(marked(server="nx-27017", raises=AssertionError, reason="nx plans"),
                      marked(server="secantusdb", raises=KeyError, reason="secantus sorts"))  # fmt: skip
    on_nx = deviation_xfail(item, ON_TANSU_AND_NX)  # type: ignore[arg-type]
    on_secantus = deviation_xfail(item, ON_TANSU_AND_SECANTUS)  # type: ignore[arg-type]
    assert on_nx is not None and on_nx.mark.kwargs["raises"] is AssertionError
    assert "nx plans" in on_nx.mark.kwargs["reason"] and "secantus" not in on_nx.mark.kwargs["reason"]
    assert on_secantus is not None and on_secantus.mark.kwargs["raises"] is KeyError


def test_real_servers_excuse_nothing() -> None:
    """With no stand-in under the test a marked test runs as an ordinary test."""
    item = MarkedItem(marked(server="nx-27017", raises=AssertionError, reason="nx plans"),
                      marked(server="tansu", raises=AssertionError, reason="tansu overshoots"))  # fmt: skip
    assert deviation_xfail(item, ON_REAL_SERVERS) is None  # type: ignore[arg-type]


def test_the_implementations_of_a_test_follow_its_mongo_server_parameter() -> None:
    """On stand-ins a test runs on tansu and nx-27017, or on SecantusDB when `mongo_server` (or mongod_like_uri) says so;
    on real servers on kafka and mongod."""
    plain, on_secantus = MarkedItem(), MarkedItem(params={"mongo_server": "secantusdb"})
    mongod_like = MarkedItem(fixturenames=("kafka_bootstrap", "mongod_like_uri"))
    assert item_implementations(plain, STANDINS) == ON_TANSU_AND_NX  # type: ignore[arg-type]
    assert item_implementations(on_secantus, STANDINS) == ON_TANSU_AND_SECANTUS  # type: ignore[arg-type]
    assert item_implementations(mongod_like, STANDINS) == ON_TANSU_AND_NX | {"secantusdb"}  # type: ignore[arg-type]
    real = ServerKinds(kafka="env", mongo="container")
    assert item_implementations(mongod_like, real) == ON_REAL_SERVERS  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "marker",
    [
        marked(reason="no server, no exception"),
        marked("old style reason"),
        marked(server="nx-27017", reason="no exception"),
        marked(server="mongo", raises=AssertionError, reason="a role, not an implementation"),
        marked(server="kafka", raises=AssertionError, reason="a role, not an implementation"),
        marked(server="nx-27017", raises="AssertionError", reason="a name, not a type"),
        marked(server="secantusdb", raises=AssertionError),
    ],
)
def test_incomplete_marker_is_an_error_at_collection(marker: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
    """A marker without a known stand-in, an exception type and a reason stops collection with a usage error."""
    with pytest.raises(pytest.UsageError, match="standin_deviation needs"):
        deviation_xfail(MarkedItem(marker), ON_REAL_SERVERS)  # type: ignore[arg-type]


def test_unmarked_test_is_untouched() -> None:
    """A test without the marker gets no xfail."""
    assert deviation_xfail(MarkedItem(), ON_TANSU_AND_NX) is None  # type: ignore[arg-type]
