"""The command line's answers to mistakes: one line per wrong variable and exit 2, `config`,
`--version`, and an unplanned error as one line with exit 70; never a secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from worker.commands import cli
from worker.commands.exits import ExitCode
from worker.ops.about import worker_version

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Zebra-4711-pw"
SASL_PASSWORD = "sasl-Quokka-99"
SECRET_URI = f"mongodb://admin:{PASSWORD}@db1.internal:27017/?authSource=admin"
SASL = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "svc",
    "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
}


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env}, timeout=60, cwd=ROOT)  # fmt: skip


def assert_no_secret(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert PASSWORD not in output and SASL_PASSWORD not in output


BAD_SETTINGS = {
    "empty-uri": ({"MONGODB_URI": ""}, ["MONGODB_URI"]),
    "unparsable-uri": ({"MONGODB_URI": f"mongodb://admin:{PASSWORD}@db1:99999"}, ["MONGODB_URI"]),
    "sasl-without-credentials": (
        {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
        ["KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"],
    ),
    "missing-ca-file": ({**SASL, "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, ["KAFKA_SSL_CAFILE"]),
    "cap-below-base": (
        {
            **SASL,
            "MONGODB_URI": SECRET_URI,
            "REDELIVERY_BACKOFF_CAP_S": "1",
            "REDELIVERY_BACKOFF_BASE_S": "5",
        },
        ["REDELIVERY_BACKOFF_CAP_S"],
    ),
    "bad-number": ({"MONGODB_URI": SECRET_URI, "RETRY_MAX_ATTEMPTS": "three"}, ["RETRY_MAX_ATTEMPTS"]),
}


@pytest.mark.parametrize(("env", "variables"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_each_kind_of_bad_setting_is_one_line_per_variable_and_exit_2(
    env: dict[str, str], variables: list[str]
) -> None:
    """A bad value, URI, SASL combination, certificate path or cross-field pair: exit 2, no traceback, no secret."""
    result = run_cli("indexes", "check", **env)
    assert result.returncode == ExitCode.CONFIGURATION
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ")[1] for line in lines] == variables
    assert all(line.startswith("configuration error: ") for line in lines)
    assert_no_secret(result)


def test_strict_mode_refuses_a_misspelled_variable() -> None:
    """With SETTINGS_STRICT=true, MONGO_URI stops the command with exit 2 naming MONGODB_URI."""
    result = run_cli("check", SETTINGS_STRICT="true", MONGO_URI=SECRET_URI)
    assert result.returncode == ExitCode.CONFIGURATION
    assert result.stderr.strip() == (
        "configuration error: MONGO_URI is not a setting and is ignored; did you mean MONGODB_URI? "
        "(SETTINGS_STRICT=true)"
    )


def test_version_prints_the_installed_version() -> None:
    """`persistence-worker --version` prints the program name and the package version, exit 0."""
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"persistence-worker {worker_version()}"
    assert worker_version() != "unknown"


def test_config_shows_values_sources_and_misspellings_without_secrets() -> None:
    """`config` prints every setting with its source, the URI without credentials, and suspect variables."""
    result = run_cli("config", MONGODB_URI=SECRET_URI, FAIL_CLOSE_ROUTES="incidents", **SASL)
    assert result.returncode == 0
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line[:1].isupper()}
    assert rows["MONGODB_URI"] == ["mongodb://***@db1.internal:27017/?authSource=admin", "environment"]
    assert rows["KAFKA_SASL_PASSWORD"] == ["<hidden>", "environment"]
    assert rows["MONGODB_DATABASE"] == ["orchestrator", "default"]
    assert (
        "FAIL_CLOSE_ROUTES is not a setting and is ignored; did you mean FAIL_CLOSED_ROUTES?" in result.stdout
    )
    assert result.stderr == ""
    assert_no_secret(result)


@pytest.mark.usefixtures("restore_structlog")
def test_an_unexpected_error_is_one_line_and_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error no code path planned for prints one scrubbed line, no traceback, and exits 70."""

    async def broken(*_args: object) -> int:
        raise RuntimeError(f"unplanned\nwhile using {SECRET_URI}")

    monkeypatch.setattr("worker.commands.check.check_command", broken)
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert cli.main(["check"]) == ExitCode.INTERNAL
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "internal error: RuntimeError: unplanned while using mongodb://***@db1.internal:27017/?authSource=admin "
        "(LOG_LEVEL=DEBUG shows the stack); please report it"
    ]


@pytest.mark.usefixtures("restore_structlog")
def test_an_unexpected_error_shows_its_stack_at_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With LOG_LEVEL=DEBUG the scrubbed stack comes before the one line, still exit 70."""

    async def broken(*_args: object) -> int:
        raise RuntimeError(f"unplanned at {SECRET_URI}")

    monkeypatch.setattr("worker.commands.check.check_command", broken)
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert cli.main(["check"]) == ExitCode.INTERNAL
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert PASSWORD not in err


@pytest.mark.usefixtures("restore_structlog")
def test_ctrl_c_outside_a_command_s_own_handling_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyboardInterrupt reaching the top level exits 130 (interrupted), not with a traceback."""

    async def interrupted(*_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("worker.commands.check.check_command", interrupted)
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert cli.main(["check"]) == ExitCode.INTERRUPTED


def test_startup_facts_name_version_and_servers_without_credentials() -> None:
    """`startup_facts` gives `worker_started` the version, brokers, MongoDB hosts and database, no password."""
    from worker.ops.about import startup_facts
    from worker.settings import Settings

    settings = Settings(mongodb_uri=SECRET_URI, kafka_bootstrap_servers="k1:9092,k2:9092")
    assert startup_facts(settings) == {
        "version": worker_version(),
        "bootstrap_servers": "k1:9092,k2:9092",
        "mongodb_hosts": "db1.internal:27017",
        "database": "orchestrator",
    }


def test_config_prints_values_as_an_operator_types_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each value `config` prints, given back as its variable, loads the same setting (enums by value, lists comma-separated, true/false, unset empty)."""
    from worker.commands.check import HIDDEN, effective_settings
    from worker.settings import Settings

    given = {"ROUTE_PRIORITY": "telemetry,incidents", "FAIL_CLOSED_ROUTES": "results,incidents",
             "ROUTE_ISOLATION": "false", "LOG_LEVEL": "debug", "TTL_INCIDENTS_DAYS": "30"}  # fmt: skip
    settings = Settings(**{name.lower(): value for name, value in given.items()})
    shown = {name: value for name, value, _ in effective_settings(settings)}
    assert shown["ROUTE_PRIORITY"] == "telemetry,incidents,results,validation"
    assert shown["FAIL_CLOSED_ROUTES"] == "incidents,results"
    assert (shown["ROUTE_ISOLATION"], shown["LOG_LEVEL"]) == ("false", "DEBUG")
    assert (
        shown["TTL_INCIDENTS_DAYS"],
        shown["TTL_VALIDATION_AUDIT_DAYS"],
        shown["KAFKA_SASL_PASSWORD"],
    ) == ("30", "", "")
    typed = {
        name: value for name, value in shown.items() if value and value != HIDDEN and name != "MONGODB_URI"
    }
    for name, value in typed.items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings


def test_a_misspelled_variable_is_reported_once_by_check() -> None:
    """`check` names a misspelled variable in one line, not a log warning as well."""
    result = run_cli("check", MONGO_URL="mongodb://elsewhere/", MONGODB_URI="mongodb://127.0.0.1:1/",
                     KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", MONGODB_SERVER_SELECTION_TIMEOUT_MS="300",
                     LOG_FORMAT="json")  # fmt: skip
    assert result.returncode == ExitCode.UNREACHABLE
    [line] = [line for line in result.stderr.splitlines() if "MONGO_URL" in line]
    assert "did you mean MONGODB_URI?" in line


@pytest.mark.usefixtures("restore_structlog")
@pytest.mark.parametrize("servers", ["nonsense::", "host:abc", "[::1", "a:99999"])
@pytest.mark.parametrize("command", ["config", "check"])
def test_a_malformed_kafka_address_is_a_usage_error_for_every_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str, servers: str
) -> None:
    """A KAFKA_BOOTSTRAP_SERVERS aiokafka cannot parse is exit 2 and one line naming it, from `config` as from `check`."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", servers)
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert cli.main([command]) == ExitCode.CONFIGURATION
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("configuration error: KAFKA_BOOTSTRAP_SERVERS: ")
