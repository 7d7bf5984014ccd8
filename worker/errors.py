"""The worker's one exception tree; adapters convert library errors into it.

    WorkerError
    ├── TransientError        try again later: MongoDB or Kafka unreachable, timeouts,
    │                         a primary stepping down, no MongoDB client yet
    └── PermanentError        trying again cannot help
        └── EventRejected     the input itself is bad; carries a reason code for the
                              dead-letter headers and the `event_rejected` log line

Only the adapters (worker.mongo.*, worker.dlq) see PyMongo and aiokafka exceptions;
they raise these with `raise ... from exc`, so tenacity and the consumer loop decide
on two types alone.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""


class TransientError(WorkerError):
    """The operation may succeed if tried again later."""


class PermanentError(WorkerError):
    """The operation will fail again however often it is tried."""


class EventRejected(PermanentError):
    """An input record that cannot become a document; `reason` is a stable code."""

    def __init__(self, *, reason: str, detail: str, event_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.event_id = event_id
