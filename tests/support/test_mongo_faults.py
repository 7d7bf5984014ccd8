"""The MongoDB refusal used by the authorization scenario (tests/support/mongo_faults.py), checked against
the real (or stand-in) server through the fault proxy with PyMongo: refused writes fail with the
server's own error and are not performed; reads pass; healing restores writes."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.errors import OperationFailure

from tests.support.faultproxy import FaultProxy
from tests.support.mongo_faults import WriteRefusal, command_name, op_msg, through_proxy, upstream_of

pytestmark = pytest.mark.integration  # the refusal is checked against the session's real server


def test_a_uri_through_the_proxy_keeps_credentials_and_options() -> None:
    """The worker's URI names the proxy instead of the server, with the same credentials and options, directly."""
    assert upstream_of("mongodb://u:p@db.example:27018/admin?authSource=admin") == ("db.example", 27018)
    assert through_proxy("mongodb://u:p@db.example:27018/admin?authSource=admin", "127.0.0.1:5") == (
        "mongodb://u:p@127.0.0.1:5/admin?authSource=admin&directConnection=true"
    )
    assert (
        through_proxy("mongodb://127.0.0.1:27017", "127.0.0.1:5")
        == "mongodb://127.0.0.1:5/?directConnection=true"
    )
    assert (  # a directConnection already there is replaced, not repeated
        through_proxy("mongodb://127.0.0.1:27017/?directConnection=false&w=1", "127.0.0.1:5")
        == "mongodb://127.0.0.1:5/?w=1&directConnection=true"
    )


def test_command_name_is_the_first_key_of_the_body() -> None:
    """An OP_MSG request names its command by the first key of its kind-0 section."""
    assert command_name(op_msg(7, 0, {"findAndModify": "c", "$db": "d"})) == "findAndModify"
    assert command_name(b"\x00" * 30) is None


async def test_refused_writes_fail_as_unauthorized_and_are_not_performed(
    mongo_uri: str, mongo_db: Any, unique_name: str
) -> None:
    """While refusing, insert/update/findAndModify raise OperationFailure code 13 and change nothing; reads work; after healing, writes work."""
    refusal = WriteRefusal()
    async with FaultProxy(upstream=upstream_of(mongo_uri)) as proxy:
        refusal.install(proxy)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            through_proxy(mongo_uri, proxy.address), serverSelectionTimeoutMS=5000
        )
        try:
            items = client[unique_name]["items"]
            await items.insert_one({"_id": "before"})
            refusal.refusing = True
            for write in (
                items.insert_many([{"_id": "during"}], ordered=False),
                items.update_one({"_id": "before"}, {"$set": {"x": 1}}),
                items.find_one_and_update(
                    {"_id": "before"}, {"$set": {"x": 1}}, return_document=ReturnDocument.AFTER
                ),
            ):
                with pytest.raises(OperationFailure) as caught:
                    await write
                assert caught.value.code == 13
            assert await items.find_one({"_id": "before"}) == {"_id": "before"}
            refusal.refusing = False
            await items.insert_one({"_id": "after"})
        finally:
            await client.close()
    assert refusal.refused == {"insert": 1, "update": 1, "findAndModify": 1}
    assert sorted([d["_id"] async for d in mongo_db["items"].find({})]) == ["after", "before"]
