"""The machine digital twin: pure fold, the throttled logic in an engine of one machine, and the
machine_status table."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from plantstream.connectors import clickhouse as chc
from plantstream.flows.engine import EngineRun
from plantstream.operators.logic import ManualClock
from plantstream.operators.status import MachineTwin, apply, status_spec, twin_row
from plantstream.schemas.measurement import Measurement

T0 = 1_763_791_200_000  # 2025-11-22T06:00:00Z


def m(ts_s: float, machine: str, metric: str, value: Any, quality: str = "good") -> Measurement:
    return Measurement(T0 + int(ts_s * 1000), machine, metric, value, site="plant-a",
                       line="line-2" if machine.startswith("cnc") else "line-1", quality=quality)


# A short story of press-01 (event time in seconds after T0), with what the twin must show.
STORY = [
    m(0, "press-01", "machine_state", "running"),
    m(0, "press-01", "part_number", "P-100"),
    m(0, "press-01", "work_order", "WO-7"),
    m(1, "press-01", "temperature_c", 40.0),
    m(2, "press-01", "good_count", 10),
    m(10, "press-01", "machine_state", 3),           # PLC code 3 = fault: a stop opens at 10 s
    m(11, "press-01", "fault_code", "E42"),
    m(12, "press-01", "temperature_c", 55.5),
    m(20, "press-01", "machine_state", "idle"),       # still stopped: the stop started at 10 s
    m(21, "press-01", "reason_code", "jam"),
    m(11.5, "press-01", "temperature_c", 99.0),       # late, older than 55.5 at 12 s: ignored
    m(22, "press-01", "vibration_rms_mms", 9.9, quality="bad"),  # bad quality: ignored
    m(25, "press-01", "part_number", "P-200"),
]


def test_fold_of_a_story_shows_the_current_picture() -> None:
    twin = MachineTwin("press-01")
    for s in STORY:
        apply(twin, s)
    row = twin_row(twin)
    assert row["state"] == "idle" and row["state_since"] == T0 + 20_000
    assert row["downtime_open"] is True and row["downtime_since"] == T0 + 10_000
    assert row["downtime_state"] == "fault"
    assert (row["fault_code"], row["reason_code"]) == ("E42", "jam")
    assert (row["part_number"], row["work_order"]) == ("P-200", "WO-7")
    assert row["signals"] == {"temperature_c": 55.5, "good_count": 10.0}
    assert row["signals_ts"]["temperature_c"] == T0 + 12_000
    assert row["last_seen"] == row["version"] == T0 + 25_000
    assert (row["site"], row["line"]) == ("plant-a", "line-1")
    # Back to running closes the stop; a new stop later starts without the old reason.
    apply(twin, m(30, "press-01", "machine_state", "running"))
    assert twin_row(twin)["downtime_open"] is False and twin.down_since is None
    apply(twin, m(40, "press-01", "machine_state", "setup"))
    assert (twin.down_since, twin.down_state, twin.reason_code) == (T0 + 40_000, "setup", "")
    apply(twin, m(41, "press-01", "fault_code", 0))  # 0 = no active fault
    assert twin.fault_code == ""


def _run(samples: list[Measurement], throttle_s: float, heartbeat_s: float = 3600.0,
         batch_size: int = 1) -> list[dict[str, Any]]:
    """The status logic in an engine of its own; the wall clock never moves, so no timer fires."""
    run = EngineRun(status_spec(throttle_s, heartbeat_s, ManualClock()))
    out = []
    for i in range(0, len(samples), batch_size):
        out += run.batch(samples[i:i + batch_size])
    out += run.eof()
    assert {(flow, table) for flow, table, _ in out} <= {("status", "machine_status")}
    return [r for _, _, r in out]


def test_operator_throttles_in_event_time_and_flushes_at_eof() -> None:
    # One sample a second for 60 s, every one a change (the temperature climbs).
    samples = [m(i, "cnc-01", "temperature_c", 20.0 + i) for i in range(60)]
    rows = _run(samples, throttle_s=10.0)
    assert _run(samples, throttle_s=10.0, batch_size=7) == rows  # batching changes nothing
    # First sample emits at once; then at most one row per 10 s of event time: 0, 10, …, 50;
    # the end of input emits the pending change (59 s).
    assert [r["last_seen"] - T0 for r in rows] == [0, 10_000, 20_000, 30_000, 40_000, 50_000, 59_000]
    assert rows[-1]["signals"] == {"temperature_c": 79.0}
    versions = [r["version"] for r in rows]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


def test_operator_heartbeat_without_change_and_one_twin_per_machine() -> None:
    same = [m(i, "press-01", "temperature_c", 30.0) for i in range(0, 130, 5)]
    other = [m(i, "cnc-01", "machine_state", "running") for i in range(0, 130, 5)]
    rows = _run([x for pair in zip(same, other, strict=True) for x in pair], throttle_s=10.0,
                heartbeat_s=60.0)
    press = [r["last_seen"] - T0 for r in rows if r["machine"] == "press-01"]
    cnc = [r for r in rows if r["machine"] == "cnc-01"]
    assert press == [0, 60_000, 120_000]  # unchanged values: only heartbeats
    assert all(r["line"] == "line-2" and r["state"] == "running" for r in cnc)
    assert cnc[-1]["state_since"] == T0


def test_rows_land_in_machine_status_and_latest_version_wins(ch: Any) -> None:
    rows = _run([*STORY, m(30, "cnc-01", "machine_state", "running"),
                 m(31, "cnc-01", "spindle_speed_rpm", 1200)], throttle_s=5.0)
    assert len(rows) > 2
    # Insert in reverse order: the version, not the arrival order, decides.
    for r in reversed(rows):
        chc.insert_rows(ch, "machine_status", [r])
    got = ch.query(
        "SELECT machine, state, toUnixTimestamp64Milli(state_since), downtime_open, "
        "toUnixTimestamp64Milli(downtime_since), part_number, signals, "
        "toUnixTimestamp64Milli(signals_ts['temperature_c']) "
        "FROM machine_status FINAL ORDER BY machine").result_rows
    assert got == [
        ("cnc-01", "running", T0 + 30_000, False, None, "", {"spindle_speed_rpm": 1200.0}, 0),
        ("press-01", "idle", T0 + 20_000, True, T0 + 10_000, "P-200",
         {"temperature_c": 55.5, "good_count": 10.0}, T0 + 12_000),
    ]
    line2 = ch.query("SELECT machine FROM machine_status FINAL WHERE line = 'line-2'").result_rows
    assert line2 == [("cnc-01",)]


def test_pending_change_is_emitted_by_the_wall_clock_timer() -> None:
    # The change after the first row waits for the throttle in event time; with no newer
    # samples, the wall-clock timer emits it once throttle_s of wall time have passed.
    clock = ManualClock()
    run = EngineRun(status_spec(throttle_s=5.0, now=clock))
    first = run.batch([m(0, "press-01", "machine_state", "running")])
    assert [r["state"] for _, _, r in first] == ["running"]
    assert run.batch([m(1, "press-01", "machine_state", "fault")]) == []
    assert run.notify(clock.advance(timedelta(seconds=4))) == []  # not yet
    rows = run.notify(clock.advance(timedelta(seconds=2)))
    assert [r["state"] for _, _, r in rows] == ["fault"]
    assert run.notify(clock.advance(timedelta(hours=1))) == [] and run.eof() == []  # nothing pending


def test_a_resumed_twin_keeps_its_pending_change_and_timer() -> None:
    clock = ManualClock()
    run = EngineRun(status_spec(throttle_s=5.0, now=clock))
    run.batch([m(0, "press-01", "machine_state", "running"), m(1, "press-01", "machine_state", "fault")])
    resumed = EngineRun(status_spec(throttle_s=5.0, now=clock), resume=run.snapshot())
    rows = resumed.notify(clock.advance(timedelta(seconds=6)))
    assert [(r["state"], r["downtime_since"]) for _, _, r in rows] == [("fault", T0 + 1_000)]
