"""What went wrong with MongoDB, in a few words, from the PyMongo error behind one of ours."""

from __future__ import annotations

import re

from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

from worker.ops.messages import ServerFailure
from worker.settings import Settings

AUTH_FAILED, UNAUTHORIZED = 18, 13
_SELECTION_TIMEOUT = re.compile(r"Timeout: ([0-9.]+)s")
_NETWORK_REASONS = (
    (("SSL", "certificate", "TLS"), "TLS handshake failed"),
    (
        ("Name or service not known", "nodename nor servname", "name resolution", "No address"),
        "host not found",
    ),
    (("Connection refused", "Connect call failed", "[Errno 111]"), "connection refused"),
    (("Network is unreachable", "No route to host"), "network unreachable"),
)


def mongodb_failure(
    error: BaseException, settings: Settings, *, timeout_s: float | None = None
) -> ServerFailure:
    """The operator's view of `error` (ours, raised `from` a PyMongo one, or PyMongo's itself, or
    the TimeoutError of a wait bounded by `timeout_s`)."""
    cause = error.__cause__ if isinstance(error.__cause__, PyMongoError) else error
    if isinstance(cause, TimeoutError) and timeout_s is not None:
        reason, refused, variable = f"no answer within {timeout_s:g} s", False, "MONGODB_URI"
    else:
        reason, refused, variable = _classify(cause, settings)
    return ServerFailure(
        server="MongoDB",
        where=settings.mongodb_hosts(),
        reason=reason,
        variable=variable,
        refused=refused,
        detail=str(cause),
    )


def _classify(cause: BaseException, settings: Settings) -> tuple[str, bool, str]:
    """(reason, refused, variable to check)."""
    if isinstance(cause, OperationFailure) and cause.code in (AUTH_FAILED, UNAUTHORIZED):
        what = "authentication failed" if cause.code == AUTH_FAILED else "not authorised"
        return what, True, "the user, password and authSource in MONGODB_URI"
    if isinstance(cause, ConfigurationError):
        return f"configuration: {str(cause)[:120]}", False, "MONGODB_URI"
    text = str(cause)
    for needles, reason in _NETWORK_REASONS:
        if any(needle in text for needle in needles):
            return reason, False, "MONGODB_URI"
    if isinstance(cause, PyMongoError):
        seconds = _timeout_s(text, settings)
        return f"timed out after {seconds:g} s", False, "MONGODB_URI"
    return f"{type(cause).__name__}: {text[:120]}", False, "MONGODB_URI"


def _timeout_s(text: str, settings: Settings) -> float:
    found = _SELECTION_TIMEOUT.search(text)
    return float(found.group(1)) if found else settings.mongodb_server_selection_timeout_ms / 1000
