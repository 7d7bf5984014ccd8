"""MongoDB connection strings checked and read without connecting (and without DNS lookups).

PyMongo's errors stay here: callers get a plain message (no credentials in it) or host names.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import PyMongoError

# The parser MongoClient itself uses, minus the SRV lookup `parse_uri` would do for
# mongodb+srv:// (a settings check must not depend on DNS answering).
from pymongo.uri_parser_shared import _validate_uri

from worker.ops.redaction import scrub


def _parse(uri: str) -> dict[str, Any]:
    # warn=False: MongoClient itself only warns about a misspelled option or a bad option value
    # and goes on without it (`tls=ture` would silently mean no TLS); here both are errors.
    return _validate_uri(uri, warn=False)


def mongodb_uri_problem(uri: str) -> str | None:
    """None when PyMongo accepts the syntax and options of `uri`, else what is wrong with them."""
    try:
        _parse(uri)
    except (PyMongoError, ValueError, TypeError) as exc:
        if _unescaped_credentials(uri):  # the parser's own message ("Bad database name") misleads
            return (
                "the user or password holds an unescaped '@', '/' or ':'; percent-encode them (%40, %2F, %3A)"
            )
        return scrub(str(exc)) or type(exc).__name__
    return None


def _unescaped_credentials(uri: str) -> bool:
    """Whether the part before the host looks like credentials with a reserved character left in."""
    rest = uri.partition("://")[2].partition("?")[0]
    userinfo, at, _ = rest.rpartition("@")
    return bool(at) and ("@" in userinfo or "/" in userinfo or userinfo.count(":") > 1)


def mongodb_hosts(uri: str) -> str:
    """The hosts of `uri` as `host:port,host:port` (an SRV name as it is), for messages."""
    try:
        nodes = _parse(uri)["nodelist"]
    except (PyMongoError, ValueError, TypeError):
        return "<unparsable MONGODB_URI>"
    return ",".join(host if port is None else f"{host}:{port}" for host, port in nodes)
