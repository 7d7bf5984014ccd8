"""MongoDB refusing chosen commands with an operation-level error, through the fault proxy.

    refusal = WriteRefusal()          # insert, update, findAndModify -> {ok: 0, code: 13, "Unauthorized"}
    refusal.install(proxy)            # a FaultProxy in front of a real MongoDB-protocol server
    refusal.refusing = True           # from now on those commands are refused ...
    refusal.refusing = False          # ... until this (the server "heals")
    WriteRefusal(collections=frozenset({"telemetry_buffer"}), error=STEPPED_DOWN)
                                      # only writes to telemetry_buffer, with a transient error

Which request a reply answers is tracked from the client -> server direction: each OP_MSG
request (header 16 bytes, flagBits, sections) names its command as the first key of its
kind-0 body section. While `refusing`, a request for a refused command never reaches the
server as it is: it is replaced by a `ping` with the same requestID (a real server refusing
the command does not perform it either; a proxy that only rewrote the reply would report a
write refused that the server had in fact stored), and the `ping`'s reply (`responseTo` = that
requestID) is replaced by the error. Every other message passes unchanged. The decision is
taken when the request passes, so a command in flight when the switch flips is answered
consistently. Requests are keyed by requestID alone, across connections: PyMongo draws each
one at random over 32 bits, so two pending requests of one test do not collide in practice.
Only OP_MSG (opcode 2013) is handled: drivers use it for every command after the handshake
when no compression is negotiated (none is here). `delete` is not refused by default, so the
redelivery loop can settle what it had claimed before the refusal began.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import bson

from tests.support.faultproxy import FaultProxy, framed_by_length

OP_MSG = 2013
HEADER = 16
MORE_TO_COME = 1 << 1
UNAUTHORIZED: Mapping[str, Any] = {
    "ok": 0.0,
    "code": 13,
    "codeName": "Unauthorized",
    "errmsg": "not authorized on orchestrator to execute command",
}
STEPPED_DOWN: Mapping[str, Any] = {
    "ok": 0.0,
    "code": 189,
    "codeName": "PrimarySteppedDown",
    "errmsg": "primary stepped down while the write was in progress",
}
"""A transient refusal: drivers and the worker retry it."""
WRITE_COMMANDS = frozenset({"insert", "update", "findAndModify"})


def _int32(message: bytes, at: int) -> int:
    return int.from_bytes(message[at : at + 4], "little", signed=True)


def opcode(message: bytes) -> int:
    return _int32(message, 12)


def command_name(message: bytes) -> str | None:
    """The command an OP_MSG request runs (the first key of its body section); None otherwise."""
    return command_target(message)[0]


def command_target(message: bytes) -> tuple[str | None, str | None]:
    """The command an OP_MSG request runs and the collection it names (the first element's key
    and, when it is a string, its value: `insert: "incidents"`); (None, None) otherwise."""
    if len(message) <= HEADER + 5 or opcode(message) != OP_MSG:
        return None, None
    offset = HEADER + 4  # after flagBits
    while offset < len(message):
        kind, size = message[offset], _int32(message, offset + 1)
        if kind == 0:  # a BSON document: int32 length, then elements (type byte, cstring key, value)
            type_at = offset + 1 + 4
            key_start = type_at + 1
            key_end = message.index(b"\x00", key_start)
            name = message[key_start:key_end].decode()
            if message[type_at] != 0x02:  # not a string: no collection named
                return name, None
            length = _int32(message, key_end + 1)
            value_start = key_end + 1 + 4
            return name, message[value_start : value_start + length - 1].decode(errors="replace")
        offset += 1 + size  # kind 1: a document sequence, its size counted from the size field
    return None, None


def op_msg(request_id: int, response_to: int, body: Mapping[str, Any]) -> bytes:
    """One OP_MSG message: header, flagBits 0, a kind-0 section holding `body`."""
    payload = (0).to_bytes(4, "little") + b"\x00" + bson.encode(body)
    header = [HEADER + len(payload), request_id, response_to, OP_MSG]
    return b"".join(value.to_bytes(4, "little", signed=True) for value in header) + payload


def upstream_of(uri: str) -> tuple[str, int]:
    """The (host, port) a single-host `mongodb://` URI names, for the proxy to forward to."""
    parts = urlsplit(uri)
    return parts.hostname or "127.0.0.1", parts.port or 27017


def through_proxy(uri: str, address: str) -> str:
    """`uri` (credentials and options kept) pointed at the proxy's `address`, as a direct connection
    (a replica-set member list would lead the driver around the proxy). A `directConnection` already
    in `uri` is replaced, not repeated (PyMongo warns on a duplicate option and keeps the last)."""
    parts = urlsplit(uri)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{address}" if userinfo else address
    kept = [
        option for option in parts.query.split("&") if option.partition("=")[0].lower() != "directconnection"
    ]
    query = "&".join(filter(None, [*kept, "directConnection=true"]))
    return urlunsplit((parts.scheme, netloc, parts.path or "/", query, ""))


class WriteRefusal:
    """While `refusing`, the commands in `commands` are answered with `error` and not performed."""

    def __init__(
        self,
        *,
        commands: frozenset[str] = WRITE_COMMANDS,
        error: Mapping[str, Any] = UNAUTHORIZED,
        collections: frozenset[str] | None = None,
    ) -> None:
        self.refusing = False
        self.commands = commands
        self.collections = collections
        """Refuse only commands on these collections (None: on any)."""
        self.error = dict(error)
        self.refused: Counter[str] = Counter()
        """Commands refused so far, by name."""
        self._pending: set[int] = set()

    def install(self, proxy: FaultProxy) -> None:
        proxy.request_rewriter = lambda: framed_by_length(self.on_request)
        proxy.rewriter = lambda: framed_by_length(self.on_reply)

    def on_request(self, message: bytes) -> bytes:
        name, collection = command_target(message)
        if not self.refusing or name not in self.commands or _int32(message, HEADER) & MORE_TO_COME:
            return message
        if self.collections is not None and collection not in self.collections:
            return message
        assert name is not None
        request_id = _int32(message, 4)
        self._pending.add(request_id)
        self.refused[name] += 1
        return op_msg(request_id, 0, {"ping": 1, "$db": "admin"})

    def on_reply(self, message: bytes) -> bytes:
        answered = _int32(message, 8)
        if opcode(message) != OP_MSG or answered not in self._pending:
            return message
        self._pending.discard(answered)
        return op_msg(_int32(message, 4), answered, self.error)
