"""deploy/k8s as `kubectl kustomize` renders it, every object valid for what reads it: the core
objects for the Kubernetes API (kubernetes-validate, strict: unknown fields fail), the custom
resources for their CRDs' published JSON Schemas (vendored in schemas/, see its README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

from tests.deploy.manifests import Manifest, manifest_id, manifests, rendered

KUBERNETES_VERSION = "1.33"
"""The oldest Kubernetes minor version the manifests must be valid for."""
SCHEMAS = Path(__file__).parent / "schemas"


def _group_version(manifest: Manifest) -> tuple[str, str]:
    group, _, version = manifest["apiVersion"].rpartition("/")
    return group, version


def is_custom(manifest: Manifest) -> bool:
    """A custom resource: its API group is a domain that is not Kubernetes' own (*.k8s.io)."""
    group, _ = _group_version(manifest)
    return "." in group and not group.endswith(".k8s.io")


def crd_schema(manifest: Manifest) -> dict[str, Any]:
    group, version = _group_version(manifest)
    path = SCHEMAS / group / f"{manifest['kind'].lower()}_{version}.json"
    assert path.exists(), f"{manifest_id(manifest)}: no schema vendored at {path.relative_to(SCHEMAS.parent)}"
    return dict(json.loads(path.read_text()))


def _validator(manifest: Manifest) -> jsonschema.Draft202012Validator:
    # Not checked against the metaschema: the CRDs' patterns are Go regular expressions, some of
    # which Python's `re` does not compile (`^(?i)...`); the fields we set do not use them.
    return jsonschema.Draft202012Validator(crd_schema(manifest))


def test_every_manifest_file_is_rendered() -> None:
    """The rendered output holds every object of the files, plus the generated backup-script ConfigMap."""
    ids = sorted(manifest_id(manifest) for manifest in rendered())
    generated = [i for i in ids if i.startswith("ConfigMap/persistence-worker-backup-script-")]
    assert len(generated) == 1
    assert sorted(set(ids) - set(generated)) == sorted(manifest_id(manifest) for manifest in manifests())


def test_core_objects_match_the_kubernetes_api_schema() -> None:
    """Each rendered core object is valid for its API version, unknown fields included."""
    invalid = []
    for manifest in rendered():
        if not is_custom(manifest):
            try:
                kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                invalid.append(f"{manifest_id(manifest)}: {exc.message} at {exc.json_path}")
    assert not invalid, "\n".join(invalid)


def test_custom_resources_match_their_crd_schemas() -> None:
    """Each rendered custom resource (ScaledObject, PrometheusRule, ServiceMonitor) is valid for its CRD."""
    custom = [manifest for manifest in rendered() if is_custom(manifest)]
    assert {manifest["kind"] for manifest in custom} == {"ScaledObject", "PrometheusRule", "ServiceMonitor"}
    invalid = [f"{manifest_id(manifest)}: {error.message} at {error.json_path}"
               for manifest in custom for error in _validator(manifest).iter_errors(manifest)]  # fmt: skip
    assert not invalid, "\n".join(invalid)


def test_the_vendored_schemas_reject_an_unknown_field() -> None:
    """The vendored schemas forbid unknown fields, so a misspelt one fails the check above."""
    for manifest in rendered():
        if is_custom(manifest):
            misspelt = {**manifest, "spec": {**manifest["spec"], "sepc": {}}}
            assert not _validator(misspelt).is_valid(misspelt), manifest_id(manifest)
