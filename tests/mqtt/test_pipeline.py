"""Bakery simulator → MQTT broker → MQTT connector → Kafka, checked against the ground truth.

Against both brokers (amqtt and Mosquitto): every state change, in order and with its time, and
the final counters per machine in Kafka equal the simulator's ground truth. Against Mosquitto:
Kafka frozen for 10 s mid-run loses and duplicates nothing, and nothing is acknowledged to the
broker while Kafka cannot confirm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plantstream.connectors import kafka
from plantstream.connectors.embedded import TansuBroker
from plantstream.connectors.mqtt import MqttConnector
from plantstream.schemas.measurement import Measurement, decode
from plantstream.simulators.bakery import BakerySim, bakery_config, publish
from tests.connectors.test_producer import consume_all
from tests.mqtt.conftest import Mosquitto, wait_until

pytestmark = pytest.mark.integration

START = 1763791200000  # 2025-11-22 06:00 UTC


def measurements(conf: dict[str, Any], expected: int) -> list[Measurement]:
    out = []
    for _, value in consume_all(conf, expected, kafka.MEASUREMENTS):
        m = decode(value)
        assert isinstance(m, Measurement), m
        out.append(m)
    return out


def expected_records(sim: BakerySim, messages: list[tuple[int, str, bytes]], connector: MqttConnector) -> int:
    return sum(len(connector.convert(topic, payload)[0]) for _, topic, payload in messages)


def check_against_truth(sim: BakerySim, got: list[Measurement]) -> None:
    truth = sim.ground_truth()
    by_machine: dict[str, list[Measurement]] = {}
    for m in got:
        by_machine.setdefault(m.machine, []).append(m)
    assert sorted(by_machine) == sorted(sim.machine_ids)
    for machine in sim.machine_ids:
        ms = by_machine[machine]
        assert [m.ts for m in ms] == sorted(m.ts for m in ms), f"{machine}: out of order"
        states = [(m.ts, m.value) for m in ms if m.metric == "machine_state"]
        true_states = [(s.start_ms, s.state) for s in truth["states"] if s.machine == machine]
        assert states == true_states, machine
        good = [m.value for m in ms if m.metric == "good_count"]
        reject = [m.value for m in ms if m.metric == "reject_count"]
        assert good[-1] == truth["final"][machine]["good_count"] == truth["counts"][machine]["good"]
        assert reject[-1] == truth["final"][machine]["reject_count"] == truth["counts"][machine]["reject"]
        # each waste reason is announced before the waste it explains
        by_reason: dict[str, int] = {}
        reason, last = None, 0
        for m in ms:
            if m.metric == "scrap_reason":
                reason = m.value
            elif m.metric == "reject_count" and m.value != last:
                assert isinstance(m.value, int) and reason is not None
                by_reason[str(reason)] = by_reason.get(str(reason), 0) + m.value - last
                last = m.value
        assert by_reason == truth["counts"][machine]["rejects_by_reason"]
    assert len(set(got)) == len(got), "no duplicates without a crash"


def test_bakery_to_kafka_equals_ground_truth(any_mqtt: tuple[str, int], broker: TansuBroker,
                                             kafka_conf: dict, tmp_path: Path) -> None:
    host, port = any_mqtt
    cfg = bakery_config(5, mqtt={"host": host, "port": port, "protocol": "3.1.1"},
                        producer={"spool_dir": str(tmp_path / "spool")})
    sim = BakerySim(seed=11, start_ms=START, machines=5)
    sent: list[tuple[int, str, bytes]] = []
    with MqttConnector(cfg, kafka_conf) as connector:
        n = publish(sim, host, port, end_ms=START + 30 * 60_000, on_message=lambda *m: sent.append(m))
        assert n == len(sent) > 3000
        assert wait_until(lambda: connector.stats.acked == n, 60), connector.stats
        assert connector.stats.deadletters == 0
    check = MqttConnector(cfg, kafka_conf)  # a second mapper, only to count the expected records
    expected = expected_records(sim, sent, check)
    got = measurements(kafka_conf, expected)
    assert len(got) == expected
    check_against_truth(sim, got)
    # the first message of every machine carried its product and the fryer's oil target
    fryer = [m for m in got if m.machine == "seattle-fryer-1"]
    assert {m.metric for m in fryer} >= {"part_number", "oil_temperature_target_c", "oil_temperature_c",
                                         "oil_level_pct", "machine_state", "good_count"}
    target = next(m for m in fryer if m.metric == "oil_temperature_target_c")
    assert target.value == pytest.approx((375 - 32) * 5 / 9) and target.unit == "degC"
    assert (target.site, target.line) == ("seattle", "seattle-line-1")


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_kafka_outage_loses_nothing_and_acks_nothing_meanwhile(
        mosquitto_factory: Callable[..., Mosquitto], broker: TansuBroker, kafka_conf: dict, tmp_path: Path,
        protocol: str) -> None:
    mq = mosquitto_factory()
    cfg = bakery_config(5, mqtt={"host": mq.host, "port": mq.port, "protocol": protocol},
                        producer={"spool_dir": str(tmp_path / "spool"), "memory_records": 500,
                                  "inflight_records": 200})
    sim = BakerySim(seed=5, start_ms=START, machines=5)
    sent: list[tuple[int, str, bytes]] = []
    with MqttConnector(cfg, kafka_conf) as connector:
        n1 = publish(sim, mq.host, mq.port, end_ms=START + 10 * 60_000, on_message=lambda *m: sent.append(m))
        assert wait_until(lambda: connector.stats.acked == n1, 60)
        broker.pause()
        paused_at = time.monotonic()
        try:
            n2 = publish(sim, mq.host, mq.port, end_ms=START + 20 * 60_000,
                         on_message=lambda *m: sent.append(m))
            # the connector takes what the broker lets it have unacknowledged (Mosquitto's
            # max_inflight_messages for MQTT 3.1.1); the broker holds the rest in the session
            assert wait_until(lambda: connector.stats.messages > n1, 30)
            time.sleep(max(0.0, 10.0 - (time.monotonic() - paused_at)))
            assert connector.stats.acked == n1, "acknowledged while Kafka could not confirm"
            if protocol == "3.1.1":
                assert connector.stats.messages < n1 + n2  # about n1 + max_inflight_messages
        finally:
            broker.resume()
        assert wait_until(lambda: connector.stats.acked == n1 + n2, 60), connector.stats
        assert connector.producer is not None and connector.producer.stats.rejected_records == 0
        assert connector.producer.stats.spooled_records > 0, "the outage went through the disk spool"
    expected = expected_records(sim, sent, MqttConnector(cfg, kafka_conf))
    got = measurements(kafka_conf, expected)
    assert len(got) == expected
    check_against_truth(sim, got)


def test_messages_published_while_the_connector_is_away_arrive(
        mosquitto_factory: Callable[..., Mosquitto], broker: TansuBroker, kafka_conf: dict, tmp_path: Path) -> None:
    """A clean stop and a later start: the persistent session holds the messages meanwhile."""
    mq = mosquitto_factory()
    cfg = bakery_config(5, mqtt={"host": mq.host, "port": mq.port, "protocol": "5",
                                 "client_id": "bakery-persist"},
                        producer={"spool_dir": str(tmp_path / "spool")})
    sim = BakerySim(seed=8, start_ms=START, machines=5)
    sent: list[tuple[int, str, bytes]] = []
    c1 = MqttConnector(cfg, kafka_conf).start()
    n1 = publish(sim, mq.host, mq.port, end_ms=START + 5 * 60_000, on_message=lambda *m: sent.append(m))
    assert wait_until(lambda: c1.stats.acked == n1, 60)
    c1.stop()
    n2 = publish(sim, mq.host, mq.port, end_ms=START + 10 * 60_000, on_message=lambda *m: sent.append(m))
    with MqttConnector(cfg, kafka_conf) as c2:
        assert wait_until(lambda: c2.stats.acked == n2, 60), c2.stats
    expected = expected_records(sim, sent, MqttConnector(cfg, kafka_conf))
    got = measurements(kafka_conf, expected)
    assert len(got) == expected
    check_against_truth(sim, got)
