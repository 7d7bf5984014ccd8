"""Specification of tests.mongo_faults: which MongoDB replies the write refusal rewrites (it judges other tests)."""

from __future__ import annotations

import struct
from typing import Any

import bson

from tests.mongo_faults import WriteRefusal, op_msg_reply, reply_body, upstream_of


def reply(body: dict[str, Any], *, request_id: int = 7, response_to: int = 41) -> bytes:
    payload = struct.pack("<I", 0) + b"\x00" + bson.encode(body)
    return struct.pack("<iiii", 16 + len(payload), request_id, response_to, 2013) + payload


def test_a_write_reply_becomes_the_error_answering_the_same_request() -> None:
    """An insert's `{n, ok: 1}` reply is replaced by the error, keeping requestID and responseTo."""
    refusal = WriteRefusal.unauthorized()
    rewritten = refusal.handle(reply({"n": 3, "ok": 1.0}))
    assert reply_body(rewritten) == refusal.error
    assert struct.unpack_from("<iiii", rewritten) == (len(rewritten), 7, 41, 2013)
    assert refusal.rewritten == 1


def test_other_replies_and_a_healed_refusal_pass_unchanged() -> None:
    """Handshake, cursor and ping replies pass; once inactive, write replies pass too."""
    refusal = WriteRefusal.unauthorized()
    for body in (
        {"isWritablePrimary": True, "ok": 1.0},
        {"cursor": {"id": 0}, "n": 1, "ok": 1.0},
        {"ok": 1.0},
    ):
        assert refusal.handle(reply(body)) == reply(body)
    refusal.active = False
    assert refusal.handle(reply({"n": 1, "ok": 1.0})) == reply({"n": 1, "ok": 1.0})
    assert refusal.rewritten == 0


def test_helpers_read_the_uri_and_build_replies() -> None:
    """upstream_of reads host and port; op_msg_reply frames a body that reply_body reads back."""
    assert upstream_of("mongodb://127.0.0.1:28017/") == ("127.0.0.1", 28017)
    assert reply_body(op_msg_reply(reply({"ok": 1.0}), {"ok": 0.0, "code": 13})) == {"ok": 0.0, "code": 13}
