"""``plantstream kpi oee`` and ``plantstream kpi downtime``: OEE and stops from ClickHouse.

Both read the latest version of every fact and event, so replays and restatements never
double; ratios come from sums over the chosen grouping (:func:`plantstream.connectors.kpi.oee_sql`).
The table shows the grouping keys, A, P, Q, OEE and TEEP as percentages, OEE coloured by the
shop-floor thresholds; ``--wide`` adds planned, run and loss minutes, counts, MTBF and MTTR.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plantstream.cli.common import (
    ClickHouseOpt,
    ColumnsOpt,
    ConfigOpt,
    FormatOpt,
    LineOpt,
    MachineOpt,
    RunStateOpt,
    WideOpt,
    clickhouse,
    config_from,
    kpi_filter,
)
from plantstream.cli.output import Col, View, cell_text, check_format, emit, oee_style
from plantstream.connectors import kpi

RATIO_COLS = {"availability": Col("Avail", "pct"), "performance": Col("Perf", "pct"),
              "quality": Col("Qual", "pct"), "oee": Col("OEE", "pct", oee_style), "teep": Col("TEEP", "pct")}
OEE_COLS: dict[str, Col] = {
    "site": Col("site"), "line": Col("line"), "machine": Col("machine"), "day": Col("day", "time"),
    "shift": Col("shift"), **{c: Col(c.removesuffix("_min").replace("_", " ") + " min", "min") for c in (
        "all_min", "planned_min", "run_min", "unplanned_stop_min", "setup_min", "small_stop_min",
        "excluded_min", "unscheduled_run_min", "ideal_min", "mtbf_min", "mttr_min")},
    "total": Col("total", "int"), "good": Col("good", "int"), "reject": Col("reject", "int"),
    "stops": Col("stops", "int"), **RATIO_COLS}


def kpi_oee(
    by: Annotated[str, typer.Option(help="machine, line, site, shift or day (comma-separated to combine).")]
    = "machine",
    start: Annotated[str | None, typer.Option("--from", help="Windows starting at or after (RFC 3339, ms).")]
    = None,
    end: Annotated[str | None, typer.Option("--to", help="Windows starting before (RFC 3339 or ms).")] = None,
    machine: MachineOpt = None,
    line: LineOpt = None,
    clickhouse_dsn: ClickHouseOpt = None,
    config: ConfigOpt = None,
    state_dir: RunStateOpt = None,
    fmt: FormatOpt = "table",
    columns: ColumnsOpt = None,
    wide: WideOpt = False,
) -> None:
    """Availability, performance, quality, OEE and TEEP per group (planned, run and loss minutes: --wide)."""
    check_format(fmt)
    keys = kpi.group_columns(by)
    flt = kpi_filter(start, end, machine=machine, line=line)
    with clickhouse(clickhouse_dsn, config_from(config), state_dir) as client:
        names, rows = kpi.rows_of(client, *kpi.oee_sql(by, flt))
    view = View(default=(*keys, *RATIO_COLS), cols=OEE_COLS, title=f"OEE by {by}")
    emit(names, rows, fmt, view=view, selected=columns, wide=wide)


DOWNTIME_VIEW = View(
    default=("machine", "start", "duration_s", "state", "reason", "category", "segments"),
    cols={"start": Col("start (UTC)", "time"), "end": Col("end (UTC)", "time"),
          "duration_s": Col("min", "min"), "planned": Col("planned"), "small_stop": Col("small"),
          "is_open": Col("open"), "segments": Col("parts (UTC, min)"), "version": Col("version")},
    title="Downtime")


def parts_text(parts: list[dict[str, Any]]) -> str:
    """A split stop's parts as one table cell (empty when unsplit).

    >>> import datetime as dt
    >>> t = dt.datetime(2026, 11, 23, 10, 0)
    >>> parts_text([{"from": t, "duration_s": 1500.0, "reason": "jam", "category": "material"},
    ...             {"from": t.replace(minute=25), "duration_s": 900.0, "reason": "no operator",
    ...              "category": "operator"}])
    '10:00 jam (material) 25.0; 10:25 no operator (operator) 15.0'
    """
    return "; ".join(f"{cell_text(p['from'], 'time')[11:16]} {p['reason']} ({p['category']}) "
                     f"{cell_text(p['duration_s'] / 60, 'min')}" for p in parts)


def kpi_downtime(
    machine: MachineOpt = None,
    line: LineOpt = None,
    start: Annotated[str | None, typer.Option("--from", help="Stops starting at or after.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Stops starting before.")] = None,
    small: Annotated[bool, typer.Option(help="Include small stops (shorter than the threshold).")] = True,
    clickhouse_dsn: ClickHouseOpt = None,
    config: ConfigOpt = None,
    state_dir: RunStateOpt = None,
    fmt: FormatOpt = "table",
    columns: ColumnsOpt = None,
    wide: WideOpt = False,
) -> None:
    """Downtime events (open ones included) with reason, category, whether planned, and the
    parts of a stop split by an operator (``segments``: from, to, duration_s, reason, category)."""
    check_format(fmt)
    flt = kpi_filter(start, end, machine=machine, line=line)
    with clickhouse(clickhouse_dsn, config_from(config), state_dir) as client:
        names, rows = kpi.downtime_rows(client, flt, small=small)
    if fmt == "table" and rows:  # minutes read better than seconds on a screen; JSON and CSV keep seconds
        i, s = names.index("duration_s"), names.index("segments")
        for r in rows:
            r[i] = None if r[i] is None else float(r[i]) / 60
            r[s] = parts_text(r[s])
    emit(names, rows, fmt, view=DOWNTIME_VIEW, selected=columns, wide=wide)
