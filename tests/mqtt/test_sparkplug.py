"""Sparkplug B through a real MQTT broker (amqtt and Mosquitto) into the embedded Kafka-protocol broker.

A small edge node written here (paho + the same protobuf schema) publishes births, data by
alias, a device death, a sequence gap, a malformed payload, a stale and a real node death.
The connector must map the metrics through the tag dictionary, turn deaths into
``machine_state`` ``off`` at the death time, ask the node for a rebirth on the gap (the
``NCMD`` is observed on the broker), dead-letter the malformed payload, and acknowledge every
message.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from plantstream.connectors import kafka
from plantstream.connectors import sparkplug as sp
from plantstream.connectors.embedded import TansuBroker
from plantstream.connectors.mqtt import MqttConnector
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.schemas.measurement import Measurement, decode
from tests.connectors.test_producer import consume_all
from tests.mqtt.conftest import wait_until

pytestmark = pytest.mark.integration

T0 = 1763791200000
GROUP, NODE = "line-1", "gw-1"
DT = sp.DATATYPES


def config(host: str, port: int, tmp_path: Path, **sparkplug: Any) -> PlantConfig:
    dev = f"spBv1.0/{GROUP}/{NODE}/{{machine}}"
    return build_config({
        "site": "plant-a",
        "lines": [{"id": "line-1", "machines": [{"id": "press-01"}, {"id": "press-02"}]}],
        "tags": {f"{dev}#Temperature": {"machine": "{machine}", "metric": "temperature_c", "unit": "degC"},
                 f"{dev}#State": {"machine": "{machine}", "metric": "machine_state"},
                 f"{dev}#Counts/Good": {"machine": "{machine}", "metric": "good_count"},
                 f"spBv1.0/{GROUP}/{NODE}#Ambient": {"machine": "press-01", "metric": "ambient_temperature_c"}},
        "mqtt": {"host": host, "port": port, "protocol": "3.1.1", "client_id": "plantstream-spb",
                 "subscriptions": [{"topic": "spBv1.0/#"}], "sparkplug": sparkplug},
        "producer": {"spool_dir": str(tmp_path / "spool")},
    }, {})


class EdgeNode:
    """A Sparkplug B edge node: NBIRTH/DBIRTH with aliases, DDATA by alias, deaths, and the
    rebirth requests it receives."""

    def __init__(self, host: str, port: int, bdseq: int = 0) -> None:
        self.seq = 0
        self.bdseq = bdseq
        self.rebirths: list[int] = []
        self.got_rebirth = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{NODE}")
        self.client.will_set(self.topic("NDEATH"), self.death(bdseq), qos=1)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe(self.topic("NCMD"), qos=0)
        self.client.loop_start()

    @staticmethod
    def topic(kind: str, device: str | None = None) -> str:
        return f"spBv1.0/{GROUP}/{kind}/{NODE}" + (f"/{device}" if device else "")

    @staticmethod
    def death(bdseq: int) -> bytes:
        p = sp.new_payload(timestamp=T0)
        p.metrics.add(name="bdSeq", datatype=DT["UInt64"], long_value=bdseq)
        return bytes(p.SerializeToString())

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if sp.decode_rebirth(bytes(msg.payload)):
            self.rebirths.append(self.seq)
            self.got_rebirth.set()

    def publish(self, kind: str, device: str | None, ts: int, metrics: list[dict[str, Any]],
                seq: int | None = None) -> None:
        p = sp.new_payload(timestamp=ts)
        if kind != "NDEATH":
            p.seq = self.seq if seq is None else seq
            self.seq = (p.seq + 1) % 256
        for m in metrics:
            p.metrics.add(**m)
        self.raw(self.topic(kind, device), bytes(p.SerializeToString()))

    def raw(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def births(self, ts: int) -> None:
        self.seq = 0
        self.publish("NBIRTH", None, ts, [
            {"name": "bdSeq", "datatype": DT["UInt64"], "long_value": self.bdseq},
            {"name": "Node Control/Rebirth", "alias": 100, "datatype": DT["Boolean"], "boolean_value": False},
            {"name": "Ambient", "alias": 101, "datatype": DT["Float"], "float_value": 21.5}])
        for dev in ("press-01", "press-02"):
            self.publish("DBIRTH", dev, ts, [
                {"name": "Temperature", "alias": 1, "datatype": DT["Double"], "double_value": 40.0},
                {"name": "State", "alias": 2, "datatype": DT["Int32"], "int_value": 1},
                {"name": "Counts/Good", "alias": 3, "datatype": DT["UInt64"], "long_value": 100},
                {"name": "Device Control/Scan Rate", "alias": 4, "datatype": DT["Int32"], "int_value": 1000}])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def measurements(kafka_conf: dict[str, Any], n: int) -> list[Measurement]:
    got = [decode(v) for _, v in consume_all(kafka_conf, n, kafka.MEASUREMENTS)]
    assert all(isinstance(m, Measurement) for m in got), got
    return sorted((m for m in got if isinstance(m, Measurement)), key=lambda m: (m.ts, m.machine, m.metric))


def test_sparkplug_births_aliases_deaths_gap_rebirth_and_malformed(
        any_mqtt: tuple[str, int], broker: TansuBroker, kafka_conf: dict[str, Any], tmp_path: Path) -> None:
    host, port = any_mqtt
    with MqttConnector(config(host, port, tmp_path), kafka_conf) as c:
        node = EdgeNode(host, port, bdseq=7)
        try:
            node.births(T0)                                                   # 3 messages, seq 0..2
            node.publish("DDATA", "press-01", T0 + 1000, [                    # by alias only
                {"alias": 1, "double_value": 61.5}, {"alias": 2, "int_value": 3},
                {"alias": 3, "long_value": 105}])
            node.publish("NDATA", None, T0 + 1500, [{"alias": 101, "float_value": 22.0}])
            node.publish("DDEATH", "press-02", T0 + 2000, [])                 # press-02 off at T0+2000
            node.raw(node.topic("DDATA", "press-01"), b"\x12\x05\x01")        # truncated protobuf
            assert wait_until(lambda: c.stats.acked == 7, 30), c.stats
            assert not node.got_rebirth.is_set()
            # A gap: seq 12 where 6 was due. The data is still used (aliases of the last birth).
            node.publish("DDATA", "press-01", T0 + 3000, [{"alias": 1, "double_value": 62.0}], seq=12)
            assert node.got_rebirth.wait(15), "no rebirth request reached the edge node"
            assert wait_until(lambda: c.stats.rebirth_requests == 1, 5)
            # The node answers with its births; data goes on; a stale will (bdSeq 3) is ignored.
            node.births(T0 + 4000)
            node.publish("DDATA", "press-01", T0 + 5000, [{"alias": 1, "double_value": 63.0}])
            node.raw(node.topic("NDEATH"), node.death(3))
            node.raw(node.topic("NDEATH"), node.death(7))                    # press-01 and -02 off
            # 14 messages of the node, and our own NCMD (QoS 0, though amqtt delivers it at QoS 1).
            assert wait_until(lambda: c.stats.measurements == 23 and c.stats.messages >= 15
                              and c.stats.acked >= 14, 30), c.stats
            death_received = time.time() * 1000
            assert c.stats.rebirth_requests == 1
        finally:
            node.close()

    ms = measurements(kafka_conf, 23)
    by = [(m.ts - T0, m.machine, m.metric, m.value) for m in ms]
    born = [(0, "press-01", "ambient_temperature_c", 21.5),
            (0, "press-01", "good_count", 100), (0, "press-01", "machine_state", "running"),
            (0, "press-01", "temperature_c", 40.0),
            (0, "press-02", "good_count", 100), (0, "press-02", "machine_state", "running"),
            (0, "press-02", "temperature_c", 40.0)]
    assert by[:7] == born
    assert by[7:12] == [(1000, "press-01", "good_count", 105), (1000, "press-01", "machine_state", "fault"),
                        (1000, "press-01", "temperature_c", 61.5),
                        (1500, "press-01", "ambient_temperature_c", 22.0),
                        (2000, "press-02", "machine_state", "off")]
    assert by[12] == (3000, "press-01", "temperature_c", 62.0)
    assert by[13:20] == [(4000 + t, m, k, v) for t, m, k, v in born]
    assert by[20] == (5000, "press-01", "temperature_c", 63.0)
    offs = [m for m in ms[21:] if m.metric == "machine_state"]
    assert sorted(m.machine for m in offs) == ["press-01", "press-02"] and all(m.value == "off" for m in offs)
    assert all(abs(m.ts - death_received) < 15_000 for m in offs)  # received time, not the will's T0
    assert all(m.site == "plant-a" and m.line == "line-1" for m in ms)
    assert len(ms) == 23  # nothing else: the control metrics and bdSeq are not measurements
    dead = [orjson.loads(v) for _, v in consume_all(kafka_conf, 1, kafka.DEADLETTER)]
    assert len(dead) == 1 and dead[0]["reason"].startswith("sparkplug: DDATA payload is not a Sparkplug B")


def test_data_before_a_birth_asks_for_a_rebirth_once_and_dead_letters_unknown_aliases(
        mqtt_broker: Any, broker: TansuBroker, kafka_conf: dict[str, Any], tmp_path: Path) -> None:
    host, port = mqtt_broker.host, mqtt_broker.port
    with MqttConnector(config(host, port, tmp_path, rebirth_interval_s=60), kafka_conf) as c:
        node = EdgeNode(host, port)
        try:
            node.seq = 40  # the connector started after the node's birth
            node.publish("DDATA", "press-01", T0, [{"alias": 1, "double_value": 61.5},
                                                   {"name": "Temperature", "double_value": 61.6}])
            node.publish("DDATA", "press-01", T0 + 1000, [{"alias": 1, "double_value": 61.7}])
            assert node.got_rebirth.wait(15)
            assert wait_until(lambda: c.stats.acked >= 2 and c.stats.deadletters == 2, 30), c.stats
            assert c.stats.rebirth_requests == 1  # rate-limited until the NBIRTH
            node.births(T0 + 2000)
            node.publish("DDATA", "press-01", T0 + 3000, [{"alias": 1, "double_value": 62.0}])
            assert wait_until(lambda: c.stats.acked >= 6 and c.stats.measurements == 9, 30), c.stats
        finally:
            node.close()
    ms = measurements(kafka_conf, 1 + 7 + 1)
    temps = [(m.ts - T0, m.value) for m in ms if m.metric == "temperature_c" and m.machine == "press-01"]
    assert temps == [(0, 61.6), (2000, 40.0), (3000, 62.0)]  # the named metric was usable before the birth
    dead = [orjson.loads(v)["reason"] for _, v in consume_all(kafka_conf, 2, kafka.DEADLETTER)]
    assert len(dead) == 2 and all("uses aliases [1] that no birth named" in r for r in dead)
