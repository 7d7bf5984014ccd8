"""Specification of the published contracts: schemas/json/*.schema.json and schemas/asyncapi.yaml.

No PyPI package we could find ships the official AsyncAPI 3.0 JSON Schema, so the document is
checked structurally: required fields, the topics and who sends or receives them, every
`$ref` resolving, every message schema a valid JSON Schema, and the dead-letter headers
against the ones worker.dead_letters writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import ValidationError

from schemas import export
from tests.support.events import EventFactory
from tests.support.kafka import FakeRecord
from worker.dead_letters.letters import DeadLetter
from worker.settings import RouteName, Settings

SCHEMAS = Path(export.__file__).parent
ASYNCAPI = SCHEMAS / "asyncapi.yaml"
DELIVERY_TOPIC = "observability.telemetry"
TIMESTAMP_FIELDS = {"validation": "timestamp", "results": "consolidated_at", "incidents": "timestamp"}
ROUTES = [route.value for route in RouteName]

# jsonschema checks `date-time` only with rfc3339-validator installed; this checker means the same
# as the models' Timestamp: an ISO-8601 instant with a zone.
ZONED_DATE_TIME = FormatChecker(formats=())


@ZONED_DATE_TIME.checks("date-time", raises=ValueError)
def _is_zoned_date_time(value: object) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


def event_schema(route: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / "json" / export.schema_file(route)).read_text(encoding="utf-8"))


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=ZONED_DATE_TIME)


def realistic_events(route: str, count: int = 100) -> list[dict[str, Any]]:
    factory = EventFactory(seed=11)
    return [factory.good(RouteName(route)) for _ in range(count)]


def asyncapi() -> dict[str, Any]:
    document = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def resolve(ref: str, document: Any, base: Path) -> Any:
    """The node `ref` points at: `#/a/b` inside `document`, `file.json#/a` in a file beside `base`."""
    target, _, pointer = ref.partition("#")
    node = document
    if target:
        path = base.parent / target
        node = yaml.safe_load(path.read_text(encoding="utf-8"))
    for token in filter(None, pointer.split("/")):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def deref(node: Any, document: dict[str, Any]) -> Any:
    return resolve(node["$ref"], document, ASYNCAPI) if "$ref" in node else node


def messages() -> dict[str, dict[str, Any]]:
    document = asyncapi()
    return {name: deref(message, document) for name, message in document["components"]["messages"].items()}


def channels_by_address() -> dict[str, dict[str, Any]]:
    return {channel["address"]: channel for channel in asyncapi()["channels"].values()}


def channel_messages(address: str) -> list[dict[str, Any]]:
    document = asyncapi()
    return [deref(m, document) for m in channels_by_address()[address]["messages"].values()]


def expected_topics() -> tuple[list[str], list[str]]:
    settings = Settings()
    inputs = [settings.topic_for(route) for route in RouteName]
    return inputs, [settings.dlq_topic(topic) for topic in inputs]


# JSON Schemas


def test_checked_in_json_schemas_equal_what_the_models_generate() -> None:
    """Each schemas/json file is byte for byte what `python -m schemas.export` writes from the models now."""
    for path, text in export.expected_files(export.SCHEMA_DIR).items():
        assert text is not None, f"{path.name} is not generated from any model: remove it"
        assert path.read_text(encoding="utf-8") == text, f"{path.name} drifted: run python -m schemas.export"
    assert export.main(["--check"]) == 0


def test_check_names_drifted_missing_and_stray_files_and_export_repairs_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--check` exits 1 naming each changed, missing or stray schema; a plain run rewrites them and `--check` passes."""
    assert export.main([], directory=tmp_path) == 0
    (tmp_path / "incidents.schema.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "telemetry.schema.json").unlink()
    (tmp_path / "retired.schema.json").write_text("{}\n", encoding="utf-8")
    capsys.readouterr()

    assert export.main(["--check"], directory=tmp_path) == 1
    reported = capsys.readouterr().err
    for name in ("incidents.schema.json", "telemetry.schema.json", "retired.schema.json"):
        assert name in reported
    assert "validation.schema.json" not in reported

    assert export.main([], directory=tmp_path) == 0
    assert export.main(["--check"], directory=tmp_path) == 0
    assert not (tmp_path / "retired.schema.json").exists()


@pytest.mark.parametrize("route", ROUTES)
def test_schema_is_a_draft_2020_12_schema_with_id_and_title(route: str) -> None:
    """Each event schema is a valid JSON Schema 2020-12 whose `$id` is its file name and whose title names the model."""
    schema = event_schema(route)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == export.schema_file(route)
    assert schema["title"] == export.EVENT_MODELS[route].__name__


@pytest.mark.parametrize("route", ROUTES)
def test_timestamps_are_published_as_date_time_strings(route: str) -> None:
    """Timestamp fields are `{"type": "string", "format": "date-time"}` (RFC 3339: the zone is required)."""
    field = TIMESTAMP_FIELDS.get(route, "timestamp")
    assert event_schema(route)["properties"][field] | {"title": None} == {
        "type": "string",
        "format": "date-time",
        "title": None,
    }
    event = realistic_events(route, 1)[0] | {field: "2026-11-25T08:00:01"}
    assert not validator(event_schema(route)).is_valid(event)


@pytest.mark.parametrize("route", ROUTES)
def test_schema_accepts_realistic_events(route: str) -> None:
    """A hundred events from the demo's EventFactory pass both the published schema and the model."""
    check = validator(event_schema(route))
    for event in realistic_events(route):
        assert list(check.iter_errors(event)) == []
        export.EVENT_MODELS[route].model_validate(event)


def _required_fields() -> Iterator[tuple[str, str]]:
    for route in ROUTES:
        for field in event_schema(route)["required"]:
            yield route, field


@pytest.mark.parametrize(("route", "field"), list(_required_fields()))
def test_schema_rejects_an_event_missing_a_required_field(route: str, field: str) -> None:
    """Removing any required field makes the schema reject the event, as the model does."""
    event = realistic_events(route, 1)[0]
    del event[field]
    errors = list(validator(event_schema(route)).iter_errors(event))
    assert [error.validator for error in errors] == ["required"]
    with pytest.raises(ValidationError):
        export.EVENT_MODELS[route].model_validate(event)


def test_incident_schema_accepts_severity_in_any_case() -> None:
    """The incident schema accepts `low` and `High` as the worker does (it stores them upper-cased)."""
    check = validator(event_schema("incidents"))
    for severity in ("low", "High"):
        event = realistic_events("incidents", 1)[0] | {"severity": severity}
        export.EVENT_MODELS["incidents"].model_validate(event)
        assert check.is_valid(event)


def test_validation_schema_requires_a_boolean_valid_in_the_result() -> None:
    """The validation schema rejects a `validation_result` without a boolean `valid`, as the worker does."""
    event = realistic_events("validation", 1)[0] | {"validation_result": {"valid": "yes"}}
    with pytest.raises(ValidationError):
        export.EVENT_MODELS["validation"].model_validate(event)
    assert not validator(event_schema("validation")).is_valid(event)


# AsyncAPI


def test_asyncapi_document_has_the_required_top_level_fields() -> None:
    """The document is AsyncAPI 3.0.0 with info title and version, a kafka server, channels, operations and components."""
    document = asyncapi()
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] and document["info"]["version"]
    assert [server["protocol"] for server in document["servers"].values()] == ["kafka"]
    assert all(server["host"] for server in document["servers"].values())
    assert document["channels"] and document["operations"] and document["components"]["messages"]


def test_asyncapi_channels_are_the_input_dead_letter_and_delivery_topics() -> None:
    """The channels are exactly the four input topics, their four `.dlq` topics and the telemetry delivery topic."""
    inputs, dead_letters = expected_topics()
    assert sorted(channels_by_address()) == sorted([*inputs, *dead_letters, DELIVERY_TOPIC])


def test_worker_receives_the_inputs_and_sends_dead_letters_and_telemetry() -> None:
    """The worker `receive`s each input topic and `send`s each dead-letter topic and the delivery topic, once each."""
    document = asyncapi()
    actions = sorted(
        (deref(operation["channel"], document)["address"], operation["action"])
        for operation in document["operations"].values()
    )
    inputs, dead_letters = expected_topics()
    expected = [(t, "receive") for t in inputs] + [(t, "send") for t in [*dead_letters, DELIVERY_TOPIC]]
    assert actions == sorted(expected)


def test_operations_name_existing_channels_and_messages_of_those_channels() -> None:
    """Each operation's channel is a `#/channels/...` entry and each of its messages belongs to that channel."""
    document = asyncapi()
    for name, operation in document["operations"].items():
        channel_ref = operation["channel"]["$ref"]
        assert channel_ref.removeprefix("#/channels/") in document["channels"], name
        assert operation["messages"], name
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), name
            assert deref(deref(message, document), document)["payload"], name


def test_every_ref_in_the_contracts_resolves() -> None:
    """Every `$ref` in asyncapi.yaml and in the JSON Schemas points at an existing file and node."""
    documents = {ASYNCAPI: asyncapi()} | {
        path: json.loads(path.read_text(encoding="utf-8")) for path in (SCHEMAS / "json").glob("*.json")
    }
    for base, document in documents.items():
        found = list(refs(document))
        assert found or base != ASYNCAPI
        for ref in found:
            assert resolve(ref, document, base) is not None, f"{base.name}: {ref}"


@pytest.mark.parametrize("route", ROUTES)
def test_input_and_dead_letter_messages_carry_their_topics_event_schema(route: str) -> None:
    """An input topic's message payload is its event's schema file; its dead letter's payload includes the same."""
    settings = Settings()
    reference = f"./json/{export.schema_file(route)}"
    topic = settings.topic_for(RouteName(route))
    assert [m["payload"] for m in channel_messages(topic)] == [{"$ref": reference}]
    (dead_letter,) = channel_messages(settings.dlq_topic(topic))
    assert {"$ref": reference} in dead_letter["payload"]["anyOf"]


@pytest.mark.parametrize("name", sorted(messages()))
def test_message_payload_and_header_schemas_are_valid_json_schema(name: str) -> None:
    """Each message's payload and headers (resolved through `$ref`) are valid JSON Schema 2020-12; headers are objects."""
    document = asyncapi()
    message = messages()[name]
    Draft202012Validator.check_schema(deref(message["payload"], document))
    if "headers" in message:
        headers = deref(message["headers"], document)
        Draft202012Validator.check_schema(headers)
        assert headers["type"] == "object"


def test_dead_letter_headers_schema_matches_the_headers_the_worker_writes() -> None:
    """The headers DeadLetter writes pass the documented schema, which requires exactly the x-* headers it adds."""
    record = FakeRecord(
        "orchestrator.incidents", 3, 1207, b"{not json", b"wf-1", (("traceparent", b"00-a-01"),)
    )
    letter = DeadLetter(record, "orchestrator.incidents.dlq", "validation", "not_json", "value is not JSON")
    headers = {key: value.decode() for key, value in letter.headers()}
    for message in channel_messages(Settings().dlq_topic("orchestrator.incidents")):
        schema = deref(message["headers"], asyncapi())
        assert list(validator(schema).iter_errors(headers)) == []
        assert set(schema["required"]) == set(headers) - {"traceparent"}
        assert not validator(schema).is_valid(headers | {"x-error-type": "unknown"})


def test_delivery_message_is_telemetry_with_retry_count_and_buffer_id_keyed_by_workflow() -> None:
    """Delivered telemetry's value is the telemetry schema, its headers `retry_count` and `buffer_id`, its key the workflow id."""
    (message,) = channel_messages(DELIVERY_TOPIC)
    assert message["payload"] == {"$ref": "./json/telemetry.schema.json"}
    headers = deref(message["headers"], asyncapi())
    assert set(headers["required"]) == {"retry_count", "buffer_id"}
    assert validator(headers).is_valid({"retry_count": "1", "buffer_id": "tel-12"})
    assert not validator(headers).is_valid({"retry_count": "one", "buffer_id": "tel-12"})
    assert "correlation.workflow_id" in message["bindings"]["kafka"]["key"]["description"]
