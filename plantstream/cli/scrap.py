"""``plantstream kpi scrap`` and ``plantstream kpi alerts``: scrap and alerts from ClickHouse.

``kpi scrap`` is :func:`plantstream.connectors.kpi.scrap_report`: quantity and cost of the latest
version of every scrap event and the production of the period, the scrap rate
``rejects / (good + rejects)`` from those sums, first-pass yield per part; ``--by reason`` is the
Pareto with each reason's share of all rejects. ``kpi alerts`` lists alerts (latest state of
each), ``--open`` only those not cleared.
"""

from __future__ import annotations

from typing import Annotated

import typer

from plantstream.cli.common import (
    ClickHouseOpt,
    ColumnsOpt,
    ConfigOpt,
    FormatOpt,
    FromOpt,
    LineOpt,
    MachineOpt,
    RunStateOpt,
    ToOpt,
    WideOpt,
    clickhouse,
    config_from,
    kpi_filter,
)
from plantstream.cli.output import Col, View, check_format, emit
from plantstream.connectors import kpi

SCRAP_COLS = {
    "part_number": Col("part"), "quantity": Col("rejects", "int"), "material_cost": Col("material", "num"),
    "labor_cost": Col("labor", "num"), "cost": Col("cost", "num"), "all_costed": Col("costed"),
    "produced": Col("produced", "int"), "scrap_rate": Col("scrap", "pct"),
    "first_pass_yield": Col("FPY", "pct"), "share": Col("share", "pct")}
SCRAP_DEFAULT = {
    "machine": ("line", "machine", "quantity", "produced", "scrap_rate", "cost"),
    "line": ("site", "line", "quantity", "produced", "scrap_rate", "cost"),
    "part": ("part_number", "quantity", "produced", "scrap_rate", "first_pass_yield", "cost"),
    "reason": ("reason", "category", "quantity", "share", "cost"),
}


def kpi_scrap(
    by: Annotated[str, typer.Option(help="machine, line, reason (the Pareto) or part.")] = "machine",
    start: FromOpt = None,
    end: ToOpt = None,
    machine: MachineOpt = None,
    line: LineOpt = None,
    clickhouse_dsn: ClickHouseOpt = None,
    config: ConfigOpt = None,
    state_dir: RunStateOpt = None,
    fmt: FormatOpt = "table",
    columns: ColumnsOpt = None,
    wide: WideOpt = False,
) -> None:
    """Scrap quantity, cost and rate (rejects / (good + rejects)); first-pass yield per part."""
    check_format(fmt)
    if by not in SCRAP_DEFAULT:
        msg = f"--by {by!r}: choose from {', '.join(SCRAP_DEFAULT)}"
        raise typer.BadParameter(msg)
    cfg = config_from(config)
    flt = kpi_filter(start, end, machine=machine, line=line)
    with clickhouse(clickhouse_dsn, cfg, state_dir) as client:
        names, rows = kpi.scrap_report(client, by, flt, cfg.scrap.hop_s * 1000)
    view = View(default=SCRAP_DEFAULT[by], cols=SCRAP_COLS, title=f"Scrap by {by}")
    emit(names, rows, fmt, view=view, selected=columns, wide=wide)


ALERTS_VIEW = View(default=("raised_at", "machine", "rule", "severity", "status", "value"),
                   cols={"raised_at": Col("raised (UTC)", "time"), "cleared_at": Col("cleared (UTC)", "time"),
                         "value": Col("value", "num"), "threshold": Col("threshold", "num")},
                   title="Alerts")


def kpi_alerts(
    open_only: Annotated[bool, typer.Option("--open", help="Only alerts not cleared yet.")] = False,
    machine: MachineOpt = None,
    line: LineOpt = None,
    start: Annotated[str | None, typer.Option("--from", help="Raised at or after.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Raised before.")] = None,
    clickhouse_dsn: ClickHouseOpt = None,
    config: ConfigOpt = None,
    state_dir: RunStateOpt = None,
    fmt: FormatOpt = "table",
    columns: ColumnsOpt = None,
    wide: WideOpt = False,
) -> None:
    """Alerts (latest state of each): rule, severity, value and threshold, raised/cleared."""
    check_format(fmt)
    flt = kpi_filter(start, end, machine=machine, line=line)
    with clickhouse(clickhouse_dsn, config_from(config), state_dir) as client:
        names, rows = kpi.rows_of(client, *kpi.alerts_sql(flt, open_only=open_only))
    emit(names, rows, fmt, view=ALERTS_VIEW, selected=columns, wide=wide)
