"""Specification of the W3C traceparent reader (worker.ops.trace)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.ops.trace import trace_id

VALID = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HEX = "0123456789abcdef"


def test_the_w3c_example_gives_its_trace_id() -> None:
    """The specification's own example header yields its trace id."""
    assert trace_id([("traceparent", VALID)]) == TRACE


def test_header_name_is_case_insensitive_and_other_headers_are_ignored() -> None:
    """`Traceparent` among other headers is found."""
    assert trace_id([("x-source", b"a"), ("Traceparent", VALID)]) == TRACE


@pytest.mark.parametrize(
    "value",
    [
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff is invalid
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  # version 00 has no more fields
        b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  # a later version: `-` before more
        b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # trace id too short
        b" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"\xff\xfe",
        None,
    ],
)
def test_invalid_values_give_no_trace(value: bytes | None) -> None:
    """Every malformed traceparent value gives None."""
    assert trace_id([("traceparent", value)]) is None  # type: ignore[list-item]


def test_a_later_version_with_more_fields_is_read() -> None:
    """A version above 00 may append fields after a dash; the trace id is still read."""
    assert trace_id([("traceparent", b"cc" + VALID[2:] + b"-what-the-future-holds")]) == TRACE


def test_no_header_or_two_headers_give_no_trace() -> None:
    """Absent headers, or two traceparent headers (ambiguous), give None."""
    assert trace_id(None) is None
    assert trace_id([]) is None
    assert trace_id([("traceparent", VALID), ("traceparent", VALID)]) is None


@given(st.lists(st.tuples(st.sampled_from(["traceparent", "TRACEPARENT", "x"]),
                          st.one_of(st.none(), st.binary(max_size=80)))))  # fmt: skip
def test_any_headers_never_raise_and_give_a_well_formed_id_or_none(headers: list[tuple[str, bytes]]) -> None:
    """Arbitrary header bytes never raise; a result is always 32 lower-case hex digits, not all zero."""
    found = trace_id(headers)
    assert found is None or (re.fullmatch("[0-9a-f]{32}", found) and found != "0" * 32)


@given(
    st.text(HEX, min_size=32, max_size=32).filter(lambda t: t != "0" * 32),
    st.text(HEX, min_size=16, max_size=16).filter(lambda p: p != "0" * 16),
    st.text(HEX, min_size=2, max_size=2),
)
def test_every_valid_version_00_header_gives_its_trace_id(trace: str, parent: str, flags: str) -> None:
    """Any well-formed version-00 traceparent yields exactly its trace id."""
    assert trace_id([("traceparent", f"00-{trace}-{parent}-{flags}".encode())]) == trace
