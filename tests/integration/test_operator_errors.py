"""Every command as a process, driven into its error paths: the secrets in MONGODB_URI and
KAFKA_SASL_PASSWORD never appear in its output, and each failure is one line naming the
server, the reason and the variable to check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from worker.commands.exits import ExitCode

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Zebra-4711-pw"
SASL_PASSWORD = "sasl-Quokka-99"
SASL = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "svc",
    "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
}
COMMANDS: dict[str, tuple[str, ...]] = {
    "check": ("check",),
    "indexes-check": ("indexes", "check"),
    "indexes-ensure": ("indexes", "ensure"),
    "query": ("query", "validations"),
    "replay-dry-run": ("replay", "--dry-run"),
    "replay": ("replay",),
    "dlq-replay": ("dlq", "replay", "--dry-run"),
    "redeliver-once": ("redeliver", "--once"),
    "config": ("config",),
    "run": ("run",),
}
UNREACHABLE_EXIT = {name: ExitCode.UNREACHABLE for name in COMMANDS} | {"config": ExitCode.OK}


def run_cli(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "MONGODB_", "MONGO_"))}
    # `run` and `telemetry redeliver` wait for MongoDB at start-up; bounded here, they exit 3 after it.
    base = {"MONGODB_SERVER_SELECTION_TIMEOUT_MS": "300", "MONGODB_STARTUP_TIMEOUT_S": "3", "HTTP_PORT": "0",
            "LOG_FORMAT": "json"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "worker", *args], capture_output=True, text=True,
                          env={**clean, **base, **env}, timeout=120, cwd=ROOT)  # fmt: skip


def assert_no_secret(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert PASSWORD not in output, output
    assert SASL_PASSWORD not in output, output


def unreachable_env() -> dict[str, str]:
    return {"MONGODB_URI": f"mongodb://admin:{PASSWORD}@127.0.0.1:1/", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:2",
            **SASL}  # fmt: skip


def refusing_env(kafka_bootstrap: str, mongo_uri: str) -> dict[str, str]:
    host, _, options = mongo_uri.split("://", 1)[1].partition("/")
    options = "&".join(filter(None, (options.lstrip("?"), "authSource=admin")))
    return {"MONGODB_URI": f"mongodb://admin:{PASSWORD}@{host}/?{options}",
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, **SASL}  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_prints_a_secret_when_the_servers_are_unreachable(command: str) -> None:
    """With both servers unreachable each command exits 3 (config 0) and prints neither password."""
    result = run_cli(COMMANDS[command], unreachable_env())
    assert_no_secret(result)
    assert result.returncode == UNREACHABLE_EXIT[command], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.both_mongo
@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_prints_a_secret_when_the_servers_refuse_the_credentials(
    command: str, kafka_bootstrap: str, mongo_uri: str
) -> None:
    """Against servers that refuse (or cannot check) the credentials, no command prints either password."""
    result = run_cli(COMMANDS[command], refusing_env(kafka_bootstrap, mongo_uri))
    assert_no_secret(result)
    assert "Traceback" not in result.stderr


@pytest.mark.both_mongo
@pytest.mark.standin_deviation(
    server="nx-27017",
    raises=AssertionError,
    reason="nx-27017 has no SCRAM: PyMongo's handshake fails with KeyError 'payload' (exit 70) instead of "
    "OperationFailure 18",
)
def test_refused_mongodb_authentication_is_named_with_exit_3(kafka_bootstrap: str, mongo_uri: str) -> None:
    """A MongoDB that refuses the user and password gives exit 3 and says so, naming MONGODB_URI."""
    env = refusing_env(kafka_bootstrap, mongo_uri)
    result = run_cli(("query", "validations"), env)
    assert result.returncode == ExitCode.UNREACHABLE, result.stderr
    assert "refused us (authentication failed); check the user, password and authSource in MONGODB_URI" in (
        result.stderr
    )


def test_check_names_each_unreachable_server_in_one_line() -> None:
    """`check` prints one line per server: where, why in a few words, which variable; no topology dump."""
    env = {
        "MONGODB_URI": f"mongodb://admin:{PASSWORD}@127.0.0.1:1/",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:2",
    }
    result = run_cli(("check",), env)
    assert result.returncode == ExitCode.UNREACHABLE
    lines = [line for line in result.stderr.splitlines() if line.startswith("not ok: ")]
    assert sorted(lines) == [
        "not ok: cannot reach Kafka at 127.0.0.1:2 (no broker answered); check KAFKA_BOOTSTRAP_SERVERS",
        "not ok: cannot reach MongoDB at 127.0.0.1:1 (connection refused); check MONGODB_URI",
    ]
    assert "Topology" not in result.stderr


def test_check_prints_no_library_line_unless_log_level_is_debug() -> None:
    """Against refused ports `check` prints its own two lines and nothing of aiokafka's; LOG_LEVEL=DEBUG adds them."""
    env = {"MONGODB_URI": "mongodb://127.0.0.1:1/", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:2"}
    quiet = run_cli(("check",), env)
    assert quiet.returncode == ExitCode.UNREACHABLE
    assert quiet.stdout == "" and [line[:23] for line in quiet.stderr.splitlines()] == [
        "not ok: cannot reach Ka", "not ok: cannot reach Mo",
    ]  # fmt: skip
    loud = run_cli(("check",), {**env, "LOG_LEVEL": "DEBUG"})
    assert '"event":"library_log"' in loud.stderr


def test_the_topology_dump_is_logged_at_debug_only() -> None:
    """With LOG_LEVEL=DEBUG the driver's full message follows as a `server_failure_detail` log line."""
    env = {"MONGODB_URI": "mongodb://127.0.0.1:1/", "LOG_LEVEL": "DEBUG"}
    result = run_cli(("indexes", "check"), env)
    assert result.returncode == ExitCode.UNREACHABLE
    records = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    details = [r["detail"] for r in records if r.get("event") == "server_failure_detail"]
    assert details and "Topology Description" in details[0]


def test_a_misspelled_variable_is_warned_about_at_start_up() -> None:
    """MONGO_URI set instead of MONGODB_URI gives a `settings_unknown_variable` warning naming MONGODB_URI."""
    env = {"MONGO_URI": "mongodb://127.0.0.1:1/", "MONGODB_URI": "mongodb://127.0.0.1:1/"}
    result = run_cli(("indexes", "check"), env)
    records = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    warnings = [r for r in records if r.get("event") == "settings_unknown_variable"]
    assert warnings == [
        {**warnings[0], "variable": "MONGO_URI", "did_you_mean": "MONGODB_URI", "level": "warning"}
    ]
