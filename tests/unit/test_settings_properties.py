"""Properties of the address- and URI-typed settings (KAFKA_BOOTSTRAP_SERVERS, MONGODB_URI, HTTP_HOST):
whatever string one holds, `config` and `run` end with exit 0 or 2, never 70, and never print a password."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import structlog
from aiokafka.conn import collect_hosts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import worker.ops.logging
from worker.commands import cli
from worker.commands.exits import ExitCode
from worker.ops.redaction import forget_secrets
from worker.settings import Settings

# PyMongo's client warns about a repeated URI option, as it will in production; not what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore:Duplicate URI option:UserWarning")
PASSWORD = "Quokka-Secret-9"
ENV_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)
"""What an environment variable can hold: any text but NUL and lone surrogates."""
HOSTS = st.sampled_from(
    ["localhost", "k1.svc", "kafka_1.", "10.0.0.1", "::1", "[::1]", "[fe80::1%eth0]", "[fe80::1%é]", "",
     "a..b", ".a", "-a", "a" * 64, "é.example", "a b", "[zz]"]
) | ENV_TEXT  # fmt: skip
PORTS = (
    st.integers(-5, 70_000).map(str)
    | st.sampled_from(["", "abc", "+5", " 9092", "\u0665", "0x10"])
    | ENV_TEXT
)
ENTRIES = st.builds(
    lambda host, sep, port: f"{host}{sep}{port}", HOSTS, st.sampled_from([":", "", "::"]), PORTS
)
SERVERS = ENV_TEXT | st.lists(ENTRIES, min_size=1, max_size=3).map(",".join).map(lambda s: f" {s} ")
OPTIONS = st.sampled_from(
    ["w", "journal", "tls", "tlsCAFile", "tlsInsecure", "tlsAllowInvalidCertificates", "authMechanism",
     "authSource", "authMechanismProperties", "readPreference", "maxStalenessSeconds", "readPreferenceTags",
     "replicaSet", "directConnection", "loadBalanced", "appname", "srvMaxHosts", "connectTimeoutMS",
     "timeoutMS", "compressors", "wTimeoutMS", "uuidRepresentation", "retryWrites"]
)  # fmt: skip
VALUES = st.sampled_from(
    ["0", "1", "2", "-1", "majority", "true", "false", "SCRAM-SHA-256", "MONGODB-X509", "GSSAPI", "PLAIN",
     "MONGODB-OIDC", "primary", "secondary", "/etc/hosts", "/nonexistent", "zlib", "x:y", "", "é"]
) | ENV_TEXT  # fmt: skip
QUERIES = st.lists(st.tuples(OPTIONS, VALUES), max_size=3).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
)
USERS = st.sampled_from(["", "user@", f"user:{PASSWORD}@", f"user:{PASSWORD}/x@", f":{PASSWORD}@", ":@"])
URIS = ENV_TEXT | st.builds(
    lambda scheme, user, host, path, query: f"{scheme}{user}{host}{path}{'?' if query else ''}{query}",
    st.sampled_from(["mongodb://", "mongodb+srv://", "mongo://", ""]), USERS, HOSTS | ENTRIES,
    st.sampled_from(["", "/", "/db", "/a b", "/a.b"]), QUERIES,
)  # fmt: skip


async def stop_before_connecting(_gateway: Any, settings: Settings, _stop: Any, _mongodb: Any) -> bool:
    """`run`'s wait for MongoDB, replaced: read the addresses as aiokafka and the resolver will, then stop."""
    for host, port, _family in collect_hosts(settings.kafka_bootstrap_servers):
        host.encode("idna")  # what socket.getaddrinfo does first; a ValueError here would be exit 70
        assert 0 < port < 65536
    settings.http_host.encode("idna")
    return False


CONFIGURE_LOGGING = worker.ops.logging.configure_logging


def configure_logging_uncached(**options: Any) -> None:
    """The real configuration, but no logger keeps it after the example (as cache_logger_on_first_use would)."""
    CONFIGURE_LOGGING(**options)
    structlog.configure(cache_logger_on_first_use=False)


@contextmanager
def process_state_kept() -> Iterator[None]:
    """Put back what a command changes in the process: logging, structlog, SIGTERM, remembered secrets."""
    root = logging.getLogger()
    handlers, level, config = list(root.handlers), root.level, structlog.get_config()
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        root.handlers[:], root.level = handlers, level
        structlog.configure(**config)
        signal.signal(signal.SIGTERM, sigterm)
        forget_secrets()


def exit_codes(variable: str, value: str, capfd: pytest.CaptureFixture[str]) -> tuple[int, int, str]:
    """`config`'s and `run`'s exit codes with `variable=value`, and all they printed."""
    with pytest.MonkeyPatch.context() as patch, process_state_kept():
        patch.setenv(variable, value)
        patch.setenv("HTTP_PORT", "0")
        patch.setenv("LOG_FORMAT", "json")
        patch.setattr("worker.app.wait_for_mongodb", stop_before_connecting)
        patch.setattr("worker.ops.logging.configure_logging", configure_logging_uncached)
        config = cli.main(["config"])
        run = cli.main(["run"])
    out, err = capfd.readouterr()
    return config, run, out + err


PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(SERVERS)
def test_any_bootstrap_servers_value_exits_0_or_2(capfd: pytest.CaptureFixture[str], value: str) -> None:
    """Whatever KAFKA_BOOTSTRAP_SERVERS holds, `config` and `run` agree on exit 0 or 2 (a usage error), never 70."""
    config, run, output = exit_codes("KAFKA_BOOTSTRAP_SERVERS", value, capfd)
    assert config == run and config in (ExitCode.OK, ExitCode.CONFIGURATION), output


@PROPERTY
@given(URIS)
def test_any_mongodb_uri_exits_0_or_2_and_never_shows_its_password(
    capfd: pytest.CaptureFixture[str], value: str
) -> None:
    """Whatever MONGODB_URI holds, `config` and `run` agree on exit 0 or 2, and print no password in it."""
    config, run, output = exit_codes("MONGODB_URI", value, capfd)
    assert config == run and config in (ExitCode.OK, ExitCode.CONFIGURATION), output
    assert PASSWORD not in output


@PROPERTY
@given(HOSTS)
def test_any_http_host_exits_0_or_2(capfd: pytest.CaptureFixture[str], value: str) -> None:
    """Whatever HTTP_HOST holds, `config` and `run` agree on exit 0 or 2, never 70."""
    config, run, output = exit_codes("HTTP_HOST", value, capfd)
    assert config == run and config in (ExitCode.OK, ExitCode.CONFIGURATION), output
