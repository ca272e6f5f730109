"""The anomaly operator's pure logic on generated signals whose anomalies are known."""

from __future__ import annotations

import pytest

from plantstream.flows.engine import EngineRun, run_engine
from plantstream.operators.anomaly import (
    Band,
    MachineMonitor,
    anomaly_spec,
    hypothesis,
    iso10816_zone,
    state_size,
    z_to_score,
)
from plantstream.schemas.anomaly_config import AnomalyConfig
from plantstream.schemas.measurement import Measurement
from tests.anomaly.synthetic import STEP_MS, T0, Plan, generate, truth_ms

Rows = list[dict]


def run(ms: list[Measurement], cfg: AnomalyConfig | None = None, batch_size: int = 256) -> Rows:
    """The anomaly logic of each machine in an engine of its own (batches of ``batch_size``)."""
    return [row for _, _, row in run_engine([anomaly_spec(cfg or AnomalyConfig())], ms, batch_size=batch_size)]


def monitor_of(ms: list[Measurement], cfg: AnomalyConfig) -> MachineMonitor:
    """A machine's monitor after ``ms``, as the engine keeps it."""
    run = EngineRun(anomaly_spec(cfg))
    run.batch(ms)
    [logic] = run.engine.logics[0].values()
    monitor = logic.state()
    assert isinstance(monitor, MachineMonitor)
    return monitor


def closed(rows: Rows, model: str | None = None) -> Rows:
    return [r for r in rows if not r["is_open"] and (model is None or r["model"] == model)]


def overlaps(r: dict, a: int, b: int, slack: int = 0) -> bool:
    return r["start"] <= b + slack and r["end"] >= a


def test_injected_overheat_and_bearing_wear_are_found_with_their_cause() -> None:
    plan = Plan("press-01", 1500, anomalies=[(600, 640, "overheat"), (1000, 1040, "bearing")])
    rows = run(generate(plan))
    (heat_a, heat_b), (vib_a, vib_b) = truth_ms(plan)
    heat = closed(rows, "temperature_c")
    vib = closed(rows, "vibration_rms_mms")
    assert [overlaps(r, heat_a, heat_b) for r in heat] == [True]
    assert [overlaps(r, vib_a, vib_b) for r in vib] == [True]
    assert heat[0]["hypothesis"].startswith("temperature high")
    assert vib[0]["hypothesis"].startswith("vibration high: bearing wear")
    # found within a few samples of the onset, and the episode spans the injected interval
    assert heat[0]["start"] - heat_a <= 5 * STEP_MS
    assert vib[0]["start"] - vib_a <= 5 * STEP_MS
    assert heat[0]["end"] >= heat_b - 2 * STEP_MS
    assert any(k.startswith("temperature_c-ambient") and z > 5 for k, z in heat[0]["signals"].items())
    for r in heat + vib:
        assert 0.0 <= r["threshold"] < r["score"] <= 1.0
        assert r["severity"] in ("warning", "critical")
    # every open row is followed by its close (same natural key, higher version)
    opened = {(r["machine"], r["model"], r["start"]) for r in rows if r["is_open"]}
    assert opened == {(r["machine"], r["model"], r["start"]) for r in closed(rows)}


def test_ambient_swing_is_not_an_anomaly_because_temperature_is_ambient_adjusted() -> None:
    plan = Plan("oven-01", 1400, ambient_swings=[(700, 900, 9.0)])
    data = generate(plan)
    assert closed(run(data), "temperature_c") == []
    # The same motor temperatures without the ambient baseline do look anomalous.
    raw = [m for m in data if m.metric != "ambient_temperature_c"]
    flagged = closed(run(raw), "temperature_c")
    assert flagged and all(overlaps(r, *truth_ms(Plan("x", 0, [(700, 900, "")]))[0],
                                    slack=12 * STEP_MS) for r in flagged)


def test_nothing_is_scored_while_the_machine_is_stopped() -> None:
    plan = Plan("lathe-01", 1400, anomalies=[(800, 830, "overheat")], stops=[(780, 900)])
    rows = run(generate(plan))
    assert closed(rows) == []


def test_no_alarm_during_warm_up() -> None:
    # warm-up in running time: 2 h of 1-minute samples learn only, whatever the sample count
    cfg = AnomalyConfig(warmup_s=2 * 3600)
    plan = Plan("mill-01", 600, anomalies=[(80, 110, "overheat")])
    assert closed(run(generate(plan), cfg)) == []
    # the same anomaly after the warm-up is found
    later = Plan("mill-01", 600, anomalies=[(400, 430, "overheat")])
    assert len(closed(run(generate(later), cfg), "temperature_c")) == 1
    # the deprecated sample count still states a warm-up (and no time condition)
    assert AnomalyConfig(warmup=288).warm_ms == 0
    assert closed(run(generate(plan), AnomalyConfig(warmup=288))) == []


def test_a_long_anomaly_does_not_teach_the_model_that_it_is_normal() -> None:
    plan = Plan("press-02", 1400, anomalies=[(500, 900, "overheat")])
    heat = closed(run(generate(plan)), "temperature_c")
    assert len(heat) == 1
    a, b = truth_ms(plan)[0]
    assert heat[0]["start"] <= a + 5 * STEP_MS and heat[0]["end"] >= b - 2 * STEP_MS
    # with an adaptation horizon shorter than the anomaly, the new level becomes normal
    short = closed(run(generate(plan), AnomalyConfig(adapt_after=100)), "temperature_c")
    assert short and short[0]["end"] < b - 100 * STEP_MS


def test_grouped_model_and_excluded_signals_follow_the_config() -> None:
    plan = Plan("cnc-01", 1500, anomalies=[(600, 640, "overheat"), (1000, 1040, "bearing")])
    cfg = AnomalyConfig.model_validate({"models": [
        {"name": "spindle", "signals": ["temperature_c", "vibration_rms_mms"]}]})
    rows = closed(run(generate(plan), cfg))
    assert {r["model"] for r in rows} == {"spindle"}
    assert len(rows) == 2
    assert rows[0]["hypothesis"].startswith("temperature high")
    assert rows[1]["hypothesis"].startswith("vibration high")
    excl = AnomalyConfig(exclude=("ambient_temperature_c", "vibration_rms_mms"))
    assert {r["model"] for r in closed(run(generate(plan), excl))} == {"temperature_c"}


def test_iso10816_zones_raise_rule_episodes() -> None:
    ms = [Measurement(T0 + i * STEP_MS, "fan-01", "vibration_rms_mms", v)
          for i, v in enumerate([1.0] * 5 + [8.0] * 3 + [19.5] * 2 + [2.0] * 20)]
    rows = closed(run(ms, AnomalyConfig(iso10816=True)), "iso10816")
    assert len(rows) == 1
    r = rows[0]
    assert (r["start"], r["end"], r["points"]) == (T0 + 5 * STEP_MS, T0 + 9 * STEP_MS, 5)
    assert r["severity"] == "critical" and "zone D" in r["hypothesis"]
    assert [iso10816_zone(v) for v in (2.79, 2.8, 7.1, 18.0)] == ["A", "B", "C", "D"]


@pytest.mark.parametrize("detector", ["zscore", "gaussian", "hst", "ilof", "ocsvm"])
def test_every_detector_scores_in_the_unit_interval(detector: str) -> None:
    plan = Plan("m", 420 if detector == "ilof" else 700, anomalies=[(350, 380, "overheat")])
    rows = run([m for m in generate(plan) if m.metric == "temperature_c"],
               AnomalyConfig.model_validate({"detector": detector, "warmup": 200}))
    assert all(0.0 <= r["score"] <= 1.0 and 0.0 <= r["threshold"] <= 1.0 for r in rows)
    assert any(overlaps(r, *truth_ms(plan)[0]) for r in closed(rows))


def test_snapshot_and_resume_continue_identically() -> None:
    plan = Plan("press-03", 1200, anomalies=[(700, 760, "overheat"), (900, 950, "bearing")])
    data = generate(plan)
    cfg = AnomalyConfig.model_validate({"models": [
        {"name": "hst", "signals": ["vibration_rms_mms"], "detector": "hst"}]})
    whole = run(data, cfg)
    engine = EngineRun(anomaly_spec(cfg))
    first = [r for _, _, r in engine.batch(data[:2200])]
    resumed = EngineRun(anomaly_spec(cfg), resume=engine.snapshot())  # River models as bytes inside
    first += [r for _, _, r in resumed.batch(data[2200:]) + resumed.eof()]
    assert first == whole and closed(whole)
    assert run(data, cfg, batch_size=1) == whole  # one sample at a time: the same rows


def test_state_per_machine_stays_small() -> None:
    plan = Plan("press-04", 3000, anomalies=[(2000, 2050, "bearing")])
    mon = monitor_of(generate(plan), AnomalyConfig())
    assert state_size(mon) < 8 * 1024  # default models: a few floats per feature
    hst = monitor_of(generate(plan), AnomalyConfig(detector="hst"))
    assert state_size(hst) < 256 * 1024


def test_pure_helpers_against_worked_values() -> None:
    band = Band()
    for x in (1.0, 2.0, 3.0, 4.0, 5.0):
        band.learn(x, 0.0)
    # Welford while n < 1/alpha: mean 3, population variance 2
    assert band.mean == pytest.approx(3.0) and band.var == pytest.approx(2.0)
    assert band.z(3.0 + 2 * 2.0 ** 0.5) == pytest.approx(2.0)
    assert z_to_score(1.959964) == pytest.approx(0.95, abs=1e-6)
    assert hypothesis({"cycle_time_ms": 4.0}).startswith("cycle time high: material or tool wear")
    assert hypothesis({"pressure_bar": -6.0}) == "pressure low: leak or pump wear"


def test_persistence_in_time_reports_conditions_not_transients() -> None:
    """``min_duration_s`` (30 s): a 1 Hz pressure excursion of 20 s is no episode, one of 45 s is
    (its start the onset, its alert 30 s in), and one still 20 s long at the end of input is none."""
    import random

    rnd = random.Random(7)
    cfg = AnomalyConfig(warmup_s=400, features=("value",))  # no rolling mean to outlast a burst
    bursts = {(1000, 1020), (2000, 2045), (2980, 3000)}

    def value(i: int) -> float:
        up = any(a <= i < b for a, b in bursts)
        return 2.0 + rnd.gauss(0, 0.01) + (0.5 if up else 0.0)

    ms = [Measurement(i * 1000, "pump-01", "pressure_bar", value(i)) for i in range(3000)]
    rows = run(ms, cfg)
    eps = closed(rows)
    assert [(r["start"] // 1000, r["end"] // 1000) for r in eps] == [(2000, 2049)], eps
    [opened] = [r for r in rows if r["is_open"]]
    assert opened["start"] == 2_000_000 and opened["end"] == 2_029_000  # reported once 30 s long
    # without the rule (min_points alone) both short bursts are episodes too
    short = closed(run(ms, AnomalyConfig(warmup_s=400, features=("value",), min_duration_s=0)))
    assert len(short) == 3
