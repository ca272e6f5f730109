"""Tables for people at 80 columns, JSON and CSV for machines, every value printed literally.

Rows are written straight into a migrated chDB database (one per test); each ``plantstream kpi``
command, ``status`` and ``query`` then runs in-process through :func:`plantstream.cli.main.run`
with ``COLUMNS=80``.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import orjson
import pytest

from plantstream.cli.main import run
from plantstream.connectors import clickhouse as chc
from plantstream.operators.status import MachineTwin, apply, twin_row
from plantstream.schemas.measurement import Measurement
from tests.report.test_worked import T0, fact, stop

pytestmark = pytest.mark.integration

ODD = "press-03[/bold]"  # a machine id that is also rich markup
LONG = "seattle-divider-line-2-machine-17"
ANSI_GREEN, ANSI_YELLOW, ANSI_RED = "\x1b[1;32m", "\x1b[1;33m", "\x1b[1;31m"


@pytest.fixture
def plant(ch: Any, ch_dsn: str, ch_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Facts, stops, scrap, alerts, anomalies and twins of three machines; returns the DSN."""
    chc.insert_rows(ch, "oee_facts", [
        fact("m1", T0, 420 * 60, 373 * 60, 19_271, 19_271 - 423, 423),   # the oee.com worked example: red
        fact(ODD, T0, 600, 600, 570, 100, 0),                           # 95 %: green
        fact(LONG, T0, 1000, 1000, 850, 50, 0),                         # 85 %: yellow
    ])
    chc.insert_rows(ch, "downtime_events", [
        stop("m1", T0 + 3_600_000, 30, "hydraulic seal replaced on the main ram [operator note]"),
        stop(ODD, T0 + 7_200_000, 20, "changeover", planned=1)])
    chc.insert_rows(ch, "scrap_events", [
        {"machine": ODD, "site": "plant-a", "line": "line-1", "ts": T0 + 60_000, "quantity": 7,
         "reason": "[red]flash[/red]", "category": "process", "part_number": "P-100", "cost": 17.5,
         "material_cost": 17.5, "currency": "EUR", "costed": 1, "version": 1}])
    chc.insert_rows(ch, "alerts", [
        {"alert_id": "a1", "event_id": "e1", "machine": ODD, "site": "plant-a", "line": "line-1",
         "rule": "machine_down", "signal": "machine_state", "severity": "critical", "status": "raised",
         "ts": T0, "raised_at": T0, "value": 1200.0, "threshold": 900.0,
         "message": "press-03 has been down for 20 minutes [fault E-HYD]", "version": 1}])
    chc.insert_rows(ch, "anomalies", [
        {"ts": T0, "site": "plant-a", "line": "line-1", "machine": ODD, "model": "zscore", "detector": "zscore",
         "start": T0, "end": T0 + 300_000, "score": 7.25, "threshold": 4.0, "severity": "warning",
         "signals": {"vibration_rms_mms": 6.1}, "hypothesis": "bearing wear [check lubrication]",
         "points": 12, "is_open": False, "version": 1}])
    twin = MachineTwin(ODD)
    apply(twin, Measurement(T0, ODD, "machine_state", "fault", site="plant-a", line="line-1"))
    apply(twin, Measurement(T0 + 1_000, ODD, "vibration_rms_mms", 6.125, site="plant-a", line="line-1"))
    chc.insert_rows(ch, "machine_status", [twin_row(twin)])
    monkeypatch.setenv("PLANTSTREAM__CLICKHOUSE__DATABASE", ch_db)
    monkeypatch.setenv("COLUMNS", "80")
    return ch_dsn


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = run(list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def unfold(out: str, start: str) -> str:
    """The cell that begins with ``start``, with the parts rich folded onto the following lines."""
    lines = out.splitlines()
    i = next(n for n, line in enumerate(lines) if start in line)
    col = lines[i].index(start)
    cell = lines[i][col:].split()[0]
    for line in lines[i + 1:]:
        if line[:col].strip() or not line[col:].strip() or line[col] == " ":
            break
        cell += line[col:].split()[0]
    return cell


def assert_fits(out: str, headers: list[str]) -> None:
    """Every line within 80 columns, no cell or header cut with an ellipsis, every header whole."""
    assert "…" not in out, out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    header_line = next(line for line in out.splitlines() if all(h in line for h in headers[:2]))
    for h in headers:
        assert re.search(rf"(^|\s){re.escape(h)}(\s|$)", header_line), (h, header_line)


@pytest.mark.parametrize("by", ["machine", "line", "site", "shift", "day", "machine,shift"])
def test_kpi_oee_fits_80_columns_with_percentages(plant: str, capsys: pytest.CaptureFixture[str], by: str) -> None:
    out = cli(capsys, "kpi", "oee", "--by", by, "--clickhouse", plant)
    keys = {"machine": ["site", "line", "machine"], "line": ["site", "line"], "site": ["site"],
            "shift": ["day", "shift"], "day": ["day"], "machine,shift": ["site", "line", "machine", "day", "shift"]}
    assert_fits(out, [*keys[by], "Avail", "Perf", "Qual", "OEE", "TEEP"])
    if by == "machine":
        assert ODD in out and unfold(out, LONG[:8]) == LONG  # literal and whole (folded, never cut)
        row = next(line for line in out.splitlines() if " m1 " in f" {line} ")
        assert re.search(r"88\.8%\s+86\.1%\s+97\.8%\s+74\.8%", row), row  # the worked example
        assert "planned" not in out  # the minutes are --wide


def test_kpi_oee_colours_oee_by_the_shop_floor_thresholds(plant: str, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    out = cli(capsys, "kpi", "oee", "--clickhouse", plant)
    rows = {name: line for line in out.splitlines() for name in ("m1", ODD[:8], LONG[:8]) if name in line}
    assert f"{ANSI_RED}74.8%" in rows["m1"]
    assert f"{ANSI_GREEN}95.0%" in rows[ODD[:8]]
    assert f"{ANSI_YELLOW}85.0%" in rows[LONG[:8]]


def test_wide_and_columns(plant: str, capsys: pytest.CaptureFixture[str]) -> None:
    wide = cli(capsys, "kpi", "oee", "--wide", "--clickhouse", plant)
    assert "…" not in wide
    for header in ("planned min", "run min", "unplanned stop min", "mtbf min", "reject", "TEEP"):
        assert header in wide, header
    picked = cli(capsys, "kpi", "oee", "--columns", "machine,oee,planned_min", "--clickhouse", plant)
    header = next(line for line in picked.splitlines() if "planned" in line)
    assert header.split() == ["machine", "OEE", "planned", "min"]
    assert run(["kpi", "oee", "--columns", "machine,colour", "--clickhouse", plant]) == 2
    assert "--columns colour: not a column here" in capsys.readouterr().err


def test_json_and_csv_carry_every_column_raw(plant: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows = orjson.loads(cli(capsys, "kpi", "oee", "--format", "json", "--clickhouse", plant))
    table = list(csv.DictReader(io.StringIO(cli(capsys, "kpi", "oee", "--format", "csv", "--clickhouse", plant))))
    assert [r["machine"] for r in rows] == [r["machine"] for r in table] == sorted([ODD, LONG, "m1"])
    assert set(rows[0]) == set(table[0]) >= {"planned_min", "availability", "oee", "teep", "mttr_min"}
    for j, c in zip(rows, table, strict=True):
        assert float(c["oee"]) == pytest.approx(j["oee"], rel=1e-12)
    m1 = next(r for r in rows if r["machine"] == "m1")
    assert round(100 * m1["oee"], 2) == 74.79
    csv_only = list(csv.reader(io.StringIO(cli(capsys, "kpi", "oee", "--format", "csv", "--columns",
                                               "machine,oee", "--clickhouse", plant))))
    assert csv_only[0] == ["machine", "oee"] and len(csv_only) == 4


@pytest.mark.parametrize(("args", "headers", "literal"), [
    (["kpi", "downtime"], ["machine", "start (UTC)", "min", "state", "reason", "category"],
     ["[operator note]", ODD]),
    (["kpi", "scrap"], ["line", "machine", "rejects", "produced", "scrap", "cost"], [ODD]),
    (["kpi", "scrap", "--by", "reason"], ["reason", "category", "rejects", "share", "cost"], ["[red]flash[/red]"]),
    (["kpi", "scrap", "--by", "part"], ["part", "rejects", "produced", "scrap", "FPY", "cost"], ["P-100"]),
    (["kpi", "alerts"], ["raised (UTC)", "machine", "rule", "severity", "status", "value"], [ODD]),
    (["kpi", "anomalies"], ["machine", "model", "start (UTC)", "score", "severity", "hypothesis"],
     ["[check lubrication]", ODD]),
    (["status"], ["machine", "line", "state", "since (UTC)", "fault", "part"], [ODD]),
    (["query", "SELECT machine, reason, category, duration_s FROM downtime_events ORDER BY machine"],
     ["machine", "reason", "category", "duration_s"], ["[operator note]"]),
])
def test_every_table_fits_80_columns_and_prints_markup_literally(
        plant: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str],
        headers: list[str], literal: list[str]) -> None:
    assert_fits(cli(capsys, *args, "--clickhouse", plant), headers)
    monkeypatch.setenv("COLUMNS", "250")  # wide enough that no cell wraps: the text is there as stored
    out = cli(capsys, *args, "--wide", "--clickhouse", plant)
    for text in literal:
        assert text in out, (text, out)
    monkeypatch.setenv("COLUMNS", "80")
    for fmt in ("json", "csv"):
        machine_out = cli(capsys, *args, "--format", fmt, "--clickhouse", plant)
        for text in literal:
            assert text.replace('"', '\\"') in machine_out, (fmt, text)


def test_filters_reach_every_command(plant: str, capsys: pytest.CaptureFixture[str]) -> None:
    one = orjson.loads(cli(capsys, "kpi", "oee", "--machine", ODD, "--format", "json", "--clickhouse", plant))
    assert [r["machine"] for r in one] == [ODD]
    assert orjson.loads(cli(capsys, "kpi", "oee", "--from", str(T0 + 60_000), "--format", "json",
                            "--clickhouse", plant)) == []
    stops = orjson.loads(cli(capsys, "kpi", "downtime", "--machine", "m1", "--format", "json", "--clickhouse", plant))
    assert [s["machine"] for s in stops] == ["m1"]
    assert orjson.loads(cli(capsys, "kpi", "alerts", "--line", "line-9", "--format", "json",
                            "--clickhouse", plant)) == []
    assert len(orjson.loads(cli(capsys, "kpi", "anomalies", "--to", str(T0), "--format", "json",
                                "--clickhouse", plant))) == 0
    assert len(orjson.loads(cli(capsys, "kpi", "anomalies", "--to", str(T0 + 1), "--format", "json",
                                "--clickhouse", plant))) == 1
