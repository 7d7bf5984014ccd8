"""Removing credentials from connection strings before anything is logged."""

from __future__ import annotations

import re

# scheme://user:password@host -> scheme://***@host ; also matches inside longer text.
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s]+@")


def redact_uri(text: str) -> str:
    """Replace any `user:password@` in URIs within `text` by `***@`."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)
