"""Observability as code (deploy/observability/), checked offline against the code.

- Every metric named in an alert rule, a recording of the dashboard or a panel is one the
  code registers (the registry after importing the observability modules), with the
  exposition suffix its type allows (`_total`, `_bucket`, …).
- The alert rules cover what the kit promises (claim lag, outbox, refusing integrations, DND
  unavailable, incident clocks), link to a runbook section that exists, and are the same in
  the plain rule file and the PrometheusRule.
- Job labels agree everywhere: scrape configs, ServiceMonitors (the Services' names),
  rules and dashboard.
- promtool (Debian package `prometheus`, installed by .ci/run): `check rules`, `check config`
  and unit tests of every alert on synthetic series. Skipped without promtool, except in CI.
- kustomize (through kubectl, when present) builds both kits.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import dispatch_engine.observability.incident_metrics
import dispatch_engine.observability.metrics  # noqa: F401  (registers the metrics)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OBSERVABILITY = DEPLOY / "observability"
PROMETHEUS = OBSERVABILITY / "prometheus"
ALERTS = PROMETHEUS / "alerts.yaml"
SCRAPE_CONFIGS = {
    "compose": PROMETHEUS / "prometheus-compose.yaml",
    "kubernetes": PROMETHEUS / "prometheus-kubernetes.yaml",
}
PROMETHEUS_RULE = OBSERVABILITY / "kubernetes" / "prometheusrule.yaml"
SERVICE_MONITORS = OBSERVABILITY / "kubernetes" / "servicemonitors.yaml"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "dispatch-engine.json"
GRAFANA_DATASOURCE = OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
GRAFANA_PROVIDER = (
    OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "dispatch-engine.yaml"
)
OPERATIONS = ROOT / "docs" / "operations.md"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
SRC = ROOT / "src" / "dispatch_engine"

JOBS = {"dispatch-engine-api", "dispatch-engine-worker"}
IN_CI = os.environ.get("CI") == "true"

# --------------------------------------------------------------------------- metric names

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}


def _registered_series() -> frozenset[str]:
    """Every series name the default registry exposes (the observability modules are
    imported above), derived from each family's type: a counter `x` is `x_total`, a
    histogram `x_bucket`/`x_sum`/`x_count`."""
    names = set()
    for family in REGISTRY.collect():
        for suffix in _SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return frozenset(names)


REGISTERED = _registered_series()
# Made by Prometheus itself for every target.
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_FUNCTIONS_AND_KEYWORDS = frozenset(
    {
        # aggregation operators
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile",
        # keywords
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
        "unless", "offset", "inf", "nan",
    }
)  # fmt: skip


def metric_names(expression: str) -> set[str]:
    """The series names a PromQL expression selects: what is left once strings, label
    matchers, ranges, grouping clauses, function calls and keywords are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word in _FUNCTIONS_AND_KEYWORDS or re.fullmatch(r"\d+\w*", word):
            continue
        names.add(word)
    return names


def test_the_metric_name_parser_is_not_vacuous() -> None:
    expression = (
        'histogram_quantile(0.95, sum by (le) (rate(dispatch_claim_lag_seconds_bucket{job="x",'
        ' outcome=~"a|b"}[$__rate_interval]))) > 2 and on (job) up{job="y"} == 1 '
        "unless max without (clock) (dispach_typo) offset 5m"
    )
    assert metric_names(expression) == {"dispatch_claim_lag_seconds_bucket", "up", "dispach_typo"}
    assert "dispatch_claim_lag_seconds_bucket" in REGISTERED
    assert "dispatch_claim_lag_seconds" not in REGISTERED  # a histogram has no bare series
    assert "dispatch_messages_total" in REGISTERED
    assert "dispatch_incident_clocks_overdue" in REGISTERED  # the gauge beside the counter
    assert "dispatch_incident_clocks_overdue_total" in REGISTERED


def test_every_metric_is_defined_in_the_observability_package() -> None:
    """So the registry this test imports holds every metric the code can export."""
    outside = []
    for path in SRC.rglob("*.py"):
        if path.parent.name == "observability":
            continue
        text = path.read_text()
        if re.search(
            r"from prometheus_client import[^\n]*\b(Counter|Gauge|Histogram|Summary)\b", text
        ):
            outside.append(str(path.relative_to(ROOT)))
    assert not outside, f"metrics defined outside observability/: {outside}"


def _unknown(expression: str) -> set[str]:
    return metric_names(expression) - REGISTERED - SYNTHETIC


# --------------------------------------------------------------------------- alert rules


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


RULES: list[dict[str, Any]] = [rule for group in _load(ALERTS)["groups"] for rule in group["rules"]]
ALERT_RULES = [rule for rule in RULES if "alert" in rule]


@pytest.mark.parametrize("rule", ALERT_RULES, ids=[r["alert"] for r in ALERT_RULES])
def test_alert_uses_only_registered_metrics(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    assert not _unknown(rule["expr"]), f"{rule['alert']}: not exported: {_unknown(rule['expr'])}"
    jobs = set(re.findall(r'job="([^"]+)"', rule["expr"]))
    assert jobs <= JOBS, jobs


def test_the_promised_alerts_exist() -> None:
    """claim lag, outbox depth, integrations refusing, DND unavailable, incident clocks."""
    used = {name for rule in ALERT_RULES for name in metric_names(rule["expr"])}
    assert {
        "dispatch_claim_lag_seconds_bucket",
        "dispatch_outbox_depth",
        "dispatch_outbox_oldest_age_seconds",
        "dispatch_queue_integrations_refusing",
        "dispatch_dnd_requests_total",
        "dispatch_incident_clocks_overdue",
    } <= used
    dnd = next(r for r in ALERT_RULES if "dispatch_dnd_requests_total" in r["expr"])
    assert 'answer="unavailable"' in dnd["expr"]


def _heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            title = match.group(1).strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", title)))
    return anchors


@pytest.mark.parametrize("rule", ALERT_RULES, ids=[r["alert"] for r in ALERT_RULES])
def test_alert_is_described_and_links_to_its_runbook(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"Dispatch[A-Z]\w+", rule["alert"])
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert re.fullmatch(r"\d+[smh]", rule["for"])
    annotations = rule["annotations"]
    assert annotations["summary"] and annotations["description"]
    document, _, anchor = annotations["runbook_url"].partition("#")
    assert document == "docs/operations.md"
    assert anchor in _heading_anchors(OPERATIONS.read_text()), anchor


def test_every_alert_is_listed_in_the_deploy_readme() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for rule in ALERT_RULES:
        assert f"`{rule['alert']}`" in readme, rule["alert"]


def test_prometheus_rule_has_the_same_groups_as_the_rule_file() -> None:
    rule = _load(PROMETHEUS_RULE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == _load(ALERTS), "edit alerts.yaml and prometheusrule.yaml together"


# --------------------------------------------------------------------------- dashboard

DASHBOARD_DOC: dict[str, Any] = json.loads(DASHBOARD.read_text())


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))
    return found


PANELS = [p for p in _panels(DASHBOARD_DOC["panels"]) if p["type"] != "row"]


def test_dashboard_is_a_grafana_dashboard_with_a_datasource_variable() -> None:
    assert DASHBOARD_DOC["uid"] and DASHBOARD_DOC["title"]
    assert isinstance(DASHBOARD_DOC["schemaVersion"], int)
    variables = {v["name"]: v for v in DASHBOARD_DOC["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in _panels(DASHBOARD_DOC["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert len(PANELS) >= 10


@pytest.mark.parametrize("panel", PANELS, ids=[p["title"] for p in PANELS])
def test_dashboard_panel_queries_registered_metrics(panel: dict[str, Any]) -> None:
    assert panel["datasource"]["uid"] == "${datasource}"
    assert panel["targets"], panel["title"]
    for target in panel["targets"]:
        expression = target["expr"]
        assert metric_names(expression), expression
        assert not _unknown(expression), f"{panel['title']}: not exported: {_unknown(expression)}"
        assert set(re.findall(r'job="([^"]+)"', expression)) <= JOBS


def test_dashboard_shows_every_metric_an_alert_uses() -> None:
    shown = {name for panel in PANELS for t in panel["targets"] for name in metric_names(t["expr"])}
    for rule in ALERT_RULES:
        missing = metric_names(rule["expr"]) - shown
        assert not missing, f"{rule['alert']}: no panel for {missing}"


# --------------------------------------------------------------------------- scrape targets


def _scrape(path: Path) -> dict[str, dict[str, Any]]:
    config = _load(path)
    assert config["rule_files"] == [ALERTS.name]
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_scrape_configs_name_the_jobs_the_rules_use() -> None:
    for path in SCRAPE_CONFIGS.values():
        assert set(_scrape(path)) == JOBS, path.name


def _k8s_objects() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def _service(name: str) -> dict[str, Any]:
    (service,) = [
        d for d in _k8s_objects() if d["kind"] == "Service" and d["metadata"]["name"] == name
    ]
    return service


def test_kubernetes_scrape_config_keeps_the_services_ports() -> None:
    jobs = _scrape(SCRAPE_CONFIGS["kubernetes"])
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    for job_name, job in jobs.items():
        (sd,) = job["kubernetes_sd_configs"]
        assert sd["role"] == "endpoints"
        assert sd["namespaces"]["names"] == [namespace]
        keep = next(r for r in job["relabel_configs"] if r.get("action") == "keep")
        assert keep["source_labels"] == [
            "__meta_kubernetes_service_name",
            "__meta_kubernetes_endpoint_port_name",
        ]
        service_name, port_name = keep["regex"].split(";")
        assert service_name == job_name
        assert port_name in {p["name"] for p in _service(service_name)["spec"]["ports"]}


def test_service_monitors_select_the_services_the_jobs_are_named_after() -> None:
    monitors = [doc for doc in yaml.safe_load_all(SERVICE_MONITORS.read_text()) if doc]
    services = [d for d in _k8s_objects() if d["kind"] == "Service"]
    release = _load(PROMETHEUS_RULE)["metadata"]["labels"]["release"]
    jobs = set()
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["kind"] == "ServiceMonitor"
        assert monitor["metadata"]["labels"]["release"] == release
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [
            s
            for s in services
            if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]
        jobs.add(service["metadata"]["name"])  # the operator's default job label
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"
    assert jobs == JOBS


def test_compose_prometheus_scrapes_the_worker_metrics_port() -> None:
    compose = _load(COMPOSE)
    services = compose["services"]
    port = str(services["worker"]["environment"]["DISPATCH_METRICS_PORT"])
    jobs = _scrape(SCRAPE_CONFIGS["compose"])
    (sd,) = jobs["dispatch-engine-worker"]["dns_sd_configs"]
    assert sd["names"] == ["worker"] and str(sd["port"]) == port
    (static,) = jobs["dispatch-engine-api"]["static_configs"]
    assert static["targets"] == ["api:8000"]
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prometheus["volumes"] if v.startswith("./")}
    config_target = next(
        a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file=")
    )
    assert mounts["./observability/prometheus/prometheus-compose.yaml"] == config_target
    # rule_files are relative to the config file: alerts.yaml must sit beside it.
    assert mounts["./observability/prometheus/alerts.yaml"] == str(
        Path(config_target).with_name("alerts.yaml")
    )
    for source in mounts:
        assert (DEPLOY / source).exists(), source


def test_compose_grafana_is_provisioned_with_the_datasource_and_dashboard() -> None:
    services = _load(COMPOSE)["services"]
    grafana = services["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"] if v.startswith("./")}
    for source in mounts:
        assert (DEPLOY / source).exists(), source
    (datasource,) = _load(GRAFANA_DATASOURCE)["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert "9090" in " ".join(services["prometheus"]["ports"])
    (provider,) = _load(GRAFANA_PROVIDER)["providers"]
    assert mounts["./observability/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./observability/grafana/provisioning/dashboards"].startswith(
        "/etc/grafana/provisioning/"
    )
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == (
        f"{provider['options']['path']}/{DASHBOARD.name}"
    )


# --------------------------------------------------------------------------- promtool


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if IN_CI:
            pytest.fail("promtool is missing: .ci/run installs the Debian package `prometheus`")
        pytest.skip("promtool not installed (apt-get install prometheus; .ci/run does)")
    return found


def _run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd, timeout=60)


def test_promtool_checks_the_rules() -> None:
    done = _run(_promtool(), "check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(RULES)} rules found" in done.stdout


def test_promtool_checks_the_compose_scrape_config() -> None:
    done = _run(_promtool(), "check", "config", str(SCRAPE_CONFIGS["compose"]))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_checks_the_kubernetes_scrape_config(tmp_path: Path) -> None:
    """Debian's Prometheus is built without Kubernetes service discovery, so promtool there
    rejects `kubernetes_sd_configs` as an unknown field: the config is then checked with
    static targets in its place (its relabelling, rule files and the rest unchanged; the
    discovery blocks are checked by test_kubernetes_scrape_config_keeps_the_services_ports)."""
    promtool = _promtool()
    path = SCRAPE_CONFIGS["kubernetes"]
    done = _run(promtool, "check", "config", str(path))
    if done.returncode == 0:
        return
    assert "field kubernetes_sd_configs not found" in done.stdout + done.stderr, (
        done.stdout + done.stderr
    )
    config = _load(path)
    for job in config["scrape_configs"]:
        job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    (tmp_path / path.name).write_text(yaml.safe_dump(config))
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    done = _run(promtool, "check", "config", str(tmp_path / path.name))
    assert done.returncode == 0, done.stdout + done.stderr


W = 'job="dispatch-engine-worker", instance="w1:9100"'
# One case per alert: the series that must make it fire, when, and with which labels.
ALERT_CASES: list[dict[str, Any]] = [
    {
        "alert": "DispatchWorkersDown",
        "series": [(f"up{{{W}}}", "1 1 0x20")],
        "eval_time": "12m",
        "labels": {"severity": "critical"},
        "quiet_at": "1m",
    },
    {
        "alert": "DispatchClaimLagHigh",
        # Every message decided waited 300 s (the le="300" bucket and above).
        "series": [
            (f'dispatch_claim_lag_seconds_bucket{{{W}, le="{le}"}}', values)
            for le, values in [
                ("60", "0x40"),
                ("120", "0x40"),
                ("300", "0+100x40"),
                ("+Inf", "0+100x40"),
            ]
        ],
        "eval_time": "30m",
        "labels": {"severity": "warning"},
        "quiet_at": "5m",
    },
    {
        "alert": "DispatchOutboxDepthHigh",
        "series": [(f"dispatch_outbox_depth{{{W}}}", "60000x30")],
        "eval_time": "20m",
        "labels": {"severity": "warning"},
        "quiet_at": "10m",
    },
    {
        "alert": "DispatchOutboxStale",
        "series": [(f"dispatch_outbox_oldest_age_seconds{{{W}}}", "0+60x30")],
        "eval_time": "20m",
        "labels": {"severity": "critical"},
        "quiet_at": "12m",
    },
    {
        "alert": "DispatchQueueIntegrationRefusing",
        "series": [(f"dispatch_queue_integrations_refusing{{{W}}}", "1x30")],
        "eval_time": "15m",
        "labels": {"severity": "warning"},
        "quiet_at": "5m",
    },
    {
        "alert": "DispatchQueuePushErrors",
        "series": [
            (f'dispatch_queue_push_total{{{W}, kind="sqs", outcome="ok"}}', "0+90x40"),
            (f'dispatch_queue_push_total{{{W}, kind="sqs", outcome="error"}}', "0+10x40"),
        ],
        "eval_time": "30m",
        "labels": {"severity": "warning", "kind": "sqs"},
        "quiet_at": "10m",
    },
    {
        "alert": "DispatchDndUnavailable",
        "series": [
            (
                f'dispatch_dnd_requests_total{{{W}, host="dnd.example", answer="allowed"}}',
                "0+50x40",
            ),
            (
                f'dispatch_dnd_requests_total{{{W}, host="dnd.example", answer="unavailable"}}',
                "0+50x40",
            ),
            (f'dispatch_dnd_requests_total{{{W}, host="ok.example", answer="allowed"}}', "0+50x40"),
        ],
        "eval_time": "30m",
        "labels": {"severity": "warning", "host": "dnd.example"},
        "quiet_at": "10m",
    },
    {
        "alert": "DispatchIncidentClockOverdue",
        "series": [
            (f'dispatch_incident_clocks_overdue{{{W}, clock="ack"}}', "0 0 1x10"),
            (f'dispatch_incident_clocks_overdue{{{W}, clock="update"}}', "0x12"),
        ],
        "eval_time": "5m",
        "labels": {"severity": "critical", "clock": "ack"},
        "quiet_at": "2m",
    },
]


def test_every_alert_has_a_firing_case() -> None:
    assert sorted(case["alert"] for case in ALERT_CASES) == sorted(r["alert"] for r in ALERT_RULES)


def test_promtool_fires_each_alert_on_its_series(tmp_path: Path) -> None:
    """`promtool test rules`: each alert fires on the series the code would export, with
    the expected labels, and not before its `for:` has passed. (promtool compares the
    annotations too, so the rules are tested from a copy without them.)"""
    promtool = _promtool()
    rules = copy.deepcopy(_load(ALERTS))
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules))
    for series, _ in (s for case in ALERT_CASES for s in case["series"]):
        assert not _unknown(series.split("{")[0]), series
    tests = [
        {
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in case["series"]],
            "alert_rule_test": [
                {
                    "eval_time": case["eval_time"],
                    "alertname": case["alert"],
                    "exp_alerts": [{"exp_labels": case["labels"]}],
                },
                {"eval_time": case["quiet_at"], "alertname": case["alert"], "exp_alerts": []},
            ],
        }
        for case in ALERT_CASES
    ]
    (tmp_path / "alerts.test.yaml").write_text(
        yaml.safe_dump({"rule_files": ["alerts.yaml"], "evaluation_interval": "1m", "tests": tests})
    )
    done = _run(promtool, "test", "rules", "alerts.test.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------- kustomize


@pytest.mark.parametrize("kit", ["k8s", "observability"])
def test_kustomize_builds_the_kit(kit: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    done = _run(kubectl, "kustomize", str(DEPLOY / kit))
    assert done.returncode == 0, done.stderr
    objects = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "dispatch", obj["metadata"]["name"]
    kinds = {obj["kind"] for obj in objects}
    if kit == "observability":
        assert kinds == {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
        (configmap,) = [o for o in objects if o["kind"] == "ConfigMap"]
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(configmap["data"][DASHBOARD.name]) == DASHBOARD_DOC
    else:
        assert {"Namespace", "Deployment", "Ingress", "NetworkPolicy", "Job"} <= kinds
