"""The replay and dead-letter replay commands without servers: selections, headers, groups, progress, parsing."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from worker.commands.cli import build_parser, main
from worker.commands.output import PlainReporter, reporting
from worker.dead_letters.headers import error_type, replay_headers
from worker.dead_letters.replay import DlqReplayOptions
from worker.dead_letters.targets import SourceRecord
from worker.settings import RouteName, Settings
from worker.telemetry.buffer import ParkedScope
from worker.telemetry.replay import Selection, Tally

T0, T1 = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)


def test_the_default_selection_is_every_unparked_document() -> None:
    """Without filters a replay takes every document whose `parked` is absent and that is not a delivered tombstone."""
    assert Selection().query() == {"parked": None, "state": None}


def test_filters_combine_into_one_query() -> None:
    """Workflow, plan, a half-open window on the chosen field and a minimum retry count are all applied."""
    query = Selection(workflow_id="wf", plan_id="p", since=T0, until=T1, time_field="buffered_at",
                      min_retry_count=2, parked=ParkedScope.INCLUDE).query()  # fmt: skip
    assert query == {
        "correlation.workflow_id": "wf",
        "correlation.plan_id": "p",
        "buffered_at": {"$gte": T0, "$lt": T1},
        "retry_count": {"$gte": 2},
        "state": None,
    }
    assert Selection(parked=ParkedScope.ONLY, until=T1).query() == {
        "parked": True,
        "state": None,
        "timestamp": {"$lt": T1},
    }


def dead_letter(headers: list[tuple[str, bytes]]) -> SourceRecord:
    return SourceRecord(topic="in.dlq", partition=0, offset=41, key=b"k", value=b"{}", headers=headers)


def test_replayed_headers_drop_ours_keep_the_producers_and_say_where_from() -> None:
    """x-error-*, x-source-* and x-failed-at go; other headers stay in order; x-replayed-from is added once."""
    record = dead_letter([("trace", b"t"), ("x-error-type", b"validation"), ("x-source-topic", b"in"),
                          ("x-failed-at", b"2026"), ("x-replayed-from", b"old"), ("event_id", b"e1")])  # fmt: skip
    assert replay_headers(record) == [
        ("trace", b"t"),
        ("event_id", b"e1"),
        ("x-replayed-from", b"in.dlq:0:41"),
    ]


def test_a_dead_letter_returns_to_its_source_coordinates() -> None:
    """--direct processes a record under its source topic, partition and offset when the headers give them."""
    record = dead_letter(
        [("x-source-partition", b"2"), ("x-source-offset", b"17"), ("x-error-type", b"persist_failed")]
    )
    source = SourceRecord.of(record, "in")
    assert (source.topic, source.partition, source.offset) == ("in", 2, 17)
    assert error_type(record) == "persist_failed"
    bare = SourceRecord.of(dead_letter([("x-source-offset", b"n/a")]), "in")
    assert (bare.partition, bare.offset) == (0, 41)
    assert error_type(dead_letter([])) == "unknown"


def test_each_error_type_filter_keeps_its_own_position() -> None:
    """The default consumer group names the error types, so differently filtered runs do not share a position."""
    settings = Settings(kafka_consumer_group="pw")
    assert DlqReplayOptions().group_for(settings) == "pw-dlq-replay"
    chosen = DlqReplayOptions(error_types=frozenset({"validation", "persist_failed"}))
    assert chosen.group_for(settings) == "pw-dlq-replay-persist_failed+validation"
    assert DlqReplayOptions(group="mine").group_for(settings) == "mine"


def test_plain_progress_prints_every_five_percent_and_a_closing_line() -> None:
    """Off a terminal, progress is a line per 5% of the work, the final state shown once."""
    out = io.StringIO()
    with reporting("replay", 100, Tally(), stream=out) as reporter:
        assert isinstance(reporter, PlainReporter)
        for done in range(1, 101):
            reporter.update(Tally(sent=done))
    lines = out.getvalue().splitlines()
    assert lines[0] == "replay: 5/100 (5%) sent=5 failed=0 skipped=0"
    assert len(lines) == 20 and lines[-1] == "replay: 100/100 (100%) sent=100 failed=0 skipped=0"


@pytest.mark.parametrize(
    "argv",
    [["telemetry", "redeliver", "--once"], ["redeliver", "--once"],
     ["telemetry", "replay", "--dry-run", "--since", "2026-11-01", "--limit", "5", "--parked-only"],
     ["replay", "--dry-run", "--since", "2026-11-01", "--limit", "5", "--parked-only"],
     ["dlq", "replay", "--route", "incidents", "--error-type", "persist_failed", "--direct", "--from-offset", "0"]],
)  # fmt: skip
def test_the_new_commands_parse(argv: list[str]) -> None:
    """telemetry redeliver, telemetry replay (and their former spellings) and dlq replay accept their options."""
    args = build_parser().parse_args(argv)
    assert callable(args.handler)


@pytest.mark.parametrize(
    "argv",
    [["replay", "--limit", "0"], ["replay", "--parked-only", "--include-parked"], ["replay", "--since", "soon"],
     ["telemetry", "replay", "--limit", "-1"], ["telemetry", "redeliver", "--limit", "1"],
     ["dlq", "replay", "--from-offset", "1", "--from-time", "2026-11-01"], ["dlq", "replay", "--route", "nope"]],
)  # fmt: skip
def test_bad_usage_exits_2(argv: list[str]) -> None:
    """Impossible option values and combinations are refused by the parser (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2


@pytest.mark.usefixtures("restore_structlog")
def test_an_unknown_error_type_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`dlq replay --error-type` names the known types when given another."""
    assert main(["dlq", "replay", "--error-type", "oops"]) == 2
    assert "persist_failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [["telemetry", "redeliver"], ["telemetry", "replay"], ["redeliver"], ["replay"], ["dlq", "replay"]],
)
def test_each_command_explains_itself(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--help describes what the command does and its exit codes or logs."""
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    text = capsys.readouterr().out
    assert len(text) > 600 and ("Exit 0" in text or "telemetry_parked" in text)


def test_routes_are_named_as_in_fail_closed_routes() -> None:
    """--route takes the same route names as FAIL_CLOSED_ROUTES."""
    args = build_parser().parse_args(["dlq", "replay", *(x for r in RouteName for x in ("--route", r.value))])
    assert args.route == [r.value for r in RouteName]
