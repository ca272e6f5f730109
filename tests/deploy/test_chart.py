"""The Helm chart: Helm's own lint, the values schema, the plaintext-secret guard, and what the
chart renders for an edge install (Helm's Go library through helm-sdkpy; see helmtool.py)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from plantstream.schemas.config import PlantConfig

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "plantstream"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())

EDGE = {
    "image": {"repository": "myregistry.azurecr.io/plantstream", "tag": "0.1.0"},
    "plant": {"site": "plant-a", "timezone": "Europe/Berlin",
              "lines": [{"id": "line-1", "machines": [{"id": "press-01", "ideal_cycle_time_ms": 1000}]}]},
    "kafka": {"bootstrapServers": "kafka-0.kafka.plant.svc:9092"},
    "clickhouse": {"url": "https://clickhouse.plant.local:8443", "existingSecret": "plantstream-clickhouse",
                   "caSecret": "plantstream-clickhouse-ca"},
    "eventhubs": {"existingSecret": "plantstream-eventhubs"},
    "grafana": {"existingSecret": "plantstream-grafana"},
    "flows": {"replicas": 2},
    "connectors": {"opcua": {"enabled": True, "existingSecret": "opcua-user", "certificatesSecret": "opcua-certs",
                             "endpoints": [{"cidr": "192.168.10.20/32", "port": 4840}]},
                   "mqtt": {"enabled": True, "endpoints": [{"cidr": "192.168.10.30/32", "port": 8883}]}},
}


def helmtool(*args: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-m", "tests.deploy.helmtool", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def render(values: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.json"
    path.write_text(json.dumps(values))
    return helmtool("render", str(CHART), str(path))


def merged(*overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(VALUES)
    for o in overrides:
        stack = [(out, o)]
        while stack:
            dst, src = stack.pop()
            for k, v in src.items():
                if isinstance(v, dict) and isinstance(dst.get(k), dict):
                    stack.append((dst[k], v))
                else:
                    dst[k] = copy.deepcopy(v)
    return out


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = render(EDGE, tmp_path_factory.mktemp("edge"))
    assert out["rendered"], out["error"]
    return out


# -- lint and schema ---------------------------------------------------------------------------


def test_chart_lints_without_warnings_or_errors() -> None:
    result = helmtool("lint", str(CHART))
    assert result["errors"] == 0
    bad = [m for m in result["messages"] if m["severity"] in ("warning", "error", "unknown")]
    assert not bad, bad


def test_values_yaml_passes_the_strict_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(VALUES, SCHEMA, cls=jsonschema.Draft7Validator)
    jsonschema.validate(merged(EDGE), SCHEMA, cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize(("override", "field"), [
    ({"flows": {"replica": 2}}, "replica"),                      # a misspelt key
    ({"flows": {"replicas": 0}}, "replicas"),                    # a cluster needs a process
    ({"kafka": {"securityProtocol": "TLS"}}, "securityProtocol"),
    ({"clickhouse": {"url": "clickhouse:8123"}}, "url"),         # scheme missing
    ({"connectors": {"opcua": {"replicas": 2}}}, "replicas"),    # one OPC UA session per endpoint
])
def test_schema_rejects_wrong_values(override: dict[str, Any], field: str) -> None:
    errors = list(jsonschema.Draft7Validator(SCHEMA).iter_errors(merged(override)))
    assert errors and any(field in (str(e.message) + str(list(e.path))) for e in errors), errors


def test_helm_applies_the_schema_when_rendering(tmp_path: Path) -> None:
    out = render(merged(EDGE, {"flows": {"replica": 2}}), tmp_path)
    assert not out["rendered"]
    assert "replica" in out["error"] and "schema" in out["error"].lower()


# -- the plaintext-secret guard ---------------------------------------------------------------


@pytest.mark.parametrize(("override", "key", "instead"), [
    ({"clickhouse": {"password": "hunter2"}}, "clickhouse.password", "clickhouse.existingSecret"),
    ({"kafka": {"saslPassword": "s3cret"}}, "kafka.saslPassword", "kafka.existingSecret"),
    ({"eventhubs": {"connectionString": "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=x"}},
     "eventhubs.connectionString", "eventhubs.existingSecret"),
    ({"plant": {"eventhubs": {"connection_string": "Endpoint=sb://x/"}}},
     "plant.eventhubs.connection_string", "eventhubs.existingSecret"),
    ({"plant": {"mqtt": {"password": "pw"}}}, "plant.mqtt.password", "connectors.mqtt.existingSecret"),
    ({"connectors": {"opcua": {"password": "pw"}}}, "connectors.opcua.password",
     "connectors.opcua.existingSecret"),
    ({"plant": {"opcua": {"security": {"private_key_password": "pw"}}}},
     "plant.opcua.security.private_key_password", "connectors.opcua.certificatesSecret"),
    ({"grafana": {"password": "admin"}}, "grafana.password", "grafana.existingSecret"),
    # librdkafka pass-through settings, header values, secret-bearing URLs (issue 14)
    ({"plant": {"kafka": {"extra": {"sasl.password": "s3cret"}}}}, "plant.kafka.extra.sasl.password",
     "kafka.existingSecret"),
    ({"plant": {"eventhubs": {"extra": {"sasl.oauthbearer.client.secret": "x"}}}},
     "plant.eventhubs.extra.sasl.oauthbearer.client.secret", "eventhubs.existingSecret"),
    ({"plant": {"eventhubs": {"extra": {"ssl.key.pem": "-----BEGIN PRIVATE KEY-----"}}}},
     "plant.eventhubs.extra.ssl.key.pem", "eventhubs.existingSecret"),
    ({"plant": {"alerts": {"webhook": {"headers": {"Authorization": "Bearer abc"}}}}},
     "plant.alerts.webhook.headers.Authorization", "webhook.existingSecret"),
    ({"plant": {"alerts": {"webhook": {"token": "abc"}}}}, "plant.alerts.webhook.token", "webhook.existingSecret"),
    ({"plant": {"alerts": {"webhook": {"url": "https://prod-01.westeurope.logic.azure.com/workflows/1/"
                                              "triggers/manual/paths/invoke?api-version=1&sig=AbC123"}}}},
     "plant.alerts.webhook.url", "webhook.existingSecret"),
    ({"plant": {"clickhouse": {"url": "http://flows:hunter2@clickhouse:8123"}}}, "plant.clickhouse.url",
     "clickhouse.existingSecret"),
    ({"plant": {"mqtt": {"subscriptions": [{"topic": "a"}, {"topic": "mqtt://u:p@broker/x"}]}}},
     "plant.mqtt.subscriptions[1].topic", "connectors.mqtt.existingSecret"),
    ({"clickhouse": {"migrator": {"username": "admin", "password": "pw"}}}, "clickhouse.migrator.password",
     "clickhouse.migrator.existingSecret"),
])
def test_plaintext_secret_is_rejected_naming_the_key_and_the_existing_secret(
        override: dict[str, Any], key: str, instead: str, tmp_path: Path) -> None:
    out = render(merged(EDGE, override), tmp_path)
    assert not out["rendered"], "a plaintext secret was rendered"
    assert f"values key {key} holds a plaintext secret" in out["error"]
    assert f"set {instead} instead" in out["error"]


def test_empty_secret_fields_are_allowed(tmp_path: Path) -> None:
    out = render(merged(EDGE, {"clickhouse": {"password": ""}, "plant": {"mqtt": {"password": None}}}), tmp_path)
    assert out["rendered"], out["error"]


def test_secret_references_and_plain_urls_pass_the_guard(tmp_path: Path) -> None:
    out = render(merged(EDGE, {
        "webhook": {"existingSecret": "plantstream-webhook"},
        "networkPolicy": {"webhook": {"cidrs": ["203.0.113.10/32"]}},
        "clickhouse": {"migrator": {"username": "plantstream_admin", "existingSecret": "ch-admin"}},
        "plant": {"kafka": {"extra": {"sasl.username": "flows", "ssl.ca.location": "/etc/ssl/ca.pem"}},
                  "alerts": {"webhook": {"headers": {"X-Plant": "plant-a"}}}}}), tmp_path)
    assert out["rendered"], out["error"]


WEBHOOK = {"webhook": {"existingSecret": "plantstream-webhook"},
           "networkPolicy": {"webhook": {"cidrs": ["203.0.113.10/32"]}}}


def test_webhook_url_and_token_come_from_a_secret_for_the_flows_only(tmp_path: Path) -> None:
    out = render(merged(EDGE, WEBHOOK), tmp_path)
    assert out["rendered"], out["error"]
    sts = by_kind(out["manifests"], "StatefulSet")["edge-plantstream-flows"]
    env = env_of(sts["spec"]["template"]["spec"]["containers"][0])
    assert env["PLANTSTREAM__ALERTS__WEBHOOK__TOKEN"] == {
        "secretKeyRef": {"name": "plantstream-webhook", "key": "token", "optional": True}}
    assert env["PLANTSTREAM__ALERTS__WEBHOOK__URL"]["secretKeyRef"]["key"] == "url"
    for name, dep in by_kind(out["manifests"], "Deployment").items():
        assert "PLANTSTREAM__ALERTS__WEBHOOK__TOKEN" not in env_of(dep["spec"]["template"]["spec"]["containers"][0]), name


def test_three_clickhouse_accounts_and_helm_test_reads_as_the_reader(tmp_path: Path) -> None:
    out = render(merged(EDGE, {"clickhouse": {"migrator": {"username": "plantstream_admin",
                                                           "existingSecret": "ch-admin"}}}), tmp_path)
    assert out["rendered"], out["error"]
    test_env = env_of(by_kind(out["manifests"], "Pod")["edge-plantstream-test"]["spec"]["containers"][0])
    assert "PLANTSTREAM__CLICKHOUSE__PASSWORD" not in test_env and "PLANTSTREAM__CLICKHOUSE__USERNAME" not in test_env
    assert test_env["PLANTSTREAM__CLICKHOUSE__READER__USERNAME"] == "grafana"
    assert test_env["PLANTSTREAM__CLICKHOUSE__READER__PASSWORD"]["secretKeyRef"]["name"] == "plantstream-grafana"
    job_env = env_of(by_kind(out["manifests"], "Job")["edge-plantstream-migrate"]["spec"]["template"]["spec"]
                     ["containers"][0])
    assert job_env["PLANTSTREAM__CLICKHOUSE__MIGRATOR__USERNAME"] == "plantstream_admin"
    assert job_env["PLANTSTREAM__CLICKHOUSE__MIGRATOR__PASSWORD"]["secretKeyRef"]["name"] == "ch-admin"
    # the migration sets the writer's and the reader's passwords: it needs both
    assert job_env["PLANTSTREAM__CLICKHOUSE__PASSWORD"]["secretKeyRef"]["name"] == "plantstream-clickhouse"
    assert job_env["PLANTSTREAM_GRAFANA_PASSWORD"]["secretKeyRef"]["name"] == "plantstream-grafana"
    flows_env = env_of(by_kind(out["manifests"], "StatefulSet")["edge-plantstream-flows"]["spec"]["template"]
                       ["spec"]["containers"][0])
    assert not any("MIGRATOR" in n or "READER" in n for n in flows_env)


def test_external_kafka_and_clickhouse_must_be_given(tmp_path: Path) -> None:
    out = render(merged({"clickhouse": {"url": "http://c:8123"}}), tmp_path)
    assert not out["rendered"] and "kafka.bootstrapServers" in out["error"]
    out = render(merged({"kafka": {"bootstrapServers": "k:9092"}}), tmp_path)
    assert not out["rendered"] and "clickhouse.url" in out["error"]


# -- what an edge install renders -------------------------------------------------------------


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_flows_are_a_bytewax_cluster_statefulset(edge: dict[str, Any]) -> None:
    sts = by_kind(edge["manifests"], "StatefulSet")["edge-plantstream-flows"]
    spec = sts["spec"]
    assert spec["replicas"] == 2 and spec["podManagementPolicy"] == "Parallel"
    pod = spec["template"]["spec"]
    flows = pod["containers"][0]
    assert flows["command"] == ["python", "-m", "bytewax.run", "plantstream.flows.main:get_flow()"]
    env = env_of(flows)
    # bytewax.run derives the process id from BYTEWAX_POD_NAME minus "<statefulset>-".
    assert env["BYTEWAX_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["BYTEWAX_STATEFULSET_NAME"] == sts["metadata"]["name"]
    assert env["BYTEWAX_HOSTFILE_PATH"] == "/var/bytewax/hostfile.txt"
    assert env["BYTEWAX_RECOVERY_DIRECTORY"] == "/var/lib/plantstream/recovery"
    assert float(env["BYTEWAX_SNAPSHOT_INTERVAL"]) == VALUES["flows"]["recovery"]["snapshotIntervalSeconds"]
    assert "BYTEWAX_RECOVERY_BACKUP_INTERVAL" in env
    # The init container lists one address per pod, in ordinal order, on the headless service.
    init = pod["initContainers"][0]["args"][0]
    assert 'while [ "$i" -lt "2" ]' in init
    assert "edge-plantstream-flows-$i.edge-plantstream-flows.plant.svc:2101" in init
    assert "python -m bytewax.recovery /var/lib/plantstream/recovery 4" in init
    assert '[ "$ordinal" = "0" ] && [ ! -e /var/lib/plantstream/recovery/part-0.sqlite3 ]' in init
    assert flows["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert flows["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    svc = by_kind(edge["manifests"], "Service")[spec["serviceName"]]
    assert svc["spec"]["clusterIP"] == "None"
    pvc = by_kind(edge["manifests"], "PersistentVolumeClaim")["edge-plantstream-recovery"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_every_pod_is_non_root_with_a_read_only_root_filesystem(edge: dict[str, Any]) -> None:
    pods = [m["spec"]["template"]["spec"] for m in edge["manifests"]
            if m["kind"] in ("StatefulSet", "Deployment", "Job")]
    pods += [m["spec"] for m in edge["manifests"] if m["kind"] == "Pod"]
    assert len(pods) == 6  # flows, opcua, mqtt, migrate, topics, helm test
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["resources"]["requests"] and c["resources"]["limits"]


def _config_path_exists(path: list[str]) -> bool:
    model: Any = PlantConfig
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return False
        field = model.model_fields.get(part)
        if field is None:
            return False
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), ann)
    return True


def test_environment_overrides_name_real_plant_config_fields(edge: dict[str, Any]) -> None:
    names: set[str] = set()
    for m in edge["manifests"]:
        spec = m["spec"]["template"]["spec"] if m["kind"] in ("StatefulSet", "Deployment", "Job") else m.get("spec")
        if not spec or "containers" not in spec:
            continue
        for c in spec["containers"]:
            names |= {n for n in env_of(c) if n.startswith("PLANTSTREAM__")}
    assert len(names) >= 10
    unknown = [n for n in sorted(names) if not _config_path_exists(n[len("PLANTSTREAM__"):].lower().split("__"))]
    assert not unknown, f"env overrides that name no plant config field: {unknown}"


def test_secrets_are_only_referenced(edge: dict[str, Any]) -> None:
    assert not by_kind(edge["manifests"], "Secret")
    sts = by_kind(edge["manifests"], "StatefulSet")["edge-plantstream-flows"]
    env = env_of(sts["spec"]["template"]["spec"]["containers"][0])
    assert env["PLANTSTREAM__CLICKHOUSE__PASSWORD"] == {
        "secretKeyRef": {"name": "plantstream-clickhouse", "key": "password"}}
    assert env["PLANTSTREAM__EVENTHUBS__CONNECTION_STRING"]["secretKeyRef"]["name"] == "plantstream-eventhubs"
    opcua = by_kind(edge["manifests"], "Deployment")["edge-plantstream-opcua"]["spec"]["template"]["spec"]
    assert env_of(opcua["containers"][0])["PLANTSTREAM__OPCUA__PASSWORD"]["secretKeyRef"]["name"] == "opcua-user"
    assert {"name": "certificates", "secret": {"secretName": "opcua-certs", "defaultMode": 0o400}} in opcua["volumes"]


def test_connectors_run_their_command_and_talk_out_only_to_ot_and_kafka(edge: dict[str, Any]) -> None:
    deployments = by_kind(edge["manifests"], "Deployment")
    policies = by_kind(edge["manifests"], "NetworkPolicy")
    for name, cidr, port in (("opcua", "192.168.10.20/32", 4840), ("mqtt", "192.168.10.30/32", 8883)):
        c = deployments[f"edge-plantstream-{name}"]["spec"]["template"]["spec"]["containers"][0]
        assert c["command"] == ["plantstream", "connect", name, "--config", "/etc/plantstream/plant.yaml"]
        policy = policies[f"edge-plantstream-{name}"]["spec"]
        assert policy["ingress"] == [] and set(policy["policyTypes"]) == {"Ingress", "Egress"}
        ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
        assert ports == {port, 53, *VALUES["networkPolicy"]["kafka"]["ports"]}
        assert {"ipBlock": {"cidr": cidr}} in policy["egress"][0]["to"]
    deny = policies["edge-plantstream-deny-ingress"]["spec"]
    assert deny["ingress"] == [] and deny["policyTypes"] == ["Ingress"]


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(edge: dict[str, Any]) -> None:
    job = by_kind(edge["manifests"], "Job")["edge-plantstream-migrate"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][:3] == ["plantstream", "db", "migrate"]
    assert env_of(c)["PLANTSTREAM_GRAFANA_PASSWORD"]["secretKeyRef"]["name"] == "plantstream-grafana"
    hook_cm = by_kind(edge["manifests"], "ConfigMap")["edge-plantstream-plant-hooks"]
    assert yaml.safe_load(hook_cm["data"]["plant.yaml"])["site"] == "plant-a"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["plant-config"]["configMap"]["name"] == "edge-plantstream-plant-hooks"


def test_plant_config_configmap_and_its_checksum_roll_the_pods(edge: dict[str, Any], tmp_path: Path) -> None:
    cm = by_kind(edge["manifests"], "ConfigMap")["edge-plantstream-plant"]
    plant = PlantConfig.model_validate(yaml.safe_load(cm["data"]["plant.yaml"]))
    assert plant.timezone == "Europe/Berlin" and plant.machine("press-01").line == "line-1"

    def checksum(out: dict[str, Any]) -> str:
        sts = by_kind(out["manifests"], "StatefulSet")["edge-plantstream-flows"]
        value: str = sts["spec"]["template"]["metadata"]["annotations"]["checksum/plant-config"]
        return value

    changed = render(merged(EDGE, {"plant": {"timezone": "Europe/Vienna"}}), tmp_path)
    same = render(EDGE, tmp_path)
    assert checksum(same) == checksum(edge)
    assert checksum(changed) != checksum(edge)


def test_grafana_datasource_and_every_dashboard_are_sidecar_configmaps(edge: dict[str, Any]) -> None:
    cms = by_kind(edge["manifests"], "ConfigMap")
    ds = cms["edge-plantstream-grafana-datasource"]
    assert ds["metadata"]["labels"]["grafana_datasource"] == "1"
    source = yaml.safe_load(ds["data"]["plantstream-datasource.yaml"])["datasources"][0]
    assert source["type"] == "grafana-clickhouse-datasource"
    assert source["jsonData"]["host"] == "clickhouse.plant.local" and source["jsonData"]["port"] == 8443
    assert source["jsonData"]["secure"] is True and source["jsonData"]["username"] == "grafana"
    dashboards = {name: cm for name, cm in cms.items() if cm["metadata"]["labels"].get("grafana_dashboard") == "1"}
    files = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    assert sorted(f for cm in dashboards.values() for f in cm["data"]) == files
    for cm in dashboards.values():
        for name, text in cm["data"].items():
            assert json.loads(text) == json.loads((CHART / "dashboards" / name).read_text())


def test_helm_test_pod_and_notes(edge: dict[str, Any]) -> None:
    pod = by_kind(edge["manifests"], "Pod")["edge-plantstream-test"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "helm test edge" in edge["notes"] and "flows.replicas=2" in edge["notes"]


def test_kafka_and_clickhouse_can_be_in_cluster_services(tmp_path: Path) -> None:
    out = render(merged({"kafka": {"inCluster": {"enabled": True, "service": "kafka.data", "port": 9092}},
                         "clickhouse": {"inCluster": {"enabled": True, "service": "clickhouse.data"}},
                         "flows": {"recovery": {"enabled": False}}}), tmp_path)
    assert out["rendered"], out["error"]
    sts = by_kind(out["manifests"], "StatefulSet")["edge-plantstream-flows"]
    env = env_of(sts["spec"]["template"]["spec"]["containers"][0])
    assert env["PLANTSTREAM__KAFKA__BOOTSTRAP_SERVERS"] == "kafka.data:9092"
    assert env["PLANTSTREAM__CLICKHOUSE__URL"] == "http://clickhouse.data:8123"
    assert "BYTEWAX_RECOVERY_DIRECTORY" not in env
    assert not by_kind(out["manifests"], "PersistentVolumeClaim")


# -- deployment hardening: data volumes, health probes, the topics hook ---------------------------


def pod_of(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = by_kind(manifests, kind)[name]["spec"]["template"]["spec"]
    return pod


def test_connector_spool_and_state_live_on_a_kept_persistent_volume(edge: dict[str, Any]) -> None:
    pvcs = by_kind(edge["manifests"], "PersistentVolumeClaim")
    for name in ("opcua", "mqtt"):
        pvc = pvcs[f"edge-plantstream-{name}-data"]
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
        pod = pod_of(edge["manifests"], "Deployment", f"edge-plantstream-{name}")
        assert {"name": "data", "persistentVolumeClaim": {"claimName": f"edge-plantstream-{name}-data"}} \
            in pod["volumes"]
        c = pod["containers"][0]
        assert {"name": "data", "mountPath": "/var/lib/plantstream"} in c["volumeMounts"]
        env = env_of(c)
        # The producer's spool (and its rejected.jsonl) sit under spool_dir/<name>/ on the volume.
        assert env["PLANTSTREAM__PRODUCER__SPOOL_DIR"] == "/var/lib/plantstream/spool"
        assert int(env["PLANTSTREAM__PRODUCER__SPOOL_MAX_BYTES"]) == VALUES["connectors"][name]["persistence"][
            "spoolMaxBytes"] == 1_610_612_736
    opcua = env_of(pod_of(edge["manifests"], "Deployment", "edge-plantstream-opcua")["containers"][0])
    assert opcua["PLANTSTREAM__OPCUA__STATE_FILE"] == "/var/lib/plantstream/opcua-state.json"
    # Nothing of the connector's data is left on the 64 MiB /tmp emptyDir.
    assert not any(str(v).startswith("/tmp") for k, v in opcua.items() if k.startswith("PLANTSTREAM__"))
    # One writer of the volume: the old pod stops before the new one mounts it.
    for name in ("opcua", "mqtt"):
        assert by_kind(edge["manifests"], "Deployment")[f"edge-plantstream-{name}"]["spec"]["strategy"] == {
            "type": "Recreate"}


def test_connector_volume_can_be_an_empty_dir_for_trials(tmp_path: Path) -> None:
    out = render(merged(EDGE, {"connectors": {"mqtt": {"persistence": {"enabled": False, "size": "512Mi",
                                                                        "spoolMaxBytes": 268_435_456}}}}), tmp_path)
    assert out["rendered"], out["error"]
    assert "edge-plantstream-mqtt-data" not in by_kind(out["manifests"], "PersistentVolumeClaim")
    pod = pod_of(out["manifests"], "Deployment", "edge-plantstream-mqtt")
    assert {"name": "data", "emptyDir": {"sizeLimit": "512Mi"}} in pod["volumes"]
    assert env_of(pod["containers"][0])["PLANTSTREAM__PRODUCER__SPOOL_MAX_BYTES"] == "268435456"


@pytest.mark.parametrize(("size", "spool", "fits"), [
    ("2Gi", 1_932_735_283, True),        # 90 % of 2 GiB, rounded down
    ("2Gi", 1_932_735_284, False),
    ("500M", 500_000_000, False),
    ("10Gi", 8 << 30, True),
])
def test_spool_limit_is_checked_against_the_volume_size_when_rendering(size: str, spool: int, fits: bool,
                                                                       tmp_path: Path) -> None:
    out = render(merged(EDGE, {"connectors": {"mqtt": {"persistence": {"size": size, "spoolMaxBytes": spool}}}}),
                 tmp_path)
    assert out["rendered"] is fits, out["error"]
    if not fits:
        assert f"connectors.mqtt.persistence.spoolMaxBytes={spool} does not fit in " \
               f"connectors.mqtt.persistence.size={size}" in out["error"]


def test_connectors_and_flows_probe_the_health_endpoint(edge: dict[str, Any], tmp_path: Path) -> None:
    pods = {name: pod_of(edge["manifests"], "Deployment", f"edge-plantstream-{name}") for name in ("opcua", "mqtt")}
    pods["flows"] = pod_of(edge["manifests"], "StatefulSet", "edge-plantstream-flows")
    port = VALUES["health"]["port"]
    for name, pod in pods.items():
        c = pod["containers"][0]
        assert {"name": "health", "containerPort": port} in c["ports"], name
        # connectors read producer.health_port from the plant config, the flows' entry point the variable
        health_env = "PLANTSTREAM_HEALTH_PORT" if name == "flows" else "PLANTSTREAM__PRODUCER__HEALTH_PORT"
        assert env_of(c)[health_env] == str(port)
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] == \
            VALUES["health"]["startupSeconds"]
        assert "exec" not in c["livenessProbe"] and "exec" not in c["readinessProbe"]
    out = render(merged(EDGE, {"health": {"port": 9100}}), tmp_path)
    flows = pod_of(out["manifests"], "StatefulSet", "edge-plantstream-flows")["containers"][0]
    assert {"name": "health", "containerPort": 9100} in flows["ports"]
    assert env_of(flows)["PLANTSTREAM_HEALTH_PORT"] == "9100"


def test_topics_are_created_by_a_pre_install_and_pre_upgrade_hook(edge: dict[str, Any]) -> None:
    job = by_kind(edge["manifests"], "Job")["edge-plantstream-topics"]
    notes = job["metadata"]["annotations"]
    assert notes["helm.sh/hook"] == "pre-install,pre-upgrade"
    # The hook ConfigMap first, then the topics, then the migrations (Helm orders hooks by weight).
    migrate = by_kind(edge["manifests"], "Job")["edge-plantstream-migrate"]["metadata"]["annotations"]
    hook_cm = by_kind(edge["manifests"], "ConfigMap")["edge-plantstream-plant-hooks"]["metadata"]["annotations"]
    assert int(hook_cm["helm.sh/hook-weight"]) < int(notes["helm.sh/hook-weight"]) < int(
        migrate["helm.sh/hook-weight"])
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["plantstream", "kafka", "create-topics", "--config", "/etc/plantstream/plant.yaml",
                            "--flows", "all"]
    env = env_of(c)
    assert env["PLANTSTREAM__KAFKA__BOOTSTRAP_SERVERS"] == "kafka-0.kafka.plant.svc:9092"
    assert env["PLANTSTREAM__KAFKA__PARTITIONS"] == "4" and env["PLANTSTREAM__KAFKA__REPLICATION_FACTOR"] == "1"
    assert {v["name"]: v for v in pod["volumes"]}["plant-config"]["configMap"]["name"] == \
        "edge-plantstream-plant-hooks"
    # The jobs' NetworkPolicy lets it reach Kafka.
    jobs = by_kind(edge["manifests"], "NetworkPolicy")["edge-plantstream-jobs"]["spec"]
    assert "topics" in jobs["podSelector"]["matchExpressions"][1]["values"]
    assert set(VALUES["networkPolicy"]["kafka"]["ports"]) <= {p["port"] for r in jobs["egress"] for p in r["ports"]}


def test_topics_hook_takes_strict_and_can_be_turned_off(tmp_path: Path) -> None:
    out = render(merged(EDGE, {"kafka": {"createTopics": {"strict": True}, "replicationFactor": 3},
                               "flows": {"names": "oee,scrap"}}), tmp_path)
    c = by_kind(out["manifests"], "Job")["edge-plantstream-topics"]["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][-3:] == ["--flows", "oee,scrap", "--strict"]
    assert env_of(c)["PLANTSTREAM__KAFKA__REPLICATION_FACTOR"] == "3"
    off = render(merged(EDGE, {"kafka": {"createTopics": {"enabled": False}}, "migrations": {"enabled": False}}),
                 tmp_path)
    assert off["rendered"], off["error"]
    assert not by_kind(off["manifests"], "Job")
    assert "edge-plantstream-plant-hooks" not in by_kind(off["manifests"], "ConfigMap")


def test_the_topics_command_of_the_hook_reads_the_plant_config_of_the_chart(edge: dict[str, Any]) -> None:
    """The hook's plant.yaml with its environment validates and plans every topic (no broker needed)."""
    hook_cm = by_kind(edge["manifests"], "ConfigMap")["edge-plantstream-plant-hooks"]
    job = by_kind(edge["manifests"], "Job")["edge-plantstream-topics"]
    env = {k: v for k, v in env_of(job["spec"]["template"]["spec"]["containers"][0]).items() if isinstance(v, str)}
    plant = yaml.safe_load(hook_cm["data"]["plant.yaml"])
    plant["kafka"] = {"topics": {"plantstream.measurements": {"retention_ms": 86_400_000}}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plant.yaml"
        path.write_text(yaml.safe_dump(plant))
        res = subprocess.run([sys.executable, "-m", "plantstream", "kafka", "create-topics", "--config", str(path),
                              "--dry-run", "--format", "json"], capture_output=True, text=True, timeout=120,
                             env={**os.environ, **env, "HOME": tmp}, check=False)
    assert res.returncode == 0, res.stderr
    rows = {r["topic"]: r for r in json.loads(res.stdout)}
    assert rows["plantstream.measurements"]["configs"] == "cleanup.policy=delete, retention.ms=86400000"
    assert rows["plantstream.workorders"]["configs"] == "cleanup.policy=compact"
    assert all(r["partitions"] == 4 and r["replication"] == 1 for r in rows.values())


def test_flows_may_reach_the_webhook_host_and_event_hubs_and_nothing_else_outside(
        edge: dict[str, Any], tmp_path: Path) -> None:
    def egress(manifests: list[dict[str, Any]]) -> set[tuple[str, int]]:
        policy = by_kind(manifests, "NetworkPolicy")["edge-plantstream-flows"]["spec"]
        return {(peer["ipBlock"]["cidr"], port["port"]) for rule in policy["egress"]
                for peer in rule["to"] if "ipBlock" in peer for port in rule["ports"]}

    # Without a webhook: no rule for it (Event Hubs on 9093 because the edge install sets its Secret).
    assert ("0.0.0.0/0", 9093) in egress(edge["manifests"])
    assert not {r for r in egress(edge["manifests"]) if r[1] == 443}
    out = render(merged(EDGE, WEBHOOK), tmp_path)
    assert out["rendered"], out["error"]
    assert ("203.0.113.10/32", 443) in egress(out["manifests"])
    # The connectors never get it.
    for name, policy in by_kind(out["manifests"], "NetworkPolicy").items():
        if name != "edge-plantstream-flows":
            assert "203.0.113.10/32" not in json.dumps(policy), name
    # A webhook without its CIDRs fails the render, naming the --set fix.
    bad = render(merged(EDGE, {"webhook": {"existingSecret": "plantstream-webhook"}}), tmp_path)
    assert not bad["rendered"] and "networkPolicy.webhook.cidrs" in bad["error"] and "--set" in bad["error"]
    # The flows pods get the stall bound of their liveness.
    sts = by_kind(out["manifests"], "StatefulSet")["edge-plantstream-flows"]
    assert env_of(sts["spec"]["template"]["spec"]["containers"][0])["PLANTSTREAM_STALL_S"] == "300"


def test_metrics_port_on_every_service_and_an_optional_service_monitor(edge: dict[str, Any], tmp_path: Path) -> None:
    port = VALUES["health"]["port"]
    # Off by default: no ServiceMonitor, no connector Services; the flows Service names the port.
    assert not by_kind(edge["manifests"], "ServiceMonitor")
    flows_svc = by_kind(edge["manifests"], "Service")["edge-plantstream-flows"]
    assert {"name": "metrics", "port": port, "targetPort": "health"} in flows_svc["spec"]["ports"]
    assert "edge-plantstream-metrics" not in by_kind(edge["manifests"], "NetworkPolicy")

    scrape = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    out = render(merged(EDGE, {"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s",
                                                              "labels": {"release": "kube-prometheus-stack"}},
                                           "allowFrom": scrape}}), tmp_path)
    assert out["rendered"], out["error"]
    monitors = by_kind(out["manifests"], "ServiceMonitor")
    assert list(monitors) == ["edge-plantstream"]
    sm = monitors["edge-plantstream"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s",
                                        "scrapeTimeout": "10s"}]
    selected = {name: svc for name, svc in by_kind(out["manifests"], "Service").items()
                if all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())}
    assert set(selected) == {"edge-plantstream-flows", "edge-plantstream-opcua-metrics",
                             "edge-plantstream-mqtt-metrics"}
    for name in ("opcua", "mqtt"):
        svc = selected[f"edge-plantstream-{name}-metrics"]["spec"]
        pod = pod_of(out["manifests"], "Deployment", f"edge-plantstream-{name}")
        labels = by_kind(out["manifests"], "Deployment")[f"edge-plantstream-{name}"]["spec"]["template"]["metadata"][
            "labels"]
        assert all(labels.get(k) == v for k, v in svc["selector"].items())
        assert svc["ports"] == [{"name": "metrics", "port": port, "targetPort": "health"}]
        assert {"name": "health", "containerPort": port} in pod["containers"][0]["ports"]
    policy = by_kind(out["manifests"], "NetworkPolicy")["edge-plantstream-metrics"]["spec"]
    assert policy["ingress"] == [{"from": scrape, "ports": [{"protocol": "TCP", "port": port}]}]
    # Helm lint of the chart with the ServiceMonitor on (its values.yaml switched on in a copy).
    import shutil

    copy_dir = tmp_path / "chart"
    shutil.copytree(CHART, copy_dir)
    values = (copy_dir / "values.yaml").read_text()
    assert values.count("    enabled: false\n    # -- Scrape interval.") == 1
    (copy_dir / "values.yaml").write_text(values.replace("    enabled: false\n    # -- Scrape interval.",
                                                         "    enabled: true\n    # -- Scrape interval."))
    lint = helmtool("lint", str(copy_dir))
    assert lint["errors"] == 0
    assert not [m for m in lint["messages"] if m["severity"] in ("warning", "error", "unknown")], lint
