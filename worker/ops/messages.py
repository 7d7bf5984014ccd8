"""Messages an operator can act on: which server, what failed in a few words, what to check.

    cannot reach MongoDB at db1:27017 (connection refused); check MONGODB_URI
    Kafka at broker:9092 refused us (authentication failed); check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD

The adapters (worker.mongo.diagnose, worker.kafka.diagnose) turn a library error into a
`ServerFailure`; the library's own long text (a topology dump) is `detail`, logged at DEBUG.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import structlog

from worker.ops.redaction import scrub

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerFailure:
    """Why a server could not be used, in the operator's terms."""

    server: str
    """"MongoDB" or "Kafka"."""
    where: str
    """Its addresses from the settings, credentials removed."""
    reason: str
    """What failed, in a few words ("connection refused", "timed out after 5 s")."""
    variable: str
    """The setting(s) to check."""
    refused: bool = False
    """The server answered and refused us (authentication, authorisation)."""
    detail: str = ""
    """The library's full message, for DEBUG logs only."""

    def message(self) -> str:
        """One line without secrets."""
        if self.refused:
            text = f"{self.server} at {self.where} refused us ({self.reason}); check {self.variable}"
        else:
            text = f"cannot reach {self.server} at {self.where} ({self.reason}); check {self.variable}"
        return scrub(text)


def report_failure(failure: ServerFailure, *, prefix: str = "error") -> None:
    """Print the failure's one line to stderr; its detail goes to the DEBUG log."""
    print(f"{prefix}: {failure.message()}", file=sys.stderr)
    log.debug("server_failure_detail", server=failure.server, detail=failure.detail)
