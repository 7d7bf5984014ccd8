"""Removing credentials from any text before it leaves the process: logs, messages, headers.

`scrub(text)` removes `user:password@` from URIs and every secret value the settings
registered (`remember_secret`), whatever the text is: an exception message, a header, a log
value. Secrets shorter than `MIN_SECRET_LENGTH` are not remembered: replacing one or two
characters everywhere would garble every line while hiding nothing worth hiding.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus, unquote

# scheme://user:password@host -> scheme://***@host ; also matches inside longer text.
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s]+@")
MASK = "***"
MIN_SECRET_LENGTH = 4
_secrets: set[str] = set()


def redact_uri(text: str) -> str:
    """Replace any `user:password@` in URIs within `text` by `***@`."""
    return _CREDENTIALS.sub(rf"\g<scheme>{MASK}@", text)


def remember_secret(value: str | None) -> None:
    """Hide `value` (and its percent-encoded and decoded forms) from every later `scrub`."""
    if not value:
        return
    for form in {value, unquote(value), quote(value, safe=""), quote_plus(value)}:
        if len(form) >= MIN_SECRET_LENGTH:
            _secrets.add(form)


def remember_uri_password(uri: str) -> None:
    """Remember the password of a `scheme://user:password@host` URI, if it has one."""
    _, _, rest = uri.partition("://")
    userinfo, at, _ = rest.partition("?")[0].rpartition("@")
    if at and ":" in userinfo:
        remember_secret(userinfo.split(":", 1)[1])


def scrub(text: str) -> str:
    """`text` without URI credentials and without any remembered secret value."""
    # Known secrets first: redacting the URI first could split an unescaped one (`p@ss/w0rd`).
    for secret in sorted(_secrets, key=len, reverse=True):  # longest first: no partial leftovers
        if secret in text:
            text = text.replace(secret, MASK)
    return redact_uri(text)


def forget_secrets() -> None:
    """Forget every remembered secret (for tests)."""
    _secrets.clear()
