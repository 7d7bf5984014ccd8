"""MongoDB connection strings checked and read without connecting (and without DNS lookups).

PyMongo's errors stay here: callers get a plain message (no credentials in it) or host names.
The client's options besides the URI are made here too (`client_options`), so that the
settings check and the client the worker makes see the same ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pymongo import AsyncMongoClient
from pymongo.database_shared import _check_name
from pymongo.errors import PyMongoError
from pymongo.uri_parser import split_options

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
    except (PyMongoError, ValueError, TypeError, OSError) as exc:  # OSError: an unreadable tlsCAFile
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


def client_options(
    uri: str, *, w: str, journal: bool, appname: str, server_selection_timeout_ms: int
) -> dict[str, Any]:
    """The worker's client options besides `uri`: zone-aware dates, the selection timeout, the
    appname, and `w` and `journal` for those the URI does not set itself.

    PyMongo lets keyword arguments override the URI, so the URI's own options are read first
    (`split_options` on its query string: no DNS lookup, even for mongodb+srv)."""
    number = w.isascii() and w.isdigit()  # not int("²"), which str.isdigit accepts
    concern = {"w": int(w) if number else w, "journal": journal}
    return {
        "tz_aware": True,
        "serverSelectionTimeoutMS": server_selection_timeout_ms,
        "appname": appname,
        **{name: value for name, value in concern.items() if not uri_sets(uri, name)},
    }


def uri_sets(uri: str, option: str) -> bool:
    """Whether the query string of `uri` sets `option` (any case, as PyMongo reads it)."""
    query = urlsplit(uri).query
    with warnings.catch_warnings():  # a repeated option: the client warns about it itself
        warnings.simplefilter("ignore")
        return "=" in query and option in split_options(query, validate=False)


def mongodb_client_problem(uri: str, options: Mapping[str, Any]) -> str | None:
    """None when PyMongo's client takes `uri` with `options`, else why not (nothing is connected).

    The client checks what the URI parser does not: options that go together (`w=0` with
    `journal`), credentials the mechanism needs, the TLS files' contents."""
    try:
        with warnings.catch_warnings():  # the worker's own client warns again, once, if it must
            warnings.simplefilter("ignore")
            AsyncMongoClient(uri, connect=False, **options)  # never opened: nothing to close
    except (PyMongoError, ValueError, TypeError, OSError) as exc:
        return scrub(str(exc)) or type(exc).__name__
    return None


def database_name_problem(name: str) -> str | None:
    """None when PyMongo takes `name` as a database name, else why not."""
    try:
        _check_name(name)
    except PyMongoError as exc:
        return str(exc)
    return None
