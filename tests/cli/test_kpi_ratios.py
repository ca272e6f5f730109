"""The KPI ratios are defined once, as ClickHouse functions; Python's formulas are only the oracle.

Every reader — ``connectors.kpi.oee_sql`` (the CLI and the daily report), the rollup views and the
dashboards — computes availability, performance, quality, OEE and TEEP with the functions of
migration ``050_kpi_ratios.sql``. These tests hold the SQL results against the oracle
(:func:`plantstream.operators.oee.ratios` over the same sums) and the oee.com worked example
(A 88.81 %, P 86.11 %, Q 97.80 %, OEE 74.79 %).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from plantstream.connectors import clickhouse as chc
from plantstream.connectors import kpi
from plantstream.operators.oee import ratios
from tests.report.test_worked import DAY, T0, fact

ROOT = Path(__file__).resolve().parents[2]
RATIO_FORMULA = re.compile(
    r"(run_\w*\)?\s*/\s*(sum\()?planned_)|(ideal_\w*\)?\s*/\s*(sum\()?run_)|(good\)?\s*/\s*(sum\()?total)"
    r"|(availability\s*\*\s*performance)|(\ba\s*\*\s*p\s*\*\s*q\b)")
VIEWS = {"oee_machine_hour": ("site", "line", "machine", "hour"),
         "oee_machine_shift": ("site", "line", "machine", "day", "shift", "shift_start"),
         "oee_machine_day": ("site", "line", "machine", "day"),
         "oee_line_hour": ("site", "line", "hour"), "oee_line_shift": ("site", "line", "day", "shift", "shift_start"),
         "oee_line_day": ("site", "line", "day"), "oee_site_hour": ("site", "hour"),
         "oee_site_shift": ("site", "day", "shift", "shift_start"), "oee_site_day": ("site", "day")}
SUMS = ("all_s", "planned_s", "run_s", "unplanned_stop_s", "ideal_s", "good", "total", "stops")


def oracle(facts: list[dict[str, Any]]) -> dict[str, float | None]:
    s = {k: sum(f[k] for f in facts) for k in SUMS}
    out = ratios(s["planned_s"], s["run_s"], s["ideal_s"], s["good"], s["total"], s["all_s"])
    out["mtbf_s"] = s["run_s"] / s["stops"] if s["stops"] else None
    out["mttr_s"] = s["unplanned_stop_s"] / s["stops"] if s["stops"] else None
    return out


def same(got: Any, want: float | None, what: object) -> None:
    if want is None:
        assert got is None, what
    else:
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), what


def test_no_reader_writes_a_ratio_formula_of_its_own() -> None:
    readers = [*(ROOT / "connectors").glob("*.py"), *(ROOT / "plantstream" / "cli").glob("*.py"),
               ROOT / "operators" / "report.py"]
    found = [(p.name, m.group(0)) for p in readers for m in RATIO_FORMULA.finditer(p.read_text())]
    assert found == []


@pytest.mark.integration
def test_the_migration_defines_the_kpi_functions(ch: Any) -> None:
    rows = ch.query("SELECT name FROM system.functions WHERE origin = 'SQLUserDefined'").result_rows
    assert set(kpi.RATIO_FUNCTIONS) <= {r[0] for r in rows}
    assert ch.query("SELECT kpi_availability(1, 0), kpi_quality(0, 0), kpi_performance(11, 10)").result_rows == [
        (None, None, 1.1)]  # no base: NULL; performance above 1 reported as measured, never capped
    # no ideal time (an unconfigured machine without an ideal cycle time): performance and OEE
    # unknown, not 0 % (migration 055)
    assert ch.query("SELECT kpi_performance(0, 60), kpi_oee(60, 54, 0, 27, 29)").result_rows == [(None, None)]


@pytest.mark.integration
def test_every_reader_gives_the_worked_example(ch: Any) -> None:
    worked = fact("m1", T0, 420 * 60, 373 * 60, 19_271, 19_271 - 423, 423) | {"all_s": 480 * 60}
    chc.insert_rows(ch, "oee_facts", [worked])
    want = oracle([worked])
    assert [round(100 * want[k], 2) for k in ("availability", "performance", "quality", "oee")] == [  # type: ignore[operator]
        88.81, 86.11, 97.80, 74.79]
    got = [*kpi.oee_rows(ch, "machine"), *kpi.oee_rows(ch, ""), *kpi.oee_rows(ch, "machine,shift")]
    for view in VIEWS:
        res = ch.query(f"SELECT * FROM {view}")
        got += [dict(zip(res.column_names, r, strict=True)) for r in res.result_rows]
    assert len(got) == 3 + len(VIEWS)
    for row in got:
        for key in ("availability", "performance", "quality", "oee", "teep"):
            same(row[key], want[key], (key, row))
        assert row["oee"] == pytest.approx(want["oee_good"], rel=1e-9)  # OEE = good x ideal cycle / planned


@pytest.mark.integration
def test_sql_ratios_equal_the_python_oracle_for_every_grouping(ch: Any) -> None:
    rng = random.Random(13)
    facts = []
    for site, line, machine in (("a", "l1", "m1"), ("a", "l1", "m2"), ("a", "l2", "m3"), ("b", "l3", "m4"),
                                ("b", "l3", "idle-all-day")):
        for w in range(0, 26 * 60, 37):  # windows over two production days and both shifts
            start = T0 + w * 60_000
            planned = 0.0 if machine == "idle-all-day" else rng.choice([0.0, 60.0, 60.0, 45.0])
            run = min(planned, rng.uniform(0, planned * 1.05))
            total = 0 if run == 0 else rng.randint(0, 40)
            reject = rng.randint(0, total // 4) if total else 0
            f = fact(machine, start, planned, run, total * rng.uniform(0.8, 1.6), total - reject, reject)
            shift = "early" if w < 8 * 60 else "late" if w < 16 * 60 else "night"
            f |= {"site": site, "line": line, "all_s": 60.0, "shift": shift, "stops": rng.randint(0, 1),
                  "day": DAY if w < 18 * 60 else DAY.replace(day=DAY.day + 1)}
            facts.append(f)
    chc.insert_rows(ch, "oee_facts", facts)

    def by(keys: tuple[str, ...]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
        for f in facts:
            groups[tuple(f[k] for k in keys)].append(f)
        return groups

    checked = 0
    for name, keys in (("machine", ("site", "line", "machine")), ("line", ("site", "line")), ("site", ("site",)),
                       ("day", ("day",)), ("machine,shift", ("site", "line", "machine", "day", "shift")),
                       ("", ())):
        groups = by(keys)
        rows = kpi.oee_rows(ch, name)
        assert len(rows) == len(groups), name
        for row in rows:
            want = oracle(groups[tuple(row[k] for k in keys)])
            for key in ("availability", "performance", "quality", "oee", "teep"):
                same(row[key], want[key], (name, key, row))
            same(row["mtbf_min"], None if want["mtbf_s"] is None else want["mtbf_s"] / 60, (name, row))
            same(row["mttr_min"], None if want["mttr_s"] is None else want["mttr_s"] / 60, (name, row))
            checked += 1
    for view in ("oee_machine_day", "oee_line_day", "oee_site_day", "oee_machine_shift", "oee_site_shift"):
        keys = tuple(k for k in VIEWS[view] if k != "shift_start")
        groups = by(keys)
        res = ch.query(f"SELECT * FROM {view}")
        for r in res.result_rows:
            row = dict(zip(res.column_names, r, strict=True))
            want = oracle(groups[tuple(row[k] for k in keys)])
            for key in ("availability", "performance", "quality", "oee", "teep", "mtbf_s", "mttr_s"):
                same(row[key], want[key], (view, key, row))
            checked += 1
    assert checked > 60
    none = [r for r in kpi.oee_rows(ch, "machine") if r["machine"] == "idle-all-day"]
    assert none and none[0]["availability"] is None and none[0]["oee"] is None  # no base, no ratio
