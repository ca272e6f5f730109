"""``plantstream status`` (the machine digital twin) and ``plantstream cloud settings``."""

from __future__ import annotations

from typing import Annotated

import typer

from plantstream.cli.main import (
    ClickHouseOpt,
    ConfigOpt,
    FormatOpt,
    app,
    client_for,
    config_from,
    console,
    print_rows,
)

cloud_app = typer.Typer(no_args_is_help=True, help="The cloud sink (Azure Event Hubs or any Kafka).")
app.add_typer(cloud_app, name="cloud")

_WHERE = """
FROM machine_status FINAL
WHERE ({line:String} = '' OR line = {line:String})
  AND ({machine:String} = '' OR machine = {machine:String})
ORDER BY site, line, machine
"""
STATUS_SQL = """
SELECT machine, line, state, state_since, downtime_open, downtime_since, fault_code, reason_code,
       part_number, work_order, signals, last_seen""" + _WHERE
"""Every twin column (``--format json``)."""
STATUS_TABLE_SQL = """
SELECT machine, line, state, if(state = '', '', formatDateTime(state_since, '%F %T')) AS since,
       if(downtime_open, formatDateTime(downtime_since, '%F %T'), '') AS stop_since,
       fault_code AS fault, part_number AS part, work_order,
       arrayStringConcat(arrayMap((k, v) -> concat(k, '=', toString(round(v, 2))),
                                  mapKeys(signals), mapValues(signals)), ' ') AS signals""" + _WHERE
"""The columns that fit a terminal (UTC times)."""


@app.command("status")
def status(
    line: Annotated[str, typer.Option(help="Only this line, e.g. line-2.")] = "",
    machine: Annotated[str, typer.Option(help="Only this machine.")] = "",
    clickhouse: ClickHouseOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """What each machine is doing now: state and since when, open stop, part, work order, signals."""
    client = client_for(clickhouse, config_from(config))
    try:
        sql = STATUS_SQL if fmt == "json" else STATUS_TABLE_SQL
        result = client.query(sql, parameters={"line": line, "machine": machine})
    finally:
        client.close()
    print_rows(list(result.column_names), result.result_rows, fmt)


@cloud_app.command("settings")
def cloud_settings(config: ConfigOpt = None) -> None:
    """Show where the cloud sink sends (librdkafka settings, secrets masked) and what."""
    from plantstream.connectors.eventhubs import target_from_config

    cfg = config_from(config)
    target = target_from_config(cfg.eventhubs)
    if target is None:
        console.print("no cloud sink: set eventhubs.connection_string (or "
                      "PLANTSTREAM_EVENTHUBS_CONNECTION_STRING), or eventhubs.bootstrap_servers + topic")
        return
    rows = [[k, "***" if "password" in k else str(v)] for k, v in sorted(target.conf.items())]
    rows.insert(0, ["topic", target.topic])
    print_rows(["setting", "value"], rows, "table")
    rollup = f"summed per {cfg.eventhubs.oee_rollup_s}s" if cfg.eventhubs.oee_rollup_s else "as computed"
    console.print(f"sends {', '.join(cfg.eventhubs.tables)}; {', '.join(cfg.eventhubs.rollup_tables)} "
                  f"{rollup}; never raw measurements")
