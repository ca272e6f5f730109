"""Rollup views compute ratios from sums (never averages of percentages) at every level."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from plantstream.connectors import clickhouse as chc

T0 = 1_763_791_200_000


def fact(machine: str, line: str, minute: int, planned: float, run: float, ideal: float, good: int,
         reject: int, stops: int = 0, version: int = 1, shift: str = "day") -> dict[str, Any]:
    zero = dict.fromkeys(("small_stop_s", "setup_s", "excluded_s", "unscheduled_run_s"), 0.0)
    return {"machine": machine, "site": "plant-a", "line": line, "window_start": T0 + minute * 60_000,
            "window_end": T0 + (minute + 1) * 60_000, "shift": shift, "shift_start": T0,
            "day": dt.date(2025, 11, 22), "part_number": "", "work_order": "", "all_s": 60.0 * 10,
            "scheduled_s": planned, "planned_s": planned, "run_s": run, "unplanned_stop_s": planned - run,
            **zero, "ideal_s": ideal, "good": good, "reject": reject, "total": good + reject,
            "stops": stops, "small_stops": 0, "version": version}


@pytest.mark.integration
def test_rollups_weight_by_time_and_count_and_keep_only_the_latest_version(ch: Any) -> None:
    rows = [
        fact("m1", "l1", 0, 100, 50, 40, 30, 10, stops=2),
        fact("m2", "l2", 0, 300, 300, 150, 90, 0),
        fact("m2", "l2", 1, 300, 0, 0, 0, 0, version=1),   # superseded below
        fact("m2", "l2", 1, 300, 200, 100, 60, 0, version=2, shift="late"),
    ]
    chc.insert_rows(ch, "oee_facts", rows)
    site = ch.query("SELECT planned_s, run_s, availability, performance, quality, oee, teep "
                    "FROM oee_site_day").result_rows
    assert len(site) == 1
    planned, run, a, p, q, oee, teep = site[0]
    assert (planned, run) == (700, 550)
    assert a == pytest.approx(550 / 700)          # the mean of 0.5, 1.0, 0.667 would be 0.722
    assert p == pytest.approx(290 / 550)
    assert q == pytest.approx(180 / 190)
    assert oee == pytest.approx(a * p * q)
    assert teep == pytest.approx(oee * 700 / 1800)
    lines = dict(ch.query("SELECT line, availability FROM oee_line_day ORDER BY line").result_rows)
    assert lines == {"l1": pytest.approx(0.5), "l2": pytest.approx(500 / 600)}
    mtbf = ch.query("SELECT mtbf_s, mttr_s FROM oee_machine_shift WHERE machine = 'm1'").result_rows
    assert mtbf == [(25.0, 25.0)]
    shifts = dict(ch.query("SELECT shift, run_s FROM oee_site_shift ORDER BY shift").result_rows)
    assert shifts == {"day": 350.0, "late": 200.0}
    hours = ch.query("SELECT sum(run_s) FROM oee_line_hour").result_rows
    assert hours == [(550.0,)]
    days = ch.query("SELECT machine, run_s FROM oee_machine_day ORDER BY machine").result_rows
    assert days == [("m1", 50.0), ("m2", 500.0)]
    assert ch.query("SELECT count() FROM oee_site_hour").result_rows == [(1,)]
