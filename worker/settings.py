"""All configuration, read from the environment: the only module that does so.

Every field's environment variable is its name upper-cased. The README's configuration
table lists them with their defaults; `format_settings_error` turns a bad value into one
line naming the variable, and never echoes a secret.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.redact import redact_uri


class RouteName(StrEnum):
    """The four input routes; names used by FAIL_CLOSED_ROUTES."""

    VALIDATION = "validation"
    RESULTS = "results"
    INCIDENTS = "incidents"
    TELEMETRY = "telemetry"


SECRET_FIELDS = frozenset({"mongodb_uri", "kafka_sasl_password"})


class Settings(BaseSettings):
    """The worker's settings; see the README table for each one's meaning."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # MongoDB
    mongodb_uri: SecretStr = SecretStr("mongodb://localhost:27017")
    mongodb_database: str = Field(default="orchestrator", min_length=1)
    mongodb_server_selection_timeout_ms: int = Field(default=5000, ge=100)
    # Kafka
    kafka_bootstrap_servers: str = Field(default="localhost:9092", min_length=1)
    kafka_consumer_group: str = Field(default="persistence-worker", min_length=1)
    kafka_client_id: str = "persistence-worker"
    kafka_topic_validation: str = "orchestrator.validation"
    kafka_topic_results: str = "orchestrator.results"
    kafka_topic_incidents: str = "orchestrator.incidents"
    kafka_topic_telemetry: str = "orchestrator.telemetry"
    kafka_dlq_suffix: str = Field(default=".dlq", min_length=1)
    kafka_auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    kafka_max_batch_records: int = Field(default=1000, ge=1, le=100_000)
    # Prefetched, not yet handed-out records are what bounds memory besides the batch in hand.
    kafka_fetch_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    kafka_max_partition_fetch_bytes: int = Field(default=1024 * 1024, ge=1024)
    kafka_poll_timeout_ms: int = Field(default=500, ge=10)
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(default=3000, ge=100)
    kafka_max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    # Retries (tenacity), as in the persistence guide
    retry_max_attempts: int = Field(default=3, ge=1, le=100)
    retry_backoff_coefficient: float = Field(default=1.0, gt=0)
    retry_initial_interval_ms: int = Field(default=1000, ge=0)
    retry_max_interval_ms: int = Field(default=60_000, ge=1)
    fail_closed_routes: Annotated[frozenset[RouteName], NoDecode] = frozenset()
    # Retention (TTL indexes), off by default as the guide says
    ttl_validation_audit_days: int | None = Field(default=None, ge=1)
    ttl_workflow_results_days: int | None = Field(default=None, ge=1)
    ttl_incidents_days: int | None = Field(default=None, ge=1)
    ttl_telemetry_buffer_days: int | None = Field(default=None, ge=1)
    # Telemetry redelivery (telemetry_buffer -> KAFKA_TELEMETRY_DELIVERY_TOPIC)
    redelivery_enabled: bool = True
    """Run the redelivery loop inside `run`; `redeliver` runs it alone whatever this says."""
    kafka_telemetry_delivery_topic: str = Field(default="observability.telemetry", min_length=1)
    telemetry_max_delivery_attempts: int = Field(default=10, ge=1, le=1000)
    """Delivery attempts (claims) before a buffered document is parked."""
    redelivery_lease_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    """How long a claim holds a document; a crashed claimant's documents return after it."""
    redelivery_backoff_base_s: float = Field(default=1.0, gt=0, le=3600.0)
    redelivery_backoff_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    redelivery_backoff_cap_s: float = Field(default=300.0, gt=0, le=86_400.0)
    redelivery_batch_size: int = Field(default=100, ge=1, le=5000)
    redelivery_idle_poll_s: float = Field(default=5.0, gt=0, le=3600.0)
    """Wait before looking again when nothing in the buffer is due."""
    telemetry_buffer_stats_interval_s: float = Field(default=15.0, gt=0, le=3600.0)
    """How often the telemetry_buffer gauges (pending, parked, oldest pending age) are sampled."""
    # --- Kafka reading and telemetry de-duplication (issue 10, part C); one block for easy merges ---
    kafka_isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    """read_committed: records of aborted (and still open) transactions are never handed out."""
    telemetry_dedup_window_s: float = Field(default=86_400.0, ge=0, le=90 * 86_400.0)
    """How long a delivered telemetry document stays as a tombstone, so a re-read record is not
    delivered again; 0 deletes delivered documents at once (no de-duplication)."""
    # --- end of the block ---
    # Input limits
    max_event_bytes: int = Field(default=1_048_576, ge=64, le=16_000_000)
    max_nesting_depth: int = Field(default=64, ge=2, le=180)
    # Process
    http_port: int = Field(default=8080, ge=0, le=65535)
    """Port of /metrics, /healthz and /readyz; 0 turns the HTTP server off."""
    health_stuck_after_s: float = Field(default=120.0, gt=0)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("fail_closed_routes", mode="before")
    @classmethod
    def _split_routes(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _backoff_cap_not_below_base(self) -> Settings:
        if self.redelivery_backoff_cap_s < self.redelivery_backoff_base_s:
            raise ValueError("REDELIVERY_BACKOFF_CAP_S must be at least REDELIVERY_BACKOFF_BASE_S")
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
            "validation_audit": self.ttl_validation_audit_days,
            "workflow_results": self.ttl_workflow_results_days,
            "incidents": self.ttl_incidents_days,
            "telemetry_buffer": self.ttl_telemetry_buffer_days,
        }

    def mongodb_uri_for_logs(self) -> str:
        return redact_uri(self.mongodb_uri.get_secret_value())


def format_settings_error(error: ValidationError) -> str:
    """One line per wrong variable: its name, what is wrong, and the value unless secret."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        shown = "<hidden>" if field in SECRET_FIELDS else repr(item.get("input"))
        lines.append(f"configuration error: {field.upper()}: {item['msg']} (got {shown})")
    return "\n".join(lines)
