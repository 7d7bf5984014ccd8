"""What `make demo` prints and how it is started, checked without servers."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.demo.__main__ import Expected, Landed, verdict
from tests.demo.keep import keep_requested, try_it
from tests.demo.tables import counters_table, format_table, outcome_label, route_counters, sample_line
from worker.settings import RouteName

ROOT = Path(__file__).resolve().parents[2]
METRICS = """\
# HELP persistence_records_consumed_total Records polled from Kafka
# TYPE persistence_records_consumed_total counter
persistence_records_consumed_total{route="results"} 165.0
persistence_records_consumed_total{route="incidents"} 165.0
# TYPE persistence_records_stored_total counter
persistence_records_stored_total{route="results"} 156.0
persistence_records_stored_total{route="incidents"} 155.0
# TYPE persistence_records_dead_lettered_total counter
persistence_records_dead_lettered_total{error_type="validation",route="results"} 8.0
persistence_records_dead_lettered_total{error_type="persist_refused",route="results"} 1.0
persistence_records_dead_lettered_total{error_type="validation",route="incidents"} 10.0
# TYPE persistence_records_skipped_total counter
persistence_records_skipped_total{route="results"} 15.0
persistence_records_skipped_total{route="incidents"} 15.0
# TYPE persistence_write_retries_total counter
persistence_write_retries_total{collection="incidents"} 2.0
"""


def test_every_column_is_named_and_as_wide_as_its_widest_cell() -> None:
    """A demo table prints its title, a header naming each column, then rows aligned under it."""
    lines = format_table("Validation history", ("timestamp", "outcome", "result hash"),
                         [("2026-11-25T08:09:53+00:00", "valid", "628ca8b744705c89")])  # fmt: skip
    assert lines == [
        "Validation history",
        "  timestamp                  outcome  result hash",
        "  2026-11-25T08:09:53+00:00  valid    628ca8b744705c89",
    ]


@pytest.mark.parametrize(
    ("stored", "label"), [(True, "valid"), (1, "valid"), (False, "invalid"), (0, "invalid")]
)
def test_a_validation_outcome_reads_valid_or_invalid_however_the_server_returns_it(
    stored: object, label: str
) -> None:
    """The stored boolean is labelled valid / invalid, whether the server hands back True/False or 1/0."""
    assert outcome_label(stored) == label


def test_the_counters_per_route_mean_the_same_on_every_route() -> None:
    """The /metrics counters become one row per route: consumed, stored, skipped, dead_lettered (summed over error types)."""
    counters = route_counters(METRICS)
    assert counters == {
        "results": {"consumed": 165, "stored": 156, "skipped": 15, "dead_lettered": 9},
        "incidents": {"consumed": 165, "stored": 155, "skipped": 15, "dead_lettered": 10},
    }
    assert counters_table("Counters", counters)[1:] == [
        "  route      consumed  stored  skipped  dead_lettered",
        "  incidents  165       155     15       10",
        "  results    165       156     15       9",
    ]


def test_the_demo_fails_when_a_route_does_not_skip_its_duplicates() -> None:
    """The demo's verdict asks every route to count its redelivered duplicates as skipped (results too)."""
    expected = Expected(published=Counter({RouteName.RESULTS: 3}), documents=Counter({RouteName.RESULTS: 2}),
                        duplicates=Counter({RouteName.RESULTS: 1}), malformed=0)  # fmt: skip
    counts = {"consumed": 3, "stored": 3, "skipped": 1, "dead_lettered": 0}
    documents = {"validation_audit": 0, "workflow_results": 2, "incidents": 0, "telemetry_buffer": 0}
    assert verdict(Landed(documents, 0, {"results": counts}), expected)
    assert not verdict(Landed(documents, 0, {"results": {**counts, "skipped": 0}}), expected)


def test_a_sample_log_line_prefers_one_that_skipped_duplicates() -> None:
    """The canonical line shown is one with duplicates skipped when there is one, so every count shows."""
    lines = [{"event": "workflow_result_saved", "stored": 5, "skipped": 0},
             {"event": "workflow_result_saved", "stored": 4, "skipped": 2}]  # fmt: skip
    assert sample_line(lines, "workflow_result_saved") == lines[1]
    assert sample_line(lines[:1], "workflow_result_saved") == lines[0]
    assert sample_line(lines, "event_rejected") is None


@pytest.mark.parametrize(
    ("argv", "environ", "keep"),
    [([], {}, False), (["--keep"], {}, True), ([], {"KEEP": "1"}, True), ([], {"KEEP": "0"}, False)],
)
def test_keep_is_asked_by_make_s_variable_or_a_flag(
    argv: list[str], environ: dict[str, str], keep: bool
) -> None:
    """`make demo KEEP=1` (KEEP in the environment) or `--keep` keeps the servers up."""
    assert keep_requested(argv, environ) is keep


def test_kept_servers_come_with_the_variables_and_commands_to_try() -> None:
    """With KEEP, the demo prints both servers, an export line for their variables, and query commands on its data."""
    lines = try_it(
        "127.0.0.1:9092", "mongodb://127.0.0.1:27017/", plan_id="plan-033", program="persistence-worker"
    )
    assert "127.0.0.1:9092" in lines[0] and "mongodb://127.0.0.1:27017/" in lines[0]
    assert "  export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 MONGODB_URI=mongodb://127.0.0.1:27017/" in lines
    assert "  persistence-worker query plan-history plan-033 --limit 5" in lines
    assert "  persistence-worker query validations" in lines


@pytest.mark.parametrize(("target", "needs_apt"), [("demo", False), ("test", True)])
def test_make_demo_needs_no_apt_and_make_test_still_installs_promtool(target: str, needs_apt: bool) -> None:
    """`make demo` depends on the Python environment only (no root); `make test` keeps installing promtool."""
    planned = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True,
                             timeout=60, check=True).stdout  # fmt: skip
    assert ("apt-get install" in planned) is needs_apt
