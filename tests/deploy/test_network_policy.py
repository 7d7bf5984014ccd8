"""The NetworkPolicy: the worker's pods accept connections only from Prometheus, on the metrics
port, and open them only to Kafka, MongoDB and DNS, at the addresses the ConfigMap and Secret name."""

from __future__ import annotations

from typing import Any

from pymongo.uri_parser import parse_uri

from tests.deploy.manifests import Manifest, config, named, one, pod_labels

DNS = {(53, "UDP"), (53, "TCP")}
NAMESPACE_LABEL = "kubernetes.io/metadata.name"


def _policy() -> Manifest:
    return one("NetworkPolicy")


def _ports(rule: dict[str, Any]) -> set[tuple[int | str, str]]:
    return {(port["port"], port.get("protocol", "TCP")) for port in rule["ports"]}


def _namespace(host: str) -> str:
    """The namespace of a cluster DNS name (`service.namespace.svc`, `pod.service.namespace.svc`)."""
    labels = host.split(".")
    assert "svc" in labels, f"{host} is not a Service's DNS name"
    return labels[labels.index("svc") - 1]


def _destinations() -> dict[str, set[tuple[str, int]]]:
    """(host, port) of each server the worker connects to, by name."""
    kafka = {(host, int(port)) for host, _, port in
             (address.rpartition(":") for address in config()["KAFKA_BOOTSTRAP_SERVERS"].split(","))}  # fmt: skip
    uri = named("Secret", "persistence-worker")["stringData"]["MONGODB_URI"]
    return {"kafka": kafka, "mongodb": set(parse_uri(uri)["nodelist"])}


def test_policy_covers_every_pod_and_both_directions() -> None:
    """It selects the pods of the Deployment and both CronJobs, and restricts what comes in and what goes out."""
    policy = _policy()["spec"]
    selected = policy["podSelector"]["matchLabels"].items()
    for workload, labels in pod_labels():
        assert selected <= labels.items(), f"{workload} is not covered"
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]


def test_only_prometheus_reaches_only_the_metrics_port() -> None:
    """One ingress rule: from Prometheus's pods in its namespace (a selector, not everyone) to the port named http."""
    (rule,) = _policy()["spec"]["ingress"]
    (source,) = rule["from"]
    assert source["namespaceSelector"]["matchLabels"] and source["podSelector"]["matchLabels"]
    assert _ports(rule) == {("http", "TCP")}


def test_egress_reaches_only_dns_kafka_and_mongodb() -> None:
    """Egress allows DNS, and Kafka's and MongoDB's ports in their own namespaces, and nothing else."""
    rules = _policy()["spec"]["egress"]
    assert all(rule.get("to") for rule in rules), "an egress rule without `to` opens those ports to everyone"
    allowed = {port for rule in rules for port in _ports(rule)}
    wanted = {(port, "TCP") for servers in _destinations().values() for _, port in servers}
    assert allowed == DNS | wanted
    for name, servers in _destinations().items():
        ports = {port for _, port in servers}
        (rule,) = [rule for rule in rules if {port for port, _ in _ports(rule)} == ports]
        namespaces = {peer["namespaceSelector"]["matchLabels"][NAMESPACE_LABEL] for peer in rule["to"]}
        assert namespaces == {_namespace(host) for host, _ in servers}, name
