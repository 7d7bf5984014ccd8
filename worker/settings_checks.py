"""The settings' own checks: addresses, settings that must go together, readable files, one line per mistake.

worker.settings calls these from its validators; each problem names the environment variable,
never echoing a secret.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker.mongo.uri import client_options, mongodb_client_problem
from worker.ops.redaction import scrub

SECRET_FIELDS = frozenset({"mongodb_uri", "kafka_sasl_password"})
SASL_FIELDS = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
SSL_FILE_FIELDS = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")

Problem = tuple[str, str]
"""(VARIABLE, what is wrong with it)."""

SERVERS_FORM = "give host:port[,host:port...], an IPv6 address in brackets: [::1]:9092"
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
_PORT = re.compile(r"[0-9]{1,5}")
MAX_HOST_NAME = 253


def bootstrap_servers_problem(servers: str) -> str | None:
    """None when `servers` is a host:port list the Kafka clients can connect to, else what is wrong.

    Stricter than aiokafka, which takes a port it cannot parse for a bug (ValueError) and a
    missing one for 9092: every entry names its host and port, as Kafka's own clients require.
    """
    for entry in servers.strip().split(","):  # aiokafka's own split, whitespace as it strips it
        problem = _server_problem(entry.strip())
        if problem is not None:
            return f"{problem}; {SERVERS_FORM}"
    return None


def _server_problem(entry: str) -> str | None:
    if not entry:
        return "an empty entry (a comma too many?)"
    if entry.startswith("["):
        address, bracket, rest = entry[1:].partition("]")
        if not bracket or not _is_ipv6(address):
            return f"{entry!r}: not an IPv6 address in brackets"
        if not rest.startswith(":"):
            return f"{entry!r} has no ':port' after the brackets"
        port = rest[1:]
    else:
        address, colon, port = entry.rpartition(":")
        if not colon:
            return f"{entry!r} has no port"
        problem = "an IPv6 address goes in brackets" if ":" in address else host_name_problem(address)
        if problem is not None:
            return f"{entry!r}: {problem}"
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        return f"{entry!r}: the port must be a number from 1 to 65535"
    return None


def host_problem(host: str) -> str | None:
    """None when `host` is an IP address (IPv6 without brackets) or a host name, else what is wrong."""
    return None if _is_ipv6(host) else host_name_problem(host)


def host_name_problem(name: str) -> str | None:
    """None for a host name the resolver takes (labels of 1 to 63 letters, digits, '-', '_'), else why not."""
    if not name:
        return "no host"
    labels = name.removesuffix(".").split(".")
    if len(name) > MAX_HOST_NAME or not all(_LABEL.fullmatch(label) for label in labels):
        return f"{name!r} is not a host name (dot-separated labels of 1 to 63 letters, digits, '-', '_')"
    return None


def _is_ipv6(address: str) -> bool:
    if not address.isascii():  # a zone (`%eth0`) the resolver's IDNA codec would choke on
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


class CrossFieldProblems(ValueError):
    """Settings wrong together; `problems` holds (variable, what is wrong) pairs."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{name}: {text}" for name, text in problems))
        self.problems = problems


def cross_field_problems(values: Mapping[str, Any]) -> list[Problem]:
    """What is wrong with the settings `values` (field name -> value) taken together."""
    return [
        *_backoff_problems(values),
        *_sasl_problems(values),
        *_ssl_problems(values),
        *_mongodb_client_problems(values),
    ]


def _mongodb_client_problems(values: Mapping[str, Any]) -> list[Problem]:
    """MONGODB_URI as PyMongo's client takes it with the options the worker adds; when refused,
    the variable whose part is refused: the URI alone, then with the write concern, then the appname."""
    uri = values["mongodb_uri"].get_secret_value()
    options = client_options(
        uri,
        w=values["mongodb_write_concern"],
        journal=values["mongodb_write_concern_journal"],
        appname=values["kafka_client_id"],
        server_selection_timeout_ms=values["mongodb_server_selection_timeout_ms"],
    )
    if mongodb_client_problem(uri, options) is None:
        return []
    without_appname = {name: value for name, value in options.items() if name != "appname"}
    steps: tuple[tuple[str, Mapping[str, Any], str], ...] = (
        ("MONGODB_URI", {}, "PyMongo's client refuses it: {}"),
        ("MONGODB_WRITE_CONCERN", without_appname, "with MONGODB_WRITE_CONCERN_JOURNAL and MONGODB_URI's "
         "options (the URI's own w and journal win), PyMongo's client refuses it: {}"),
        ("KAFKA_CLIENT_ID", options, "PyMongo's client takes it as its appname and refuses it: {}"),
    )  # fmt: skip
    for variable, tried, why in steps:
        problem = mongodb_client_problem(uri, tried)
        if problem is not None:
            return [(variable, why.format(problem))]
    return []


def _backoff_problems(values: Mapping[str, Any]) -> list[Problem]:
    cap, base = values["redelivery_backoff_cap_s"], values["redelivery_backoff_base_s"]
    if cap >= base:
        return []
    why = f"{cap} is below REDELIVERY_BACKOFF_BASE_S ({base}); must be at least it"
    return [("REDELIVERY_BACKOFF_CAP_S", why)]


def _sasl_problems(values: Mapping[str, Any]) -> list[Problem]:
    protocol = values["kafka_security_protocol"]
    if protocol.startswith("SASL_"):
        missing = [field.upper() for field in SASL_FIELDS if values[field] is None]
        return [(name, f"required with KAFKA_SECURITY_PROTOCOL={protocol}") for name in missing]
    return _set_but_unused(
        values, SASL_FIELDS, "SASL", "set KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)"
    )


def _ssl_problems(values: Mapping[str, Any]) -> list[Problem]:
    if values["kafka_security_protocol"] not in ("SSL", "SASL_SSL"):
        return _set_but_unused(
            values, SSL_FILE_FIELDS, "TLS", "set KAFKA_SECURITY_PROTOCOL=SSL (or SASL_SSL)"
        )
    if values["kafka_ssl_keyfile"] is not None and values["kafka_ssl_certfile"] is None:
        return [("KAFKA_SSL_KEYFILE", "set without KAFKA_SSL_CERTFILE, the certificate it belongs to")]
    return []


def _set_but_unused(
    values: Mapping[str, Any], fields: tuple[str, ...], feature: str, fix: str
) -> list[Problem]:
    """The `fields` that are set although the security protocol does not use `feature`."""
    protocol = values["kafka_security_protocol"]
    unused = [field.upper() for field in fields if values[field] is not None]
    why = f"set, but KAFKA_SECURITY_PROTOCOL={protocol} does not use {feature}; {fix}, or unset it"
    return [(name, why) for name in unused]


def readable_file(path: Path | None) -> Path | None:
    """`path` when it names a file this process can read (None stays None), else ValueError."""
    if path is not None and not path.is_file():
        raise ValueError(f"no such file: {path}")
    if path is not None and not os.access(path, os.R_OK):
        raise ValueError(f"file not readable by this process: {path}")
    return path


def settings_error_lines(error: ValidationError) -> list[str]:
    """One line per wrong variable: its name, what is wrong, and the value unless secret."""
    lines: list[str] = []
    for item in error.errors():
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, CrossFieldProblems):
            lines.extend(f"configuration error: {name}: {text}" for name, text in cause.problems)
        elif item["loc"]:
            lines.append(_field_line(str(item["loc"][0]), item["msg"], item.get("input")))
        else:  # a model-level error: its input is every variable, secrets included; never shown
            lines.append(f"configuration error: {_message(item['msg'])}")
    return [scrub(line) for line in lines]


def _field_line(field: str, message: str, value: Any) -> str:
    shown = "<hidden>" if field in SECRET_FIELDS else repr(value)
    return f"configuration error: {field.upper()}: {_message(message)} (got {shown})"


def _message(text: str) -> str:
    return text.removeprefix("Value error, ")


def format_settings_error(error: ValidationError) -> str:
    """`settings_error_lines` as one text."""
    return "\n".join(settings_error_lines(error))
