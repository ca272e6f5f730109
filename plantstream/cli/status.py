"""``plantstream status``: what each machine is doing now (the digital twin, ``machine_status``)."""

from __future__ import annotations

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
from plantstream.cli.output import Col, View, check_format, emit
from plantstream.connectors import kpi

STATUS_VIEW = View(
    default=("machine", "line", "state", "state_since", "fault_code", "part_number"),
    cols={"state_since": Col("since (UTC)", "time"), "downtime_since": Col("stop since (UTC)", "time"),
          "downtime_open": Col("stopped"), "fault_code": Col("fault"), "reason_code": Col("reason"),
          "part_number": Col("part"), "last_seen": Col("last seen (UTC)", "time")})


def status(
    line: LineOpt = None,
    machine: MachineOpt = None,
    clickhouse_dsn: ClickHouseOpt = None,
    config: ConfigOpt = None,
    state_dir: RunStateOpt = None,
    fmt: FormatOpt = "table",
    columns: ColumnsOpt = None,
    wide: WideOpt = False,
) -> None:
    """What each machine is doing now: state and since when, open stop, part, work order, signals."""
    check_format(fmt)
    with clickhouse(clickhouse_dsn, config_from(config), state_dir) as client:
        names, rows = kpi.rows_of(client, *kpi.status_sql(kpi_filter(machine=machine, line=line)))
    emit(names, rows, fmt, view=STATUS_VIEW, selected=columns, wide=wide)
