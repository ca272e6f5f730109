"""The bakery simulator: scrap by reason per machine, and fryer oil alerts against the true
thermostat-drift anomalies.

The bakery's MQTT payloads go through the MQTT payload parser and the bakery tag dictionary
(°F → °C) to canonical Measurements, then through the scrap and alert operators. The fryer's
oil legitimately runs cold after restarts (below target − band: alerts too); the oil may only
run HOT (above target + band) during a thermostat drift, and each drift must raise an alert.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from plantstream.connectors.mqtt import parse_payload
from plantstream.connectors.tags import TagMapper
from plantstream.operators.alerts import AlertEngine
from plantstream.operators.scrap import ScrapTracker
from plantstream.schemas.measurement import Measurement
from plantstream.simulators.bakery import BakerySim, bakery_config

T0 = 1_763_791_200_000


def test_bakery_scrap_by_reason_and_hot_oil_alerts_only_during_thermostat_drift() -> None:
    sim = BakerySim(seed=2, start_ms=T0, machines=5)
    config = bakery_config(5)
    mapper = TagMapper(config)
    trackers: dict[str, ScrapTracker] = {}
    engines: dict[str, AlertEngine] = {}
    events: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    for ts, topic, payload in sim.messages(T0 + 3 * 3_600_000):
        for tag, value, sts, quality in parse_payload(topic, payload, "flat", ts).samples:
            m = mapper.map(tag, value, sts, quality)
            if not isinstance(m, Measurement):
                continue
            tracker = trackers.setdefault(m.machine, ScrapTracker.for_config(config, m.machine))
            tracker.on_sample(m.ts, m.metric, m.value)
            events += [r for k, r in tracker.take() if k == "scrap_events"]
            engine = engines.setdefault(m.machine, AlertEngine.for_config(config, m.machine))
            alerts += engine.on_samples([m])
    for tracker in trackers.values():
        events += [r for k, r in tracker.finish() if k == "scrap_events"]
    truth = sim.ground_truth()

    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for e in events:
        latest[(e["machine"], e["ts"])] = e
    by_reason: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in latest.values():
        by_reason[e["machine"]][e["reason"]] += e["quantity"]
    for machine, counts in truth["counts"].items():
        assert dict(by_reason[machine]) == counts["rejects_by_reason"], machine
    assert truth["counts"]["seattle-fryer-1"]["rejects_by_reason"]["Overcooked"] > 0

    drifts = [a for a in truth["anomalies"] if a.type == "thermostat_drift"]
    assert drifts, "the run must contain a thermostat drift"
    hot = [a for a in alerts if a["rule"] == "oil_temperature" and a["status"] == "raised"
           and a["value"] > a["threshold"]]
    for a in hot:
        assert any(d.machine == a["machine"] and d.start_ms <= a["ts"] <= d.end_ms for d in drifts), a
    for d in drifts:
        assert any(d.start_ms <= a["ts"] <= d.end_ms for a in hot if a["machine"] == d.machine), d
