"""Option values checked by the parser, so that a mistake is exit 2 with a readable message."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime


def parse_instant(text: str) -> datetime:
    """An ISO-8601 date or date-time; without a zone it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 date or time: {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def instant(text: str) -> datetime:
    """`parse_instant` as an argparse type."""
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A whole number within [minimum, maximum], as an argparse type."""
    bounds = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def parse(text: str) -> int:
        number = int(text) if text.isdigit() else None
        if number is None or number < minimum or (maximum is not None and number > maximum):
            raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, not {text!r}")
        return number

    parse.__name__ = "count"
    return parse
