"""Environment variables that look like misspelled settings (`MONGO_URI` for `MONGODB_URI`).

A variable is suspect when it is not a setting and either carries one of our prefixes or
is close to a setting's name. Some are legitimately ours or the platform's and never
reported: glibc's `MALLOC_MMAP_THRESHOLD_`, proxy variables, and the variables Kubernetes
injects for every Service in the namespace (`KAFKA_SERVICE_HOST`, `KAFKA_PORT_9092_TCP`...).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

PREFIXES = ("MONGODB_", "MONGO_", "KAFKA_", "RETRY_", "REDELIVERY_", "TELEMETRY_", "TTL_", "HTTP_", "FAIL_")
NOT_SETTINGS = frozenset({"MALLOC_MMAP_THRESHOLD_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"})
# Kubernetes service links: <SERVICE>_SERVICE_HOST, <SERVICE>_SERVICE_PORT[_<NAME>],
# <SERVICE>_PORT, <SERVICE>_PORT_<N>_<PROTO>[_PROTO|_PORT|_ADDR].
_SERVICE_LINK = re.compile(
    r"^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT|PORT_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$"
)
CLOSE_TO_A_SETTING = 0.85
"""difflib ratio from which any variable counts as a misspelling (LOG_LEVL, LOGLEVEL)."""
GUESS_FOR_PREFIXED = 0.6
"""Lower bar for the suggestion given for a variable that already carries our prefix."""


@dataclass(frozen=True, slots=True)
class UnknownVariable:
    """A variable that is not a setting; `suggestion` is the setting it most resembles."""

    name: str
    suggestion: str | None

    def describe(self) -> str:
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else "; see docs/configuration.md"
        return f"{self.name} is not a setting and is ignored{hint}"


def find_unknown_variables(environ: Mapping[str, str], settings: Collection[str]) -> list[UnknownVariable]:
    """The suspect variables of `environ` (names compared upper-cased), sorted by name."""
    known = {name.upper() for name in settings}
    found = []
    for name in sorted({name.upper() for name in environ} - known - NOT_SETTINGS):
        if _SERVICE_LINK.match(name):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=CLOSE_TO_A_SETTING)
        if close:
            found.append(UnknownVariable(name, close[0]))
        elif name.startswith(PREFIXES):
            guess = difflib.get_close_matches(name, known, n=1, cutoff=GUESS_FOR_PREFIXED)
            found.append(UnknownVariable(name, guess[0] if guess else None))
    return found
