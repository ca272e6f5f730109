"""The Helm chart's ``sources`` list: one connector Deployment per OT source, as ``plantstream run``
starts one connector per entry of the plant config's ``sources:``.

Rendered with Helm's Go library (helm-sdkpy, ``tests/deploy/helmtool.py``) as the other chart
tests do. What is checked: one Deployment (with its volume, NetworkPolicy and metrics Service)
per enabled entry and none for a disabled one; each runs ``plantstream connect <kind>`` on its
own rendered config file, which plantstream loads as that source (with the Deployment's
environment overrides applied, secrets included); Kubernetes settings fall back to
``connectors.<kind>``; probes on ``/healthz`` and ``/readyz``; the plant config's ``sources:``
list; the single top-level form unchanged; and the mistakes a user can make stop the render
naming the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from plantstream.schemas.config import load_config_text
from tests.deploy.test_chart import EDGE, SCHEMA, VALUES, by_kind, merged, render

SOURCES = [
    {"name": "press-shop",
     "opcua": {"endpoint": "opc.tcp://10.0.1.20:4840", "browse": ["0:Objects/2:PressShop"]},
     "endpoints": [{"cidr": "10.0.1.20/32", "port": 4840}],
     "existingSecret": "press-shop-opcua",
     "persistence": {"size": "5Gi", "spoolMaxBytes": 4294967296}},
    {"name": "bakery",
     "mqtt": {"host": "10.0.2.5", "port": 1883, "protocol": "3.1.1",
              "subscriptions": [{"topic": "spBv1.0/#", "format": "sparkplug"}]},
     "endpoints": [{"cidr": "10.0.2.5/32", "port": 1883}],
     "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
    {"name": "spare-line", "enabled": False, "opcua": {"endpoint": "opc.tcp://10.0.1.30:4840"}},
]
PLANT = {"site": "plant-a", "timezone": "UTC",
         "lines": [{"id": "line-1", "machines": [{"id": "press-01"}]}],
         "tags": {"spBv1.0/contoso/{line}/{machine}#State": {"machine": "{machine}", "metric": "machine_state"}}}


def with_sources(**extra: Any) -> dict[str, Any]:
    return merged(EDGE, {"plant": PLANT, "connectors": {"opcua": {"enabled": False}, "mqtt": {"enabled": False}},
                         "sources": SOURCES}, extra)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    values = with_sources(metrics={"serviceMonitor": {"enabled": True}})
    jsonschema.validate(values, SCHEMA, cls=jsonschema.Draft7Validator)
    got = render(values, tmp_path_factory.mktemp("sources"))
    assert got["rendered"], got["error"]
    return got


def container(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    c: dict[str, Any] = by_kind(manifests, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
    return c


def environ_of(c: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the process sees it (a Secret's value stands in as its name)."""
    return {e["name"]: e.get("value", e.get("valueFrom", {}).get("secretKeyRef", {}).get("name", ""))
            for e in c["env"]}


def test_one_connector_deployment_per_enabled_source(out: dict[str, Any]) -> None:
    deployments = by_kind(out["manifests"], "Deployment")
    connectors = {n for n, d in deployments.items()
                  if d["metadata"]["labels"]["app.kubernetes.io/component"].startswith("connector-")}
    assert connectors == {"edge-plantstream-press-shop", "edge-plantstream-bakery"}  # not the disabled one
    press = container(out["manifests"], "edge-plantstream-press-shop")
    bakery = container(out["manifests"], "edge-plantstream-bakery")
    assert press["command"] == ["plantstream", "connect", "opcua", "--config",
                                "/etc/plantstream/source-press-shop.yaml"]
    assert bakery["command"] == ["plantstream", "connect", "mqtt", "--config", "/etc/plantstream/source-bakery.yaml"]
    # each its own pods: selectors differ
    selectors = [deployments[n]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for n in connectors]
    assert sorted(selectors) == ["connector-bakery", "connector-press-shop"]
    for c in (press, bakery):
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert {"name": "health", "containerPort": VALUES["health"]["port"]} in c["ports"]
    env = environ_of(press)
    assert env["PLANTSTREAM__OPCUA__STATE_FILE"] == "/var/lib/plantstream/opcua-state.json"
    assert env["PLANTSTREAM__OPCUA__PASSWORD"] == "press-shop-opcua"
    assert not any(k.startswith("PLANTSTREAM__OPCUA") for k in environ_of(bakery))
    assert "PLANTSTREAM__MQTT__PASSWORD" not in environ_of(bakery)  # no existingSecret for it
    # Kubernetes settings: the entry's own, else connectors.<kind>'s
    assert bakery["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert bakery["resources"]["limits"] == VALUES["connectors"]["mqtt"]["resources"]["limits"]
    assert press["resources"] == VALUES["connectors"]["opcua"]["resources"]
    pvcs = by_kind(out["manifests"], "PersistentVolumeClaim")
    assert pvcs["edge-plantstream-press-shop-data"]["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert pvcs["edge-plantstream-bakery-data"]["spec"]["resources"]["requests"]["storage"] == \
        VALUES["connectors"]["mqtt"]["persistence"]["size"]
    assert env["PLANTSTREAM__PRODUCER__SPOOL_MAX_BYTES"] == "4294967296"


def test_each_source_talks_out_to_its_own_endpoints_and_has_a_metrics_service(out: dict[str, Any]) -> None:
    policies = by_kind(out["manifests"], "NetworkPolicy")
    for name, cidr, port in (("press-shop", "10.0.1.20/32", 4840), ("bakery", "10.0.2.5/32", 1883)):
        policy = policies[f"edge-plantstream-{name}"]["spec"]
        assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == f"connector-{name}"
        assert policy["egress"][0] == {"to": [{"ipBlock": {"cidr": cidr}}], "ports": [{"protocol": "TCP",
                                                                                      "port": port}]}
    assert "edge-plantstream-opcua" not in policies and "edge-plantstream-mqtt" not in policies
    services = by_kind(out["manifests"], "Service")
    assert {"edge-plantstream-press-shop-metrics", "edge-plantstream-bakery-metrics"} <= set(services)
    assert "edge-plantstream-spare-line-metrics" not in services


def test_the_rendered_configs_load_as_plantstream_reads_them(out: dict[str, Any]) -> None:
    data = by_kind(out["manifests"], "ConfigMap")["edge-plantstream-plant"]["data"]
    assert set(data) == {"plant.yaml", "source-press-shop.yaml", "source-bakery.yaml"}
    plant = load_config_text(data["plant.yaml"], {})
    assert [(s.name, s.kind) for s in plant.sources] == [("press-shop", "opcua"), ("bakery", "mqtt"),
                                                         ("spare-line", "opcua")]
    assert [s.name for s in plant.source_list()] == ["press-shop", "bakery"]
    assert "endpoints" not in yaml.safe_load(data["plant.yaml"])["sources"][0]  # chart settings left out
    press_env = environ_of(container(out["manifests"], "edge-plantstream-press-shop"))
    press = load_config_text(data["source-press-shop.yaml"], press_env)
    assert press.opcua.endpoint == "opc.tcp://10.0.1.20:4840" and press.opcua.source == "press-shop"
    assert press.opcua.browse == ("0:Objects/2:PressShop",) or list(press.opcua.browse) == ["0:Objects/2:PressShop"]
    assert press.opcua.state_file == "/var/lib/plantstream/opcua-state.json"
    assert press.opcua.password is not None and press.opcua.password.get_secret_value() == "press-shop-opcua"
    assert press.producer.spool_dir == "/var/lib/plantstream/spool"
    assert press.producer.health_port == VALUES["health"]["port"]
    assert press.lines == plant.lines and press.tags == plant.tags
    assert [s.name for s in press.source_list()] == ["opcua"]  # its own entry only
    bakery = load_config_text(data["source-bakery.yaml"],
                              environ_of(container(out["manifests"], "edge-plantstream-bakery")))
    assert (bakery.mqtt.host, bakery.mqtt.port, bakery.mqtt.source) == ("10.0.2.5", 1883, "bakery")
    assert [(s.topic, s.format) for s in bakery.mqtt.subscriptions] == [("spBv1.0/#", "sparkplug")]
    assert [s.name for s in bakery.source_list()] == ["mqtt"]


def test_the_single_top_level_form_is_unchanged(tmp_path: Path) -> None:
    got = render(EDGE, tmp_path)
    assert got["rendered"], got["error"]
    data = by_kind(got["manifests"], "ConfigMap")["edge-plantstream-plant"]["data"]
    assert set(data) == {"plant.yaml"} and "sources" not in yaml.safe_load(data["plant.yaml"])
    for kind in ("opcua", "mqtt"):
        c = container(got["manifests"], f"edge-plantstream-{kind}")
        assert c["command"] == ["plantstream", "connect", kind, "--config", "/etc/plantstream/plant.yaml"]


@pytest.mark.parametrize(("values", "message"), [
    ({"connectors": {"opcua": {"enabled": True}}},
     "sources[0] (press-shop) is an opcua source while connectors.opcua.enabled=true"),
    ({"sources": [*SOURCES, {"name": "bakery", "mqtt": {"host": "b"}}]},
     'sources[3]: the name "bakery" is already used by sources[1]'),
    ({"plant": {**PLANT, "sources": [{"name": "x", "mqtt": {"host": "b"}}]}},
     "plant.sources and sources are both set"),
    ({"sources": [{**SOURCES[0], "persistence": {"size": "1Gi"}}]},
     "sources[0].persistence.spoolMaxBytes=1610612736 does not fit in sources[0].persistence.size=1Gi"),
    ({"sources": [{"name": "both", "opcua": {"endpoint": "opc.tcp://a:4840"}, "mqtt": {"host": "b"}}]},
     "sources[0] (both): give exactly one of opcua: or mqtt:"),
    ({"sources": [{"name": "Press_Shop", "mqtt": {"host": "b"}}]}, "/sources/0/name"),  # the values schema
    ({"sources": [SOURCES[0], {**SOURCES[1], "mqtt": {"host": "b", "password": "s3cret"}}]},
     "values key sources[1].mqtt.password holds a plaintext secret: put it in a Kubernetes Secret and set "
     "sources[1].existingSecret instead"),
])
def test_mistakes_stop_the_render_naming_the_fix(values: dict[str, Any], message: str, tmp_path: Path) -> None:
    v = with_sources()
    v.update({k: val for k, val in values.items() if k != "connectors"})
    if "connectors" in values:
        v["connectors"]["opcua"]["enabled"] = True
    got = render(v, tmp_path)
    assert not got["rendered"]
    assert message in got["error"], got["error"]


def test_chart_with_sources_lints_clean(tmp_path: Path) -> None:
    """Helm lint of the chart whose values.yaml holds the sources (lint reads the chart's own values)."""
    import shutil

    from tests.deploy.test_chart import CHART, helmtool

    chart = tmp_path / "plantstream"
    shutil.copytree(CHART, chart)
    (chart / "values.yaml").write_text(yaml.safe_dump(with_sources(), sort_keys=False))
    result = helmtool("lint", str(chart))
    assert result["errors"] == 0
    bad = [m for m in result["messages"] if m["severity"] in ("warning", "error", "unknown")]
    assert not bad, bad
