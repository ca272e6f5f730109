"""Vibration alerts against the PLC simulator's injected bearing wear (ISO 10816 zone C)."""

from __future__ import annotations

from typing import Any

from plantstream.flows.engine import run_engine
from plantstream.operators.alerts import alert_spec
from plantstream.schemas.config import build_config
from plantstream.simulators import plc

T0 = 1_763_791_200_000


def test_bearing_wear_into_zone_c_raises_one_vibration_alert_near_the_true_crossing() -> None:
    config = build_config({"microstop_threshold_s": 120}, {})
    line = plc.PlcLine(seed=21, machines=3, start_ms=T0, config=config)
    samples = list(line.run(T0 + 8 * 3_600_000))
    alerts: list[dict[str, Any]] = [r for _, _, r in run_engine([alert_spec(config)], samples, batch_size=500)]
    truth = line.ground_truth()
    crossings = [a for a in truth.anomalies if a.type == "bearing_wear" and a.zone_c_ms]
    assert crossings, "the run must contain bearing wear reaching zone C"
    vib = [a for a in alerts if a["rule"] == "vibration" and a["status"] == "raised"]
    # one alert per crossing, within 5 minutes of the noise-free crossing (noise may lead it)
    assert len(vib) == len(crossings)
    for a in crossings:
        [alert] = [v for v in vib if v["machine"] == a.machine]
        assert abs(alert["ts"] - a.zone_c_ms) <= 5 * 60_000
        assert alert["severity"] == "warning" and alert["value"] >= 7.1
