"""All configuration, read from the environment: the only module that does so.

Every field's environment variable is its name upper-cased, and the docstring under it is its
meaning: docs/configuration.md is generated from them (`python -m tests.docs_gen`).
`load_settings` is the commands' way in: every mistake (a bad value, a Kafka or HTTP address
the clients cannot parse, a URI PyMongo's client refuses, SASL/SSL settings that do not go
together, a certificate file that cannot be read) becomes one line naming the variable, never
echoing a secret; variables that look like misspelled settings are found too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.mongo.collections import INCIDENTS, TELEMETRY_BUFFER, VALIDATION_AUDIT, WORKFLOW_RESULTS
from worker.mongo.uri import database_name_problem, mongodb_hosts, mongodb_uri_problem
from worker.ops.redaction import redact_uri, remember_secret, remember_uri_password
from worker.settings_checks import (
    SASL_FIELDS,
    SECRET_FIELDS,
    SSL_FILE_FIELDS,
    CrossFieldProblems,
    bootstrap_servers_problem,
    cross_field_problems,
    host_problem,
    readable_file,
    settings_error_lines,
)
from worker.settings_typos import UnknownVariable, find_unknown_variables


class RouteName(StrEnum):
    """The four input routes; names used by FAIL_CLOSED_ROUTES."""

    VALIDATION = "validation"
    RESULTS = "results"
    INCIDENTS = "incidents"
    TELEMETRY = "telemetry"


DEFAULT_ROUTE_PRIORITY = (RouteName.INCIDENTS, RouteName.RESULTS, RouteName.VALIDATION, RouteName.TELEMETRY)
"""Incidents first (they trigger self-healing), then results, validations, telemetry."""


def _route_names(text: str) -> list[str]:
    """A comma-separated list of route names, trimmed and lower-cased, empty items left out."""
    return [part.strip().lower() for part in text.split(",") if part.strip()]


def _checked(value: str, problem_of: Callable[[str], str | None]) -> str:
    """`value` if `problem_of` finds nothing wrong with it, else ValueError saying what."""
    problem = problem_of(value)
    if problem is not None:
        raise ValueError(problem)
    return value


class SettingsError(Exception):
    """The environment cannot be used; `lines` name each wrong variable, without secrets."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class Settings(BaseSettings):
    """The worker's settings; each field's docstring is its description (docs/configuration.md)."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    # MongoDB
    mongodb_uri: SecretStr = SecretStr("mongodb://localhost:27017")
    """MongoDB connection string (a secret: never logged; its password is scrubbed from every message)."""
    mongodb_database: str = Field(default="orchestrator", min_length=1)
    """The database holding the four collections."""
    mongodb_server_selection_timeout_ms: int = Field(default=5000, ge=100)
    """How long one attempt waits for a reachable MongoDB server."""
    # --- Durability and dead letters (branch i-faults) ---
    mongodb_write_concern: str = Field(default="majority", min_length=1)
    """Write concern `w` of every write: `majority`, a number of members, or a tag set name;
    a `w` in MONGODB_URI wins. With `majority`, a committed offset never points past a write a
    failover could roll back."""
    mongodb_write_concern_journal: bool = True
    """Acknowledge writes only once journaled (`j`); a `journal` in MONGODB_URI wins (set
    `journal=false` there for an in-memory storage engine)."""
    kafka_max_request_bytes: int = Field(default=1_048_576, ge=1024, le=100 * 1024 * 1024)
    """The producer's max_request_size; a dead letter larger than this is sent truncated
    (`x-truncated`, `x-original-size`): the whole record stays at its source coordinates."""
    dlq_truncated_value_bytes: int = Field(default=65_536, ge=0, le=1_048_576)
    """How much of the original value a truncated dead letter keeps."""
    # --- end of the i-faults block ---
    # Kafka
    kafka_bootstrap_servers: str = Field(default="localhost:9092", min_length=1)
    """Comma-separated Kafka brokers, each `host:port` with its port (IPv6 as `[::1]:9092`)."""
    kafka_consumer_group: str = Field(default="persistence-worker", min_length=1)
    """The consumer group; scale by running more replicas (up to the partition count)."""
    kafka_client_id: str = "persistence-worker"
    """Kafka client id, also MongoDB's `appname`; each route's member appends its route."""
    kafka_topic_validation: str = "orchestrator.validation"
    """Input topic of the plan validation events (C1)."""
    kafka_topic_results: str = "orchestrator.results"
    """Input topic of the consolidated workflow results (C5)."""
    kafka_topic_incidents: str = "orchestrator.incidents"
    """Input topic of the self-healing incidents (flow E)."""
    kafka_topic_telemetry: str = "orchestrator.telemetry"
    """Input topic of the telemetry to buffer and deliver onward."""
    kafka_dlq_suffix: str = Field(default=".dlq", min_length=1)
    """Dead-letter topic = source topic + this suffix."""
    kafka_auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a consumer group with no committed offset starts."""
    kafka_max_batch_records: int = Field(default=1000, ge=1, le=100_000)
    """Records per poll, i.e. the largest batch (bounds memory)."""
    # Prefetched, not yet handed-out records are what bounds memory besides the batch in hand.
    kafka_fetch_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Most bytes the fetch responses of one replica may carry at once, shared equally by its
    group members (a quarter each with ROUTE_ISOLATION); with the batches in hand, what bounds
    the worker's memory (aiokafka's default is 50 MiB per consumer)."""
    kafka_max_partition_fetch_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Most bytes fetched per partition per request."""
    kafka_poll_timeout_ms: int = Field(default=500, ge=10)
    """How long a poll waits for records."""
    kafka_fetch_max_wait_ms: int = Field(default=100, ge=0, le=60_000)
    """How long the broker may hold a fetch request that finds no new records (aiokafka's
    fetch_max_wait_ms, default 500). While one is held, no other fetch goes to that broker, so
    this bounds how long a record published meanwhile can wait before it is fetched."""
    batch_linger_ms: int = Field(default=30, ge=0, le=10_000)
    """After a poll hands out fewer than KAFKA_MAX_BATCH_RECORDS records, wait this long for more
    before writing them (0: write at once): fewer, fuller writes and commits at a steady load.
    A batch holding a record of the first route of ROUTE_PRIORITY never waits."""
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)
    """The consumer group's session timeout."""
    kafka_heartbeat_interval_ms: int = Field(default=3000, ge=100)
    """The consumer group's heartbeat interval."""
    kafka_max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    """Longest time between polls before the member is dropped from the group."""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How the worker talks to the brokers."""
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism; required with a SASL_* protocol."""
    kafka_sasl_username: str | None = None
    """SASL user; required with a SASL_* protocol."""
    kafka_sasl_password: SecretStr | None = None
    """SASL password (a secret: never logged); required with a SASL_* protocol."""
    kafka_ssl_cafile: Path | None = None
    """CA bundle for SSL; the file must be readable."""
    kafka_ssl_certfile: Path | None = None
    """Client certificate for SSL; the file must be readable."""
    kafka_ssl_keyfile: Path | None = None
    """Client key for SSL; the file must be readable."""
    # Retries (tenacity), as in the persistence guide
    retry_max_attempts: int = Field(default=3, ge=1, le=100)
    """Attempts per bulk write (tenacity's stop_after_attempt)."""
    retry_backoff_coefficient: float = Field(default=1.0, gt=0)
    """wait_exponential's multiplier, in seconds: 1 s, 2 s, 4 s ... by default."""
    retry_initial_interval_ms: int = Field(default=1000, ge=0)
    """Shortest wait between attempts."""
    retry_max_interval_ms: int = Field(default=60_000, ge=1)
    """Longest wait between attempts (also caps the fail-closed pauses)."""
    fail_closed_routes: Annotated[frozenset[RouteName], NoDecode] = frozenset()
    """Comma-separated routes (validation, results, incidents, telemetry) that pause and wait
    for MongoDB instead of dead-lettering (persist_failed) when it is down; empty: all fail-open."""
    # Route isolation and priority (issue 14)
    route_isolation: bool = True
    """One Kafka consumer and batch loop per route, all in KAFKA_CONSUMER_GROUP: a backlog on one
    route never delays another. false: one consumer and loop for every topic."""
    route_priority: Annotated[tuple[RouteName, ...], NoDecode] = DEFAULT_ROUTE_PRIORITY
    """The routes from first served to last when MongoDB writes wait for a slot; routes left
    out follow in the default order."""
    mongodb_write_concurrency: int = Field(default=2, ge=1, le=64)
    """MongoDB writes in flight at once across the routes; a freed slot goes to the waiting
    write of the route first in ROUTE_PRIORITY, unless a write passed over 8 times waits: it
    goes first (worker.pipeline.write_gate.MAX_PASSES), so no route starves."""
    route_priority_hold_ms: int = Field(default=1000, ge=0, le=600_000)
    """While a route with a backlog (more than KAFKA_MAX_BATCH_RECORDS records of lag) is
    writing, the routes after it in ROUTE_PRIORITY wait up to this long for a write slot even
    when one is free. 0: a free slot always goes to a waiting write."""
    # Retention (TTL indexes), off by default as the guide says
    ttl_validation_audit_days: int | None = Field(default=None, ge=1)
    """When set, validation_audit's `timestamp` index becomes a TTL index: documents older than
    this many days are deleted. Unset: kept for ever (the guide's default)."""
    ttl_workflow_results_days: int | None = Field(default=None, ge=1)
    """The same on workflow_results' `consolidated_at`."""
    ttl_incidents_days: int | None = Field(default=None, ge=1)
    """The same on incidents' `timestamp`."""
    ttl_telemetry_buffer_days: int | None = Field(default=None, ge=1)
    """The same on telemetry_buffer's `buffered_at`."""
    # Telemetry redelivery (telemetry_buffer -> KAFKA_TELEMETRY_DELIVERY_TOPIC)
    redelivery_enabled: bool = True
    """Run the telemetry redelivery loop inside `run`; `telemetry redeliver` runs it alone whatever
    this says."""
    kafka_telemetry_delivery_topic: str = Field(default="observability.telemetry", min_length=1)
    """Where buffered telemetry is delivered (the observability pipeline's input)."""
    telemetry_max_delivery_attempts: int = Field(default=10, ge=1, le=1000)
    """Delivery attempts (claims) before a buffered document is parked."""
    redelivery_lease_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    """How long a claim holds a document; a crashed claimant's documents return after it."""
    redelivery_backoff_base_s: float = Field(default=1.0, gt=0, le=3600.0)
    """Wait before a failed document is tried again, the first time."""
    redelivery_backoff_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    """Growth of that wait per attempt."""
    redelivery_backoff_cap_s: float = Field(default=300.0, gt=0, le=86_400.0)
    """Longest wait between attempts of one document (not below the base)."""
    redelivery_batch_size: int = Field(default=100, ge=1, le=5000)
    """Documents claimed and published per round."""
    redelivery_idle_poll_s: float = Field(default=5.0, gt=0, le=3600.0)
    """Wait before looking again when nothing in the buffer is due."""
    telemetry_buffer_stats_interval_s: float = Field(default=15.0, gt=0, le=3600.0)
    """How often `run` and `telemetry redeliver` (when HTTP_PORT is not 0) sample the
    telemetry_buffer gauges (pending, parked, oldest pending age)."""
    # ---- ops (issue 13): periodic index health check ----
    index_check_interval_s: float = Field(default=300.0, ge=0, le=86_400.0)
    """How often `run` compares each collection's indexes with the expected ones (the
    persistence_indexes_missing gauge); 0 turns the check off."""
    # ---- end of ops settings ----
    # --- Kafka reading and telemetry de-duplication (issue 10, part C); one block for easy merges ---
    kafka_isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    """read_committed: records of aborted (and still open) transactions are never handed out."""
    telemetry_dedup_window_s: float = Field(default=86_400.0, ge=0, le=90 * 86_400.0)
    """How long a delivered telemetry document stays as a tombstone, so a re-read record is not
    delivered again; 0 deletes delivered documents at once (no de-duplication)."""
    # --- end of the block ---
    # Input limits
    max_event_bytes: int = Field(default=1_048_576, ge=64, le=16_000_000)
    """Larger record values are dead-lettered (`too_large`)."""
    max_nesting_depth: int = Field(default=64, ge=2, le=180)
    """Deeper JSON is dead-lettered (`too_deep`)."""
    # Process
    http_port: int = Field(default=8080, ge=0, le=65535)
    """Port of /metrics, /healthz and /readyz; 0 turns the HTTP server off."""
    health_stuck_after_s: float = Field(default=120.0, gt=0)
    """/healthz fails when the consumer loop has not polled for this long, or the redelivery
    loop is this long past the time it announced for its next batch or wait."""
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    """Bound on the SIGTERM drain; in-flight work is then cancelled and re-read by the next owner."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """The lowest level logged."""
    log_format: Literal["auto", "json", "console"] = "auto"
    """`auto`: console lines on a terminal, JSON lines otherwise."""
    # --- Settings validation (issue 11, settings part) ---
    settings_strict: bool = False
    """Variables that look like misspelled settings (MONGO_URI, FAIL_CLOSE_ROUTES, any unknown
    KAFKA_*) stop every command (exit 2) instead of a `settings_unknown_variable` warning."""
    # --- end of settings validation ---
    # --- Start-up and reachability (issue 11, part A: start-up, stopping, outages visible) ---
    mongodb_startup_timeout_s: float | None = Field(default=None, gt=0)
    """How long start-up waits for MongoDB (ping and indexes) before exiting 3; unset: for ever."""
    http_host: str = Field(default="0.0.0.0", min_length=1)
    """Address the HTTP server binds (all interfaces by default: probes come from outside the pod);
    failing to bind exits 3 before anything is consumed."""
    kafka_health_interval_s: float = Field(default=10.0, gt=0, le=3600.0)
    """How often Kafka is probed (a metadata request, which also times out after this long):
    `kafka_unavailable` / `kafka_available`, /readyz."""
    mongodb_health_interval_s: float = Field(default=10.0, gt=0, le=3600.0)
    """How often MongoDB is pinged once the worker runs: `mongodb_unavailable` /
    `mongodb_available`, /readyz."""
    library_log_interval_s: float = Field(default=60.0, gt=0, le=86_400.0)
    """Libraries' log lines (aiokafka, pymongo) go through the JSON logger as `library_log`, at most
    one per distinct message per interval, the next carrying `repeats_suppressed`."""
    # --- end of start-up and reachability ---

    @field_validator("fail_closed_routes", mode="before")
    @classmethod
    def _split_routes(cls, value: object) -> object:
        return frozenset(_route_names(value)) if isinstance(value, str) else value

    @field_validator("route_priority", mode="before")
    @classmethod
    def _split_priority(cls, value: object) -> object:
        return tuple(_route_names(value)) if isinstance(value, str) else value

    @field_validator("route_priority")
    @classmethod
    def _complete_priority(cls, value: tuple[RouteName, ...]) -> tuple[RouteName, ...]:
        """Each route once; those left out follow in the default order."""
        repeated = sorted({route.value for route in value if value.count(route) > 1})
        if repeated:
            raise ValueError(f"names a route more than once: {', '.join(repeated)}")
        return (*value, *(route for route in DEFAULT_ROUTE_PRIORITY if route not in value))

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(*SECRET_FIELDS, mode="before")
    @classmethod
    def _remember_secrets(cls, value: object, info: ValidationInfo) -> object:
        """Let the log scrubber know each secret (the URI's password) before any message can hold it."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str):
            remember = remember_uri_password if info.field_name == "mongodb_uri" else remember_secret
            remember(raw)
        return value

    @field_validator("mongodb_uri")
    @classmethod
    def _uri_syntax(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("is empty; give a mongodb:// or mongodb+srv:// connection string, or unset it")
        problem = mongodb_uri_problem(value.get_secret_value())
        if problem is not None:
            raise ValueError(f"not a MongoDB connection string: {problem}")
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        return _checked(value, bootstrap_servers_problem)

    @field_validator("http_host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _checked(value, host_problem)

    @field_validator("mongodb_database")
    @classmethod
    def _database_name(cls, value: str) -> str:
        return _checked(value, database_name_problem)

    @field_validator(*SASL_FIELDS, *SSL_FILE_FIELDS, mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        # A manifest's `KAFKA_SSL_CAFILE: ""` means "not set", not the current directory.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(*SSL_FILE_FIELDS)
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        return readable_file(value)

    @model_validator(mode="after")
    def _settings_go_together(self) -> Settings:
        problems = cross_field_problems(dict(self))
        if problems:
            raise CrossFieldProblems(problems)
        return self

    def topic_for(self, route: RouteName) -> str:
        return {
            RouteName.VALIDATION: self.kafka_topic_validation,
            RouteName.RESULTS: self.kafka_topic_results,
            RouteName.INCIDENTS: self.kafka_topic_incidents,
            RouteName.TELEMETRY: self.kafka_topic_telemetry,
        }[route]

    def dlq_topic(self, topic: str) -> str:
        return f"{topic}{self.kafka_dlq_suffix}"

    def ttl_days(self) -> dict[str, int | None]:
        """Retention per collection, in days (None: kept for ever)."""
        return {
            VALIDATION_AUDIT: self.ttl_validation_audit_days,
            WORKFLOW_RESULTS: self.ttl_workflow_results_days,
            INCIDENTS: self.ttl_incidents_days,
            TELEMETRY_BUFFER: self.ttl_telemetry_buffer_days,
        }

    def mongodb_uri_for_logs(self) -> str:
        return redact_uri(self.mongodb_uri.get_secret_value())

    def mongodb_hosts(self) -> str:
        """`host:port[,host:port]` of MONGODB_URI, for messages (never credentials)."""
        return mongodb_hosts(self.mongodb_uri.get_secret_value())


def load_settings() -> tuple[Settings, list[UnknownVariable]]:
    """The settings from the environment and the variables that look misspelled.

    Raises SettingsError (one line per problem) for a bad value, or for a suspect variable
    when SETTINGS_STRICT is on.
    """
    unknown = unknown_variables()
    try:
        settings = Settings()
    except ValidationError as exc:
        notes = [f"note: {variable.describe()}" for variable in unknown]
        raise SettingsError([*settings_error_lines(exc), *notes]) from None
    if settings.settings_strict and unknown:
        raise SettingsError([f"configuration error: {v.describe()} (SETTINGS_STRICT=true)" for v in unknown])
    return settings, unknown


def unknown_variables() -> list[UnknownVariable]:
    """The environment's variables that are not settings but look like misspelled ones."""
    return find_unknown_variables(os.environ, Settings.model_fields)
