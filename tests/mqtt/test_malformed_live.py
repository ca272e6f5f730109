"""Malformed MQTT messages through a real broker land in the dead-letter topic; the connector
keeps running and acknowledges them (they are handled: a dead letter is a Kafka record too)."""

from __future__ import annotations

from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from plantstream.connectors import kafka
from plantstream.connectors.embedded import TansuBroker
from plantstream.connectors.mqtt import MqttConnector
from plantstream.schemas.config import build_config
from plantstream.schemas.measurement import Measurement, decode
from tests.connectors.test_producer import consume_all
from tests.mqtt.conftest import wait_until

pytestmark = pytest.mark.integration

BAD = [
    (b"{not json", "not JSON"),
    (b'{"values": [{"id": "L1.Press.Good", "v": "many", "t": 1763791200000}]}', "needs a number, got str"),
    (b'{"values": [{"id": "L1.Press.Temp", "v": NaN, "t": 1763791200000}]}', "must be finite, got nan"),
    (b'{"values": [{"id": "L1.Press.Temp", "v": -Infinity, "t": 1763791200000}]}', "must be finite, got -inf"),
    (b'{"values": [{"id": "L9.Unknown.Tag", "v": 1, "t": 1763791200000}]}', "unknown tag 'L9.Unknown.Tag'"),
    (b'{"values": [{"id": "L9.Unknown.Tag", "v": 2, "t": 1763791200000}]}', None),  # reported once only
    (b'{"values": [{"id": "L1.Press.State", "v": 42, "t": 1763791200000}]}', "state code '42'"),
    (b'{"timestamp": "soon", "values": []}', "RFC 3339"),
    (b'{"values": [{"id": "L1.Press.Good", "v": 1, "t": 1763791200000}], "pad": "' + b"x" * 300_000 + b'"}',
     "oversized: 300"),
]


def test_malformed_messages_are_dead_lettered_and_the_connector_goes_on(
        any_mqtt: tuple[str, int], broker: TansuBroker, kafka_conf: dict, tmp_path: Path) -> None:
    host, port = any_mqtt
    cfg = build_config({
        "tags": {"L1.Press.Good": {"machine": "press-01", "metric": "good_count"},
                 "L1.Press.Temp": {"machine": "press-01", "metric": "temperature_c"},
                 "L1.Press.State": {"machine": "press-01", "metric": "machine_state"}},
        "mqtt": {"host": host, "port": port, "protocol": "3.1.1",
                 "subscriptions": [{"topic": "iotgateway/#", "format": "kepware"}]},
        "producer": {"spool_dir": str(tmp_path / "spool")},
    }, {})
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="gateway")
    pub.connect(host, port)
    pub.loop_start()
    try:
        with MqttConnector(cfg, kafka_conf) as c:
            for payload, _ in BAD:
                pub.publish("iotgateway/line1", payload, qos=1).wait_for_publish(10)
            good = orjson.dumps({"timestamp": 1763791200000, "values": [
                {"id": "L1.Press.State", "v": 1}, {"id": "L1.Press.Good", "v": 17}]})
            pub.publish("iotgateway/line1", good, qos=1).wait_for_publish(10)
            assert wait_until(lambda: c.stats.acked == len(BAD) + 1, 30), c.stats
            assert c.stats.last_error == ""
    finally:
        pub.disconnect()
        pub.loop_stop()
    expected = [r for _, r in BAD if r is not None]
    dead = [orjson.loads(v) for _, v in consume_all(kafka_conf, len(expected), kafka.DEADLETTER)]
    assert len(dead) == len(expected)
    reasons = sorted(d["reason"] for d in dead)
    for want in expected:
        assert sum(want in r for r in reasons) == 1, (want, reasons)
    assert all(d["source"] == "mqtt:iotgateway/line1" and d["ts"] > 1763791200000 for d in dead)
    got = [decode(v) for _, v in consume_all(kafka_conf, 2, kafka.MEASUREMENTS)]
    assert [(m.metric, m.value) for m in got if isinstance(m, Measurement)] == [
        ("machine_state", "running"), ("good_count", 17)]
