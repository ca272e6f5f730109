"""``plantstream kpi oee`` and ``plantstream kpi downtime``: OEE and stops from ClickHouse.

Both read the latest version of every fact and event (``oee_facts_latest``,
``downtime_events_latest``), so replays and restatements never double. Ratios are computed
from sums over the chosen grouping, never averaged.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plantstream.cli.kpi import kpi_app
from plantstream.cli.main import ClickHouseOpt, ConfigOpt, FormatOpt, client_for, config_from, print_rows
from plantstream.schemas.measurement import parse_ts

GROUPS: dict[str, tuple[str, ...]] = {
    "machine": ("site", "line", "machine"),
    "line": ("site", "line"),
    "site": ("site",),
    "shift": ("day", "shift"),
    "day": ("day",),
}

_SUMS = (
    "sum(all_s) / 60 AS all_min, sum(planned_s) / 60 AS planned_min, sum(run_s) / 60 AS run_min, "
    "sum(unplanned_stop_s) / 60 AS unplanned_stop_min, sum(setup_s) / 60 AS setup_min, "
    "sum(small_stop_s) / 60 AS small_stop_min, sum(excluded_s) / 60 AS excluded_min, "
    "sum(unscheduled_run_s) / 60 AS unscheduled_run_min, sum(ideal_s) / 60 AS ideal_min, "
    "sum(total) AS total, sum(good) AS good, sum(reject) AS reject, sum(stops) AS stops"
)
_RATIOS = (
    "if(planned_min > 0, run_min / planned_min, NULL) AS availability, "
    "if(run_min > 0, ideal_min / run_min, NULL) AS performance, "
    "if(total > 0, good / total, NULL) AS quality, "
    "availability * performance * quality AS oee, "
    "if(all_min > 0, oee * planned_min / all_min, NULL) AS teep, "
    "if(stops > 0, run_min / stops, NULL) AS mtbf_min, "
    "if(stops > 0, unplanned_stop_min / stops, NULL) AS mttr_min"
)


def group_columns(by: str) -> list[str]:
    """Group keys for ``--by`` (one name or several, comma-separated).

    >>> group_columns("machine,shift")
    ['site', 'line', 'machine', 'day', 'shift']
    """
    cols: list[str] = []
    for name in (p.strip() for p in by.split(",") if p.strip()):
        if name not in GROUPS:
            msg = f"--by {name!r}: choose from {', '.join(GROUPS)} (comma-separated for several)"
            raise typer.BadParameter(msg)
        cols.extend(c for c in GROUPS[name] if c not in cols)
    return cols


def _ts_param(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    ms = parse_ts(int(value) if value.isdigit() else value)
    if ms is None:
        msg = f"{option} {value!r}: give RFC 3339 (2026-11-22T06:00:00Z) or epoch milliseconds"
        raise typer.BadParameter(msg)
    return ms


def oee_sql(by: str, start: int | None, end: int | None) -> tuple[str, dict[str, int]]:
    """The ``kpi oee`` query: sums per group, then ratios from the sums."""
    cols = group_columns(by)
    where, params = [], {}
    if start is not None:
        where.append("window_start >= fromUnixTimestamp64Milli({start:Int64})")
        params["start"] = start
    if end is not None:
        where.append("window_start < fromUnixTimestamp64Milli({end:Int64})")
        params["end"] = end
    keys = ", ".join(cols)
    sql = (f"SELECT {keys}, {_SUMS}, {_RATIOS} FROM oee_facts_latest"
           f"{' WHERE ' + ' AND '.join(where) if where else ''} GROUP BY {keys} ORDER BY {keys}")
    return sql, params


TABLE_COLUMNS = ("planned_min", "run_min", "unplanned_stop_min", "setup_min", "small_stop_min",
                 "total", "reject", "availability", "performance", "quality", "oee", "teep")


def _narrow(columns: list[str], rows: Any, keep: list[str]) -> tuple[list[str], list[list[Any]]]:
    idx = [columns.index(c) for c in keep if c in columns]
    return [columns[i] for i in idx], [[row[i] for i in idx] for row in rows]


@kpi_app.command("oee")
def kpi_oee(
    by: Annotated[str, typer.Option(help="machine, line, site, shift or day (comma-separated to combine).")]
    = "machine",
    start: Annotated[str | None, typer.Option("--from", help="Windows starting at or after (RFC 3339, ms).")]
    = None,
    end: Annotated[str | None, typer.Option("--to", help="Windows starting before (RFC 3339 or ms).")] = None,
    clickhouse: ClickHouseOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Availability, performance, quality, OEE and TEEP with planned, run and loss minutes."""
    sql, params = oee_sql(by, _ts_param(start, "--from"), _ts_param(end, "--to"))
    cfg = config_from(config)
    client = client_for(clickhouse, cfg)
    try:
        result = client.query(sql, parameters=params)
    finally:
        client.close()
    columns, rows = list(result.column_names), result.result_rows
    if fmt == "table":  # the terminal gets the headline columns; JSON carries them all
        columns, rows = _narrow(columns, rows, [*group_columns(by), *TABLE_COLUMNS])
    print_rows(columns, rows, fmt, title=f"OEE by {by}")


DOWNTIME_COLUMNS = ("machine", "line", "site", "start", "`end`", "duration_s", "state",
                    "fault_code", "reason", "category", "planned", "small_stop", "is_open")


@kpi_app.command("downtime")
def kpi_downtime(
    machine: Annotated[str | None, typer.Option(help="Only this machine.")] = None,
    start: Annotated[str | None, typer.Option("--from", help="Stops starting at or after.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Stops starting before.")] = None,
    small: Annotated[bool, typer.Option(help="Include small stops (shorter than the threshold).")] = True,
    clickhouse: ClickHouseOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Downtime events (open ones included) with reason, category and whether planned."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if machine:
        where.append("machine = {machine:String}")
        params["machine"] = machine
    for value, op_, name in ((start, ">=", "--from"), (end, "<", "--to")):
        ms = _ts_param(value, name)
        if ms is not None:
            key = name.strip("-")
            where.append(f"start {op_} fromUnixTimestamp64Milli({{{key}:Int64}})")
            params[key] = ms
    if not small:
        where.append("small_stop = 0")
    sql = (f"SELECT {', '.join(DOWNTIME_COLUMNS)} FROM downtime_events_latest"
           f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY machine, start")
    cfg = config_from(config)
    client = client_for(clickhouse, cfg)
    try:
        result = client.query(sql, parameters=params)
    finally:
        client.close()
    columns, rows = [c.strip("`") for c in result.column_names], result.result_rows
    if fmt == "table":
        columns, rows = _narrow(columns, rows, ["machine", "start", "end", "duration_s", "state",
                                                "fault_code", "reason", "category", "planned"])
    print_rows(columns, rows, fmt, title="Downtime")
