"""Prometheus scrapes the worker under the job its alerts select: every `job=` selector of a
platform's alert rules (and of the dashboard) names a job that the scrape configuration shipped for
that platform produces: deploy/prometheus/prometheus.yml for compose, the ServiceMonitor for
Kubernetes (whose Prometheus loads the PrometheusRule), deploy/README.md's scrape job for a
Prometheus without the Operator (which loads alerts.yaml)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import DEPLOY, Manifest, manifests, one, pod_labels
from tests.deploy.test_dashboard import queries

README = DEPLOY / "README.md"
RULES = DEPLOY / "prometheus" / "alerts.yaml"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
PROMETHEUS_RULE = DEPLOY / "k8s" / "prometheusrule.yaml"
JOB_SELECTOR = re.compile(r'\bjob\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def job_selectors(expr: str) -> list[tuple[str, str]]:
    """The (operator, value) of every matcher on the `job` label in a PromQL expression."""
    return JOB_SELECTOR.findall(expr)


def selected_by(operator: str, value: str, job: str) -> bool:
    """Whether the matcher `job<operator>"<value>"` selects series of `job` (regexes are anchored)."""
    if operator in ("=", "!="):
        return (job == value) == (operator == "=")
    return bool(re.fullmatch(value, job)) == (operator == "=~")


def _rule_expressions(groups: list[dict[str, Any]]) -> list[str]:
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def _relabelled_job(relabelings: list[dict[str, str]], key: str) -> str | None:
    """The job a relabeling rule writes, if one does (a plain `replace` into `job`)."""
    for rule in relabelings:
        if rule.get(key) == "job" and rule.get("action", "replace").lower() == "replace":
            return rule["replacement"]
    return None


def readme_scrape_config() -> str:
    """The scrape configuration deploy/README.md gives for a Prometheus without the Operator."""
    section = README.read_text().partition("## Prometheus without the Operator")[2]
    found = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert found, "deploy/README.md has no scrape configuration for a Prometheus without the Operator"
    return found[1]


def scrape_config_jobs(text: str) -> set[str]:
    """The job label a Prometheus configuration gives its targets: job_name unless relabelled."""
    jobs = set()
    for scrape in yaml.safe_load(text)["scrape_configs"]:
        jobs.add(_relabelled_job(scrape.get("relabel_configs", []), "target_label") or scrape["job_name"])
    return jobs


def service_monitor_jobs(objects: list[Manifest]) -> set[str]:
    """The job label the Prometheus Operator gives the targets of each ServiceMonitor's endpoints:
    a relabeling's, else the selected Service's `jobLabel` label, else the Service's name."""
    jobs = set()
    for monitor in (m for m in objects if m["kind"] == "ServiceMonitor"):
        for service in _selected_services(monitor, objects):
            labels = service["metadata"].get("labels", {})
            default = labels.get(monitor["spec"].get("jobLabel", ""), service["metadata"]["name"])
            for endpoint in monitor["spec"]["endpoints"]:
                jobs.add(_relabelled_job(endpoint.get("relabelings", []), "targetLabel") or default)
    return jobs


def _selected_services(monitor: Manifest, objects: list[Manifest]) -> list[Manifest]:
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    return [
        m for m in objects if m["kind"] == "Service" and wanted <= m["metadata"].get("labels", {}).items()
    ]


PLATFORMS = {
    "compose": (lambda: yaml.safe_load(RULES.read_text())["groups"],
                lambda: scrape_config_jobs(SCRAPE_CONFIG.read_text())),
    "kubernetes": (lambda: yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]["groups"],
                   lambda: service_monitor_jobs(manifests())),
    "kubernetes without the Operator": (lambda: yaml.safe_load(RULES.read_text())["groups"],
                                        lambda: scrape_config_jobs(readme_scrape_config())),
}  # fmt: skip


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_job_an_alert_selects_is_scraped(platform: str) -> None:
    """Each `job` matcher in the platform's alert rules and the dashboard matches a job its scrape configuration produces."""
    groups, scraped = PLATFORMS[platform]
    jobs = scraped()
    expressions = [*_rule_expressions(groups()), *(expr for _, expr in queries())]
    selectors = {selector for expr in expressions for selector in job_selectors(expr)}
    assert selectors, "no alert selects a job: this test checks nothing"
    unscraped = sorted(f'job{op}"{value}"' for op, value in selectors
                       if not any(selected_by(op, value, job) for job in jobs))  # fmt: skip
    assert not unscraped, (
        f"{platform}: selected, but no shipped scrape configuration produces it: {unscraped}; scraped: {sorted(jobs)}"
    )


def test_service_monitor_scrapes_the_worker_service_metrics() -> None:
    """The ServiceMonitor selects the worker's Service, which selects the worker's pods, and scrapes /metrics on its port http."""
    monitor = one("ServiceMonitor")
    (service,) = _selected_services(monitor, manifests())
    assert service == one("Service")
    assert service["spec"]["selector"] == dict(pod_labels()).get("Deployment/persistence-worker")
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("http", "/metrics")]
    assert "http" in {port["name"] for port in service["spec"]["ports"]}


def test_worker_pods_carry_no_annotation_scrape_hints() -> None:
    """The worker's pods carry no prometheus.io/* annotations: a Prometheus scraping by them names the job after its own scrape config, which the alerts do not select."""
    for manifest in manifests():
        if manifest["kind"] == "Deployment":
            annotations = manifest["spec"]["template"]["metadata"].get("annotations", {})
            assert not [key for key in annotations if key.startswith("prometheus.io/")]
