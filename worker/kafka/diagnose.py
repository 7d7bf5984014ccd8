"""Kafka errors for an operator: what went wrong in a few words (as worker.mongo.diagnose for MongoDB)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    ClusterAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from worker.errors import OperationRefused, TransientError, WorkerError
from worker.ops.messages import ServerFailure
from worker.ops.redaction import scrub
from worker.settings import Settings

CREDENTIALS = "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD"
_REFUSALS: tuple[tuple[type[BaseException], str, str], ...] = (
    (SaslAuthenticationFailed, "authentication failed", CREDENTIALS),
    (AuthenticationFailedError, "authentication failed", CREDENTIALS),
    (AuthenticationMethodNotSupported, "SASL mechanism not supported", "KAFKA_SASL_MECHANISM"),
    (UnsupportedSaslMechanismError, "SASL mechanism not supported", "KAFKA_SASL_MECHANISM"),
    (ClusterAuthorizationFailedError, "not authorised", CREDENTIALS),
)


class KafkaUnavailable(TransientError):
    """Kafka could not be used (no broker, a timeout, a failed send); `failure` says it for an operator."""

    def __init__(self, failure: ServerFailure) -> None:
        super().__init__(failure.message())
        self.failure = failure


class KafkaRefused(OperationRefused):
    """Kafka answered and refused us (authentication, authorisation); `failure` says it for an operator."""

    def __init__(self, failure: ServerFailure) -> None:
        super().__init__(failure.message())
        self.failure = failure


@contextmanager
def kafka_errors(settings: Settings) -> Iterator[None]:
    """aiokafka errors raised in the block leave it as KafkaRefused or KafkaUnavailable."""
    try:
        yield
    except KafkaError as exc:
        failure = kafka_failure(exc, settings)
        raise (KafkaRefused if failure.refused else KafkaUnavailable)(failure) from exc


def kafka_failure(
    error: BaseException, settings: Settings, *, timeout_s: float | None = None
) -> ServerFailure:
    """The operator's view of an aiokafka (or socket) error met talking to the brokers.

    `error` may be one of ours converted by worker.kafka.errors: its cause is then what is told.
    """
    if isinstance(error, WorkerError) and error.__cause__ is not None:
        error = error.__cause__
    reason, refused, variable = _classify(error, timeout_s)
    if not refused and settings.kafka_security_protocol != "PLAINTEXT":
        # aiokafka reports a refused SASL login or TLS handshake as "Unable to bootstrap" too.
        variable = f"{variable} and the KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} settings"
    return ServerFailure(
        server="Kafka",
        where=scrub(settings.kafka_bootstrap_servers),
        reason=reason,
        variable=variable,
        refused=refused,
        detail=f"{type(error).__name__}: {error}",
    )


def _classify(error: BaseException, timeout_s: float | None) -> tuple[str, bool, str]:
    """(reason, refused, variable to check)."""
    for kind, reason, variable in _REFUSALS:
        if isinstance(error, kind):
            return reason, True, variable
    if isinstance(error, ssl.SSLError):
        return "TLS handshake failed", False, "KAFKA_SECURITY_PROTOCOL, KAFKA_SSL_CAFILE"
    if isinstance(error, TimeoutError | KafkaTimeoutError):
        within = f" within {timeout_s:g} s" if timeout_s is not None else ""
        return f"no answer{within}", False, "KAFKA_BOOTSTRAP_SERVERS"
    if isinstance(error, KafkaConnectionError):
        return "no broker answered", False, "KAFKA_BOOTSTRAP_SERVERS"
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__, False, "KAFKA_BOOTSTRAP_SERVERS"
    return f"{type(error).__name__}: {str(error)[:120]}", False, "KAFKA_BOOTSTRAP_SERVERS"
