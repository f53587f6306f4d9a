"""The deployment kit, checked statically and offline (no Docker, no cluster, no network).

- Kubernetes manifests: validated against the Kubernetes JSON schemas that the
  `kubernetes-validate` package ships (strict: unknown fields fail), then policy checks
  (security contexts, probes, the namespace, NetworkPolicies, the Ingress, the worker's
  metrics port). deploy/observability is checked by test_observability.py.
- deploy/compose.yaml: validated against the Compose Specification schema that
  `check-jsonschema` ships, then wiring checks (depends_on, healthchecks, ports, grace).
- Dockerfile / .dockerignore: parsed here; multi-stage, pinned, non-root, migrations.
- Every DISPATCH_* name used anywhere must be a real setting (Settings.model_fields).
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

import dispatch_engine.db.migrate
from dispatch_engine.security.crypto import parse_key_ring
from dispatch_engine.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# The oldest Kubernetes minor we promise to support, and the newest the package knows.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
APP_UID = 10001
APP_IMAGE = "dispatch-engine"
SECRET_TEMPLATE = "secret.yaml"
# Worker.shutdown: up to --grace for running jobs, then up to 5 s for cancelled ones, then it
# releases its claims and closes clients. The platform must wait at least that long.
SHUTDOWN_MARGIN = 10

SETTING_NAMES = frozenset(f"DISPATCH_{name.upper()}" for name in Settings.model_fields)
# Read straight from os.environ by db/migrate.py (not a Settings field).
NON_SETTING_NAMES = frozenset({"DISPATCH_MIGRATIONS_DIR"})
KNOWN_ENV_NAMES = SETTING_NAMES | NON_SETTING_NAMES


# --------------------------------------------------------------------------- loading


def _load_k8s() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents.append((path.name, document))
    return documents


K8S_DOCS = _load_k8s()
KUSTOMIZATION = next(doc for name, doc in K8S_DOCS if name == "kustomization.yaml")
K8S_OBJECTS = [(name, doc) for name, doc in K8S_DOCS if doc.get("kind") != "Kustomization"]
COMPOSE_DOC: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())


def _object(kind: str, name: str) -> dict[str, Any]:
    matches = [
        doc for _, doc in K8S_OBJECTS if doc["kind"] == kind and doc["metadata"]["name"] == name
    ]
    assert len(matches) == 1, f"expected exactly one {kind}/{name}, found {len(matches)}"
    return matches[0]


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in K8S_OBJECTS if doc["kind"] == kind]


WORKLOADS = [doc for _, doc in K8S_OBJECTS if doc["kind"] in ("Deployment", "Job")]
API = _object("Deployment", "dispatch-engine-api")
WORKER = _object("Deployment", "dispatch-engine-worker")
MIGRATE = _object("Job", "dispatch-engine-migrate")
CONFIGMAP = _object("ConfigMap", "dispatch-engine-config")
SECRET = _object("Secret", "dispatch-engine-secrets")


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def _only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = _pod_spec(workload)["containers"]
    assert len(containers) == 1
    return containers[0]


def _argv(container: dict[str, Any]) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def _grace_of(argv: list[str]) -> float:
    """The worker's --grace (CLI default 10 s when absent)."""
    for index, arg in enumerate(argv):
        if arg == "--grace":
            return float(argv[index + 1])
        if arg.startswith("--grace="):
            return float(arg.split("=", 1)[1])
    return 10.0


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _workload_id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --------------------------------------------------------------------------- quantities

_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_FACTOR = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def _cpu(quantity: str | int | float) -> float:
    match = _CPU.match(str(quantity))
    assert match, f"unexpected cpu quantity {quantity!r}"
    return float(match[1]) / (1000 if match[2] else 1)


def _memory(quantity: str | int) -> float:
    match = _MEMORY.match(str(quantity))
    assert match, f"unexpected memory quantity {quantity!r}"
    return float(match[1]) * _MEMORY_FACTOR[match[2]]


def _duration_seconds(value: str) -> float:
    """Compose durations: '30s', '1m30s', '1h', '500ms'."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"bad duration {value!r}"
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    return sum(float(number) * unit[suffix] for number, suffix in parts)


# --------------------------------------------------------------------------- YAML, schemas


def test_every_yaml_under_deploy_parses() -> None:
    paths = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert COMPOSE in paths
    assert len(paths) >= 10
    for path in paths:
        assert path.suffix == ".yaml", f"{path}: use the .yaml extension"
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert documents, f"{path} is empty"
        assert all(isinstance(doc, dict) for doc in documents), path


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "document",
    [doc for _, doc in K8S_OBJECTS],
    ids=[f"{name}:{doc['kind']}" for name, doc in K8S_OBJECTS],
)
def test_k8s_object_matches_the_kubernetes_schema(document: dict[str, Any], version: str) -> None:
    # strict: additionalProperties false, so a misspelt field (livenessprobe) fails too.
    kubernetes_validate.validate(document, version, strict=True)


def test_schema_validation_is_not_vacuous() -> None:
    broken = json.loads(json.dumps(API))
    _only_container(broken)["livenessprobe"] = _only_container(broken).pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)
    with pytest.raises(jsonschema.ValidationError):
        _compose_validator().validate({"services": {"api": {"image": 1}}})


def _compose_validator() -> jsonschema.Draft202012Validator:
    schema_file = resources.files("check_jsonschema.builtin_schemas").joinpath(
        "vendor/compose-spec.json"
    )
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def test_compose_file_matches_the_compose_specification() -> None:
    errors = sorted(_compose_validator().iter_errors(COMPOSE_DOC), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


# --------------------------------------------------------------------------- kustomize


def test_kustomization_puts_everything_in_the_kits_namespace() -> None:
    (namespace,) = _of_kind("Namespace")
    assert KUSTOMIZATION["namespace"] == namespace["metadata"]["name"]
    # Pod Security "restricted": the pods' security contexts below already meet it.
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, doc in K8S_OBJECTS:
        # kustomize sets it: a second spelling in a manifest would drift from the first.
        assert "namespace" not in doc["metadata"], f"{name}: leave the namespace to kustomize"


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    assert KUSTOMIZATION["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    listed = KUSTOMIZATION["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # Applying the template would overwrite the real Secret with placeholders.
    assert SECRET_TEMPLATE not in listed
    assert set(listed) == on_disk - {SECRET_TEMPLATE}
    kinds = {doc["kind"] for name, doc in K8S_OBJECTS if name in listed}
    assert {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "Job",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
        "NetworkPolicy",
    } <= kinds


def test_kustomization_image_override_names_the_manifests_image() -> None:
    names = {entry["name"] for entry in KUSTOMIZATION.get("images", [])}
    assert names == {APP_IMAGE}
    for workload in WORKLOADS:
        for container in _containers(workload):
            assert container["image"].split(":")[0] == APP_IMAGE


def test_secret_template_placeholders_cannot_start_a_pod() -> None:
    data = SECRET["stringData"]
    assert set(data) == {"DISPATCH_DATABASE_URL", "DISPATCH_ENCRYPTION_KEYS", "DISPATCH_HMAC_KEYS"}
    assert "REPLACE" in data["DISPATCH_DATABASE_URL"]
    assert data["DISPATCH_DATABASE_URL"].startswith("postgresql+asyncpg://")
    for ring in ("DISPATCH_ENCRYPTION_KEYS", "DISPATCH_HMAC_KEYS"):
        with pytest.raises(ValueError):
            parse_key_ring(data[ring])
    assert "TEMPLATE" in (K8S / SECRET_TEMPLATE).read_text()


# --------------------------------------------------------------------------- workload policy


@pytest.mark.parametrize("workload", WORKLOADS, ids=_workload_id)
def test_every_container_has_resource_requests_and_limits(workload: dict[str, Any]) -> None:
    for container in _containers(workload):
        resources_ = container.get("resources", {})
        requests, limits = resources_.get("requests", {}), resources_.get("limits", {})
        for resource in ("cpu", "memory"):
            assert resource in requests, f"{container['name']}: no {resource} request"
            assert resource in limits, f"{container['name']}: no {resource} limit"
        assert _cpu(requests["cpu"]) <= _cpu(limits["cpu"])
        assert _memory(requests["memory"]) <= _memory(limits["memory"])


# deploy/README.md, "Resource figures" (deploy/measure_resources.py): (steady, peak) RSS in
# MiB. The API's peak is one JSON document at the 64 MiB limit; the worker's the benchmark's.
MEASURED_RSS_MIB = {
    "dispatch-engine-api": (180, 668),
    "dispatch-engine-worker": (160, 200),
    "dispatch-engine-migrate": (82, 82),
}


@pytest.mark.parametrize("workload", WORKLOADS, ids=_workload_id)
def test_memory_requests_and_limits_cover_the_measured_figures(workload: dict[str, Any]) -> None:
    steady, peak = MEASURED_RSS_MIB[workload["metadata"]["name"]]
    resources_ = _only_container(workload)["resources"]
    assert _memory(resources_["requests"]["memory"]) >= steady * 2**20
    # A quarter of headroom over the highest figure measured, or the kernel OOM-kills it.
    assert _memory(resources_["limits"]["memory"]) >= 1.25 * peak * 2**20


@pytest.mark.parametrize("workload", WORKLOADS, ids=_workload_id)
def test_every_container_runs_locked_down(workload: dict[str, Any]) -> None:
    pod = _pod_spec(workload)
    pod_context = pod.get("securityContext", {})
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    assert pod.get("automountServiceAccountToken") is False
    # Service links would inject e.g. DISPATCH_PORT=tcp://… for a Service named "dispatch".
    assert pod.get("enableServiceLinks") is False
    for container in _containers(workload):
        context = {**pod_context, **container.get("securityContext", {})}
        name = container["name"]
        assert context.get("runAsNonRoot") is True, name
        assert context.get("runAsUser") == APP_UID, name
        assert context.get("allowPrivilegeEscalation") is False, name
        assert context.get("privileged", False) is False, name
        assert context.get("readOnlyRootFilesystem") is True, name
        assert "ALL" in context.get("capabilities", {}).get("drop", []), name
        assert not context.get("capabilities", {}).get("add"), name
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        # A read-only root needs a writable /tmp.
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1, f"{name}: no /tmp mount"
        assert "emptyDir" in volumes[tmp[0]["name"]], f"{name}: /tmp is not an emptyDir"


def test_images_are_pinned_never_latest() -> None:
    images = [c["image"] for w in WORKLOADS for c in _containers(w)]
    images += [s["image"] for s in COMPOSE_DOC["services"].values() if "image" in s]
    assert images
    for image in images:
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and "/" not in tag, f"{image}: no tag"
        assert tag != "latest", f"{image}: never :latest"
        assert re.search(r"\d", tag), f"{image}: tag {tag!r} is not a version"


@pytest.mark.parametrize("workload", WORKLOADS, ids=_workload_id)
def test_every_pod_uses_the_config_and_secret_that_exist(workload: dict[str, Any]) -> None:
    for container in _containers(workload):
        sources = container.get("envFrom", [])
        configmaps = {s["configMapRef"]["name"] for s in sources if "configMapRef" in s}
        secrets = {s["secretRef"]["name"] for s in sources if "secretRef" in s}
        assert configmaps == {CONFIGMAP["metadata"]["name"]}
        assert secrets == {SECRET["metadata"]["name"]}


def test_roles_run_their_own_command() -> None:
    assert _argv(_only_container(API))[:2] == ["dispatch-engine", "api"]
    assert _argv(_only_container(WORKER))[:2] == ["dispatch-engine", "worker"]
    assert _argv(_only_container(MIGRATE)) == ["dispatch-engine", "migrate"]
    for workload in WORKLOADS:
        for container in _containers(workload):
            # `serve` runs the scheduler in-process: never in a replicated pod.
            assert "serve" not in _argv(container)


def test_api_has_startup_liveness_and_readiness_probes() -> None:
    container = _only_container(API)
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert int(CONFIGMAP["data"]["DISPATCH_PORT"]) in ports.values()
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": None}
    for probe_name, path in expected.items():
        probe = container.get(probe_name)
        assert probe, f"api has no {probe_name}"
        http = probe["httpGet"]
        if path is not None:
            assert http["path"] == path, probe_name
        port = http["port"]
        assert port in ports or port in ports.values(), f"{probe_name} port {port!r}"
    # Liveness must not depend on the database (a DB outage must not restart every pod).
    assert container["livenessProbe"]["httpGet"]["path"] != "/readyz"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30


def test_api_service_routes_only_to_api_pods() -> None:
    services = _of_kind("Service")
    assert sorted(s["metadata"]["name"] for s in services) == [
        "dispatch-engine-api",
        "dispatch-engine-worker",
    ]
    service = _object("Service", "dispatch-engine-api")
    selector = service["spec"]["selector"]
    assert _labels_match(selector, API["spec"]["template"]["metadata"]["labels"])
    assert not _labels_match(selector, WORKER["spec"]["template"]["metadata"]["labels"])
    port_names = {p.get("name") for p in _only_container(API)["ports"]}
    port_numbers = {p["containerPort"] for p in _only_container(API)["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names | port_numbers


def _env_value(container: dict[str, Any], name: str) -> str | None:
    for variable in container.get("env", []):
        if variable["name"] == name:
            return variable.get("value")
    return None


def test_worker_serves_its_metrics_on_the_port_its_service_names() -> None:
    container = _only_container(WORKER)
    # The worker's only port is Prometheus's: DISPATCH_METRICS_PORT, on DISPATCH_HOST.
    (port,) = container["ports"]
    assert port["name"] == "metrics"
    assert str(port["containerPort"]) == _env_value(container, "DISPATCH_METRICS_PORT")
    assert CONFIGMAP["data"]["DISPATCH_HOST"] == "0.0.0.0"  # reachable from outside the pod
    service = _object("Service", "dispatch-engine-worker")
    assert service["spec"]["clusterIP"] == "None", "headless: Prometheus scrapes every pod"
    selector = service["spec"]["selector"]
    assert _labels_match(selector, WORKER["spec"]["template"]["metadata"]["labels"])
    assert not _labels_match(selector, API["spec"]["template"]["metadata"]["labels"])
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["metrics"]
    # The API never gets a metrics port of its own: it serves /metrics on `http`.
    assert _env_value(_only_container(API), "DISPATCH_METRICS_PORT") is None


def test_migrations_can_bypass_pgbouncer() -> None:
    """The migrate Job may take a direct PostgreSQL URL from the Secret (optional key), since
    migrations must not go through PgBouncer; without the key the Secret's URL stays."""
    (variable,) = [
        v for v in _only_container(MIGRATE).get("env", []) if v["name"] == "DISPATCH_DATABASE_URL"
    ]
    reference = variable["valueFrom"]["secretKeyRef"]
    assert reference["name"] == SECRET["metadata"]["name"]
    assert reference["optional"] is True
    for workload in (API, WORKER):
        names = {v["name"] for v in _only_container(workload).get("env", [])}
        assert "DISPATCH_DATABASE_URL" not in names


def test_deployment_selectors_match_their_pods_and_not_each_other() -> None:
    deployments = _of_kind("Deployment")
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert _labels_match(selector, deployment["spec"]["template"]["metadata"]["labels"])
        for other in deployments:
            if other is not deployment:
                labels = other["spec"]["template"]["metadata"]["labels"]
                assert not _labels_match(selector, labels)


def test_api_and_worker_run_two_replicas() -> None:
    assert API["spec"]["replicas"] == 2
    assert WORKER["spec"]["replicas"] == 2


def test_hpa_scales_the_api_on_cpu() -> None:
    (hpa,) = _of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", API["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert API["spec"]["replicas"] >= hpa["spec"]["minReplicas"]
    cpu = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    assert cpu and cpu[0]["resource"]["name"] == "cpu"
    # Utilization is relative to requests: the container must request CPU.
    assert "cpu" in _only_container(API)["resources"]["requests"]


def test_pod_disruption_budgets_cover_api_and_worker() -> None:
    covered = {}
    for pdb in _of_kind("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        matching = [
            d
            for d in (API, WORKER)
            if _labels_match(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(matching) == 1, pdb["metadata"]["name"]
        covered[matching[0]["metadata"]["name"]] = pdb["spec"]
    assert set(covered) == {API["metadata"]["name"], WORKER["metadata"]["name"]}
    # A budget must still allow a voluntary eviction (node drains).
    api_budget = covered[API["metadata"]["name"]]
    if "minAvailable" in api_budget:
        assert api_budget["minAvailable"] < API["spec"]["replicas"]
    worker_budget = covered[WORKER["metadata"]["name"]]
    if "minAvailable" in worker_budget:
        assert worker_budget["minAvailable"] < WORKER["spec"]["replicas"]


def test_worker_is_given_more_time_than_its_grace() -> None:
    grace = _grace_of(_argv(_only_container(WORKER)))
    termination = _pod_spec(WORKER)["terminationGracePeriodSeconds"]
    assert termination >= grace + SHUTDOWN_MARGIN
    # A claim outlives a clean shutdown, so a draining worker never loses its batch.
    assert int(CONFIGMAP["data"]["DISPATCH_CLAIM_LEASE_SECONDS"]) > grace
    # No HTTP API in the worker: its one port is the metrics port.
    assert [p["name"] for p in _only_container(WORKER)["ports"]] == ["metrics"]


def test_api_termination_covers_prestop_and_drain() -> None:
    # uvicorn drains up to 30 s after SIGTERM (timeout_graceful_shutdown in cli/main.py).
    assert _pod_spec(API)["terminationGracePeriodSeconds"] >= 30


def test_migrate_job_is_bounded_and_cleans_up() -> None:
    spec = MIGRATE["spec"]
    assert 1 <= spec["backoffLimit"] <= 6
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec.get("activeDeadlineSeconds", 0) > 0
    assert _pod_spec(MIGRATE)["restartPolicy"] in ("Never", "OnFailure")


# --------------------------------------------------------------------------- network

POSTGRES_PORTS = {5432, 6432}  # PostgreSQL, PgBouncer
DNS_PORT = 53
# HTTPS (SQS, Service Bus over HTTPS and its tokens, webhooks) and AMQPS (Service Bus).
QUEUE_AND_WEBHOOK_PORTS = {443, 5671}


def _policies_selecting(workload: dict[str, Any]) -> list[dict[str, Any]]:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return [
        policy
        for policy in _of_kind("NetworkPolicy")
        if _labels_match(policy["spec"]["podSelector"].get("matchLabels", {}), labels)
    ]


def _own_policy(workload: dict[str, Any]) -> dict[str, Any]:
    (policy,) = [p for p in _policies_selecting(workload) if p["spec"]["podSelector"]]
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    return policy


def _egress_ports(policy: dict[str, Any]) -> set[tuple[str, int]]:
    ports = set()
    for rule in policy["spec"].get("egress", []):
        assert rule.get("ports"), "an egress rule without ports opens every port"
        for port in rule["ports"]:
            ports.add((port.get("protocol", "TCP"), port["port"]))
    return ports


def _ingress_ports(policy: dict[str, Any]) -> set[int | str]:
    ports: set[int | str] = set()
    for rule in policy["spec"].get("ingress", []):
        assert rule.get("from"), "an ingress rule without `from` admits every pod"
        assert rule.get("ports"), "an ingress rule without ports opens every port"
        ports |= {port["port"] for port in rule["ports"]}
    return ports


def _ingress_peers(policy: dict[str, Any]) -> list[tuple[str, str]]:
    """(namespace name, pod name label) of every peer admitted."""
    peers = []
    for rule in policy["spec"].get("ingress", []):
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            pod = peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            peers.append((namespace, pod))
    return peers


def test_the_namespace_denies_all_traffic_by_default() -> None:
    (deny,) = [p for p in _of_kind("NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]


@pytest.mark.parametrize("workload", WORKLOADS, ids=_workload_id)
def test_every_workload_has_its_own_network_policy(workload: dict[str, Any]) -> None:
    policy = _own_policy(workload)
    egress = _egress_ports(policy)
    assert ("UDP", DNS_PORT) in egress and ("TCP", DNS_PORT) in egress
    assert ("TCP", 5432) in egress
    allowed = {DNS_PORT} | POSTGRES_PORTS | QUEUE_AND_WEBHOOK_PORTS
    assert {port for _, port in egress} <= allowed


def test_api_is_reached_by_the_ingress_controller_and_prometheus_only() -> None:
    policy = _own_policy(API)
    assert _ingress_ports(policy) == {"http"}
    assert {p["name"] for p in _only_container(API)["ports"]} == {"http"}
    assert sorted(_ingress_peers(policy)) == [
        ("ingress-nginx", "ingress-nginx"),
        ("monitoring", "prometheus"),
    ]
    assert {port for _, port in _egress_ports(policy)} >= {443}  # queue verification


def test_workers_admit_prometheus_on_the_metrics_port_only() -> None:
    policy = _own_policy(WORKER)
    assert _ingress_ports(policy) == {"metrics"}
    assert _ingress_peers(policy) == [("monitoring", "prometheus")]
    assert {port for _, port in _egress_ports(policy)} >= {443, 5671}  # SQS, Service Bus


def test_migrate_job_talks_to_postgresql_and_dns_only() -> None:
    policy = _own_policy(MIGRATE)
    assert not policy["spec"].get("ingress")
    assert {port for _, port in _egress_ports(policy)} == {DNS_PORT, 5432}


def test_ingress_exposes_the_api_over_tls_and_nothing_else() -> None:
    (ingress,) = _of_kind("Ingress")
    spec = ingress["spec"]
    (rule,) = spec["rules"]
    (tls,) = spec["tls"]
    assert tls["hosts"] == [rule["host"]] and tls["secretName"]
    assert "cert-manager.io/cluster-issuer" in ingress["metadata"]["annotations"]
    paths = rule["http"]["paths"]
    # /v1 only: /metrics, /healthz, /readyz and /docs stay inside the cluster.
    assert [(p["path"], p["pathType"]) for p in paths] == [("/v1", "Prefix")]
    service = _object("Service", "dispatch-engine-api")
    for path in paths:
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    # Contact files are streamed: the ingress-nginx body limit (1 MiB by default) is raised.
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] != "1m"
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"


# --------------------------------------------------------------------------- settings names


def test_migrations_dir_is_read_from_the_environment() -> None:
    # The one DISPATCH_* name that is not a Settings field must still mean something.
    assert "DISPATCH_MIGRATIONS_DIR" in inspect.getsource(dispatch_engine.db.migrate)


def _k8s_env_names() -> Iterator[tuple[str, str]]:
    for name in CONFIGMAP["data"]:
        yield "ConfigMap", name
    for name in SECRET["stringData"]:
        yield "Secret", name
    for workload in WORKLOADS:
        for container in _containers(workload):
            for variable in container.get("env", []):
                yield _workload_id(workload), variable["name"]


def test_every_k8s_env_name_is_a_setting() -> None:
    names = list(_k8s_env_names())
    assert names
    unknown = [(where, name) for where, name in names if name not in KNOWN_ENV_NAMES]
    assert not unknown, f"not settings: {unknown}"


def _clean_dispatch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("DISPATCH_"):
            monkeypatch.delenv(name)


def _settings_from(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    _clean_dispatch_env(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_configmap_values_are_valid_production_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    valid_ring = "k1:" + "A" * 43 + "="  # 32 zero bytes: a well-formed stand-in
    env = {
        **CONFIGMAP["data"],
        "DISPATCH_DATABASE_URL": "postgresql+asyncpg://u:p@db:5432/dispatch",
        "DISPATCH_ENCRYPTION_KEYS": valid_ring,
        "DISPATCH_HMAC_KEYS": valid_ring,
    }
    settings = _settings_from(monkeypatch, env)
    assert settings.env == "prod"
    assert settings.host == "0.0.0.0"
    assert settings.webhook_allow_http is False


# --------------------------------------------------------------------------- compose

APP_SERVICES = ("migrate", "api", "worker")
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::?-(?P<default>[^}]*))?\}")


def _interpolate_defaults(value: str) -> str:
    """What `docker compose` sees when the variable is unset: ${VAR:-default} → default."""
    return _INTERPOLATION.sub(lambda m: m["default"] or "", value)


def _service(name: str) -> dict[str, Any]:
    return COMPOSE_DOC["services"][name]


def _compose_env(service: str) -> dict[str, str]:
    environment = _service(service).get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: _interpolate_defaults(str(value)) for key, value in environment.items()}


def _command(service: str) -> list[str]:
    command = _service(service)["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_compose_has_postgres_migrate_api_and_workers() -> None:
    services = COMPOSE_DOC["services"]
    assert set(services) >= {"postgres", *APP_SERVICES}
    assert re.fullmatch(r"postgres:15(\.\d+)?(-\w+)?", services["postgres"]["image"])
    assert _command("migrate") == ["dispatch-engine", "migrate"]
    assert _command("api")[:2] == ["dispatch-engine", "api"]
    assert _command("worker")[:2] == ["dispatch-engine", "worker"]
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, "one image, three roles"
    assert all("build" in services[name] for name in APP_SERVICES)


def test_compose_postgres_keeps_data_and_reports_health() -> None:
    postgres = _service("postgres")
    volume_names = {v.split(":", 1)[0] for v in postgres["volumes"] if isinstance(v, str)}
    assert volume_names & set(COMPOSE_DOC.get("volumes", {})), "a named volume for the data"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_compose_dependencies_are_consistent() -> None:
    services = COMPOSE_DOC["services"]
    expected = {
        ("migrate", "postgres"): "service_healthy",
        ("api", "migrate"): "service_completed_successfully",
        ("worker", "migrate"): "service_completed_successfully",
    }
    for (service, dependency), condition in expected.items():
        assert services[service]["depends_on"][dependency]["condition"] == condition
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: use the long depends_on form"
        for dependency, spec in depends_on.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if spec["condition"] == "service_healthy":
                healthcheck = services[dependency].get("healthcheck", {})
                assert healthcheck.get("test") and not healthcheck.get("disable"), dependency
            if spec["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", dependency


def test_compose_api_publishes_its_port_and_checks_readiness() -> None:
    api = _service("api")
    port = _compose_env("api").get("DISPATCH_PORT", "8000")
    published = [str(p).rsplit(":", 1)[-1].split("/")[0] for p in api["ports"]]
    assert port in published
    test = api["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    assert "/readyz" in " ".join(test)
    if test[0] == "CMD" and test[1:3] == ["python", "-c"]:
        compile(test[3], "<compose api healthcheck>", "exec")


def test_compose_roles_without_http_disable_the_image_healthcheck() -> None:
    for name in ("migrate", "worker"):
        assert _service(name)["healthcheck"].get("disable") is True, name


def test_compose_runs_two_workers_with_enough_stop_grace() -> None:
    worker_services = [n for n in COMPOSE_DOC["services"] if n.startswith("worker")]
    replicas = sum(
        COMPOSE_DOC["services"][n].get("deploy", {}).get("replicas", 1) for n in worker_services
    )
    assert replicas >= 2
    for name in worker_services:
        grace = _grace_of(_command(name))
        stop = _duration_seconds(_service(name).get("stop_grace_period", "10s"))
        assert stop >= grace + SHUTDOWN_MARGIN, (
            f"{name}: stop_grace_period {stop}s, --grace {grace}s"
        )


def test_compose_env_names_are_settings_and_production() -> None:
    for name in APP_SERVICES:
        env = _compose_env(name)
        unknown = set(env) - KNOWN_ENV_NAMES
        assert not unknown, f"{name}: not settings: {unknown}"
        assert env["DISPATCH_ENV"] == "prod"


def test_compose_dev_secrets_start_the_service_and_say_they_are_dev_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = COMPOSE.read_text()
    assert text.count("DEV-ONLY") >= 3
    env = _compose_env("api")
    settings = _settings_from(monkeypatch, env)
    assert settings.env == "prod"
    for ring in ("DISPATCH_ENCRYPTION_KEYS", "DISPATCH_HMAC_KEYS"):
        keys, current = parse_key_ring(env[ring])
        assert all(len(key) == 32 for key in keys.values()), ring
        assert "dev" in current, f"{ring}: name the dev key as such"
    # The URL points at the compose postgres with its own credentials.
    postgres_env = _service("postgres")["environment"]
    url = env["DISPATCH_DATABASE_URL"]
    match = re.fullmatch(r"postgresql\+asyncpg://([^:]+):([^@]+)@([^:/]+):(\d+)/(\w+)", url)
    assert match, url
    user, password, host, _, database = match.groups()
    assert host == "postgres"
    assert (user, password, database) == (
        postgres_env["POSTGRES_USER"],
        postgres_env["POSTGRES_PASSWORD"],
        postgres_env["POSTGRES_DB"],
    )


# --------------------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, arguments = full.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "dangling line continuation"
    return instructions


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _dockerfile_instructions():
        if instruction[0] == "FROM":
            stages.append([])
        assert stages, "an instruction before the first FROM"
        stages[-1].append(instruction)
    return stages


def _env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            words = shlex.split(arguments)
            if words and "=" not in words[0]:  # legacy `ENV NAME value`
                env[words[0]] = " ".join(words[1:])
            else:
                env.update(word.split("=", 1) for word in words)  # type: ignore[arg-type]
    return env


def test_dockerfile_is_multi_stage_on_a_pinned_slim_base() -> None:
    stages = _stages()
    assert len(stages) >= 2
    names = []
    for stage in stages:
        words = stage[0][1].split()
        image = next(w for w in words if not w.startswith("--"))
        assert "$" not in image, "pin the base in the FROM line itself"
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
        if len(words) >= 3 and words[-2].upper() == "AS":
            names.append(words[-1])
    assert names and names[0] == "builder"


def test_dockerfile_runtime_stage_is_non_root_and_compiler_free() -> None:
    runtime = _stages()[-1]
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users, "the final stage sets a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user == str(APP_UID)
    runs = " ".join(arguments for keyword, arguments in runtime if keyword == "RUN")
    for compiler in ("build-essential", "gcc", "g++", "clang", "apt-get install"):
        assert compiler not in runs, f"runtime stage installs {compiler}"
    assert "pip install --no-cache-dir" in runs
    assert "--no-index" in runs, "the runtime installs the builder's wheels only"
    assert "from=builder" in runs or any(
        keyword == "COPY" and "--from=builder" in arguments for keyword, arguments in runtime
    )
    builder_runs = " ".join(a for k, a in _stages()[0] if k == "RUN")
    assert "pip wheel" in builder_runs


def test_dockerfile_ships_migrations_and_points_settings_at_them() -> None:
    runtime = _stages()[-1]
    env = _env_of(runtime)
    copies = [shlex.split(arguments) for keyword, arguments in runtime if keyword == "COPY"]
    destinations = {words[-1].rstrip("/") for words in copies if "migrations" in words[-2]}
    assert env.get("DISPATCH_MIGRATIONS_DIR") in destinations
    assert env.get("DISPATCH_HOST") == "0.0.0.0"
    exposed = [a for k, a in runtime if k == "EXPOSE"]
    assert exposed and exposed[0].split("/")[0] == env.get("DISPATCH_PORT", "8000")
    unknown = {name for name in env if name.startswith("DISPATCH_")} - KNOWN_ENV_NAMES
    assert not unknown, f"not settings: {unknown}"


def test_dockerfile_healthcheck_probes_healthz_with_python() -> None:
    runtime = _stages()[-1]
    (healthcheck,) = [a for k, a in runtime if k == "HEALTHCHECK"]
    exec_form = healthcheck[healthcheck.index("CMD") + 3 :].strip()
    argv = json.loads(exec_form)
    assert argv[:2] == ["python", "-c"]
    assert "/healthz" in argv[2] and "urllib" in argv[2]
    compile(argv[2], "<HEALTHCHECK>", "exec")


def test_dockerfile_default_command_migrates_then_serves() -> None:
    runtime = _stages()[-1]
    (command,) = [a for k, a in runtime if k == "CMD"]
    argv = json.loads(command)
    script = argv[-1]
    assert script.index("dispatch-engine migrate") < script.index("exec dispatch-engine serve")
    assert "&&" in script


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".venv", ".git", ".dispatch-engine", ".env", ".pytest_cache", "tests"):
        assert required in patterns, required
    # What the build needs must stay in the context.
    for needed in ("pyproject.toml", "README.md", "src", "migrations"):
        assert needed not in patterns
    assert "*" not in patterns
