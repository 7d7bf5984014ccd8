"""MongoDB faults for the fault proxy: rewrite the server's replies to write commands.

    refusal = WriteRefusal.unauthorized()
    proxy.rewriter = refusal.rewriter      # every insert/update reply becomes {ok: 0, code: 13, ...}
    ...
    refusal.active = False                 # heal: replies pass unchanged again

Only replies are seen (the proxy rewrites the server-to-client direction), so a write reply is
recognised by its shape: an OP_MSG whose body has `n` and `ok: 1` and no `cursor` (insert,
update, delete; also `count`, which the worker does not send while consuming). The server has
applied the write; the client is told it was refused, as a real server refuses before applying.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import bson

from tests.faultproxy import Rewrite, framed_by_length

OP_MSG = 2013
_HEADER = struct.Struct("<iiii")


def upstream_of(uri: str) -> tuple[str, int]:
    """(host, port) of a single-host `mongodb://` URI, for `FaultProxy(upstream=...)`."""
    parts = urlsplit(uri)
    return parts.hostname or "127.0.0.1", parts.port or 27017


def reply_body(message: bytes) -> dict[str, Any] | None:
    """The body (section kind 0) of an OP_MSG reply, or None for any other message.
    (A trailing checksum, flag bit 0, is ignored: the body is read by its BSON length.)"""
    _, _, _, op_code = _HEADER.unpack_from(message)
    if op_code != OP_MSG or message[_HEADER.size + 4] != 0:
        return None
    return bson.decode(message[_HEADER.size + 5 :][: _bson_length(message, _HEADER.size + 5)])


def _bson_length(message: bytes, at: int) -> int:
    return int.from_bytes(message[at : at + 4], "little")


def is_write_reply(body: Mapping[str, Any]) -> bool:
    """A reply to insert / update / delete: `n`, `ok: 1`, no cursor."""
    return "n" in body and body.get("ok") == 1 and "cursor" not in body


def op_msg_reply(like: bytes, body: Mapping[str, Any]) -> bytes:
    """An OP_MSG answering the same request as `like`, carrying `body` (no checksum)."""
    _, request_id, response_to, _ = _HEADER.unpack_from(like)
    payload = struct.pack("<I", 0) + b"\x00" + bson.encode(body)
    return _HEADER.pack(_HEADER.size + len(payload), request_id, response_to, OP_MSG) + payload


@dataclass
class WriteRefusal:
    """While `active`, every reply to a write command becomes the server error `error`."""

    error: dict[str, Any]
    active: bool = True
    rewritten: int = 0

    @classmethod
    def unauthorized(cls) -> WriteRefusal:
        """MongoDB's answer to a user without the write role (code 13, e.g. after a credential rotation)."""
        return cls({"ok": 0.0, "code": 13, "codeName": "Unauthorized",
                    "errmsg": "not authorized on orchestrator to execute command { insert: ... }"})  # fmt: skip

    def rewriter(self) -> Rewrite:
        """The proxy's per-connection rewriter factory: `proxy.rewriter = refusal.rewriter`."""
        return framed_by_length(self.handle)

    def handle(self, message: bytes) -> bytes:
        """Rewrite one whole reply if it answers a write while active; pass anything else."""
        if not self.active:
            return message
        body = reply_body(message)
        if body is None or not is_write_reply(body):
            return message
        self.rewritten += 1
        return op_msg_reply(message, self.error)
