"""schemas/plant.example.yaml loads, documents every config section and means what it says."""

from __future__ import annotations

import re

import pytest

from plantstream.connectors.tags import TagMapper
from plantstream.schemas.config import EXAMPLE_CONFIG, PlantConfig, load_config
from plantstream.schemas.measurement import Measurement

TS = 1763791200000


@pytest.fixture(scope="module")
def cfg() -> PlantConfig:
    return load_config(EXAMPLE_CONFIG, environ={})


def test_the_example_loads_without_environment(cfg: PlantConfig) -> None:
    assert cfg.site == "plant-a"
    assert cfg.machine("press-01").line == cfg.machine("cnc-01").line == "line-1"


def test_every_config_section_is_in_the_example() -> None:
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    top_level = set(re.findall(r"^([a-z_]+):", text, flags=re.MULTILINE))
    missing = [f for f in PlantConfig.model_fields if f not in top_level]
    assert not missing, f"add {missing} to schemas/plant.example.yaml with a comment per key"


def test_the_press_state_tag_maps_code_3_to_fault(cfg: PlantConfig) -> None:
    mapper = TagMapper(cfg, source="opcua")
    m = mapper.map("Channel1.Press01.MachineState", 3, TS)
    assert isinstance(m, Measurement)
    assert (m.machine, m.line, m.metric, m.value) == ("press-01", "line-1", "machine_state", "fault")
    assert mapper.map("Channel1.Press01.MachineState", 5, TS).value == "planned_stop"  # type: ignore[union-attr]


def test_tag_units_and_scaling(cfg: PlantConfig) -> None:
    mapper = TagMapper(cfg, source="mqtt")
    temp = mapper.map("Channel1.Press01.Temperature_C", 41.5, TS)
    assert isinstance(temp, Measurement)
    assert (temp.metric, temp.value, temp.unit) == ("temperature_c", 41.5, "degC")
    pressure = mapper.map("Channel1.Press01.HydraulicPressure_x10", 1875, TS)
    assert isinstance(pressure, Measurement)
    assert pressure.value == pytest.approx(187.5)
    flat = mapper.map("plant-a/line-1/cnc-01#spindle_speed_rpm", 1200, TS)
    assert isinstance(flat, Measurement)
    assert (flat.machine, flat.metric, flat.line) == ("cnc-01", "spindle_speed_rpm", "line-1")


def test_losses_map_fault_codes_and_keep_the_kpi_defaults(cfg: PlantConfig) -> None:
    losses = cfg.losses
    assert losses.reason_for("301") == ("tool_change", "tooling")
    assert losses.reason_for("101") == ("hydraulic_pressure_low", "mechanical")
    assert losses.reason_for("999") == ("unassigned", "unassigned")
    assert losses.state_name(0) == "off" and losses.bucket("off") == "not_scheduled"
    assert losses.bucket("fault_hydraulic") == "unplanned_stop"
    assert losses.buckets == PlantConfig().losses.buckets


def test_sections_keep_code_defaults_where_a_plant_has_no_reason_to_differ(cfg: PlantConfig) -> None:
    defaults = PlantConfig()
    for section in ("alerts", "anomaly", "producer", "mqtt", "opcua", "eventhubs", "status"):
        assert getattr(cfg, section) == getattr(defaults, section), section
    assert cfg.alerts.machine_down.minutes == 15 and cfg.alerts.oee.warning == 0.6
    assert (cfg.scrap.window_s, cfg.scrap.hop_s) == (3600, 60)
    assert cfg.scrap.category("tool_wear") == "tooling"


def test_no_secret_and_no_file_is_required(cfg: PlantConfig) -> None:
    assert cfg.eventhubs.connection_string is None
    assert cfg.mqtt.password is None and cfg.opcua.password is None
    assert cfg.alerts.webhook.token is None and cfg.clickhouse.password is None
    assert cfg.scrap.workorders_file is None  # the scrap flow reads it at start: it must exist then
