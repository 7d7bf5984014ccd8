"""The alert rules in deploy/: valid for promtool, each alert tested firing and quiet, documented.

promtool comes from Debian's `prometheus` package, installed by `make setup` where missing; these
tests fail (never skip) without it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import worker.app  # noqa: F401  (imports every module that defines a metric)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yaml"
PROMETHEUS_RULE = ROOT / "deploy" / "k8s" / "prometheusrule.yaml"
RUNBOOK = ROOT / "docs" / "operations.md"
SEVERITIES = {"critical", "warning"}
METRIC_NAME = re.compile(r"\bpersistence(?:_[a-z0-9]+)+\b")
STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run promtool; fail (not skip) where it is missing."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: run `make setup` (installs Debian's prometheus package)")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in rules()]


def exported_metric_names() -> set[str]:
    """Every series name the worker's metrics can expose (counters as `_total`, histograms' three)."""
    names: set[str] = {"persistence_ready"}  # registered when app.py calls track_readiness
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def metric_names_in(expr: str) -> set[str]:
    """The series names a PromQL expression reads (ours start with persistence_)."""
    return set(METRIC_NAME.findall(STRING_LITERAL.sub('""', expr)))


def runbook_anchors() -> set[str]:
    return set(re.findall(r'<a id="([a-z0-9-]+)"></a>', RUNBOOK.read_text()))


def render_prometheus_rule() -> str:
    """deploy/k8s/prometheusrule.yaml as it must be: its header, then alerts.yaml's groups."""
    header = "".join(line for line in PROMETHEUS_RULE.read_text().splitlines(True) if line.startswith("#"))

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "persistence-worker",
            "labels": {
                "app.kubernetes.io/name": "persistence-worker",
                "app.kubernetes.io/component": "alerts",
            },
        },
        "spec": {"groups": yaml.safe_load(RULES.read_text())["groups"]},
    }
    return header + yaml.dump(document, Dumper=Dumper, sort_keys=False, width=200)


def test_promtool_checks_the_rules_file() -> None:
    """`promtool check rules` accepts deploy/prometheus/alerts.yaml."""
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_prometheus_rule_groups(tmp_path: Path) -> None:
    """`promtool check rules` accepts the PrometheusRule's groups as a rules file."""
    spec = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]
    extracted = tmp_path / "prometheusrule-groups.yaml"
    extracted.write_text(yaml.safe_dump({"groups": spec["groups"]}))
    result = promtool("check", "rules", extracted)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_is_the_rules_file() -> None:
    """The PrometheusRule carries alerts.yaml's groups unchanged (regenerate it with `python -m` this module)."""
    assert PROMETHEUS_RULE.read_text() == render_prometheus_rule()
    assert (
        yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]["groups"]
        == yaml.safe_load(RULES.read_text())["groups"]
    )


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules` passes every firing and quiet case of alerts.test.yaml."""
    result = promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """Each alert is expected to fire in one promtool case and to stay silent in another."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert set(alert_names()) == fires == quiet


def test_the_required_alerts_exist() -> None:
    """The alerts the issue asks for are all defined."""
    required = {
        "PersistenceWorkerDown", "PersistenceWorkerNotReady", "PersistenceConsumerStalled",
        "PersistenceConsumerLagGrowing", "PersistencePersistFailed", "PersistenceDeadLettersValidation",
        "PersistenceDeadLettersPersist", "PersistenceWriteRetriesExcessive", "PersistenceTelemetryDeliveryLate",
        "PersistenceTelemetryParked", "PersistenceRedeliveryFailing", "PersistenceIndexMissing",
    }  # fmt: skip
    assert required <= set(alert_names())


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_alert_has_severity_summary_and_a_runbook_row(rule: dict[str, Any]) -> None:
    """Every alert has a known severity, a summary in words, and a runbook_url to its row in docs/operations.md."""
    assert rule["labels"]["severity"] in SEVERITIES
    assert len(rule["annotations"]["summary"].split()) >= 6
    url = rule["annotations"]["runbook_url"]
    assert url.startswith("https://") and "/docs/operations.md#" in url
    anchor = url.rpartition("#")[2]
    assert anchor == f"alert-{rule['alert'].lower()}"
    assert anchor in runbook_anchors(), f'docs/operations.md has no <a id="{anchor}"></a> in its alerts table'


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_alert_reads_only_metrics_the_worker_exports(rule: dict[str, Any]) -> None:
    """Every persistence_* series an alert reads is one the worker's registry defines."""
    unknown = metric_names_in(rule["expr"]) - exported_metric_names()
    assert not unknown, f"{rule['alert']} reads series the worker does not export: {sorted(unknown)}"


if __name__ == "__main__":  # rewrite the PrometheusRule from alerts.yaml
    PROMETHEUS_RULE.write_text(render_prometheus_rule())


def test_the_integration_tests_shortening_changes_only_durations(tmp_path: Path) -> None:
    """The real-Prometheus test's rules differ from alerts.yaml only in `for:` and windows, minutes read as seconds."""
    from tests.integration.test_prometheus_alerts import shorten

    short = yaml.safe_load(shorten(RULES.read_text()))["groups"][0]["rules"]
    for original, shortened in zip(rules(), short, strict=True):
        assert re.sub(r"\[(\d+)s\]", r"[\1m]", shortened["expr"]) == original["expr"]
        assert shortened.get("for", "").replace("s", "m") == original.get("for", "")
        assert {k: v for k, v in shortened.items() if k not in ("expr", "for")} == {
            k: v for k, v in original.items() if k not in ("expr", "for")
        }
    (tmp_path / "short.yaml").write_text(shorten(RULES.read_text()))
    result = promtool("check", "rules", tmp_path / "short.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
