"""What every command shares: options, the plant config, the ClickHouse client and the filters.

Every command that reads ClickHouse takes ``--clickhouse DSN``; without it the DSN comes from
the config's ``clickhouse.url``, else ``PLANTSTREAM_CLICKHOUSE_URL``, else the embedded
``chdb://.plantstream/clickhouse``. It opens the client with :func:`clickhouse` (one context
manager) and turns ``--from``/``--to``/``--machine``/``--line`` into one
:class:`~plantstream.connectors.kpi.Filter` with :func:`kpi_filter`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from clickhouse_connect.driver.exceptions import ClickHouseError
from rich.console import Console
from rich.markup import escape

from plantstream.cli.endpoints import DEFAULT_STATE_DIR, reader_dsn
from plantstream.connectors import clickhouse as ch
from plantstream.connectors.kpi import Filter
from plantstream.schemas.config import PlantConfig, load_config
from plantstream.schemas.errors import ConnectorError
from plantstream.schemas.measurement import now_ms, parse_ts

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Plant config YAML.")]
RunStateOpt = Annotated[Path | None, typer.Option(
    "--state-dir", help="Read the results of the `plantstream run` with this state directory: while it runs "
    "through its read-only ClickHouse HTTP endpoint, after it stopped from its chDB.")]
ClickHouseOpt = Annotated[str | None, typer.Option(
    "--clickhouse", help="ClickHouse DSN (default: $PLANTSTREAM_CLICKHOUSE_URL, else embedded chDB).")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")]
ColumnsOpt = Annotated[str | None, typer.Option(
    "--columns", help="Comma-separated columns to show (any of --wide's).")]
WideOpt = Annotated[bool, typer.Option("--wide", help="Show every column (the terminal wraps long lines).")]
FromOpt = Annotated[str | None, typer.Option("--from", help="At or after (RFC 3339 or epoch ms).")]
ToOpt = Annotated[str | None, typer.Option("--to", help="Before (RFC 3339 or epoch ms).")]
MachineOpt = Annotated[str | None, typer.Option("--machine", help="Only this machine.")]
LineOpt = Annotated[str | None, typer.Option("--line", help="Only this line.")]


def stdout() -> Console:
    """A console on standard output, sized to the terminal (``COLUMNS``) when called."""
    return Console()


def stderr() -> Console:
    """A console on standard error for progress lines: text is printed as is, never read as markup."""
    return Console(stderr=True, markup=False, highlight=False)


def error_line(message: str) -> None:
    """Print ``error: message`` on standard error as one line (never read as markup, never wrapped)."""
    Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {escape(' '.join(message.split()))}",
                                                soft_wrap=True)


def config_from(path: Path | None) -> PlantConfig:
    """The plant config of ``--config`` (defaults and environment overrides without one)."""
    return load_config(path)


def reading_dsn(dsn: str | None, config: PlantConfig | None = None,
                state_dir: Path | None = None) -> str | None:
    """The DSN a reading command opens (:func:`plantstream.cli.endpoints.reader_dsn`): a live
    ``plantstream run`` is read through its read-only HTTP endpoint, never by opening its chDB."""
    return reader_dsn(dsn, state_dir, config,
                      note=lambda text: stderr().print(f"note: {text}", soft_wrap=True))


@contextmanager
def clickhouse(dsn: str | None, config: PlantConfig | None = None,
               state_dir: Path | None = None) -> Iterator[Any]:
    """The ClickHouse client of a command (``--clickhouse`` over the config's section), closed after.

    ``--state-dir``, or a live ``plantstream run`` in the default state directory, picks the
    run's endpoint (:func:`reading_dsn`). A query ClickHouse refuses becomes a
    :class:`~plantstream.schemas.errors.ConnectorError` (one line for the user); a missing table
    or KPI function points to ``plantstream db migrate``.
    """
    dsn = reading_dsn(dsn, config, state_dir)
    with ch.client_session((config or PlantConfig()).clickhouse, dsn) as client:
        try:
            yield client
        except ClickHouseError as exc:
            text = " ".join(str(exc).split())
            hint = ""
            if any(code in text for code in ("UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "Unknown table")):
                hint = "; run `plantstream db migrate` first"
                if dsn is None and (DEFAULT_STATE_DIR / "clickhouse").is_dir():
                    hint += f", or read the results of `plantstream run` with --state-dir {DEFAULT_STATE_DIR}"
            msg = f"ClickHouse refused the query: {text[:400]}{hint}"
            raise ConnectorError(msg) from None


def time_option(value: str | None, option: str) -> int | None:
    """An RFC 3339 time or epoch milliseconds given to ``option``, as epoch ms.

    >>> time_option("2026-11-22T06:00:00Z", "--from"), time_option("1763791200000", "--to")
    (1795327200000, 1763791200000)
    """
    if value is None:
        return None
    ms = int(value) if value.isdigit() else parse_ts(value)
    if ms is None:
        msg = f"{option} {value!r}: give RFC 3339 (2026-11-22T06:00:00Z) or epoch milliseconds"
        raise typer.BadParameter(msg)
    return ms


LIVE_BACKLOG_MS = 8 * 3_600_000
"""How much history a simulator without ``--start`` plays fast before it runs live (a shift)."""


def simulator_start(start: str | None, speed: float) -> tuple[int | None, bool]:
    """A simulator's first event time and whether it plays *live* (never ahead of the wall clock).

    ``--start`` given: that time, played at ``speed`` throughout (None when it does not parse).
    Without it the simulator stands in for a real line: faster than real time (``speed`` above 1,
    or 0) it starts a shift back, plays that history fast up to now and then runs in real time,
    so a consumer's clock-skew check (``clock.max_ahead_s``) never sees samples from the future.

    >>> start, live = simulator_start(None, 60)
    >>> live, 0 <= now_ms() - start - LIVE_BACKLOG_MS < 60_000
    (True, True)
    >>> simulator_start("2025-11-22T06:00:00Z", 60)
    (1763791200000, False)
    """
    if start is not None:
        return parse_ts(start), False
    now = now_ms()
    return (now - LIVE_BACKLOG_MS if speed == 0 or speed > 1 else now), True


def kpi_filter(start: str | None = None, end: str | None = None, *, machine: str | None = None,
               line: str | None = None, start_option: str = "--from") -> Filter:
    """The command's options as one :class:`~plantstream.connectors.kpi.Filter`."""
    return Filter(start_ms=time_option(start, start_option), end_ms=time_option(end, "--to"),
                  machine=machine or None, line=line or None)


SourceOpt = Annotated[str | None, typer.Option(
    "--source", help="A named source of the config's sources: list (default: the top-level section).")]
StateDirOpt = Annotated[Path | None, typer.Option(
    "--state-dir", help="Keep this connector's spool and state here (default: the config's paths).")]
HealthPortOpt = Annotated[int | None, typer.Option(
    "--health-port", help="Serve /healthz and /readyz on this port (default: producer.health_port).")]


def for_source(cfg: PlantConfig, kind: str, name: str | None, state_dir: Path | None = None,
               health_port: int | None = None) -> PlantConfig:
    """``cfg`` as one connector of kind ``kind`` sees it: the named source of ``sources:`` as its
    top-level ``opcua:``/``mqtt:`` section (its ``source`` field its name unless set), the spool
    and the OPC UA state under ``state_dir``, and ``/healthz`` on ``health_port``.

    >>> cfg = PlantConfig.model_validate({"sources": [{"name": "line-2", "opcua": {"endpoint": "opc.tcp://b:4840"}}]})
    >>> one = for_source(cfg, "opcua", "line-2", Path("/var/ps/line-2"), 9101)
    >>> one.opcua.endpoint, one.opcua.source, one.producer.spool_dir, one.producer.health_port
    ('opc.tcp://b:4840', 'line-2', '/var/ps/line-2/spool', 9101)
    """
    from plantstream.schemas.errors import ConfigError

    update: dict[str, Any] = {}
    if name is not None:
        by_name = {s.name: s for s in cfg.source_list()}
        src = by_name.get(name)
        if src is None or src.kind != kind:
            known = ", ".join(f"{s.name} ({s.kind})" for s in by_name.values()) or "none"
            msg = f"--source {name!r}: no {kind} source of that name in the config; its sources: {known}"
            raise ConfigError(msg)
        section = src.opcua if kind == "opcua" else src.mqtt
        assert section is not None
        if "source" not in section.model_fields_set and name not in ("opcua", "mqtt"):
            section = section.model_copy(update={"source": name})
        update[kind] = section
    producer: dict[str, Any] = {}
    if state_dir is not None:
        producer["spool_dir"] = str(state_dir / "spool")
        if kind == "opcua":
            section = update.get("opcua", cfg.opcua)
            update["opcua"] = section.model_copy(update={"state_file": str(state_dir / "opcua-state.json")})
    if health_port is not None:
        producer["health_port"] = health_port
    if producer:
        update["producer"] = cfg.producer.model_copy(update=producer)
    return cfg.model_copy(update=update) if update else cfg
