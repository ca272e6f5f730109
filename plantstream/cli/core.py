"""``plantstream replay``, ``query``, ``demo``, ``flows`` and ``db migrate``: running the plant."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from clickhouse_connect.driver.exceptions import ClickHouseError

from plantstream.cli.common import (
    ClickHouseOpt,
    ColumnsOpt,
    ConfigOpt,
    FormatOpt,
    RunStateOpt,
    WideOpt,
    clickhouse,
    config_from,
    reading_dsn,
    stdout,
)
from plantstream.cli.output import check_format, emit
from plantstream.connectors import clickhouse as ch
from plantstream.schemas.config import load_config
from plantstream.schemas.errors import ConnectorError
from plantstream.schemas.redact import mask_text


def replay(
    file: Annotated[Path, typer.Argument(help="JSONL file of Measurements (ts: epoch ms or RFC 3339).")],
    config: ConfigOpt = None,
    clickhouse_dsn: ClickHouseOpt = None,
    flows: Annotated[str, typer.Option(help="Comma-separated flow names, or all.")] = "all",
    fmt: FormatOpt = "table",
) -> None:
    """Feed a file through the flows in event time, via the embedded broker, to completion."""
    from plantstream.flows.registry import select
    from plantstream.flows.replay import replay as run_replay

    check_format(fmt)
    cfg = config_from(config)
    summary = run_replay(file, cfg, dsn=clickhouse_dsn, flows=select(flows))
    if fmt == "json":
        sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
        return
    rows = [[t, n] for t, n in sorted(summary.rows.items())]
    if fmt == "table":
        stdout().print(f"[bold]replayed[/] {file}: {summary.records_in} records in, "
                       f"{summary.deadlettered} dead-lettered, {summary.seconds:.1f}s", highlight=False,
                       markup=False)
    emit(["table", "rows written"], rows, fmt)


def db_migrate(clickhouse_dsn: ClickHouseOpt = None, config: ConfigOpt = None) -> None:
    """Apply the numbered ClickHouse migrations that are not applied yet (idempotent).

    Connects as ``clickhouse.migrator`` (else the writer); on a server it then creates the
    reader and writer accounts or resets their passwords (rotation).
    """
    cfg = config_from(config)
    with ch.client_session(cfg.clickhouse, clickhouse_dsn, account="migrator") as client:
        applied = ch.migrate(client, users=cfg.clickhouse)
    out = stdout()
    for name in applied:
        out.print(f"applied {name}", markup=False)
    if not applied:
        out.print("schema is up to date")


def query(
    sql: Annotated[str, typer.Argument(help="SQL to run.")],
    clickhouse_dsn: ClickHouseOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
    columns: ColumnsOpt = None,
    wide: WideOpt = False,
    final: Annotated[bool, typer.Option(
        help="Read ReplacingMergeTree tables FINAL, so replays and restatements never double.")] = True,
    write: Annotated[bool, typer.Option(
        "--write", help="Allow statements that change data or schema (as the writer account).")] = False,
    state_dir: RunStateOpt = None,
) -> None:
    """Run SQL against ClickHouse and print the result (read-only unless --write).

    Without ``--write`` the session is read-only on the ClickHouse side (``readonly=1``, as the
    ``reader`` account when one is configured): ClickHouse itself refuses INSERT, ALTER, DROP,
    CREATE and any attempt to lower ``readonly``; nothing is decided by reading the SQL.
    """
    check_format(fmt)
    cfg = config_from(config)
    clickhouse_dsn = reading_dsn(clickhouse_dsn, cfg, state_dir)  # a live run: its read-only endpoint
    if write:
        with clickhouse(clickhouse_dsn, cfg) as client_w:
            result = client_w.query(sql, settings={"final": 1} if final else None)
            names, rows = list(result.column_names), result.result_rows
        emit(names, rows, fmt, selected=columns, wide=wide)
        return
    try:
        with ch.client_session(cfg.clickhouse, clickhouse_dsn, account="reader",
                               settings=ch.readonly_settings(final=final)) as client:
            result = client.query(sql)
            names, rows = list(result.column_names), result.result_rows
    except ClickHouseError as exc:
        text = " ".join(str(exc).split())
        if "READONLY" in text or "readonly" in text.lower():
            msg = ("plantstream query is read-only: ClickHouse refused the statement in readonly mode; "
                   "pass --write to change data or schema")
            raise ConnectorError(msg) from None
        msg = f"ClickHouse refused the query: {mask_text(text)[:400]}"
        if any(code in text for code in ("UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "Unknown table")):
            msg += "; run `plantstream db migrate` first"
        raise ConnectorError(msg) from None
    emit(names, rows, fmt, selected=columns, wide=wide)


def demo(
    duration: Annotated[float | None, typer.Option(help="Seconds to run; default until Ctrl-C.")] = None,
    config: ConfigOpt = None,
    clickhouse_dsn: ClickHouseOpt = None,
) -> None:
    """Run the embedded runtime, a simulated PLC line (OPC UA) and bakery (MQTT), and every flow."""
    from plantstream.flows.demo import run_demo
    from plantstream.schemas.config import EXAMPLE_CONFIG

    cfg = config_from(config) if config else load_config(EXAMPLE_CONFIG)
    out = stdout()
    out.print("[bold]plantstream demo[/]: embedded Kafka, ClickHouse and every flow "
              f"({'until Ctrl-C' if duration is None else f'{duration:g}s'})")
    summary = run_demo(cfg, duration=duration, dsn=clickhouse_dsn)
    out.print(f"read {summary.produced} measurements from the OPC UA and MQTT connectors "
              f"in {summary.seconds:.1f}s")
    emit(["table", "rows written"], [[t, n] for t, n in sorted(summary.rows.items())])
    out.print(summary.cloud, markup=False)
    out.print(f"ClickHouse: {summary.dsn}\ntry: plantstream query \"select count() from measurements\"\n"
              "     plantstream kpi oee --by machine", markup=False)


def list_flows() -> None:
    """List the registered flows."""
    from plantstream.flows.registry import available

    out = stdout()
    for name, declared in available().items():
        doc = (declared.doc or "").strip().splitlines()
        out.print(f"[bold]{name}[/]  {doc[0] if doc else ''}")

