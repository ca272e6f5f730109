"""The operator station in the Helm chart: a Deployment, a Service, an Ingress behind the chart's
ingress settings and a NetworkPolicy (rendered by Helm's Go library, see helmtool.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.test_chart import (
    CHART,
    EDGE,
    SCHEMA,
    VALUES,
    _config_path_exists,
    by_kind,
    env_of,
    helmtool,
    merged,
    render,
)

STATION = {
    "grafana": {"existingSecret": "plantstream-grafana"},
    "station": {
        "enabled": True,
        "existingSecret": "plantstream-station",
        "ingress": {"className": "nginx", "host": "station.plant.local", "tlsSecret": "station-tls",
                    "annotations": {"cert-manager.io/cluster-issuer": "plant-ca"}},
    },
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = render(merged(EDGE, STATION), tmp_path_factory.mktemp("station"))
    assert out["rendered"], out["error"]
    manifests: list[dict[str, Any]] = out["manifests"]
    return manifests


def test_the_station_is_off_by_default(tmp_path: Path) -> None:
    out = render(EDGE, tmp_path)
    assert out["rendered"], out["error"]
    assert not [m for m in out["manifests"] if "station" in m["metadata"]["name"]]
    assert VALUES["station"]["enabled"] is False
    jsonschema.validate(merged(EDGE, STATION), SCHEMA)


def test_a_station_deployment_reads_as_the_reader_with_its_secret(rendered: list[dict[str, Any]]) -> None:
    dep = by_kind(rendered, "Deployment")["edge-plantstream-station"]
    assert dep["spec"]["replicas"] == 1
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    [c] = pod["containers"]
    assert c["command"] == ["plantstream", "station", "--config", "/etc/plantstream/plant.yaml", "--host", "0.0.0.0",
                            "--port", "8080"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"] == VALUES["station"]["resources"]
    env = env_of(c)
    # the read-only account, never the writer
    assert env["PLANTSTREAM__CLICKHOUSE__READER__USERNAME"] == "grafana"
    assert env["PLANTSTREAM__CLICKHOUSE__READER__PASSWORD"] == {
        "secretKeyRef": {"name": "plantstream-grafana", "key": "password"}}
    assert "PLANTSTREAM__CLICKHOUSE__PASSWORD" not in env
    assert env["PLANTSTREAM__KAFKA__BOOTSTRAP_SERVERS"] == "kafka-0.kafka.plant.svc:9092"
    assert env["PLANTSTREAM__STATION__SESSION_SECRET"] == {
        "secretKeyRef": {"name": "plantstream-station", "key": "session-secret"}}
    assert env["PLANTSTREAM__STATION__OPERATORS_FILE"] == "/etc/plantstream/station/operators.yaml"
    unknown = [n for n in env if n.startswith("PLANTSTREAM__")
               and not _config_path_exists(n[len("PLANTSTREAM__"):].lower().split("__"))]
    assert not unknown
    assert {"name": "station-operators", "mountPath": "/etc/plantstream/station", "readOnly": True} in c["volumeMounts"]
    assert {"name": "station-operators", "secret": {
        "secretName": "plantstream-station", "items": [{"key": "operators.yaml", "path": "operators.yaml"}],
        "defaultMode": 0o400}} in pod["volumes"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert "checksum/plant-config" in dep["spec"]["template"]["metadata"]["annotations"]


def test_service_and_ingress_with_the_host_and_tls(rendered: list[dict[str, Any]]) -> None:
    svc = by_kind(rendered, "Service")["edge-plantstream-station"]["spec"]
    assert svc["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
    assert svc["selector"]["app.kubernetes.io/component"] == "station"
    ing = by_kind(rendered, "Ingress")["edge-plantstream-station"]
    assert ing["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "plant-ca"}
    spec = ing["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["station.plant.local"], "secretName": "station-tls"}]
    [rule] = spec["rules"]
    assert rule["host"] == "station.plant.local"
    [path] = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    assert path["backend"] == {"service": {"name": "edge-plantstream-station", "port": {"name": "http"}}}


def test_network_policy_lets_in_the_ingress_controller_and_out_to_kafka_and_clickhouse(
        rendered: list[dict[str, Any]]) -> None:
    policy = by_kind(rendered, "NetworkPolicy")["edge-plantstream-station"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "station"
    assert policy["ingress"] == [{"from": VALUES["station"]["ingress"]["from"], "ports": [{"protocol": "TCP", "port": 8080}]}]
    ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    np = VALUES["networkPolicy"]
    assert ports == {53, *np["kafka"]["ports"], *np["clickhouse"]["ports"]}


def test_without_an_ingress_or_a_network_policy(tmp_path: Path) -> None:
    out = render(merged(EDGE, STATION, {"station": {"ingress": {"enabled": False, "from": []}}}), tmp_path)
    assert out["rendered"], out["error"]
    assert "edge-plantstream-station" not in by_kind(out["manifests"], "Ingress")
    assert by_kind(out["manifests"], "NetworkPolicy")["edge-plantstream-station"]["spec"]["ingress"] == []
    out = render(merged(EDGE, STATION, {"networkPolicy": {"enabled": False}}), tmp_path)
    assert out["rendered"], out["error"]
    assert not by_kind(out["manifests"], "NetworkPolicy")


@pytest.mark.parametrize(("override", "says"), [
    ({"station": {"existingSecret": ""}}, "--set station.existingSecret="),
    ({"station": {"ingress": {"host": ""}}}, "--set station.ingress.host="),
    ({"plant": {"station": {"session_secret": "hunter2"}}},
     "values key plant.station.session_secret holds a plaintext secret"),
])
def test_what_the_station_needs_is_named_when_missing(override: dict[str, Any], says: str, tmp_path: Path) -> None:
    out = render(merged(EDGE, STATION, override), tmp_path)
    assert not out["rendered"]
    assert says in out["error"], out["error"]
    if "plaintext" in says:
        assert "set station.existingSecret instead" in out["error"]


def test_the_chart_lints_clean_with_the_station_on(tmp_path: Path) -> None:
    """Helm lint takes no values: lint a copy of the chart whose values.yaml turns the station on."""
    chart = tmp_path / "plantstream"
    shutil.copytree(CHART, chart)
    (chart / "values.yaml").write_text(yaml.safe_dump(merged(EDGE, STATION), sort_keys=False))
    result = helmtool("lint", str(chart))
    assert result["errors"] == 0
    bad = [m for m in result["messages"] if m["severity"] in ("warning", "error", "unknown")]
    assert not bad, bad


def test_notes_say_where_the_tablets_open_the_station(tmp_path: Path) -> None:
    out = render(merged(EDGE, STATION), tmp_path)
    assert "Operator station: https://station.plant.local/" in out["notes"]
    assert "logs deployment/edge-plantstream-station" in out["notes"]
