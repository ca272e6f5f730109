"""The daily report on hand-made facts: the oee.com worked example, colours, the day's bounds.

Facts are written straight into ``oee_facts`` / ``downtime_events`` of a per-test chDB
database; the expected figures come from the KPI definitions (KPI.md), not from the code.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from plantstream.connectors import clickhouse as chc
from plantstream.connectors.report import load_daily
from plantstream.operators.report import render_html
from plantstream.schemas.config import build_config

T0 = 1_763_791_200_000  # 2025-11-22T06:00Z
DAY = dt.date(2025, 11, 22)
NEXT_DAY_MS = 1_763_856_000_000  # 2025-11-23T00:00Z
CONFIG = build_config({"site": "plant-a", "timezone": "UTC"}, {})


def fact(machine: str, start: int, planned_s: float, run_s: float, ideal_s: float, good: int, reject: int,
         version: int = 1) -> dict[str, Any]:
    zero = dict.fromkeys(("small_stop_s", "setup_s", "excluded_s", "unscheduled_run_s"), 0.0)
    return {"machine": machine, "site": "plant-a", "line": "line-1", "window_start": start,
            "window_end": start + 60_000, "shift": "day", "shift_start": T0, "day": DAY, "part_number": "",
            "work_order": "", "all_s": planned_s, "scheduled_s": planned_s, "planned_s": planned_s,
            "run_s": run_s, "unplanned_stop_s": planned_s - run_s, **zero, "ideal_s": ideal_s, "good": good,
            "reject": reject, "total": good + reject, "stops": 1, "small_stops": 0, "version": version}


def stop(machine: str, start: int, minutes: float, reason: str, *, small: int = 0, deleted: int = 0,
         planned: int = 0) -> dict[str, Any]:
    return {"machine": machine, "site": "plant-a", "line": "line-1", "start": start,
            "end": start + round(minutes * 60_000), "duration_s": minutes * 60, "state": "fault",
            "fault_code": "", "reason": reason, "category": "mechanical", "planned": planned,
            "small_stop": small, "is_open": 0, "shift": "day", "part_number": "", "work_order": "",
            "version": 1, "deleted": deleted}


def _row(html: str, name: str) -> str:
    m = re.search(rf'<tr><td class="t">{re.escape(name)}</td>.*?</tr>', html)
    assert m, name
    return m.group(0)


@pytest.mark.integration
def test_worked_example_colours_sums_and_the_days_bounds(ch: Any) -> None:
    # m1: the oee.com worked example — planned 420 min, run 373 min, ideal 1 s × 19 271, 423 rejects
    chc.insert_rows(ch, "oee_facts", [
        fact("m1", T0, 420 * 60, 373 * 60, 19_271, 19_271 - 423, 423),
        fact("m2", T0, 600, 600, 570, 100, 0),            # A 1, P 0.95, Q 1 → 95 % green
        fact("m3", T0, 1000, 1000, 850, 50, 0),           # 85 % yellow
        fact("m3", T0 + 60_000, 1000, 0, 0, 0, 0),        # superseded by version 2 below
        fact("m3", T0 + 60_000, 1000, 1000, 850, 50, 0, version=2),
        fact("m2", NEXT_DAY_MS, 600, 0, 0, 0, 0),         # the next day: not in this report
    ])
    chc.insert_rows(ch, "downtime_events", [
        stop("m1", T0 + 3_600_000, 30, "jam <sensor>"),
        stop("m1", T0 + 7_200_000, 17, "jam <sensor>"),
        stop("m2", T0 + 7_200_000, 20, "changeover", planned=1),
        stop("m1", T0 + 9_000_000, 1.5, "jam <sensor>", small=1),   # a small stop: performance loss
        stop("m3", T0 + 9_000_000, 50, "ghost", deleted=1),          # proven never to have happened
        stop("m1", NEXT_DAY_MS + 60_000, 99, "jam <sensor>"),         # the next day
    ])
    report = load_daily(ch, CONFIG, DAY)

    by = {m.name: m for m in report.machines}
    m1 = by["m1"]
    assert (m1.planned_min, m1.run_min) == (420, 373)
    assert (m1.availability, m1.performance, m1.quality) == pytest.approx((373 / 420, 19_271 / 22_380,
                                                                          18_848 / 19_271))
    assert round(m1.oee * 100, 2) == 74.79  # type: ignore[operator]
    assert by["m2"].oee == pytest.approx(0.95)
    assert by["m3"].oee == pytest.approx(0.85) and by["m3"].planned_min == pytest.approx(2000 / 60)
    # the plant from the day's sums (KPI.md), not the mean of the machines' OEE (84.9 %)
    planned, run, ideal, good, total = 25_200 + 600 + 2000, 22_380 + 600 + 2000, 19_271 + 570 + 1700, \
        18_848 + 100 + 100, 19_271 + 100 + 100
    assert report.plant is not None
    assert report.plant.oee == pytest.approx(run / planned * ideal / run * good / total)
    assert report.plant.oee == pytest.approx(ideal * good / total / planned)  # both forms agree
    assert (report.plant.good, report.plant.reject) == (good, 423)

    assert [(c.reason, c.events, c.minutes, c.planned) for c in report.downtime] == [
        ("jam <sensor>", 2, pytest.approx(47.0), False), ("changeover", 1, pytest.approx(20.0), True)]
    assert report.small_stops == (1, pytest.approx(1.5))
    assert report.downtime_min == pytest.approx(67.0)
    assert report.scrap == [] and report.anomalies == []

    html = render_html(report, images={})
    assert "#c62828" in _row(html, "m1") and "74.8 %" in _row(html, "m1")   # red < 80 %
    assert "#1b7f3b" in _row(html, "m2") and "95.0 %" in _row(html, "m2")   # green ≥ 90 %
    assert "#f2c200" in _row(html, "m3") and "85.0 %" in _row(html, "m3")   # yellow 80–90 %
    assert "jam &lt;sensor&gt;" in html and "<sensor>" not in html           # reasons are escaped
    assert "No scrap this day." in html and "No anomalies this day." in html


@pytest.mark.integration
def test_a_day_without_data_still_gives_a_report(ch: Any) -> None:
    report = load_daily(ch, CONFIG, DAY)
    assert report.plant is None and report.machines == [] and report.downtime == []
    html = render_html(report)
    assert "No production recorded this day." in html and "No stops this day." in html
    assert "data:image/png" not in html
