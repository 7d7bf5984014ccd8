"""The files under deploy/: consistent with each other and with the worker, and the compose file
valid for the Compose Specification's schema (vendored by check-jsonschema). The rendered
Kubernetes objects are checked against their schemas in test_schemas.py."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema

from tests.deploy.manifests import (
    COMPOSE,
    DEPLOY,
    K8S,
    ROOT,
    SETTINGS,
    commented_settings,
    compose_environment,
    load_all,
    manifest_files,
    named,
    one,
)
from tests.deploy.manifests import compose as _compose
from tests.deploy.manifests import config as _config
from tests.deploy.test_schemas import KUBERNETES_VERSION
from worker.ops.health import Health
from worker.ops.http import respond

DOCKERFILE = DEPLOY / "Dockerfile"
SECRET_SETTINGS = frozenset({"MONGODB_URI", "KAFKA_SASL_PASSWORD"})
# Words in deploy/ shaped like a setting's name (the broker's own KAFKA_* in compose excepted).
SETTING_LIKE = re.compile(r"\b(?:MONGODB|KAFKA|RETRY|FAIL_CLOSED|REDELIVERY|HTTP|LOG)_[A-Z0-9_]+\b")
# Variables for the interpreter and uv, allowed in the Dockerfile besides the settings.
IMAGE_VARIABLES = frozenset({
    "PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
    "UV_COMPILE_BYTECODE", "UV_LINK_MODE", "UV_PYTHON_DOWNLOADS",
})  # fmt: skip

DRAIN_SECONDS = 30  # the worker's shutdown timeout: finish and commit the batch in hand
GROUP_JOIN_SECONDS = 60  # after MongoDB answers: start the Kafka clients, join the group, get partitions
NODE = "kubernetes.io/hostname"
PARTITIONS_ANNOTATION = "persistence-worker/input-topic-partitions"
INPUT_TOPICS = ("orchestrator.validation", "orchestrator.results", "orchestrator.incidents",
                "orchestrator.telemetry")  # fmt: skip
DELIVERY_TOPIC = "observability.telemetry"

# The documented parameters of KEDA's `kafka` scaler that these manifests may use.
KAFKA_TRIGGER_PARAMETERS = frozenset({
    "bootstrapServers", "bootstrapServersFromEnv", "consumerGroup", "consumerGroupFromEnv",
    "topic", "topicFromEnv", "lagThreshold", "activationLagThreshold", "offsetResetPolicy",
    "allowIdleConsumers", "scaleToZeroOnInvalidOffset", "excludePersistentLag",
    "limitToPartitionsWithLag", "version", "partitionLimitation", "sasl", "tls",
})  # fmt: skip

# ---- loading ---------------------------------------------------------------------------


def _yaml_files() -> list[Path]:
    return sorted(path for path in DEPLOY.rglob("*") if path.suffix in (".yaml", ".yml"))


def _replay_cronjob() -> dict[str, Any]:
    return named("CronJob", "persistence-worker-replay")


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, pod spec) of every workload that runs the worker image."""
    yield "Deployment", one("Deployment")["spec"]["template"]["spec"]
    yield "CronJob", _replay_cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _worker_container() -> dict[str, Any]:
    containers = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _partitions() -> int:
    return int(named("ConfigMap", "persistence-worker")["metadata"]["annotations"][PARTITIONS_ANNOTATION])


def _worker_image_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the image built from deploy/Dockerfile."""
    services = _compose()["services"]
    return {name: service for name, service in services.items() if "build" in service}


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), one list per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM" or not stages:
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def _env_keys(arguments: str) -> list[str]:
    words = shlex.split(arguments)
    if "=" not in words[0]:
        return [words[0]]  # the legacy `ENV KEY value` form
    return [word.partition("=")[0] for word in words]


def _duration_seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", duration)
    assert parts and "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


# ---- every file ------------------------------------------------------------------------


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda path: str(path.relative_to(DEPLOY)))
def test_every_yaml_file_parses_into_mappings(path: Path) -> None:
    """Every YAML file under deploy/ parses, and each of its documents is a mapping."""
    documents = load_all(path)
    assert documents
    assert all(isinstance(document, dict) for document in documents)


def test_kustomization_lists_every_manifest() -> None:
    """kustomization.yaml lists each manifest under deploy/k8s exactly once, and no other file."""
    resources = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(resources) == sorted(path.name for path in manifest_files())
    assert len(resources) == len(set(resources))


def test_scaled_object_uses_only_kafka_scaler_parameters() -> None:
    """Every trigger is KEDA's kafka scaler with parameters it documents (the CRD leaves them free-form)."""
    scaled_object = one("ScaledObject")
    for trigger in scaled_object["spec"]["triggers"]:
        assert trigger["type"] == "kafka"
        assert set(trigger["metadata"]) <= KAFKA_TRIGGER_PARAMETERS


def test_scaled_object_autoscaler_settings_are_a_valid_autoscaler() -> None:
    """The replica bounds and scaling behaviour KEDA hands to its HPA are a valid autoscaling/v2 HPA."""
    spec = one("ScaledObject")["spec"]
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "keda-hpa-persistence-worker"},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": spec["scaleTargetRef"]["name"],
            },
            "minReplicas": max(spec.get("minReplicaCount", 1), 1),
            "maxReplicas": spec["maxReplicaCount"],
            "behavior": spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {}),
        },
    }
    kubernetes_validate.validate(autoscaler, KUBERNETES_VERSION, strict=True)


# ---- settings and secrets --------------------------------------------------------------


def _setting_names_in_use() -> Iterator[tuple[str, str]]:
    """(where, name) of every environment variable deploy/ gives the worker."""
    for key in _config():
        yield "ConfigMap", key
    secret = one("Secret")
    for key in {**secret.get("data", {}), **secret.get("stringData", {})}:
        yield "Secret", key
    for kind, pod in _pod_specs():
        for container in pod["containers"]:
            for variable in container.get("env", []):
                yield kind, variable["name"]
    for trigger in one("ScaledObject")["spec"]["triggers"]:
        for parameter, value in trigger["metadata"].items():
            if parameter.endswith("FromEnv"):
                yield "ScaledObject", value
    for name, service in _worker_image_services().items():
        for key in compose_environment(service):
            yield f"compose {name}", key
    for path in [*manifest_files(), K8S / "kustomization.yaml", DOCKERFILE, DEPLOY / "README.md"]:
        for word in SETTING_LIKE.findall(path.read_text()):
            yield path.name, word


def test_every_variable_given_to_the_worker_is_a_setting() -> None:
    """Every environment variable name deploy/ sets or mentions for the worker is a real setting."""
    unknown = sorted({f"{where}: {name}" for where, name in _setting_names_in_use() if name not in SETTINGS})
    assert not unknown, f"not a setting of the worker (typo?): {unknown}"


def test_dockerfile_sets_only_settings_and_interpreter_variables() -> None:
    """The Dockerfile's ENV names only settings or Python and uv variables."""
    names = {name for stage in _dockerfile_stages() for instruction, arguments in stage
             if instruction == "ENV" for name in _env_keys(arguments)}  # fmt: skip
    assert names <= SETTINGS | IMAGE_VARIABLES, names - SETTINGS - IMAGE_VARIABLES


def test_secret_holds_the_credentials_and_the_configmap_none() -> None:
    """The Secret holds MONGODB_URI, and KAFKA_SASL_PASSWORD commented out until SASL is on; the ConfigMap neither."""
    assert set(one("Secret")["stringData"]) == {"MONGODB_URI"}
    assert set(commented_settings(K8S / "secret.yaml")) == SECRET_SETTINGS - {"MONGODB_URI"}
    assert not (set(_config()) | set(commented_settings(K8S / "configmap.yaml"))) & SECRET_SETTINGS


def test_workloads_load_the_configmap_and_the_secret() -> None:
    """The Deployment and the replay CronJob take their environment from the ConfigMap and the Secret."""
    expected = {("configMapRef", one("ConfigMap")["metadata"]["name"]),
                ("secretRef", one("Secret")["metadata"]["name"])}  # fmt: skip
    for kind, pod in _pod_specs():
        for container in pod["containers"]:
            sources = {(ref, source[ref]["name"]) for source in container["envFrom"] for ref in source}
            assert sources == expected, kind


# ---- the Deployment --------------------------------------------------------------------


def test_probes_check_readyz_and_healthz_on_the_http_port() -> None:
    """Start-up and readiness ask GET /readyz, liveness GET /healthz, on the port named http; the worker serves both."""
    container = _worker_container()
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    healthy = Health(last_poll=None, mongodb_ready=lambda: True, has_assignment=lambda: True)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert respond(container[probe]["httpGet"]["path"], healthy).startswith(b"HTTP/1.1 200 "), probe


def test_startup_probe_outlasts_the_wait_for_mongodb() -> None:
    """The startup probe waits MONGODB_STARTUP_TIMEOUT_S and a minute to join the group before liveness takes over.

    Until then /healthz cannot tell a worker waiting for MongoDB from a stuck one (after
    HEALTH_STUCK_AFTER_S it reports the not yet started redelivery loop stuck), so liveness must
    not run; past the timeout the worker exits 3 by itself.
    """
    probe = _worker_container()["startupProbe"]
    budget = probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]
    assert budget >= float(_config()["MONGODB_STARTUP_TIMEOUT_S"]) + GROUP_JOIN_SECONDS


def test_replicas_spread_across_nodes() -> None:
    """The worker's pods spread over nodes, at most one more on any node than on another, counting the pods of one revision."""
    template = one("Deployment")["spec"]["template"]
    (spread,) = [c for c in template["spec"]["topologySpreadConstraints"] if c["topologyKey"] == NODE]
    assert spread["maxSkew"] == 1
    assert spread["labelSelector"]["matchLabels"] == template["metadata"]["labels"]
    assert spread["matchLabelKeys"] == ["pod-template-hash"]


def test_memory_limit_is_twice_the_benchmark_peak() -> None:
    """The memory limit and request are twice the benchmark's peak RSS, rounded up to a power of two, as deploy/README.md says."""
    peak = _benchmark_peak_rss_mib()
    resources = _worker_container()["resources"]
    assert resources["limits"]["memory"] == resources["requests"]["memory"] == f"{_power_of_two(2 * peak)}Mi"
    stated = re.search(r"measured peak RSS is (\d+) MiB", (DEPLOY / "README.md").read_text())
    assert stated and int(stated[1]) == peak, "deploy/README.md states another peak than docs/benchmarks.md"


def _benchmark_peak_rss_mib() -> int:
    """The peak RSS docs/benchmarks.md reports for the worker draining its largest backlog."""
    found = re.search(r"peak RSS \(VmHWM\) (\d+) MiB", (ROOT / "docs" / "benchmarks.md").read_text())
    assert found, "docs/benchmarks.md reports no peak RSS"
    return int(found[1])


def _power_of_two(mib: int) -> int:
    return 1 << (mib - 1).bit_length()


def test_http_port_is_the_configured_one_everywhere() -> None:
    """The container port named http, HTTP_PORT and the Service's target port agree."""
    ports = {port["name"]: port["containerPort"] for port in _worker_container()["ports"]}
    assert ports["http"] == int(_config()["HTTP_PORT"])
    service_ports = one("Service")["spec"]["ports"]
    assert [port["targetPort"] for port in service_ports] == ["http"]


def test_service_and_disruption_budget_select_the_worker_pods() -> None:
    """The Service and the PodDisruptionBudget select exactly the Deployment's pods."""
    deployment = one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == pod_labels
    assert one("Service")["spec"]["selector"] == pod_labels
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == pod_labels


def test_termination_grace_period_outlasts_the_drain() -> None:
    """Kubernetes waits longer than the worker's 30 s drain before it kills the pod."""
    assert one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > DRAIN_SECONDS


def test_workloads_run_as_non_root_on_a_read_only_root() -> None:
    """Every worker pod runs as the image's non-root uid, read-only, without privilege escalation."""
    for kind, pod in _pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True, kind
        assert str(pod["securityContext"]["runAsUser"]) == _dockerfile_user().partition(":")[0], kind
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, kind
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, kind


def test_workloads_request_and_limit_cpu_and_memory() -> None:
    """Every worker container states CPU and memory requests and limits."""
    for kind, pod in _pod_specs():
        for container in pod["containers"]:
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, (kind, bound)


def test_deployment_leaves_the_replica_count_to_keda() -> None:
    """The Deployment sets no replica count, so applying it never overrides the autoscaler."""
    assert "replicas" not in one("Deployment")["spec"]


# ---- autoscaling -----------------------------------------------------------------------


def test_scaled_object_never_exceeds_the_partition_count() -> None:
    """The ScaledObject scales the Deployment between 1 and the input topics' partition count."""
    spec = one("ScaledObject")["spec"]
    assert spec["scaleTargetRef"]["name"] == one("Deployment")["metadata"]["name"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= _partitions()


def test_scaled_object_measures_the_worker_group_on_every_input_topic() -> None:
    """One kafka trigger per input topic, each with the worker's group, brokers and a lag threshold."""
    config = _config()
    topics = set()
    for trigger in one("ScaledObject")["spec"]["triggers"]:
        metadata = trigger["metadata"]
        assert int(metadata["lagThreshold"]) > 0
        assert metadata["bootstrapServersFromEnv"] == "KAFKA_BOOTSTRAP_SERVERS"
        assert metadata["consumerGroupFromEnv"] == "KAFKA_CONSUMER_GROUP"
        topics.add(config[metadata["topicFromEnv"]])
    assert topics == set(INPUT_TOPICS)


# ---- the replay job --------------------------------------------------------------------


def test_replay_template_never_runs_by_itself() -> None:
    """The replay CronJob is suspended, runs `persistence-worker telemetry replay` once and is not retried."""
    cronjob = _replay_cronjob()
    assert cronjob["spec"]["suspend"] is True
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    (container,) = job["template"]["spec"]["containers"]
    assert container["args"][:2] == ["telemetry", "replay"]
    assert container["image"] == _worker_container()["image"]


# ---- the Dockerfile --------------------------------------------------------------------


def _dockerfile_user() -> str:
    users = [arguments for instruction, arguments in _dockerfile_stages()[-1] if instruction == "USER"]
    assert users, "the runtime stage sets no USER"
    return users[-1]


def _final(instruction: str) -> str:
    found = [arguments for name, arguments in _dockerfile_stages()[-1] if name == instruction]
    assert found, f"the runtime stage has no {instruction}"
    return found[-1]


def test_dockerfile_runs_as_a_non_root_user() -> None:
    """The runtime stage's USER is a numeric uid other than root's."""
    uid = _dockerfile_user().partition(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_dockerfile_is_multi_stage_on_python_slim() -> None:
    """The image is built in stages and runs on python:3.11-slim."""
    stages = _dockerfile_stages()
    assert len(stages) >= 2
    assert stages[-1][0][1].split()[0] == "python:3.11-slim"


def test_dockerfile_installs_the_lock_with_the_locked_uv() -> None:
    """uv, pinned as in the Makefile, installs exactly uv.lock without the dev group."""
    uv_version = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert uv_version
    runs = [arguments for stage in _dockerfile_stages() for name, arguments in stage if name == "RUN"]
    assert any(f"uv=={uv_version[1]}" in run.split() for run in runs)
    syncs = [run for run in runs if "uv sync" in run]
    assert syncs
    assert all("--frozen" in run.split() and "--no-dev" in run.split() for run in syncs)


def test_dockerfile_checks_health_and_runs_the_worker() -> None:
    """The image's healthcheck is `persistence-worker check`; it starts `persistence-worker run`."""
    assert re.search(r'CMD \["persistence-worker", "check"\]$', _final("HEALTHCHECK"))
    assert _final("ENTRYPOINT") == '["persistence-worker"]'
    assert _final("CMD") == '["run"]'


# ---- the compose file ------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    """compose.yaml is valid for the Compose Specification's schema."""
    jsonschema.validate(_compose(), get_builtin_schema("vendor.compose-spec"))


def test_compose_dependencies_exist_and_can_be_waited_for() -> None:
    """Every depends_on names a service, and a service waited on as healthy has a healthcheck."""
    services = _compose()["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        if isinstance(depends_on, list):
            depends_on = {dependency: {} for dependency in depends_on}
        unknown = set(depends_on) - set(services)
        assert not unknown, f"{name} depends on unknown services {sorted(unknown)}"
        for dependency, options in depends_on.items():
            if options.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"


def test_compose_builds_the_worker_from_deploy_dockerfile() -> None:
    """The worker services build deploy/Dockerfile with the repository root as context."""
    services = _worker_image_services()
    assert {"worker", "demo-publisher"} <= set(services)
    for service in services.values():
        context = (COMPOSE.parent / service["build"]["context"]).resolve()
        assert context == ROOT
        assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_compose_worker_stops_after_its_drain() -> None:
    """compose gives the worker longer than its 30 s drain before it kills the container."""
    assert _duration_seconds(_compose()["services"]["worker"]["stop_grace_period"]) > DRAIN_SECONDS


def test_compose_creates_every_topic_with_the_production_partition_count() -> None:
    """kafka-init creates the input, dead-letter and delivery topics with the ConfigMap's partitions."""
    script = " ".join(_compose()["services"]["kafka-init"]["command"])
    listed = re.search(r"for topic in (.*?);", script.replace("\\\n", " "), re.DOTALL)
    assert listed
    expected = {*INPUT_TOPICS, *(topic + _config()["KAFKA_DLQ_SUFFIX"] for topic in INPUT_TOPICS)}
    assert set(listed[1].split()) == expected | {DELIVERY_TOPIC}
    assert re.findall(r"--partitions (\d+)", script) == [str(_partitions())]


# ---- backups and monitoring (issue 13) -------------------------------------------------

BACKUP_SCRIPT = K8S / "backup" / "mongodump.sh"
PRIORITY_COLLECTIONS = ["workflow_results", "incidents"]
ALL_COLLECTIONS = {"workflow_results", "incidents", "validation_audit", "telemetry_buffer"}


def _backup_pod() -> dict[str, Any]:
    return dict(
        named("CronJob", "persistence-worker-backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    )


def test_backup_cronjob_runs_the_generated_script_on_the_backup_claim() -> None:
    """The backup CronJob mounts the script from kustomize's configMapGenerator and writes to the PVC."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (generator,) = [
        g for g in kustomization["configMapGenerator"] if g["name"] == "persistence-worker-backup-script"
    ]
    assert generator["files"] == ["backup/mongodump.sh"]
    volumes = {volume["name"]: volume for volume in _backup_pod()["volumes"]}
    assert volumes["scripts"]["configMap"]["name"] == generator["name"]
    claim = volumes["backups"]["persistentVolumeClaim"]["claimName"]
    assert claim == one("PersistentVolumeClaim")["metadata"]["name"]
    (container,) = _backup_pod()["containers"]
    assert container["command"] == ["/bin/sh", "/scripts/mongodump.sh"]


def test_backup_takes_the_credentials_from_the_secret() -> None:
    """The backup reads MONGODB_URI from the worker's Secret and the database from its ConfigMap."""
    (container,) = _backup_pod()["containers"]
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["MONGODB_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "persistence-worker",
        "key": "MONGODB_URI",
    }
    assert env["MONGODB_DATABASE"]["valueFrom"]["configMapKeyRef"]["key"] == "MONGODB_DATABASE"
    assert _backup_pod()["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_compose_backup_profile_runs_the_same_script() -> None:
    """compose's `backup` service (profile backup) mounts deploy/k8s/backup/mongodump.sh and runs it."""
    service = _compose()["services"]["backup"]
    assert service["profiles"] == ["backup"]
    sources = {target: (COMPOSE.parent / source).resolve() for source, target in
               (volume.split(":")[:2] for volume in service["volumes"])}  # fmt: skip
    assert sources["/scripts/mongodump.sh"] == BACKUP_SCRIPT.resolve()
    assert service["entrypoint"] == ["/bin/sh", "/scripts/mongodump.sh"]


def test_compose_monitoring_profile_loads_the_rules_and_the_dashboard() -> None:
    """Prometheus mounts the alert rules its config names; Grafana mounts the provisioning and dashboards."""
    services = _compose()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            assert (COMPOSE.parent / volume.split(":")[0]).exists(), volume
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    mounted = {volume.split(":")[1] for volume in services["prometheus"]["volumes"]}
    assert set(config["rule_files"]) <= mounted
    assert [job["job_name"] for job in config["scrape_configs"]] == ["persistence-worker"]


def _run_backup(
    tmp_path: Path, *, fail_on: str | None = None, keep: int = 7
) -> subprocess.CompletedProcess[str]:
    """Run mongodump.sh with a fake `mongodump` on PATH that logs its collection and writes the archive."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "mongodump"
    fake.write_text(
        "#!/bin/sh\nfor a; do case $a in --collection=*) c=${a#--collection=};; --archive=*) f=${a#--archive=};; esac; done\n"
        f'echo "$c" >> {tmp_path}/calls\n'
        f'[ "$c" = "{fail_on}" ] && exit 1\n'
        'echo dump > "$f"\n'
    )
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "MONGODB_URI": "mongodb://x", "BACKUP_DIR": str(tmp_path / "backups"),
           "BACKUP_KEEP": str(keep)}  # fmt: skip
    return subprocess.run(
        ["/bin/sh", str(BACKUP_SCRIPT)], env=env, capture_output=True, text=True, check=False
    )


def test_backup_dumps_the_priority_collections_first(tmp_path: Path) -> None:
    """mongodump.sh dumps workflow_results and incidents before the other two, one archive each."""
    result = _run_backup(tmp_path)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text().split()
    assert calls[:2] == PRIORITY_COLLECTIONS and set(calls) == ALL_COLLECTIONS and len(calls) == 4
    (dump,) = (tmp_path / "backups").iterdir()
    assert re.fullmatch(r"\d{8}T\d{6}Z", dump.name)
    assert {path.name for path in dump.iterdir()} == {f"{c}.archive.gz" for c in ALL_COLLECTIONS} | {
        "PRIORITY_COMPLETE"
    }


def test_a_failure_after_the_priority_collections_keeps_them_marked(tmp_path: Path) -> None:
    """When a later collection fails, the run fails and leaves a .partial dump marked PRIORITY_COMPLETE."""
    result = _run_backup(tmp_path, fail_on="validation_audit")
    assert result.returncode != 0
    (partial,) = (tmp_path / "backups").iterdir()
    assert partial.name.endswith(".partial")
    assert {"workflow_results.archive.gz", "incidents.archive.gz", "PRIORITY_COMPLETE"} <= {
        path.name for path in partial.iterdir()
    }


def test_backup_keeps_only_the_newest_dumps(tmp_path: Path) -> None:
    """Retention deletes complete dumps beyond BACKUP_KEEP and partial dumps older than the new one."""
    backups = tmp_path / "backups"
    for name in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z", "20200101T000000Z.partial"):
        (backups / name).mkdir(parents=True)
    result = _run_backup(tmp_path, keep=2)
    assert result.returncode == 0, result.stderr
    left = sorted(path.name for path in backups.iterdir())
    assert len(left) == 2 and left[0] == "20200103T000000Z" and left[1] > "2026"
