"""The MongoDB refusal used by the authorization scenario (tests/mongo_faults.py), checked against
the real (or stand-in) server through the fault proxy with PyMongo: refused writes fail with the
server's own error and are not performed; reads pass; healing restores writes."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.errors import OperationFailure

from tests.faultproxy import FaultProxy
from tests.mongo_faults import WriteRefusal, command_name, op_msg


def test_command_name_is_the_first_key_of_the_body() -> None:
    """An OP_MSG request names its command by the first key of its kind-0 section."""
    assert command_name(op_msg(7, 0, {"findAndModify": "c", "$db": "d"})) == "findAndModify"
    assert command_name(b"\x00" * 30) is None


async def test_refused_writes_fail_as_unauthorized_and_are_not_performed(
    mongo_uri: str, mongo_db: Any, unique_name: str
) -> None:
    """While refusing, insert/update/findAndModify raise OperationFailure code 13 and change nothing; reads work; after healing, writes work."""
    upstream = urlsplit(mongo_uri)
    refusal = WriteRefusal()
    async with FaultProxy(upstream=(upstream.hostname or "127.0.0.1", upstream.port or 27017)) as proxy:
        refusal.install(proxy)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            f"mongodb://{proxy.address}/?directConnection=true", serverSelectionTimeoutMS=5000
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
