"""What deploy/ gives the worker, read the way Kubernetes and compose read it: the manifests (as
files, or as `kubectl kustomize` renders them), each container's environment, and the worker's
settings started from exactly that environment."""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"

Manifest = dict[str, Any]
SETTINGS = frozenset(name.upper() for name in Settings.model_fields)
"""Every variable the worker reads; it ignores any other, so a typo would go unnoticed at run time."""
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"})
COMMENTED_SETTING = re.compile(r"^\s*#\s+([A-Z][A-Z0-9_]*): (.+?)\s*$", re.MULTILINE)


# ---- the manifests ---------------------------------------------------------------------


def load_all(path: Path) -> list[Any]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


@functools.cache
def _source_manifests() -> tuple[Manifest, ...]:
    return tuple(document for path in manifest_files() for document in load_all(path))


def manifests() -> list[Manifest]:
    """The objects of deploy/k8s's files, as written (no namespace, no generated objects)."""
    return list(_source_manifests())


def manifest_id(manifest: Manifest) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def one(kind: str, objects: list[Manifest] | None = None) -> Manifest:
    found = [m for m in (manifests() if objects is None else objects) if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} under deploy/k8s, found {len(found)}"
    return found[0]


def named(kind: str, name: str, objects: list[Manifest] | None = None) -> Manifest:
    found = [m for m in (manifests() if objects is None else objects)
             if m["kind"] == kind and m["metadata"]["name"] == name]  # fmt: skip
    assert len(found) == 1, f"expected one {kind}/{name} under deploy/k8s, found {len(found)}"
    return found[0]


def config() -> dict[str, str]:
    """The worker's ConfigMap's data."""
    return dict(named("ConfigMap", "persistence-worker")["data"])


@functools.cache
def _kustomize_output() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl is missing: deploy/k8s is not rendered, so this check of the rendered objects is skipped"
        )
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120,
                            check=False)  # fmt: skip
    assert result.returncode == 0, f"kubectl kustomize deploy/k8s failed:\n{result.stderr}"
    return result.stdout


def rendered() -> list[Manifest]:
    """What `kubectl apply -k deploy/k8s` would apply (skips, saying so, where kubectl is missing)."""
    return [document for document in yaml.safe_load_all(_kustomize_output()) if document is not None]


def pod_specs(objects: list[Manifest] | None = None) -> Iterator[tuple[str, Manifest]]:
    """(Kind/name, pod spec) of every workload: Deployments, CronJobs and the like."""
    for manifest in manifests() if objects is None else objects:
        if manifest["kind"] not in WORKLOAD_KINDS:
            continue
        spec = manifest["spec"]
        if manifest["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        yield manifest_id(manifest), spec["template"]["spec"]


def pod_labels(objects: list[Manifest] | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """(Kind/name, pod template labels) of every workload."""
    for manifest in manifests() if objects is None else objects:
        if manifest["kind"] in WORKLOAD_KINDS:
            spec = (
                manifest["spec"]["jobTemplate"]["spec"] if manifest["kind"] == "CronJob" else manifest["spec"]
            )
            yield manifest_id(manifest), dict(spec["template"]["metadata"]["labels"])


# ---- a container's environment ---------------------------------------------------------


def container_environment(container: Manifest, objects: list[Manifest]) -> dict[str, str]:
    """The variables Kubernetes sets in `container`: its envFrom sources in order, then env."""
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, reference = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else (
            "Secret", source["secretRef"])  # fmt: skip
        values = _values(named(kind, reference["name"], objects))
        environment.update({source.get("prefix", "") + key: value for key, value in values.items()})
    for variable in container.get("env", []):
        environment[variable["name"]] = _env_value(variable, objects)
    return environment


def _values(source: Manifest) -> dict[str, str]:
    """A ConfigMap's or a Secret's keys and values as the container sees them."""
    data = dict(source.get("data") or {})
    if source["kind"] == "Secret":
        data = {key: base64.b64decode(value).decode() for key, value in data.items()}
    return {**data, **(source.get("stringData") or {})}


def _env_value(variable: Manifest, objects: list[Manifest]) -> str:
    if "value" in variable:
        return str(variable["value"])
    source = variable["valueFrom"]
    kind, reference = ("ConfigMap", source["configMapKeyRef"]) if "configMapKeyRef" in source else (
        "Secret", source["secretKeyRef"])  # fmt: skip
    values = _values(named(kind, reference["name"], objects))
    assert reference["key"] in values, (
        f"{variable['name']}: {kind} {reference['name']} has no {reference['key']}"
    )
    return values[reference["key"]]


def commented_settings(path: Path) -> dict[str, str]:
    """The settings a manifest file holds commented out (`#   NAME: value`), to put in when switched on."""
    found = {name: value for name, value in COMMENTED_SETTING.findall(path.read_text()) if name in SETTINGS}
    return {name: str(yaml.safe_load(value)) for name, value in found.items()}


def with_sasl(objects: list[Manifest]) -> list[Manifest]:
    """The objects with SASL switched on as the comments say: the settings configmap.yaml and
    secret.yaml hold commented out are put in (the ConfigMap's replacing its own)."""
    switched = {("ConfigMap", "data"): commented_settings(K8S / "configmap.yaml"),
                ("Secret", "stringData"): commented_settings(K8S / "secret.yaml")}  # fmt: skip
    result = []
    for manifest in objects:
        manifest = dict(manifest)
        for (kind, field), settings in switched.items():
            if manifest["kind"] == kind and manifest["metadata"]["name"] == "persistence-worker":
                manifest[field] = {**(manifest.get(field) or {}), **settings}
        result.append(manifest)
    return result


# ---- compose ---------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return dict(item.partition("=")[::2] for item in environment)
    return {key: str(value) for key, value in environment.items()}


# ---- the worker's settings -------------------------------------------------------------


def run_config(environment: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`persistence-worker config` (this checkout's `python -m worker`) with only `environment` and PATH."""
    only = {**environment, "PATH": os.environ.get("PATH", os.defpath)}
    return subprocess.run([sys.executable, "-m", "worker", "config"], cwd=ROOT, env=only, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def effective(output: str, name: str) -> str:
    """The value `config` printed for setting `name`."""
    (value,) = [line.split()[1] for line in output.splitlines() if line.split()[:1] == [name]]
    return value
