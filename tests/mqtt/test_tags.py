"""The tag dictionary: lookups, conversions and the unknown-tag report, as both connectors use it."""

from __future__ import annotations

import pytest

from plantstream.connectors.tags import TagMapper
from plantstream.schemas.config import build_config
from plantstream.schemas.errors import ConfigError
from plantstream.schemas.measurement import DeadLetter, Measurement

TS = 1763791200000


def mapper(tags: dict, **extra: object) -> TagMapper:
    cfg = build_config({"site": "plant-a", "lines": [{"id": "line-1", "machines": [{"id": "press-01"}]},
                                                     {"id": "line-2", "machines": [{"id": "cnc-07"}]}],
                        "tags": tags, **extra}, {})
    return TagMapper(cfg, source="opcua")


def value(m: Measurement | DeadLetter | None) -> object:
    assert isinstance(m, Measurement), m
    return m.value


def test_exact_keys_win_over_patterns_and_patterns_go_in_file_order() -> None:
    t = mapper({
        "{line}.{machine}.Temp": {"machine": "{machine}", "metric": "temperature_c", "line": "{line}"},
        "L1.press-01.Temp": {"machine": "press-01", "metric": "ambient_temperature_c"},
        "{a}.{b}.{c}": {"machine": "{b}", "metric": "{c}"},
    })
    assert t.map("L1.press-01.Temp", 20, TS).metric == "ambient_temperature_c"  # type: ignore[union-attr]
    m = t.map("L2.cnc-07.Temp", 40, TS)
    assert isinstance(m, Measurement)
    assert (m.machine, m.metric, m.line, m.site) == ("cnc-07", "temperature_c", "L2", "plant-a")
    m = t.map("L2.cnc-07.spindle_speed_rpm", 1200, TS)
    assert isinstance(m, Measurement) and (m.machine, m.metric, m.line) == ("cnc-07", "spindle_speed_rpm", "line-2")


def test_placeholders_match_one_segment_only() -> None:
    t = mapper({"plant/{machine}#{metric}": {"machine": "{machine}", "metric": "{metric}"}})
    assert isinstance(t.map("plant/press-01#good_count", 5, TS), Measurement)
    dead = t.map("plant/line/press-01#good_count", 5, TS)
    assert isinstance(dead, DeadLetter) and dead.reason.startswith("unknown tag")


@pytest.mark.parametrize(("raw", "state"), [
    (0, "off"), (1, "running"), (2, "idle"), (3, "fault"), (4, "setup"), (True, "running"), (False, "off"),
    (3.0, "fault"), ("2", "idle"), ("fault", "fault"),
])
def test_default_state_map(raw: object, state: str) -> None:
    t = mapper({"S": {"machine": "press-01", "metric": "machine_state"}})
    assert value(t.map("S", raw, TS)) == state


def test_custom_state_map_with_string_codes() -> None:
    t = mapper({"S": {"machine": "press-01", "metric": "machine_state",
                      "states": {"10": "running", "RUN": "running", "STOP": "idle", "99": "planned_stop"}}})
    assert [value(t.map("S", v, TS)) for v in (10, "RUN", "STOP", 99)] == ["running", "running", "idle",
                                                                          "planned_stop"]
    dead = t.map("S", 1, TS)  # not in this tag's own map
    assert isinstance(dead, DeadLetter) and "state code '1' is not in its state map" in dead.reason
    assert "known: 10, RUN, STOP, 99" in dead.reason


def test_scale_offset_and_integer_counters() -> None:
    t = mapper({"F": {"machine": "press-01", "metric": "oil_temperature_c", "scale": 5 / 9, "offset": -160 / 9},
                "C": {"machine": "press-01", "metric": "good_count"},
                "P": {"machine": "press-01", "metric": "pressure_bar", "scale": 0.01}})
    assert value(t.map("F", 212, TS)) == pytest.approx(100.0)
    assert value(t.map("F", 32, TS)) == pytest.approx(0.0, abs=1e-12)
    c = value(t.map("C", 4501, TS))
    assert c == 4501 and type(c) is int
    assert value(t.map("P", 12345, TS)) == pytest.approx(123.45)
    assert value(t.map("C", True, TS)) == 1


def test_string_metrics_accept_numbers() -> None:
    t = mapper({"W": {"machine": "press-01", "metric": "work_order"},
                "F": {"machine": "press-01", "metric": "fault_code"}})
    assert value(t.map("W", "WO-17", TS)) == "WO-17"
    assert value(t.map("F", 301, TS)) == "301"
    assert value(t.map("F", 301.0, TS)) == "301"
    dead = t.map("F", None, TS)
    assert isinstance(dead, DeadLetter) and "needs a string, got null" in dead.reason


def test_unknown_tags_reported_once_each() -> None:
    t = mapper({})
    first = [t.map(tag, 1, TS) for tag in ("A", "B", "A", "A", "B")]
    assert [type(x).__name__ for x in first] == ["DeadLetter", "DeadLetter", "NoneType", "NoneType", "NoneType"]
    assert t.unknown_tags == {"A", "B"} and t.unknown_dropped == 3
    assert first[0] is not None and first[0].source == "opcua:A"


def test_mapping_fields_and_states_are_validated_at_start() -> None:
    with pytest.raises(ConfigError, match=r"tags\.S\.states"):
        mapper({"S": {"machine": "m", "metric": "machine_state", "states": {"1": "spinning"}}})
    with pytest.raises(ConfigError, match="only meaningful for metric 'machine_state'"):
        mapper({"T": {"machine": "m", "metric": "temperature_c", "states": {"1": "running"}}})
    with pytest.raises(ConfigError, match=r"tags\.T\.machine"):
        mapper({"T": {"metric": "temperature_c"}})
