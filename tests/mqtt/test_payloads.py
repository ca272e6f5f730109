"""MQTT payload formats through the tag dictionary: good values map, bad ones are dead-lettered.

No broker here: :meth:`MqttConnector.convert` is the whole message → records step.
"""

from __future__ import annotations

import orjson
import pytest

from plantstream.connectors.mqtt import MqttConnector
from plantstream.schemas.config import build_config
from plantstream.schemas.measurement import DeadLetter, Measurement

TS = 1763791200000


@pytest.fixture
def connector() -> MqttConnector:
    cfg = build_config({
        "site": "plant-a",
        "lines": [{"id": "line-1", "machines": [{"id": "press-01"}, {"id": "fryer-01"}]}],
        "tags": {
            "Line1.Press01.State": {"machine": "press-01", "metric": "machine_state"},
            "Line1.Press01.Good": {"machine": "press-01", "metric": "good_count"},
            "Line1.Press01.Temp": {"machine": "press-01", "metric": "temperature_c", "unit": "degC",
                                   "scale": 0.1},
            "Line1.Press01.Part": {"machine": "press-01", "metric": "part_number"},
            "bakery/{machine}#oil_temp_f": {"machine": "{machine}", "metric": "oil_temperature_c",
                                           "scale": 5 / 9, "offset": -160 / 9, "unit": "degC"},
            "bakery/{machine}#state": {"machine": "{machine}", "metric": "machine_state",
                                      "states": {"0": "off", "1": "running", "5": "planned_stop"}},
            "bakery/{machine}#good_count": {"machine": "{machine}", "metric": "good_count"},
        },
        "mqtt": {"max_payload_bytes": 4096,
                 "subscriptions": [{"topic": "kepware/#"}, {"topic": "iotgateway", "format": "kepware"},
                                   {"topic": "bakery/#", "format": "flat"}]},
    }, {})
    return MqttConnector(cfg, {"bootstrap.servers": "unused:1"}, clock=lambda: TS + 999)


def test_kepware_iot_gateway_json(connector: MqttConnector) -> None:
    payload = orjson.dumps({"timestamp": TS, "values": [
        {"id": "Line1.Press01.State", "v": 3, "q": True, "t": TS + 1},
        {"id": "Line1.Press01.Good", "v": 4501, "q": True, "t": TS + 2},
        {"id": "Line1.Press01.Temp", "v": 615, "q": False},
        {"id": "Line1.Press01.Part", "v": 100, "q": True, "t": TS + 3},
    ]})
    ms, dead = connector.convert("iotgateway", payload)
    assert dead == []
    assert [(m.ts, m.machine, m.metric, m.value, m.quality) for m in ms] == [
        (TS + 1, "press-01", "machine_state", "fault", "good"),
        (TS + 2, "press-01", "good_count", 4501, "good"),
        (TS, "press-01", "temperature_c", 61.5, "bad"),  # 615 × 0.1; q false → bad; batch timestamp
        (TS + 3, "press-01", "part_number", "100", "good"),
    ]
    assert all((m.site, m.line, m.source) == ("plant-a", "line-1", "mqtt") for m in ms)
    assert ms[2].unit == "degC"


def test_one_value_topics(connector: MqttConnector) -> None:
    ms, dead = connector.convert("kepware/Line1/Press01/Good", b'{"timestamp_ms": 1763791200005, "value": 12}')
    assert dead == [] and [(m.ts, m.metric, m.value) for m in ms] == [(TS + 5, "good_count", 12)]
    ms, dead = connector.convert("kepware/Line1/Press01/State", b"1")  # bare scalar, receive time
    assert dead == [] and [(m.ts, m.value) for m in ms] == [(TS + 999, "running")]


def test_flat_objects(connector: MqttConnector) -> None:
    payload = b'{"timestamp": "2025-11-22T06:00:01.500Z", "state": 5, "oil_temp_f": 375.0, "good_count": 7}'
    ms, dead = connector.convert("bakery/fryer-01", payload)
    assert dead == []
    assert [(m.ts, m.machine, m.metric) for m in ms] == [
        (TS + 1500, "fryer-01", "machine_state"), (TS + 1500, "fryer-01", "oil_temperature_c"),
        (TS + 1500, "fryer-01", "good_count")]
    assert ms[0].value == "planned_stop"
    assert ms[1].value == pytest.approx(190.5556, abs=1e-3)  # 375 °F
    assert (ms[1].site, ms[1].line) == ("plant-a", "line-1")


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    ("iotgateway", b"{not json", "not JSON"),
    ("iotgateway", b'{"values": "nope"}', "'values' must be a list"),
    ("iotgateway", b'{"values": [{"v": 1}]}', "needs a non-empty string 'id'"),
    ("iotgateway", b'{"values": [{"id": "Line1.Press01.Good"}]}', "missing 'v'"),
    ("iotgateway", b'{"values": [{"id": "Line1.Press01.Good", "v": 1, "q": "yes"}]}', "'q' must be true or false"),
    ("iotgateway", b'{"values": [{"id": "Line1.Press01.Good", "v": 1, "t": "yesterday"}]}', "RFC 3339"),
    ("iotgateway", b'{"timestamp": 12, "values": []}', "out of range"),
    ("iotgateway", b'{"values": [{"id": "Line1.Press01.Good", "v": "many"}]}', "needs a number, got str"),
    ("iotgateway", b'{"values": [{"id": "Line1.Press01.Good", "v": null}]}', "needs a number, got null"),
    ("iotgateway", b'{"values": [{"id": "Line1.Press01.Temp", "v": NaN}]}', "must be finite, got nan"),
    ("iotgateway", b'{"values": [{"id": "Line1.Press01.Temp", "v": Infinity}]}', "must be finite, got inf"),
    ("iotgateway", b'{"values": [{"id": "Line1.Press01.State", "v": 7}]}', "state code '7' is not in its state map"),
    ("iotgateway", b'{"values": [{"id": "Line1.Press01.State", "v": 1.5}]}', "state code must be an integer"),
    ("kepware/Line1/Press01/Good", b'{"timestamp_ms": 1, "value": 2}', "out of range"),
    ("kepware/Line1/Press01/Good", b'{"value": {"nested": 1}}', "'value' must be a scalar"),
    ("kepware/Line1/Press01/Good", b'{"timestamp_ms": 1763791200000}', "flat payload"),
    ("bakery/fryer-01", b'{"timestamp": "2025-13-45T00:00:00Z", "state": 1}', "field 'timestamp' must be"),
    ("bakery/fryer-01", b'{"state": [1, 2]}', "field 'state' must be a scalar"),
    ("bakery/fryer-01", b'[1, 2, 3]', "flat payload must be a JSON object"),
    ("bakery/fryer-01", b"x" * 5000, "oversized: 5000 bytes exceeds mqtt.max_payload_bytes=4096"),
])
def test_malformed_payloads_are_dead_lettered_with_a_reason(connector: MqttConnector, topic: str,
                                                            payload: bytes, reason: str) -> None:
    ms, dead = connector.convert(topic, payload)
    assert ms == []
    assert len(dead) == 1, dead
    d = dead[0]
    assert isinstance(d, DeadLetter)
    assert reason in d.reason, d.reason
    assert d.source == f"mqtt:{topic}"
    assert d.ts == TS + 999
    row = orjson.loads(d.to_json())  # what goes to Kafka: bounded, with the original's length and hash
    assert row["length"] == len(payload) and len(row["sha256"]) == 64
    assert row["raw"].encode() == payload[:4096]


def test_one_bad_value_does_not_spoil_the_others(connector: MqttConnector) -> None:
    payload = orjson.dumps({"timestamp": TS, "values": [
        {"id": "Line1.Press01.Good", "v": 10}, {"id": "Line1.Press01.Good", "v": "x"},
        {"id": "Line1.Press01.Good", "v": 11}]})
    ms, dead = connector.convert("iotgateway", payload)
    assert [m.value for m in ms] == [10, 11]
    assert len(dead) == 1


def test_unknown_tags_are_reported_once_then_dropped(connector: MqttConnector) -> None:
    payload = b'{"values": [{"id": "Line9.Mystery.Tag", "v": 1, "t": 1763791200000}]}'
    ms, dead = connector.convert("iotgateway", payload)
    assert ms == [] and len(dead) == 1 and "unknown tag 'Line9.Mystery.Tag'" in dead[0].reason
    for _ in range(3):
        assert connector.convert("iotgateway", payload) == ([], [])
    assert connector.mapper.unknown_dropped == 3
    # an unknown field of a flat object is just as harmless
    ms, dead = connector.convert("bakery/fryer-01", b'{"good_count": 3, "colour": "golden"}')
    assert [m.value for m in ms] == [3] and "unknown tag 'bakery/fryer-01#colour'" in dead[0].reason


def test_decoded_records_round_trip_through_the_measurement_codec(connector: MqttConnector) -> None:
    from plantstream.schemas.measurement import decode

    ms, _ = connector.convert("bakery/fryer-01", b'{"timestamp": 1763791200000, "oil_temp_f": 380.5}')
    back = decode(ms[0].to_json())
    assert isinstance(back, Measurement) and back == ms[0]


BIG = b"123456789012345678901234567890"
POISON = [
    pytest.param("iotgateway", b"[" * 4_000, "depth limit exceeded", id="deeply-nested-brackets"),
    pytest.param("iotgateway", b'{"values": [{"id": "Line1.Press01.Temp", "v": NaN}, '
                               b'{"id": "Line1.Press01.Good", "v": ' + BIG + b"}]}",
                 "Integer exceeds 64-bit range", id="30-digit-integer-after-NaN"),
    pytest.param("kepware/Line1/Press01/Part", b'{"value": "\\ud800", "timestamp_ms": NaN}',
                 "surrogates not allowed", id="lone-surrogate"),
    pytest.param("kepware/Line1/Press01/Part", b'"\\udc00"', "surrogate", id="lone-low-surrogate"),
    pytest.param("bakery/fryer-01", b"\xff" * 4000, "not JSON", id="binary"),
]


@pytest.mark.parametrize(("topic", "payload", "reason"), POISON)
def test_poison_payloads_become_one_bounded_dead_letter(connector: MqttConnector, topic: str,
                                                        payload: bytes, reason: str) -> None:
    ms, dead = connector.convert(topic, payload)
    assert ms == [] and len(dead) == 1, dead
    assert reason in dead[0].reason, dead[0].reason
    value = dead[0].to_json()
    assert len(value) < 4096 + 600  # the raw text is at most 4 KiB however the bytes look
    row = orjson.loads(value)
    assert row["length"] == len(payload)


def test_a_message_with_many_bad_values_yields_at_most_a_hundred_dead_letters(
        connector: MqttConnector) -> None:
    payload = orjson.dumps({"values": [{"id": "Line1.Press01.Good", "v": "x"}] * 110})
    ms, dead = connector.convert("iotgateway", payload)
    assert ms == [] and len(dead) == 100
    assert dead[-1].reason.startswith("11 more problems in this message (first: ")
