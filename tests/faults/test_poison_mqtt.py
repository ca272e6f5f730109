"""Poison through a real MQTT broker (amqtt and Mosquitto) into a real Kafka-protocol broker: every
message becomes measurements or one bounded dead letter and is acknowledged; the producer thread
lives on and /healthz says so; a killed producer thread turns /healthz unhealthy.

Before: a 200 KB binary payload became a 1,000,161-byte dead letter that librdkafka refused,
which killed the producer's thread (and the batch came back from the spool at every restart);
40 KB of nested ``[`` raised RecursionError and a 30-digit integer or a lone surrogate failed at
encode time — such messages were neither dead-lettered nor acknowledged.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from plantstream.connectors import kafka
from plantstream.connectors.embedded import TansuBroker
from plantstream.connectors.mqtt import MqttConnector
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.schemas.measurement import Measurement, decode
from tests.connectors.test_producer import consume_all
from tests.mqtt.conftest import wait_until

pytestmark = pytest.mark.integration

TS = 1763791200000
BIG = b"123456789012345678901234567890"
POISON: list[tuple[bytes, str]] = [
    (b"\xff" * 300_000, "oversized: 300000 bytes"),  # beyond mqtt.max_payload_bytes (256 KiB)
    (bytes(range(256)) * 800, "not JSON"),  # 200 KB of binary, under the limit
    (b"[" * 40_000, "not JSON: depth limit exceeded"),  # RecursionError in the lenient reader
    (b'{"values": [{"id": "L1.Press.Temp", "v": NaN}, {"id": "L1.Press.Good", "v": ' + BIG + b"}]}",
     "Integer exceeds 64-bit range"),
    (b'{"values": [{"id": "L1.Press.Part", "v": "\\ud800"}, {"id": "L1.Press.Temp", "v": NaN}]}',
     "surrogates not allowed"),
]


def config(host: str, port: int, tmp_path: Path) -> PlantConfig:
    return build_config({
        "tags": {"L1.Press.Good": {"machine": "press-01", "metric": "good_count"},
                 "L1.Press.Temp": {"machine": "press-01", "metric": "temperature_c"},
                 "L1.Press.Part": {"machine": "press-01", "metric": "part_number"}},
        "mqtt": {"host": host, "port": port, "protocol": "3.1.1",
                 "subscriptions": [{"topic": "iotgateway/#", "format": "kepware"}]},
        "producer": {"spool_dir": str(tmp_path / "spool"), "health_port": 0, "health_host": "127.0.0.1"},
    }, {})


def good(i: int) -> bytes:
    return orjson.dumps({"timestamp": TS + i, "values": [{"id": "L1.Press.Good", "v": i}]})


def status(port: int | None, path: str) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code


def publisher(host: str, port: int) -> paho.Client:
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="gateway")
    pub.connect(host, port)
    pub.loop_start()
    return pub


def test_poison_payloads_are_dead_lettered_bounded_and_acknowledged_and_everything_after_flows(
        any_mqtt: tuple[str, int], broker: TansuBroker, kafka_conf: dict[str, Any], tmp_path: Path) -> None:
    host, port = any_mqtt
    pub = publisher(host, port)
    try:
        with MqttConnector(config(host, port, tmp_path), kafka_conf) as c:
            assert status(c.health_port, "/healthz") == 200
            pub.publish("iotgateway/line1", good(0), qos=1).wait_for_publish(10)
            for payload, _ in POISON:
                pub.publish("iotgateway/line1", payload, qos=1).wait_for_publish(30)
            for i in range(1, 6):
                pub.publish("iotgateway/line1", good(i), qos=1).wait_for_publish(10)
            n = len(POISON) + 6
            assert wait_until(lambda: c.stats.acked == n, 60), (c.stats, c.producer and c.producer.stats)
            assert c.producer is not None and c.producer.alive
            assert c.stats.last_error == "" and c.producer.stats.first_error == ""
            assert status(c.health_port, "/healthz") == 200 and status(c.health_port, "/readyz") == 200
            spool = c.producer.spool_dir
    finally:
        pub.disconnect()
        pub.loop_stop()
    dead = [orjson.loads(v) for _, v in consume_all(kafka_conf, len(POISON), kafka.DEADLETTER)]
    assert len(dead) == len(POISON)
    by_len = {d["length"]: d for d in dead}
    for payload, reason in POISON:
        d = by_len[len(payload)]
        assert reason in d["reason"], (reason, d["reason"])
        assert d["sha256"] == hashlib.sha256(payload).hexdigest()
        assert len(orjson.dumps(d)) < 4096 + 600  # was up to 1,000,161 bytes
    got = [decode(v) for _, v in consume_all(kafka_conf, 6, kafka.MEASUREMENTS)]
    assert sorted(m.value for m in got if isinstance(m, Measurement)) == [0, 1, 2, 3, 4, 5]
    assert not list(Path(spool).glob("*.spool"))  # nothing comes back at the next start


def test_a_killed_producer_thread_turns_healthz_unhealthy(
        mosquitto_factory: Any, broker: TansuBroker, kafka_conf: dict[str, Any], tmp_path: Path) -> None:
    m = mosquitto_factory()
    with MqttConnector(config(m.host, m.port, tmp_path), kafka_conf) as c:
        assert c.producer is not None
        assert wait_until(lambda: status(c.health_port, "/readyz") == 200, 10)

        def die() -> None:
            raise SystemExit("fault injected into the producer thread")

        c.producer.send([], on_confirmed=die)  # runs on the producer thread, which ends
        assert wait_until(lambda: not c.producer.alive, 10)  # type: ignore[union-attr]
        assert status(c.health_port, "/healthz") == 503
        assert status(c.health_port, "/readyz") == 503
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(f"http://127.0.0.1:{c.health_port}/healthz", timeout=5)
        body = orjson.loads(failed.value.read())  # the answer says why
        assert body["live"] is False and body["thread_alive"] is False
        health = c.health()
        assert health["live"] is False and "producer thread failed" in health["last_error"]
