"""Specification of worker.settings: defaults, parsing from the environment, and error messages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from worker.settings import RouteName, Settings
from worker.settings_checks import format_settings_error

SECRET_URI = "mongodb://admin:hunter2-secret@db.internal:27017/?authSource=admin"


def settings_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    return format_settings_error(caught.value)


def test_retry_defaults_follow_the_persistence_guide() -> None:
    """By default a write is tried 3 times, waiting 1 s then doubling, capped at 60 s."""
    settings = Settings()
    assert settings.retry_max_attempts == 3
    assert settings.retry_backoff_coefficient == 1
    assert settings.retry_initial_interval_ms == 1000
    assert settings.retry_max_interval_ms == 60_000


def test_routing_defaults() -> None:
    """By default every route is fail-open and dead letters go to `<topic>.dlq`."""
    settings = Settings()
    assert settings.fail_closed_routes == frozenset()
    assert settings.kafka_dlq_suffix == ".dlq"
    assert settings.dlq_topic("orchestrator.results") == "orchestrator.results.dlq"


def test_each_route_reads_its_topic_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """`topic_for` answers the topic configured for each route, e.g. KAFKA_TOPIC_INCIDENTS."""
    monkeypatch.setenv("KAFKA_TOPIC_INCIDENTS", "prod.incidents")
    settings = Settings()
    assert settings.topic_for(RouteName.INCIDENTS) == "prod.incidents"
    assert settings.topic_for(RouteName.VALIDATION) == "orchestrator.validation"
    assert settings.topic_for(RouteName.RESULTS) == "orchestrator.results"
    assert settings.topic_for(RouteName.TELEMETRY) == "orchestrator.telemetry"


def test_variables_are_read_case_insensitively(monkeypatch: pytest.MonkeyPatch) -> None:
    """RETRY_MAX_ATTEMPTS=5 in the environment sets retry_max_attempts."""
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = Settings()
    assert settings.retry_max_attempts == 5
    assert settings.log_level == "DEBUG"


def test_fail_closed_routes_is_a_comma_separated_case_insensitive_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FAIL_CLOSED_ROUTES="incidents, RESULTS" names the incidents and results routes."""
    monkeypatch.setenv("FAIL_CLOSED_ROUTES", "incidents, RESULTS")
    assert Settings().fail_closed_routes == {RouteName.INCIDENTS, RouteName.RESULTS}


@pytest.mark.parametrize("value", ["", " , "])
def test_an_empty_fail_closed_routes_means_none(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """An empty FAIL_CLOSED_ROUTES (or only separators) makes every route fail-open."""
    monkeypatch.setenv("FAIL_CLOSED_ROUTES", value)
    assert Settings().fail_closed_routes == frozenset()


def test_an_unknown_route_name_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown name in FAIL_CLOSED_ROUTES is a configuration error on that variable and value."""
    message = settings_error(monkeypatch, FAIL_CLOSED_ROUTES="incidents,audit")
    assert message.startswith("configuration error: FAIL_CLOSED_ROUTES: ")
    assert "'audit'" in message


def test_a_bad_value_gives_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """One wrong variable gives exactly one line with its upper-case name, the problem and the value."""
    message = settings_error(monkeypatch, RETRY_MAX_ATTEMPTS="three")
    assert "\n" not in message
    assert message.startswith("configuration error: RETRY_MAX_ATTEMPTS: ")
    assert "'three'" in message


def test_each_bad_variable_gets_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two wrong variables give two lines, one per variable."""
    message = settings_error(monkeypatch, RETRY_MAX_ATTEMPTS="0", LOG_FORMAT="xml")
    lines = message.splitlines()
    assert len(lines) == 2
    assert {line.split(": ")[1] for line in lines} == {"RETRY_MAX_ATTEMPTS", "LOG_FORMAT"}


def test_the_error_message_never_shows_the_mongodb_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """A configuration error elsewhere does not echo MONGODB_URI or its password."""
    message = settings_error(monkeypatch, MONGODB_URI=SECRET_URI, KAFKA_MAX_BATCH_RECORDS="0")
    assert "hunter2" not in message
    assert "db.internal" not in message


@pytest.mark.parametrize("field", ["mongodb_uri", "kafka_sasl_password"])
def test_an_invalid_secret_is_named_but_its_value_hidden(field: str) -> None:
    """When a secret itself is invalid, the line names it and shows `<hidden>` instead of its value."""
    with pytest.raises(ValidationError) as caught:
        Settings(**{field: ["mongodb://admin:hunter2@db"]})  # type: ignore[arg-type]
    message = format_settings_error(caught.value)
    assert message.startswith(f"configuration error: {field.upper()}: ")
    assert "(got <hidden>)" in message
    assert "hunter2" not in message


def test_the_mongodb_uri_is_secret_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings object's repr does not reveal MONGODB_URI."""
    monkeypatch.setenv("MONGODB_URI", SECRET_URI)
    settings = Settings()
    assert "hunter2" not in repr(settings)
    assert settings.mongodb_uri.get_secret_value() == SECRET_URI


def test_the_mongodb_uri_for_logs_hides_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mongodb_uri_for_logs` keeps host and options but hides user and password."""
    monkeypatch.setenv("MONGODB_URI", SECRET_URI)
    assert Settings().mongodb_uri_for_logs() == "mongodb://***@db.internal:27017/?authSource=admin"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RETRY_MAX_ATTEMPTS", "0"),
        ("RETRY_BACKOFF_COEFFICIENT", "0"),
        ("RETRY_INITIAL_INTERVAL_MS", "-1"),
        ("KAFKA_AUTO_OFFSET_RESET", "none"),
        ("MAX_NESTING_DEPTH", "1"),
        ("KAFKA_DLQ_SUFFIX", ""),
    ],
)
def test_out_of_range_values_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    """Values outside a setting's allowed range are configuration errors on that variable."""
    assert f": {variable}: " in settings_error(monkeypatch, **{variable: value})


def test_a_model_level_error_does_not_echo_the_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backoff cap below its base names REDELIVERY_BACKOFF_CAP_S and shows neither MONGODB_URI nor its password."""
    message = settings_error(
        monkeypatch, MONGODB_URI=SECRET_URI, REDELIVERY_BACKOFF_BASE_S="10", REDELIVERY_BACKOFF_CAP_S="5"
    )
    assert "REDELIVERY_BACKOFF_CAP_S" in message
    assert "hunter2" not in message and "db.internal" not in message
