from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from plantstream.schemas.config import EXAMPLE_CONFIG, build_config, load_config, load_config_text
from plantstream.schemas.errors import ConfigError

ISSUE_EXAMPLE = """
site: plant-a
timezone: UTC
shifts:
  - name: day
    start: "06:00"
    end: "14:00"
    breaks:
      - {start: "09:00", minutes: 15}
lines:
  - id: line-1
    machines:
      - id: press-01
        ideal_cycle_time_ms: 1000
        ideal_cycle_time_ms_by_part: {P-100: 1200}
microstop_threshold_s: 120
"""


def test_the_documented_config_loads() -> None:
    cfg = load_config_text(ISSUE_EXAMPLE)
    press = cfg.machine("press-01")
    assert (press.site, press.line) == ("plant-a", "line-1")
    assert press.ideal_for_part("P-100") == 1200
    assert press.ideal_for_part("P-999") == 1000
    assert cfg.shifts[0].length_minutes == 480
    assert cfg.microstop_threshold_s == 120


def test_the_example_file_loads() -> None:
    cfg = load_config(EXAMPLE_CONFIG, environ={})
    assert cfg.site == "plant-a"
    night = next(s for s in cfg.shifts if s.name == "night")
    assert night.length_minutes == 480  # 22:00 → 06:00 crosses midnight


def test_config_is_frozen() -> None:
    cfg = load_config_text(ISSUE_EXAMPLE)
    with pytest.raises(ValidationError):
        cfg.site = "other"  # type: ignore[misc]


def test_environment_overrides_nested_fields() -> None:
    cfg = load_config_text(ISSUE_EXAMPLE, environ={
        "PLANTSTREAM__KAFKA__BOOTSTRAP_SERVERS": "kafka-0:9092",
        "PLANTSTREAM__MICROSTOP_THRESHOLD_S": "90",
        "OTHER": "ignored",
    })
    assert cfg.kafka.bootstrap_servers == "kafka-0:9092"
    assert cfg.microstop_threshold_s == 90
    assert cfg.kafka.client_config()["bootstrap.servers"] == "kafka-0:9092"


@pytest.mark.parametrize(("text", "field", "hint"), [
    ("timezone: Mars/Olympus", "'timezone'", "IANA"),
    ("shifts: [{name: d, start: 6am, end: '14:00'}]", "'shifts.0.start'", "HH:MM"),
    ("shifts: [{name: d, start: '06:00', end: '14:00', breaks: [{start: '13:50', minutes: 30}]}]",
     "'shifts.0'", "does not fit"),
    ("lines: [{id: l, machines: [{id: m, ideal_cycle_time_ms: -1}]}]",
     "'lines.0.machines.0.ideal_cycle_time_ms'", "greater than 0"),
    ("lines: [{id: a, machines: [{id: m}]}, {id: b, machines: [{id: m}]}]", "'lines'", "unique"),
    ("microstop_treshold_s: 90", "'microstop_treshold_s'", "unknown field"),
    ("window_s: 7", "'window_s'", "divide an hour"),
])
def test_errors_name_the_field_and_the_fix(text: str, field: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    message = str(info.value)
    assert f"plant config field {field}" in message
    assert hint in message


def test_a_missing_file_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_secrets_are_not_shown() -> None:
    cfg = build_config({"kafka": {"sasl_password": "hunter2"}}, environ={})
    assert "hunter2" not in repr(cfg)
    assert cfg.kafka.client_config()["sasl.password"] == "hunter2"
