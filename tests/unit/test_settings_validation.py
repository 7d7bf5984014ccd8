"""Specification of settings validation: misspelled variables, URI syntax, SASL/SSL combinations,
certificate files, and error lines that never carry a secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.ops.redaction import forget_secrets
from worker.settings import SettingsError, load_settings
from worker.settings_typos import UnknownVariable, find_unknown_variables

SETTINGS = ("MONGODB_URI", "FAIL_CLOSED_ROUTES", "LOG_LEVEL", "HTTP_PORT", "KAFKA_SASL_PASSWORD")
PASSWORD = "Zebra-4711-pw"
SECRET_URI = f"mongodb://admin:{PASSWORD}@db1.internal:27017/?authSource=admin"


@pytest.fixture(autouse=True)
def _no_remembered_secrets() -> None:
    forget_secrets()


def load_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return caught.value.lines


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("MONGO_URI", "MONGODB_URI"),
        ("FAIL_CLOSE_ROUTES", "FAIL_CLOSED_ROUTES"),
        ("LOG_LEVL", "LOG_LEVEL"),
        ("loglevel", "LOG_LEVEL"),
        ("KAFKA_SASL_PASWORD", "KAFKA_SASL_PASSWORD"),
        ("KAFKA_GROUP_INSTANCE", None),
    ],
)
def test_a_misspelled_or_prefixed_variable_is_named_with_the_setting_it_resembles(
    name: str, suggestion: str | None
) -> None:
    """A variable close to a setting, or carrying one of our prefixes, is reported with its nearest setting."""
    found = find_unknown_variables({name: "x", "MONGODB_URI": "mongodb://h"}, [s.lower() for s in SETTINGS])
    assert found == [UnknownVariable(name.upper(), suggestion)]


@pytest.mark.parametrize(
    "name",
    [
        "PATH", "HOME", "HOSTNAME", "PYTHONUNBUFFERED", "MALLOC_MMAP_THRESHOLD_", "HTTP_PROXY", "http_proxy",
        "KAFKA_SERVICE_HOST", "KAFKA_SERVICE_PORT", "KAFKA_PORT", "KAFKA_PORT_9092_TCP_ADDR",
        "MONGODB_SERVICE_PORT_MONGO", "mongodb_uri", "Log_Level",
    ],
)  # fmt: skip
def test_settings_and_other_programs_variables_are_not_reported(name: str) -> None:
    """Settings in any case, glibc's and proxy variables, and Kubernetes service links are never suspects."""
    assert find_unknown_variables({name: "x"}, [s.lower() for s in SETTINGS]) == []


def test_a_misspelled_variable_is_only_reported_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without SETTINGS_STRICT the settings load with the default and the misspelling is returned to report."""
    monkeypatch.setenv("MONGO_URI", "mongodb://elsewhere:27017")
    settings, unknown = load_settings()
    assert settings.mongodb_uri.get_secret_value() == "mongodb://localhost:27017"
    assert unknown == [UnknownVariable("MONGO_URI", "MONGODB_URI")]


def test_strict_mode_makes_a_misspelled_variable_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With SETTINGS_STRICT=true each suspect variable is one error line naming the setting it resembles."""
    lines = load_error(monkeypatch, SETTINGS_STRICT="true", FAIL_CLOSE_ROUTES="incidents", MONGO_URI="x")
    assert lines == [
        "configuration error: FAIL_CLOSE_ROUTES is not a setting and is ignored; did you mean "
        "FAIL_CLOSED_ROUTES? (SETTINGS_STRICT=true)",
        "configuration error: MONGO_URI is not a setting and is ignored; did you mean MONGODB_URI? "
        "(SETTINGS_STRICT=true)",
    ]


def test_a_bad_value_is_followed_by_a_note_on_each_misspelled_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When a setting is wrong, a misspelled variable that may explain it is noted on its own line."""
    lines = load_error(monkeypatch, KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_MECHANISM="PLAIN",
                       KAFKA_SASL_USERNAME="svc", KAFKA_SASL_PASWORD=PASSWORD)  # fmt: skip
    assert lines[0].startswith("configuration error: KAFKA_SASL_PASSWORD: required with ")
    assert lines[1] == (
        "note: KAFKA_SASL_PASWORD is not a setting and is ignored; did you mean KAFKA_SASL_PASSWORD?"
    )


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("db1:27017", "Invalid URI scheme"),
        ("mongodb://", "at least one hostname"),
        (f"mongodb://admin:{PASSWORD}@db1:99999", "Port must be"),
        (f"mongodb://admin:{PASSWORD}@db1/?tls=maybe", "tls"),
        ("mongodb://db1/?replicaset=rs0&readPreferance=primary", "Unknown option"),
        (f"mongodb://admin:{PASSWORD}/x@db1", "escaped"),
    ],
    ids=[
        "empty",
        "blank",
        "no-scheme",
        "no-host",
        "bad-port",
        "bad-option",
        "unknown-option",
        "unescaped-password",
    ],
)
def test_an_unusable_mongodb_uri_is_one_line_without_the_uri(
    monkeypatch: pytest.MonkeyPatch, uri: str, problem: str
) -> None:
    """A MONGODB_URI PyMongo cannot parse is refused at load time in one line that never shows the URI."""
    lines = load_error(monkeypatch, MONGODB_URI=uri)
    assert len(lines) == 1
    assert lines[0].startswith("configuration error: MONGODB_URI: ")
    assert problem in lines[0]
    assert PASSWORD not in lines[0] and "db1" not in lines[0]


def test_a_mongodb_srv_uri_is_accepted_without_a_dns_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mongodb+srv:// URI passes validation on its syntax alone (the name need not resolve here)."""
    monkeypatch.setenv("MONGODB_URI", "mongodb+srv://svc:pw@cluster0.does-not-resolve.invalid/db")
    settings, _ = load_settings()
    assert settings.mongodb_hosts() == "cluster0.does-not-resolve.invalid"


def test_sasl_protocol_requires_mechanism_username_and_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """KAFKA_SECURITY_PROTOCOL=SASL_SSL alone gives one line for each missing SASL variable."""
    lines = load_error(monkeypatch, KAFKA_SECURITY_PROTOCOL="SASL_SSL")
    assert [line.split(": ")[1] for line in lines] == [
        "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD",
    ]  # fmt: skip
    assert all(line.endswith("required with KAFKA_SECURITY_PROTOCOL=SASL_SSL") for line in lines)


def test_sasl_credentials_without_a_sasl_protocol_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """SASL credentials that PLAINTEXT would silently ignore are named, the password's value never shown."""
    lines = load_error(monkeypatch, KAFKA_SASL_USERNAME="svc", KAFKA_SASL_PASSWORD=PASSWORD)
    assert [line.split(": ")[1] for line in lines] == ["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"]
    assert "does not use SASL" in lines[0]
    assert PASSWORD not in "\n".join(lines)


def test_a_complete_sasl_configuration_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Protocol, mechanism, username and password together are a valid SASL configuration."""
    for name, value in {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                        "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": PASSWORD}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    settings, _ = load_settings()
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"


def test_a_missing_certificate_file_is_refused_at_load_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A KAFKA_SSL_CAFILE that does not exist is a configuration error naming the variable and the path."""
    missing = tmp_path / "ca.pem"
    lines = load_error(monkeypatch, KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=str(missing))
    assert lines == [f"configuration error: KAFKA_SSL_CAFILE: no such file: {missing} (got '{missing}')"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its mode")
def test_an_unreadable_certificate_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A certificate file this process cannot read is a configuration error, not a TLS failure later."""
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    cert.chmod(0)
    lines = load_error(monkeypatch, KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CERTFILE=str(cert))
    assert "not readable" in lines[0]


def test_a_key_without_its_certificate_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """KAFKA_SSL_KEYFILE without KAFKA_SSL_CERTFILE names the key variable."""
    key = tmp_path / "client.key"
    key.write_text("x")
    lines = load_error(monkeypatch, KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_KEYFILE=str(key))
    assert lines == ["configuration error: KAFKA_SSL_KEYFILE: set without KAFKA_SSL_CERTFILE, the "
                     "certificate it belongs to"]  # fmt: skip


def test_certificate_files_without_tls_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A CA file with KAFKA_SECURITY_PROTOCOL=PLAINTEXT, which would ignore it, is named."""
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    lines = load_error(monkeypatch, KAFKA_SSL_CAFILE=str(ca))
    assert lines[0].startswith(
        "configuration error: KAFKA_SSL_CAFILE: set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT"
    )


def test_a_cross_field_error_never_echoes_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backoff cap below its base is one line naming the cap; neither secret nor the URI's host appears."""
    lines = load_error(monkeypatch, REDELIVERY_BACKOFF_CAP_S="0.5", REDELIVERY_BACKOFF_BASE_S="2",
                       MONGODB_URI=SECRET_URI, KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_MECHANISM="PLAIN",
                       KAFKA_SASL_USERNAME="svc", KAFKA_SASL_PASSWORD="sasl-Quokka-99")  # fmt: skip
    assert lines == [
        "configuration error: REDELIVERY_BACKOFF_CAP_S: 0.5 is below REDELIVERY_BACKOFF_BASE_S (2.0); "
        "must be at least it"
    ]


def test_a_secret_typed_into_another_variable_is_hidden_in_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A known secret value pasted into a non-secret variable is masked in that variable's error line."""
    lines = load_error(monkeypatch, MONGODB_URI=SECRET_URI, RETRY_MAX_ATTEMPTS=PASSWORD)
    assert lines == ["configuration error: RETRY_MAX_ATTEMPTS: Input should be a valid integer, unable to "
                     "parse string as an integer (got '***')"]  # fmt: skip


def test_an_unescaped_password_is_named_as_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    """A password with a raw `@` or `/` is reported as needing percent-encoding, not as a bad database name."""
    lines = load_error(monkeypatch, MONGODB_URI=f"mongodb://svc:{PASSWORD}/x@db1:27017/orchestrator")
    assert lines == [
        "configuration error: MONGODB_URI: not a MongoDB connection string: the user or password holds an "
        "unescaped '@', '/' or ':'; percent-encode them (%40, %2F, %3A) (got <hidden>)"
    ]


def test_empty_security_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """`KAFKA_SSL_CAFILE=""` or `KAFKA_SASL_USERNAME=""` (a manifest's blank value) count as not set."""
    monkeypatch.setenv("KAFKA_SSL_CAFILE", "")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", " ")
    settings, _ = load_settings()
    assert settings.kafka_ssl_cafile is None and settings.kafka_sasl_username is None


MALFORMED_SERVERS = {
    "colons-only": "nonsense::",
    "port-not-a-number": "host:abc",
    "unclosed-bracket": "[::1",
    "port-out-of-range": "a:99999",
    "port-zero": "a:0",
    "trailing-comma": "a:9092,",
    "no-port": "kafka",
    "no-host": ":9092",
    "ipv6-without-brackets": "::1:9092",
    "not-ipv6-in-brackets": "[kafka]:9092",
    "space-in-host": "a b:9092",
    "empty-label": "a..b:9092",
    "label-too-long": f"{'a' * 64}:9092",
}


@pytest.mark.parametrize("servers", MALFORMED_SERVERS.values(), ids=MALFORMED_SERVERS.keys())
def test_a_malformed_bootstrap_address_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, servers: str
) -> None:
    """An entry of KAFKA_BOOTSTRAP_SERVERS without a host, a port of 1 to 65535 or IPv6 brackets is one line."""
    lines = load_error(monkeypatch, KAFKA_BOOTSTRAP_SERVERS=servers)
    assert len(lines) == 1
    assert lines[0].startswith("configuration error: KAFKA_BOOTSTRAP_SERVERS: ")
    assert "give host:port[,host:port...]" in lines[0] and lines[0].endswith(f"(got {servers!r})")


@pytest.mark.parametrize(
    "servers", ["k1:9092,k2:9093", " k1:9092 , k2:9093 ", "[::1]:9092", "10.0.0.1:1,kafka_1.svc.:65535"]
)
def test_well_formed_bootstrap_addresses_load(monkeypatch: pytest.MonkeyPatch, servers: str) -> None:
    """host:port lists, spaces around entries, bracketed IPv6, IPv4, underscores and a final dot are accepted."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", servers)
    settings, _ = load_settings()
    assert settings.kafka_bootstrap_servers == servers


CLIENT_REFUSALS = {
    "w0-with-journal": ("mongodb://db1/?w=0", "MONGODB_WRITE_CONCERN", "Cannot set w to 0 and j to True"),
    "scram-without-password": (
        "mongodb://user@db1/?authMechanism=SCRAM-SHA-256",
        "MONGODB_URI",
        "A password is required",
    ),
    "x509-with-password": (
        f"mongodb://admin:{PASSWORD}@db1/?authMechanism=MONGODB-X509",
        "MONGODB_URI",
        "Passwords are not supported",
    ),
    "primary-with-staleness": (
        "mongodb://db1/?readPreference=primary&maxStalenessSeconds=120",
        "MONGODB_URI",
        "maxStalenessSeconds",
    ),
    "unreadable-ca-file": (
        "mongodb://db1/?tls=true&tlsCAFile=/nonexistent/ca.pem",
        "MONGODB_URI",
        "not readable",
    ),
    "ca-file-not-a-certificate": (
        "mongodb://db1/?tls=true&tlsCAFile=/etc/hostname",
        "MONGODB_URI",
        "NO_CERTIFICATE",
    ),
}


@pytest.mark.parametrize(("uri", "variable", "problem"), CLIENT_REFUSALS.values(), ids=CLIENT_REFUSALS.keys())
def test_a_uri_pymongo_s_client_refuses_is_one_line_at_load_time(
    monkeypatch: pytest.MonkeyPatch, uri: str, variable: str, problem: str
) -> None:
    """What MongoClient itself refuses (options that clash, credentials, TLS files) is refused at load, secret-free."""
    lines = load_error(monkeypatch, MONGODB_URI=uri)
    assert len(lines) == 1 and lines[0].startswith(f"configuration error: {variable}: ")
    assert problem in lines[0] and PASSWORD not in lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("MONGODB_WRITE_CONCERN", "0", "Cannot set w to 0 and j to True"),
        ("KAFKA_CLIENT_ID", "x" * 129, "appname must be <= 128 bytes"),
        ("MONGODB_DATABASE", "audit db", "cannot contain the character ' '"),
        ("HTTP_HOST", "a..b", "'a..b' is not a host name"),
    ],
)
def test_a_value_the_clients_would_refuse_later_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    """A write concern, client id, database name or bind address the clients refuse is one line naming it."""
    lines = load_error(monkeypatch, **{variable: value})
    assert len(lines) == 1 and lines[0].startswith(f"configuration error: {variable}: ")
    assert problem in lines[0]
