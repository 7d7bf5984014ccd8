"""The worker's one exception tree; adapters convert library errors into it.

    WorkerError
    ├── TransientError        try again later: MongoDB or Kafka unreachable, timeouts,
    │                         a primary stepping down, no MongoDB client yet
    └── PermanentError        trying the same call again at once cannot help
        ├── EventRejected     the input itself is bad; carries a reason code for the
        │                     dead-letter headers and the `event_rejected` log line
        ├── OperationRefused  the server refuses the operation itself (authentication,
        │                     authorization, namespace state, write concern): an outage
        │                     for every record the operation carried, whatever their number
        └── DocumentRefused   the server (or BSON) refuses one document for what it is
                              (too large, not encodable, validation, another unique key)

Only the adapters (worker.mongo.*, worker.kafka.*) see PyMongo and aiokafka exceptions;
they raise these with `raise ... from exc`. Tenacity retries TransientError alone; the
batch treats TransientError (once retries are spent) and OperationRefused as an outage
of the route (fail-open: dead-lettered; fail-closed: held), and DocumentRefused as a
property of one record (`persist_refused`). Any other PermanentError counts as an outage.

Two words, each for one thing, in the code and the logs: *rejected* when the worker's own
contract turns the input down (EventRejected, the pipeline's `Rejected`, `event_rejected`);
*refused* when a server does (OperationRefused, DocumentRefused, `event_refused_by_mongodb`).
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


class OperationRefused(PermanentError):
    """The server refused the whole operation (e.g. not authorized): an outage, not a bad document."""


class DocumentRefused(PermanentError):
    """The server or the BSON encoder refused a document itself; the other documents may be written."""
