"""Each alert rule on a time-controlled stream: fires when it should, clears when the condition
ends, never twice for one episode, and not on boundary values."""

from __future__ import annotations

from typing import Any

import pytest

from plantstream.operators.alerts import ALERTS_CODEC, AlertEngine
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.schemas.measurement import Measurement

MIN = 60_000


def _cfg(**extra: Any) -> PlantConfig:
    base: dict[str, Any] = {"lines": [{"id": "l1", "machines": [{"id": "m1", "ideal_cycle_time_ms": 1000}]}],
                            "lateness": {"allowed_lateness_s": 0}}
    return build_config(base | extra, {})


def _engine(**extra: Any) -> AlertEngine:
    return AlertEngine.for_config(_cfg(**extra), "m1")


def _feed(eng: AlertEngine, samples: list[tuple[int, str, Any]]) -> list[dict[str, Any]]:
    """The samples as one batch (the engine's only data entry), in order."""
    return eng.on_samples([Measurement(ts, eng.machine, metric, value) for ts, metric, value in samples])


def _brief(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["rule"], r["status"], r["severity"], r["ts"]) for r in rows]


def test_machine_down_fires_at_minute_15_of_an_open_stop_once_and_clears_when_it_ends() -> None:
    eng = _engine()
    assert _feed(eng, [(0, "machine_state", "running"), (5 * MIN, "machine_state", "fault")]) == []
    assert eng.advance(20 * MIN) == []  # exactly 15 min down: not longer than 15 min
    raised = eng.advance(20 * MIN + 1)
    assert _brief(raised) == [("machine_down", "raised", "critical", 20 * MIN + 1)]
    assert raised[0]["threshold"] == 15 and raised[0]["value"] == pytest.approx(15 + 1 / MIN)
    assert eng.advance(60 * MIN) == []  # one episode, one alert
    assert _feed(eng, [(65 * MIN, "machine_state", "idle")]) == []  # still down (fault → idle)
    cleared = _feed(eng, [(66 * MIN, "machine_state", "running")])
    assert _brief(cleared) == [("machine_down", "cleared", "critical", 66 * MIN)]
    assert cleared[0]["alert_id"] == raised[0]["alert_id"] and cleared[0]["cleared_at"] == 66 * MIN
    assert cleared[0]["version"] > raised[0]["version"]
    assert cleared[0]["event_id"] != raised[0]["event_id"]


def test_machine_down_boundary_a_stop_of_exactly_15_minutes_and_setups_do_not_fire() -> None:
    eng = _engine()
    out = _feed(eng, [(0, "machine_state", "fault"), (15 * MIN, "machine_state", "running"),
                      (20 * MIN, "machine_state", "setup"), (60 * MIN, "machine_state", "planned_stop"),
                      (90 * MIN, "machine_state", "running")])
    out += eng.advance(120 * MIN)
    assert out == []
    # a data-driven fire: the next sample after the due time raises it at the due time
    out = _feed(eng, [(121 * MIN, "machine_state", "fault"), (140 * MIN, "machine_state", "running")])
    assert _brief(out) == [("machine_down", "raised", "critical", 136 * MIN + 1),
                           ("machine_down", "cleared", "critical", 140 * MIN)]


def _parts(t0: int, good: int, reject: int, every_ms: int, counters: list[int]) -> list[tuple[int, str, Any]]:
    """``good`` then ``reject`` parts, one every ``every_ms``, on cumulative counters [good, reject]."""
    out: list[tuple[int, str, Any]] = []
    t = t0
    for is_reject in [0] * good + [1] * reject:
        counters[is_reject] += 1
        out.append((t, "reject_count" if is_reject else "good_count", counters[is_reject]))
        t += every_ms
    return out


def test_scrap_rate_over_the_last_hour_fires_above_5_percent_and_clears_with_hysteresis() -> None:
    eng = _engine(alerts={"quality": {"enabled": False}})
    # a part every 10 s (360 an hour); every k-th part a reject: k = 20 is exactly 5 % in every
    # hour, 15 is 6.7 %, 22 is 4.4-4.7 % (inside the hysteresis band), 25 is 3.9-4.2 %
    phases = [(70, 20), (140, 15), (220, 22), (300, 25)]
    good = reject = 0
    samples: list[tuple[int, str, Any]] = [(0, "good_count", 0), (0, "reject_count", 0)]
    for i in range(1, 300 * 6 + 1):
        ts = i * 10_000
        k = next(k for end, k in phases if ts <= end * MIN)
        if i % k == 0:
            reject += 1
            samples.append((ts, "reject_count", reject))
        else:
            good += 1
            samples.append((ts, "good_count", good))
    out = _feed(eng, samples)
    assert [(r["status"], r["ts"]) for r in out if r["ts"] <= 70 * MIN] == []  # exactly 5 %: never
    raised = [r for r in out if r["status"] == "raised"]
    cleared = [r for r in out if r["status"] == "cleared"]
    assert len(raised) == 1 and len(cleared) == 1  # one episode, one alert
    assert 70 * MIN < raised[0]["ts"] < 140 * MIN and raised[0]["ts"] % MIN == 0
    assert raised[0]["value"] > 0.05 and raised[0]["threshold"] == 0.05
    assert cleared[0]["ts"] > 220 * MIN and cleared[0]["value"] <= 0.04
    assert cleared[0]["alert_id"] == raised[0]["alert_id"]


def _oee_stream(minutes: int, every_ms: int, t0: int = 0, start: int = 0) -> list[tuple[int, str, Any]]:
    """A running machine (ideal cycle 1 s) producing a good part every ``every_ms``."""
    out: list[tuple[int, str, Any]] = [(t0, "machine_state", "running"), (t0, "good_count", start)]
    n = start
    for t in range(t0 + every_ms, t0 + minutes * MIN + 1, every_ms):
        n += 1
        out.append((t, "good_count", n))
    return out


def test_oee_shift_to_date_raises_a_warning_escalates_to_critical_and_never_twice() -> None:
    eng = _engine()
    # a part every 2 s with an ideal of 1 s: OEE 50 % → warning once 30 planned minutes exist
    out = _feed(eng, _oee_stream(40, 2_000))
    assert _brief(out) == [("oee", "raised", "warning", 30 * MIN)]
    assert out[0]["value"] == pytest.approx(899 / 1800)  # parts at 2 s … 1798 s (0 s is the baseline)
    # no parts from minute 40: OEE = 1200 s / planned; exactly 40 % at minute 50, below after
    more = _feed(eng, [(t, "machine_state", "running") for t in range(41 * MIN, 56 * MIN, MIN)])
    assert _brief(more) == [("oee", "raised", "critical", 51 * MIN)]
    assert more[0]["alert_id"] == out[0]["alert_id"]
    assert more[0]["value"] == pytest.approx(1200 / (51 * 60))
    assert more[0]["event_id"] != out[0]["event_id"]


def test_oee_exactly_at_the_warning_threshold_does_not_fire_and_recovery_clears() -> None:
    eng = _engine(alerts={"quality": {"enabled": False}})
    # 3 parts every 5 s at 1 s ideal = OEE 60 % exactly in every minute, for an hour
    stream: list[tuple[int, str, Any]] = [(0, "machine_state", "running")]
    stream += [(k * 5_000, "good_parts", 3) for k in range(720)]
    assert _feed(eng, stream) == []
    # then 1 part every 5 s (20 %) for 30 min: shift-to-date falls below 60 % → raised (warning);
    # back to 5 parts every 5 s (100 %) until shift-to-date is at or above 62 %: cleared
    low = _feed(eng, [(60 * MIN + k * 5_000, "good_parts", 1) for k in range(360)])
    assert [r["status"] for r in low] == ["raised"]
    high = _feed(eng, [(90 * MIN + k * 5_000, "good_parts", 5) for k in range(1440)])
    assert [r["status"] for r in high] == ["cleared"] and high[0]["value"] >= 0.62


def test_quality_below_95_percent_fires_and_exactly_95_does_not() -> None:
    eng = _engine(alerts={"oee": {"enabled": False}, "scrap_rate": {"enabled": False}})
    c = [0, 0]
    out = _feed(eng, [(0, "machine_state", "running"), (0, "good_count", 0), (0, "reject_count", 0)])
    out += _feed(eng, _parts(1_000, 95, 5, 1_000, c))  # 95.0 %
    out += _feed(eng, [(5 * MIN, "good_count", c[0])])
    assert out == []
    out = _feed(eng, _parts(5 * MIN, 0, 1, 1_000, c)) + _feed(eng, [(10 * MIN, "good_count", c[0])])
    assert _brief(out) == [("quality", "raised", "warning", 6 * MIN)]
    assert out[0]["value"] == pytest.approx(95 / 101)


def test_vibration_zone_c_and_d_with_minimum_samples_escalation_and_hysteresis() -> None:
    eng = _engine()
    sig = "vibration_rms_mms"
    assert _feed(eng, [(0, sig, 7.0999), (1_000, sig, 7.0999), (2_000, sig, 7.5), (3_000, sig, 6.0)]) == []
    out = _feed(eng, [(4_000, sig, 7.1), (5_000, sig, 7.2), (6_000, sig, 8.0)])
    assert _brief(out) == [("vibration", "raised", "warning", 5_000)]
    assert out[0]["threshold"] == 7.1
    # the episode is open: the first zone D sample escalates it (same alert, new record)
    out = _feed(eng, [(7_000, sig, 18.5), (8_000, sig, 19.0), (9_000, sig, 6.7)])
    assert _brief(out) == [("vibration", "raised", "critical", 7_000)]
    out = _feed(eng, [(10_000, sig, 6.5)])
    assert _brief(out) == [("vibration", "cleared", "critical", 10_000)]


def test_a_silent_signal_fires_after_15_minutes_without_data_and_clears_when_it_returns() -> None:
    eng = _engine()
    sig = "temperature_c"
    assert _feed(eng, [(0, "machine_state", "running"), (MIN, sig, 40.0)]) == []
    assert eng.due() == 16 * MIN + 1
    assert eng.advance(16 * MIN) == []
    out = eng.advance(17 * MIN)
    assert _brief(out) == [("silence", "raised", "warning", 16 * MIN + 1)]
    assert out[0]["signal"] == sig and eng.advance(90 * MIN) == []
    out = _feed(eng, [(91 * MIN, sig, 41.0)])
    assert _brief(out) == [("silence", "cleared", "warning", 91 * MIN)]
    # a machine that is stopped or off is not expected to send: no silence alert meanwhile
    assert _feed(eng, [(92 * MIN, "machine_state", "fault"), (93 * MIN, "machine_state", "running"),
                       (94 * MIN, "machine_state", "off")]) == []
    assert eng.due() is None and eng.advance(300 * MIN) == []
    # counters and context are not condition signals: never silent by default
    assert _feed(eng, [(301 * MIN, "machine_state", "running")]) == []
    assert eng.due() == 316 * MIN + 1


def test_fryer_oil_outside_target_band_for_a_minute_fires_once_and_clears_inside_band_minus_hysteresis() -> None:
    eng = _engine(alerts={"silence": {"enabled": False}})
    oil, target = "oil_temperature_c", "oil_temperature_target_c"
    assert _feed(eng, [(0, target, 180.0), (0, oil, 185.0), (30_000, oil, 185.0), (90_000, oil, 175.0)]) == []
    out = _feed(eng, [(100_000, oil, 185.5), (130_000, oil, 186.0), (160_000, oil, 186.2),
                      (170_000, oil, 187.0)])
    assert _brief(out) == [("oil_temperature", "raised", "warning", 160_000)]
    assert (out[0]["value"], out[0]["threshold"]) == (186.2, 185.0)
    assert _feed(eng, [(180_000, oil, 184.5)]) == []  # within band, not within band − hysteresis
    out = _feed(eng, [(190_000, oil, 183.9)])
    assert _brief(out) == [("oil_temperature", "cleared", "warning", 190_000)]
    # without a target signal the configured target applies; without either, no judgement
    eng2 = _engine(alerts={"oil_temperature": {"target": 175.0, "min_duration_s": 0}})
    assert _brief(_feed(eng2, [(0, oil, 180.5)])) == [("oil_temperature", "raised", "warning", 0)]
    assert _feed(_engine(), [(0, oil, 500.0), (MIN, oil, 500.0)]) == []


def test_the_state_survives_a_snapshot_round_trip() -> None:
    eng = _engine()
    _feed(eng, [(0, "machine_state", "fault"), (MIN, "vibration_rms_mms", 9.0)])
    state = ALERTS_CODEC.decode(ALERTS_CODEC.encode(eng.state()))
    again = AlertEngine.for_config(_cfg(), state.machine, state.site, state.line)
    again.restore(state)
    assert again.due() == eng.due() == 15 * MIN + 1
    assert _brief(again.advance(16 * MIN)) == _brief(eng.advance(16 * MIN))


def test_the_alert_engines_own_oee_accounting_ignores_a_sample_far_ahead_of_the_wall_clock() -> None:
    # Without the OEE flow in the engine, the alerts flow keeps its own OEE accounting; a sample
    # dated 30 days ahead of the wall clock must not move its event time (clock policy, docs/oee.md).
    eng = _engine()
    assert eng.oee is not None
    wall = 1_700_000_000_000
    eng.wall_ms = wall
    _feed(eng, [(wall - 10 * MIN, "machine_state", "running"), (wall - 9 * MIN, "good_count", 1)])
    _feed(eng, [(wall + 30 * 24 * 60 * MIN, "good_count", 2)])
    assert eng.oee.max_ts == wall - 9 * MIN
    _feed(eng, [(wall - 8 * MIN, "good_count", 3)])
    assert eng.oee.max_ts == wall - 8 * MIN
    eng.wall_ms = None  # no wall clock (replay of a file with a frozen clock): no check
    _feed(eng, [(wall + 30 * 24 * 60 * MIN, "good_count", 4)])
    assert eng.oee.max_ts == wall + 30 * 24 * 60 * MIN
