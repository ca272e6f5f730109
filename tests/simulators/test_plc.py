"""The PLC line simulator: its Measurement stream and its ground truth tell the same story.

Every check rebuilds a fact independently from the emitted Measurements (as a downstream flow
would) and compares it with the ground truth; plus the calendar facts (breaks, shifts, holidays,
time zones) are checked against hand-computed instants.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest

from plantstream.schemas.config import build_config, load_config
from plantstream.schemas.measurement import STATES, decode
from plantstream.simulators.plc import (
    FAULT_CODES,
    OPERATOR_REASONS,
    AnomalySpec,
    PlcLine,
    ShiftCalendar,
    load_ground_truth,
    simulate,
    state_changes,
)

START = 1763791200000  # 2025-11-22 06:00:00 UTC (a Saturday)
H = 3_600_000
CFG = build_config({
    "timezone": "UTC",
    "microstop_threshold_s": 120,
    "shifts": [
        {"name": "day", "start": "06:00", "end": "14:00",
         "breaks": [{"start": "09:00", "minutes": 15}, {"start": "11:30", "minutes": 30}]},
        {"name": "late", "start": "14:00", "end": "22:00", "breaks": [{"start": "18:00", "minutes": 30}]},
    ],
}, {})


@pytest.fixture(scope="module")
def run16() -> tuple[list, object]:
    return simulate(seed=7, machines=3, start_ms=START, until_ms=START + 24 * H, config=CFG)


def test_deterministic_and_seed_dependent() -> None:
    a, ta = simulate(3, 2, START, START + 2 * H, CFG)
    b, tb = simulate(3, 2, START, START + 2 * H, CFG)
    c, _ = simulate(4, 2, START, START + 2 * H, CFG)
    assert a == b
    assert list(ta.records()) == list(tb.records())
    assert a != c


def test_chunked_run_equals_single_run() -> None:
    whole = list(PlcLine(seed=5, machines=2, start_ms=START, config=CFG).run(START + 3 * H))
    line = PlcLine(seed=5, machines=2, start_ms=START, config=CFG)
    parts = []
    for k in range(1, 13):
        parts.extend(line.run(START + k * H // 4))
    assert parts == whole


def test_stream_is_time_ordered_and_valid(run16) -> None:
    ms, _ = run16
    assert [m.ts for m in ms] == sorted(m.ts for m in ms)
    assert all(START <= m.ts < START + 24 * H for m in ms)
    for m in ms[:5000]:
        assert decode(m.to_json()) == m
    metrics = {m.metric for m in ms}
    assert {"machine_state", "good_count", "reject_count", "cycle_time_ms", "ideal_cycle_time_ms",
            "part_number", "work_order", "fault_code", "reason_code", "scrap_reason", "temperature_c",
            "ambient_temperature_c", "vibration_rms_mms", "spindle_speed_rpm"} <= metrics


def test_state_intervals_match_state_changes(run16) -> None:
    ms, truth = run16
    changes = state_changes(ms)
    for machine in truth.machines:
        ivs = [s for s in truth.states if s.machine == machine]
        # contiguous, covering the whole run
        assert ivs[0].start_ms == START and ivs[-1].end_ms == START + 24 * H
        assert all(a.end_ms == b.start_ms for a, b in itertools.pairwise(ivs))
        assert all(a.state != b.state or a.fault_code != b.fault_code
                   for a, b in itertools.pairwise(ivs))
        # the emitted state sequence is exactly the truth's (fault→fault with another code
        # shows no new machine_state, only a new fault_code)
        emitted = changes[machine]
        expected = [(s.start_ms, s.state) for s in ivs]
        dedup = [expected[0]] + [b for a, b in itertools.pairwise(expected) if a[1] != b[1]]
        assert emitted == dedup
        assert {s.state for s in ivs} <= set(STATES)


def test_calendar_states(run16) -> None:
    _, truth = run16
    for machine in truth.machines:
        ps = [(s.start_ms, s.end_ms) for s in truth.states
              if s.machine == machine and s.state == "planned_stop"]
        breaks = [(START + 3 * H, START + 3 * H + 15 * 60_000),
                  (START + 5 * H + 30 * 60_000, START + 6 * H),
                  (START + 12 * H, START + 12 * H + 30 * 60_000)]
        assert ps == breaks + [(b + 24 * H, e + 24 * H) for b, e in breaks if b + 24 * H < START + 24 * H]
        off = [(s.start_ms, s.end_ms) for s in truth.states if s.machine == machine and s.state == "off"]
        assert off == [(START + 16 * H, START + 24 * H)]
        # 16 h scheduled minus 75 min of breaks
        per_state = truth.state_ms(machine, START, START + 24 * H)
        assert sum(v for k, v in per_state.items() if k not in ("off", "planned_stop")) == 16 * H - 75 * 60_000


def test_counts_match_counters_with_resets(run16) -> None:
    ms, truth = run16
    for machine in truth.machines:
        for metric, key in (("good_count", "good"), ("reject_count", "reject")):
            total, last = 0, 0
            for m in ms:
                if m.machine == machine and m.metric == metric:
                    v = int(m.value)
                    total += v - last if v >= last else v
                    last = v
            assert total == truth.counts[machine][key], (machine, metric)
            assert last == truth.final[machine][f"{metric}"]
        c = truth.counts[machine]
        assert c["total"] == c["good"] + c["reject"]
        assert sum(c["rejects_by_reason"].values()) == c["reject"]
        sc = [r for r in truth.shift_counts if r["machine"] == machine]
        assert sum(r["good"] for r in sc) == c["good"]
        assert {r["shift"] for r in sc} == {"day", "late"}
        wo = [w for w in truth.work_orders if w.machine == machine]
        assert sum(w.good for w in wo) == c["good"] and sum(w.reject for w in wo) == c["reject"]
    assert truth.counter_resets, "a day of production has counter resets"


def test_scrap_reason_precedes_rejects(run16) -> None:
    ms, truth = run16
    for machine in truth.machines:
        reason, by_reason, last = None, Counter(), 0
        for m in ms:
            if m.machine != machine:
                continue
            if m.metric == "scrap_reason":
                reason = m.value
            elif m.metric == "reject_count":
                v = int(m.value)
                if v > last:
                    assert reason is not None
                    by_reason[reason] += v - last
                last = v
        assert dict(by_reason) == truth.counts[machine]["rejects_by_reason"]
        q = Counter()
        for s in truth.scrap:
            if s.machine == machine:
                q[s.reason] += s.quantity
        assert dict(q) == truth.counts[machine]["rejects_by_reason"]
    reasons = {r for c in truth.counts.values() for r in c["rejects_by_reason"]}
    assert "tool_wear" in reasons and "startup" in reasons


def test_downtime_reasons_and_microstops(run16) -> None:
    ms, truth = run16
    thr = 120_000
    down = truth.downtime()
    assert {d.state for d in down} == {"idle", "fault", "setup"}
    for d in down:
        assert d.microstop == (d.state == "idle" and d.duration_ms < thr)
        if d.reason_code:
            assert d.reason == d.reason_code and d.category == OPERATOR_REASONS[d.reason_code]
            assert d.reason_code_ts >= d.start_ms + 60_000
        elif d.state == "fault":
            assert (d.reason, d.category) == FAULT_CODES[d.fault_code]
        elif d.state == "setup":
            assert d.category == "changeover"
    assert any(d.microstop for d in down) and any(d.state == "idle" and not d.microstop for d in down)
    # every operator reason in the stream is in the truth, after its stop began and before the next
    entered = [(m.machine, m.ts, m.value) for m in ms if m.metric == "reason_code"]
    assert entered
    assert sorted(entered) == sorted((d.machine, d.reason_code_ts, d.reason_code) for d in down if d.reason_code)
    for machine in truth.machines:
        stops = [s for s in truth.states if s.machine == machine and s.state != "running"]
        for d in (d for d in down if d.machine == machine and d.reason_code):
            later = [s.start_ms for s in stops if s.start_ms > d.start_ms]
            assert not later or d.reason_code_ts < later[0]
    # fault codes: set at the fault's start, cleared at its end
    for d in (d for d in down if d.state == "fault"):
        assert any(m.machine == d.machine and m.ts == d.start_ms and m.metric == "fault_code"
                   and m.value == d.fault_code for m in ms)


def test_setups_change_part_and_work_order(run16) -> None:
    ms, truth = run16
    for machine in truth.machines:
        setups = [s for s in truth.states if s.machine == machine and s.state == "setup"]
        orders = [w for w in truth.work_orders if w.machine == machine]
        assert len(orders) == len(setups) + 1
        assert [w.start_ms for w in orders[1:]] == [s.start_ms for s in setups]
        assert all(a.part_number != b.part_number for a, b in itertools.pairwise(orders))
        parts = [(m.ts, m.value) for m in ms if m.machine == machine and m.metric == "part_number"]
        assert parts == [(w.start_ms, w.part_number) for w in orders]


def test_anomalies_drive_the_signals() -> None:
    spec = [AnomalySpec("press-01", "bearing_wear", START + H, 2 * H, 10.0),
            AnomalySpec("cnc-01", "overheating", START + H, H, 20.0)]
    ms, truth = simulate(11, 2, START, START + 4 * H, None, anomalies=spec)
    assert [(a.machine, a.type, a.start_ms, a.end_ms) for a in truth.anomalies] == [
        ("press-01", "bearing_wear", START + H, START + 3 * H), ("cnc-01", "overheating", START + H, START + 2 * H)]
    bw = truth.anomalies[0]
    assert START + H < bw.zone_c_ms < START + 3 * H

    def running_at(machine: str, t: int) -> bool:
        return any(s.machine == machine and s.start_ms <= t < s.end_ms and s.state == "running"
                   for s in truth.states)
    vib = [(m.ts, m.value) for m in ms if m.machine == "press-01" and m.metric == "vibration_rms_mms"
           and running_at("press-01", m.ts)]
    before = [v for t, v in vib if t < START + H]
    late = [v for t, v in vib if bw.zone_c_ms + 5 * 60_000 <= t < START + 3 * H]
    after = [v for t, v in vib if t >= START + 3 * H]
    assert max(before) < 2.8 and min(late) >= 7.1 - 0.5 and max(after) < 2.8
    temp = {m.ts: m.value for m in ms if m.machine == "cnc-01" and m.metric == "temperature_c"}
    amb = {m.ts: m.value for m in ms if m.machine == "cnc-01" and m.metric == "ambient_temperature_c"}
    adj = {t: temp[t] - amb[t] for t in temp if t in amb}
    peak = max(v for t, v in adj.items() if START + H <= t < START + 2 * H)
    normal = max(v for t, v in adj.items() if t < START + H)
    assert peak > normal + 10


def test_seeded_anomalies_exist_after_warmup() -> None:
    _, truth = simulate(2, 3, START, START + 24 * H, None)
    assert truth.anomalies
    assert all(a.start_ms >= START + 2 * H for a in truth.anomalies)
    assert {a.type for a in truth.anomalies} == {"bearing_wear", "overheating"}


def test_ground_truth_file_round_trip(tmp_path: Path) -> None:
    line = PlcLine(seed=9, machines=2, start_ms=START, config=CFG)
    n = line.write_replay_file(tmp_path / "plc.jsonl", START + 2 * H)
    line.write_ground_truth(tmp_path / "truth.jsonl")
    assert n == sum(1 for _ in (tmp_path / "plc.jsonl").open())
    truth = load_ground_truth(tmp_path / "truth.jsonl")
    assert list(truth.records()) == list(line.ground_truth().records())
    assert truth.end_ms == START + 2 * H


def test_calendar_night_shift_dst_and_holidays() -> None:
    cfg = build_config({"timezone": "Europe/Berlin", "holidays": ["2026-03-30"], "shifts": [
        {"name": "night", "start": "22:00", "end": "06:00", "breaks": [{"start": "02:00", "minutes": 30}],
         "days": ["sat", "sun", "mon"]}]}, {})
    cal = ShiftCalendar(cfg)
    # the night of 2026-03-28 → 29 crosses the spring-forward change (02:00 → 03:00 CET→CEST):
    # the shift lasts 7 real hours; the 02:00 break doesn't exist in local time and lands at 03:00
    sat = 1774731600000  # 2026-03-28 21:00 UTC = 22:00 CET
    segs = cal.segments(sat, sat + 7 * H)
    assert [s.kind for s in segs] == ["work", "break", "work"]
    assert segs[-1].end_ms == sat + 7 * H and segs[0].shift_start_ms == sat
    # Monday 2026-03-30 is a holiday: that night is off; Tuesday night isn't in `days`
    mon = 1774900800000  # 2026-03-30 22:00 CEST
    assert cal.segment_at(mon + H).kind == "off"
    assert cal.segment_at(mon - 24 * H + H).kind == "work"  # Sunday night


def test_example_config_runs() -> None:
    cfg = load_config(Path(__file__).parents[2] / "schemas" / "plant.example.yaml", {})
    line = PlcLine(seed=1, machines=3, start_ms=START, config=cfg)
    assert line.machine_ids == ["press-01", "cnc-01", "molder-01"]
    ms = list(line.run(START + H))
    assert {m.line for m in ms} == {"line-1"} and {m.site for m in ms} == {"plant-a"}
    ideal = {m.value for m in ms if m.machine == "press-01" and m.metric == "ideal_cycle_time_ms"}
    assert ideal <= {1000, 1200}


def test_losses_config_is_a_valid_plant_config_section() -> None:
    from plantstream.simulators.plc import losses_config

    cfg = build_config({"losses": losses_config()}, {})
    for code, (reason, category) in FAULT_CODES.items():
        assert cfg.losses.reason_for(str(code)) == (reason, category)
    _, truth = simulate(2, 2, START, START + 8 * H, CFG)
    cats = {d.category for d in truth.downtime()} | {s.category for s in truth.states if s.state == "planned_stop"}
    from plantstream.schemas.oee_config import CATEGORIES
    assert cats <= set(CATEGORIES)
