"""The ``plantstream`` command line.

Every command that reads ClickHouse takes ``--clickhouse DSN``; without it the DSN comes from
``PLANTSTREAM_CLICKHOUSE_URL``, else the embedded ``chdb://.plantstream/clickhouse``.
Sub-commands of later features (``kpi``, ``connect``, ``simulate`` …) register themselves on
:data:`app` from their own modules ``flows/cli_*.py``, imported by :func:`load_command_modules`.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import math
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import orjson
import typer
from rich.console import Console
from rich.table import Table

from plantstream.connectors import clickhouse as ch
from plantstream.schemas.config import PlantConfig, load_config
from plantstream.schemas.errors import PlantStreamError

app = typer.Typer(name="plantstream", no_args_is_help=True, add_completion=False,
                  help="Streaming OEE, downtime, scrap and condition monitoring at the plant edge.")
db_app = typer.Typer(no_args_is_help=True, help="ClickHouse schema.")
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Plant config YAML.")]
ClickHouseOpt = Annotated[str | None, typer.Option(
    "--clickhouse", help="ClickHouse DSN (default: $PLANTSTREAM_CLICKHOUSE_URL, else embedded chDB).")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table or json.")]

def config_from(path: Path | None) -> PlantConfig:
    return load_config(path)


def client_for(dsn: str | None, config: PlantConfig | None = None) -> Any:
    """A client from the ``clickhouse:`` config section (credentials, TLS); ``dsn`` overrides the URL."""
    return ch.connect_config((config or PlantConfig()).clickhouse, dsn)


def _json_default(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:  # chDB returns naive datetimes that are UTC
            v = v.replace(tzinfo=dt.UTC)
        return v.isoformat().replace("+00:00", "Z")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="backslashreplace")
    if isinstance(v, UUID):
        return str(v)
    raise TypeError


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def print_rows(columns: list[str], rows: list[tuple[Any, ...]] | list[list[Any]], fmt: str,
               title: str | None = None) -> None:
    """Print query results as a rich table or as a JSON array of objects."""
    if fmt == "json":
        data = [{c: _clean(v) for c, v in zip(columns, row, strict=True)} for row in rows]
        # chDB returns naive datetimes that are UTC: print them as RFC 3339 with "Z".
        options = orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
        sys.stdout.write(orjson.dumps(data, default=_json_default, option=options).decode() + "\n")
        return
    if fmt != "table":
        raise typer.BadParameter(f"--format must be table or json, got {fmt!r}")
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for row in rows:
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(f"{v:.4f}" if math.isfinite(v) else "")
            elif isinstance(v, dt.datetime):
                cells.append(_json_default(v))
            else:
                cells.append(str(v))
        table.add_row(*cells)
    console.print(table)


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="JSONL file of Measurements (ts: epoch ms or RFC 3339).")],
    config: ConfigOpt = None,
    clickhouse: ClickHouseOpt = None,
    flows: Annotated[str, typer.Option(help="Comma-separated flow names, or all.")] = "all",
    fmt: FormatOpt = "table",
) -> None:
    """Feed a file through the flows in event time, via the embedded broker, to completion."""
    from plantstream.flows.registry import select
    from plantstream.flows.replay import replay as run_replay

    cfg = config_from(config)
    summary = run_replay(file, cfg, dsn=clickhouse, flows=select(flows))
    if fmt == "json":
        sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
        return
    console.print(f"[bold]replayed[/] {file}: {summary.records_in} records in, "
                  f"{summary.deadlettered} dead-lettered, {summary.seconds:.1f}s")
    print_rows(["table", "rows written"], [[t, n] for t, n in sorted(summary.rows.items())],
               "table")


@db_app.command("migrate")
def db_migrate(clickhouse: ClickHouseOpt = None, config: ConfigOpt = None) -> None:
    """Apply the numbered ClickHouse migrations that are not applied yet (idempotent)."""
    cfg = config_from(config)
    client = client_for(clickhouse, cfg)
    try:
        applied = ch.migrate(client)
    finally:
        client.close()
    if applied:
        for name in applied:
            console.print(f"applied {name}")
    else:
        console.print("schema is up to date")


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="SQL to run.")],
    clickhouse: ClickHouseOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
    final: Annotated[bool, typer.Option(
        help="Read ReplacingMergeTree tables FINAL, so replays and restatements never double.")] = True,
) -> None:
    """Run SQL against ClickHouse and print the result."""
    cfg = config_from(config)
    client = client_for(clickhouse, cfg)
    try:
        result = client.query(sql, settings={"final": 1} if final else None)
    finally:
        client.close()
    print_rows(list(result.column_names), result.result_rows, fmt)


@app.command()
def demo(
    duration: Annotated[float | None, typer.Option(help="Seconds to run; default until Ctrl-C.")] = None,
    config: ConfigOpt = None,
    clickhouse: ClickHouseOpt = None,
) -> None:
    """Run the embedded runtime, a simulated PLC line (OPC UA) and bakery (MQTT), and every flow."""
    from plantstream.flows.demo import run_demo

    cfg = config_from(config) if config else load_config(_example_config())
    console.print("[bold]plantstream demo[/]: embedded Kafka, ClickHouse and every flow "
                  f"({'until Ctrl-C' if duration is None else f'{duration:g}s'})")
    summary = run_demo(cfg, duration=duration, dsn=clickhouse)
    console.print(f"read {summary.produced} measurements from the OPC UA and MQTT connectors "
                  f"in {summary.seconds:.1f}s")
    print_rows(["table", "rows written"], [[t, n] for t, n in sorted(summary.rows.items())], "table")
    console.print(summary.cloud)
    console.print(f"ClickHouse: {summary.dsn}\ntry: plantstream query \"select count() from measurements\"\n"
                  "     plantstream kpi oee --by machine")


def _example_config() -> Path:
    from plantstream.schemas.config import EXAMPLE_CONFIG

    return EXAMPLE_CONFIG


@app.command("flows")
def list_flows() -> None:
    """List the registered flows."""
    from plantstream.flows.registry import available

    for name, fn in available().items():
        doc = (fn.__doc__ or "").strip().splitlines()
        console.print(f"[bold]{name}[/]  {doc[0] if doc else ''}")


def load_command_modules() -> None:
    """Import every module of ``plantstream.cli``; each adds its commands or sub-apps to :data:`app`."""
    import pkgutil

    from plantstream import cli

    for info in pkgutil.iter_modules(cli.__path__):
        if info.name != "main":
            importlib.import_module(f"plantstream.cli.{info.name}")


def main() -> None:
    """Console-script entry point: plantstream errors print as one clear line, exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    load_command_modules()
    try:
        app(standalone_mode=False)
    except PlantStreamError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from None
    except (typer.Abort, KeyboardInterrupt):
        raise SystemExit(130) from None
    except Exception as exc:  # click usage errors keep their own formatting
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        raise


if __name__ == "__main__":
    main()
