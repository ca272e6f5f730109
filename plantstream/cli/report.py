"""``plantstream report daily``: the daily insights report as one self-contained HTML file.

Plant OEE (coloured), per-machine availability/performance/quality/OEE, top downtime causes,
scrap by reason with cost, the day's anomalies and PNG charts, all in one file with no external
resources: open it in a browser or mail it. Data: :func:`plantstream.connectors.report.load_daily`;
page: :func:`plantstream.operators.report.render_html`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from plantstream.cli.common import ClickHouseOpt, ConfigOpt, clickhouse, config_from, stdout
from plantstream.connectors.report import load_daily
from plantstream.operators.report import DailyReport, default_day, pct, render_html


def _day(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        msg = f"--date {value!r}: give the production day as YYYY-MM-DD (e.g. 2026-11-21)"
        raise typer.BadParameter(msg) from None


def write_daily_report(out: Path, *, day: dt.date | None = None, clickhouse_dsn: str | None = None,
                       config: Path | None = None) -> DailyReport:
    """Read the day from ClickHouse and write the HTML report to ``out``; returns the data."""
    cfg = config_from(config)
    the_day = day or default_day(cfg)
    with clickhouse(clickhouse_dsn, cfg) as client:
        report = load_daily(client, cfg, the_day)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(report), encoding="utf-8")
    return report


def report_daily(
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
    date: Annotated[str | None, typer.Option(
        "--date", help="Production day YYYY-MM-DD in the plant time zone (default: yesterday).")] = None,
    clickhouse_dsn: ClickHouseOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Daily insights: plant OEE, A/P/Q/OEE per machine, downtime, scrap cost, anomalies, charts."""
    report = write_daily_report(out, day=_day(date), clickhouse_dsn=clickhouse_dsn, config=config)
    p = report.plant
    stdout().print(f"daily report {report.site} {report.day}: OEE {pct(p.oee if p else None)}, "
                   f"{len(report.machines)} machines, {report.downtime_min:.0f} downtime min, "
                   f"{len(report.anomalies)} anomalies → {out}", markup=False, highlight=False)
