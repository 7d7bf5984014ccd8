"""Every workload of deploy/ can start: the worker's settings, loaded from exactly the environment its
manifest gives the container (and nothing but PATH besides), are accepted by `persistence-worker
config`, as shipped and with SASL switched on the way the manifests' comments say."""

from __future__ import annotations

import shlex

import pytest

from tests.deploy.manifests import (
    K8S,
    Manifest,
    commented_settings,
    compose,
    compose_environment,
    config,
    container_environment,
    effective,
    manifests,
    named,
    pod_specs,
    run_config,
    with_sasl,
)

CONTAINERS = [(f"{workload} {container['name']}", container)
              for workload, pod in pod_specs() for container in pod["containers"]]  # fmt: skip
# The compose services given a MongoDB URI: the worker, the demo publisher, the backup (the broker's
# own KAFKA_* variables are its configuration, not the worker's).
COMPOSE_SERVICES = sorted(name for name, service in compose()["services"].items()
                          if "MONGODB_URI" in compose_environment(service))  # fmt: skip


def _accepted(environment: dict[str, str]) -> str:
    """`config`'s output for `environment`; fails with the worker's own message unless it exits 0."""
    result = run_config(environment)
    assert result.returncode == 0, f"`persistence-worker config` exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def test_every_workload_is_checked() -> None:
    """The Deployment, both CronJobs and the compose worker, demo publisher and backup are all checked."""
    assert {workload.partition(" ")[0] for workload, _ in CONTAINERS} == {
        "Deployment/persistence-worker", "CronJob/persistence-worker-replay", "CronJob/persistence-worker-backup",
    }  # fmt: skip
    assert COMPOSE_SERVICES == ["backup", "demo-publisher", "worker"]


@pytest.mark.parametrize(("workload", "container"), CONTAINERS, ids=[workload for workload, _ in CONTAINERS])
def test_kubernetes_container_settings_are_accepted(workload: str, container: Manifest) -> None:
    """The environment the manifests give the container (ConfigMap, Secret, literal env) is valid settings."""
    _accepted(container_environment(container, manifests()))


@pytest.mark.parametrize(("workload", "container"), CONTAINERS, ids=[workload for workload, _ in CONTAINERS])
def test_kubernetes_container_settings_are_accepted_with_sasl(workload: str, container: Manifest) -> None:
    """With SASL switched on as configmap.yaml and secret.yaml say, the environment is still valid settings."""
    environment = container_environment(container, with_sasl(manifests()))
    output = _accepted(environment)
    if "KAFKA_SECURITY_PROTOCOL" in environment:
        assert effective(output, "KAFKA_SECURITY_PROTOCOL").startswith("SASL_")


@pytest.mark.parametrize("service", COMPOSE_SERVICES)
def test_compose_service_settings_are_accepted(service: str) -> None:
    """The environment compose gives the service is valid settings."""
    _accepted(compose_environment(compose()["services"][service]))


def test_sasl_is_switched_on_by_the_commented_settings() -> None:
    """The commented-out settings are the SASL ones: protocol, mechanism and user in the ConfigMap, password in the Secret."""
    in_config = commented_settings(K8S / "configmap.yaml")
    assert set(in_config) == {"KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME"}
    assert in_config["KAFKA_SECURITY_PROTOCOL"].startswith("SASL_")
    assert set(commented_settings(K8S / "secret.yaml")) == {"KAFKA_SASL_PASSWORD"}


def _secret_example() -> tuple[dict[str, str], dict[str, str]]:
    """secret.yaml's `kubectl create secret` example: (its literals, the literals its comment adds for SASL)."""
    lines = [line.lstrip("#").strip() for line in (K8S / "secret.yaml").read_text().splitlines()
             if line.startswith("#")]  # fmt: skip
    start = next(index for index, line in enumerate(lines) if "create secret generic" in line)
    end = next(index for index in range(start, len(lines)) if not lines[index].endswith("\\"))
    command, rest = lines[start : end + 1], lines[end + 1 :]
    return _literals(command), _literals(rest)


def _literals(lines: list[str]) -> dict[str, str]:
    words = shlex.split(" ".join(line.rstrip("\\") for line in lines))
    pairs = [word.removeprefix("--from-literal=") for word in words if word.startswith("--from-literal=")]
    return dict(pair.partition("=")[::2] for pair in pairs)


def test_the_secret_example_holds_the_shipped_keys() -> None:
    """The example command creates the shipped Secret's keys; the literal it adds for SASL is the commented one."""
    literals, for_sasl = _secret_example()
    assert set(literals) == set(named("Secret", "persistence-worker")["stringData"])
    assert set(for_sasl) == set(commented_settings(K8S / "secret.yaml"))


@pytest.mark.parametrize("sasl", [False, True], ids=["plain", "sasl"])
def test_the_secret_example_gives_accepted_settings(sasl: bool) -> None:
    """The ConfigMap with the Secret the example creates is valid settings, without and with SASL."""
    literals, for_sasl = _secret_example()
    settings = {**config(), **literals}
    if sasl:
        settings |= commented_settings(K8S / "configmap.yaml") | for_sasl
    _accepted(settings)
