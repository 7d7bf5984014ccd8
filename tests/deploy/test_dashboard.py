"""The Grafana dashboard in deploy/grafana: every query is PromQL that promtool evaluates to data on
a sample of the worker's series, and every metric it names is one the worker exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import worker.ops.metrics
import worker.telemetry.loop
from tests.deploy.test_alerts import exported_metric_names, metric_names_in, promtool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "persistence-worker.json"
# Grafana's own variables, given the value Grafana would pick on a 1 m scrape for evaluation.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m"}
LABEL_VALUES = {
    "route": "results", "error_type": "validation", "policy": "fail-open", "collection": "incidents",
    "topic": "orchestrator.results", "partition": "0", "outcome": "delivered", "stage": "kafka",
    "version": "0.1.0", "python": "3.11.7", "aiokafka": "0.14.0", "pymongo": "4.20.1",
}  # fmt: skip
WORKER = {"job": "persistence-worker", "instance": "w1"}


def panels(items: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in items if items is not None else json.loads(DASHBOARD.read_text())["panels"]:
        yield panel
        yield from panels(panel.get("panels", []))


def queries() -> list[tuple[str, str]]:
    """(panel id and refId, PromQL with Grafana's variables replaced) of every target."""
    found = []
    for panel in panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((f"panel_{panel['id']}_{target['refId']}", expr))
    return found


def _metrics() -> list[MetricWrapperBase]:
    modules = (worker.ops.metrics, worker.telemetry.loop)
    return [
        value for module in modules for value in vars(module).values() if isinstance(value, MetricWrapperBase)
    ]


def _series(name: str, labelnames: tuple[str, ...], values: str, **extra: str) -> dict[str, str]:
    labels = {**WORKER, **{label: LABEL_VALUES.get(label, "x") for label in labelnames}, **extra}
    text = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def sample_series() -> list[dict[str, str]]:
    """One plausible series per worker metric (buckets for histograms), and `up`."""
    series = [_series("up", (), "1x30")]
    for metric in _metrics():
        name, labelnames, kind = metric._name, metric._labelnames, metric._type
        if kind == "counter":
            series.append(_series(f"{name}_total", labelnames, "0+10x30"))
        elif kind == "histogram":
            for le, values in (("0.1", "0+1x30"), ("1", "0+3x30"), ("+Inf", "0+4x30")):
                series.append(_series(f"{name}_bucket", labelnames, values, le=le))
            series += [
                _series(f"{name}_sum", labelnames, "0+2x30"),
                _series(f"{name}_count", labelnames, "0+4x30"),
            ]
        elif name.endswith("_timestamp_seconds"):
            series.append(_series(name, labelnames, "0+60x30"))
        else:
            series.append(_series(name, labelnames, "5x30"))
    return series


def test_every_query_evaluates_to_data_in_promtool(tmp_path: Path) -> None:
    """Each panel query, as a recording rule, is valid PromQL and returns data on the sample series."""
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:{key}", "expr": expr}
                                                         for key, expr in queries()]}]}  # fmt: skip
    (tmp_path / "dashboard-rules.yaml").write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", tmp_path / "dashboard-rules.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    expr_tests = [
        {"expr": f"absent(dashboard:{key})", "eval_time": "15m", "exp_samples": []} for key, _ in queries()
    ]
    suite = {
        "rule_files": ["dashboard-rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": sample_series(), "promql_expr_test": expr_tests}],
    }
    (tmp_path / "dashboard-test.yaml").write_text(yaml.safe_dump(suite))
    result = promtool("test", "rules", tmp_path / "dashboard-test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_query_uses_an_unknown_variable() -> None:
    """After Grafana's interval variables, no `$` variable is left in any query."""
    leftovers = {key: expr for key, expr in queries() if "$" in expr}
    assert not leftovers


@pytest.mark.parametrize(("key", "expr"), queries(), ids=[key for key, _ in queries()])
def test_every_metric_a_panel_reads_is_exported(key: str, expr: str) -> None:
    """Every persistence_* series a panel names is one the worker's registry defines."""
    unknown = metric_names_in(expr) - exported_metric_names()
    assert not unknown, f"{key} reads series the worker does not export: {sorted(unknown)}"


def test_the_dashboard_covers_what_ops_watch() -> None:
    """Throughput, dead letters, lag, latency quantiles, retries, failures, buffer and redelivery all have a query."""
    text = " ".join(expr for _, expr in queries())
    for needle in (
        "persistence_records_stored_total", "persistence_records_skipped_total",
        "persistence_records_dead_lettered_total", "persistence_consumer_lag_records",
        "histogram_quantile(0.5, sum by (le, route) (rate(persistence_write_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, route) (rate(persistence_write_duration_seconds_bucket",
        "persistence_write_retries_total", "persistence_persist_failures_total",
        "persistence_telemetry_buffer_pending", "persistence_telemetry_buffer_parked",
        "persistence_telemetry_buffer_oldest_pending_age_seconds", "persistence_telemetry_redelivery_total",
    ):  # fmt: skip
        assert needle in text, needle
    assert re.search(r"by \(error_type", text)


def test_panels_read_the_datasource_variable_and_have_unique_ids() -> None:
    """Every panel with queries uses the ${datasource} variable; panel ids are unique."""
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))
    dashboard = json.loads(DASHBOARD.read_text())
    assert [variable["name"] for variable in dashboard["templating"]["list"]] == ["datasource"]
    for panel in panels():
        if panel.get("targets"):
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
