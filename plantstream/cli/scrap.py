"""``plantstream kpi scrap`` and ``plantstream kpi alerts``: scrap and alerts from ClickHouse.

``kpi scrap`` sums the latest version of every scrap event (``scrap_events_latest``: quantity
and cost) and the additive hop counts of ``scrap_rate_latest`` (production) over the chosen
period, then computes the scrap rate ``rejects / (good + rejects)`` — and first-pass yield per
part — from those sums. ``--by reason`` is the scrap Pareto: reasons by quantity with their
share of all rejects. ``kpi alerts`` lists alerts (latest state of each), ``--open`` only those
not cleared.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plantstream.cli.kpi import kpi_app
from plantstream.cli.main import ClickHouseOpt, ConfigOpt, FormatOpt, client_for, config_from, print_rows
from plantstream.cli.oee import _ts_param

SCRAP_GROUPS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "machine": (("site", "line", "machine"), "machine"),
    "line": (("site", "line"), "line"),
    "part": (("part_number",), "part"),
    "reason": (("reason", "category"), None),
}
"""--by → (event group columns, scrap_rate scope whose key is the last group column)."""


def scrap_report(client: Any, by: str, start: int | None, end: int | None, hop_ms: int) -> tuple[
        list[str], list[list[Any]]]:
    """The ``kpi scrap`` rows: quantity, costs, production, rate (and yield or share)."""
    if by not in SCRAP_GROUPS:
        msg = f"--by {by!r}: choose from {', '.join(SCRAP_GROUPS)}"
        raise typer.BadParameter(msg)
    cols, scope = SCRAP_GROUPS[by]
    ev_where, rate_where, params = [], [], {}
    if start is not None:
        ev_where.append("ts >= fromUnixTimestamp64Milli({start:Int64})")
        rate_where.append("window_end > fromUnixTimestamp64Milli({start:Int64})")
        params["start"] = start
    if end is not None:
        ev_where.append("ts < fromUnixTimestamp64Milli({end:Int64})")
        rate_where.append("window_end <= fromUnixTimestamp64Milli({end_hop:Int64})")
        params["end"] = end
        params["end_hop"] = end + hop_ms - end % hop_ms if end % hop_ms else end
    keys = ", ".join(cols)
    ev_sql = (f"SELECT {keys}, sum(quantity) AS quantity, sum(material_cost) AS material_cost, "
              f"sum(labor_cost) AS labor_cost, sum(cost) AS cost, min(costed) AS all_costed "
              f"FROM scrap_events_latest{' WHERE ' + ' AND '.join(ev_where) if ev_where else ''} "
              f"GROUP BY {keys}")
    events = client.query(ev_sql, parameters=params).result_rows
    rate_scope = scope or "machine"
    rate_sql = (f"SELECT key, sum(good) AS good, sum(reject) AS reject, any(site), any(line) "
                f"FROM scrap_rate_latest WHERE scope = {{scope:String}}"
                f"{''.join(' AND ' + w for w in rate_where)} GROUP BY key")
    rate_rows = client.query(rate_sql, parameters=params | {"scope": rate_scope}).result_rows
    prod = {k: (int(g), int(r)) for k, g, r, _, _ in rate_rows}
    n = len(cols)
    by_key: dict[tuple[Any, ...], list[Any]] = {tuple(r[:n]): list(r[n:]) for r in events}
    if scope is not None:  # groups with production but no scrap appear too (rate 0)
        where_from = {k: (site, line) for k, _, _, site, line in rate_rows}
        for key in prod:
            if not any(k[-1] == key for k in by_key):
                site, line = where_from[key]
                group = {"machine": (site, line, key), "line": (site, key), "part": (key,)}[by]
                by_key[group] = [0, 0.0, 0.0, 0.0, 1]
    total_rejects = sum(int(v[0]) for v in by_key.values())
    all_good = sum(g for g, _ in prod.values())
    all_rejects = sum(r for _, r in prod.values())
    out: list[list[Any]] = []
    for key, (qty, material, labor, cost, all_costed) in by_key.items():
        qty = int(qty)
        if scope is not None:
            good, reject = prod.get(key[-1], (0, 0))
        else:
            good, reject = all_good, all_rejects
        produced = good + reject if scope is not None else all_good + all_rejects
        row = [*key, qty, float(material), float(labor), float(cost), int(all_costed), produced,
               qty / produced if produced else None]
        if by == "part":
            row.append(good / (good + reject) if good + reject else None)
        if by == "reason":
            row.append(qty / total_rejects if total_rejects else None)
        out.append(row)
    columns = [*cols, "quantity", "material_cost", "labor_cost", "cost", "all_costed", "produced",
               "scrap_rate"]
    if by == "part":
        columns.append("first_pass_yield")
    if by == "reason":
        columns.append("share")
        out.sort(key=lambda r: (-r[n], str(r[0])))
    else:
        out.sort(key=lambda r: tuple(str(v) for v in r[:n]))
    return columns, out


@kpi_app.command("scrap")
def kpi_scrap(
    by: Annotated[str, typer.Option(help="machine, line, reason (the Pareto) or part.")] = "machine",
    start: Annotated[str | None, typer.Option("--from", help="From (RFC 3339 or epoch ms).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Before (RFC 3339 or epoch ms).")] = None,
    clickhouse: ClickHouseOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Scrap quantity, cost and rate (rejects / (good + rejects)); first-pass yield per part."""
    cfg = config_from(config)
    client = client_for(clickhouse, cfg)
    try:
        columns, rows = scrap_report(client, by, _ts_param(start, "--from"), _ts_param(end, "--to"),
                                     cfg.scrap.hop_s * 1000)
    finally:
        client.close()
    print_rows(columns, rows, fmt, title=f"Scrap by {by}")


ALERT_COLUMNS = ("alert_id", "machine", "line", "rule", "signal", "severity", "status", "raised_at",
                 "cleared_at", "value", "threshold", "message")


@kpi_app.command("alerts")
def kpi_alerts(
    open_only: Annotated[bool, typer.Option("--open", help="Only alerts not cleared yet.")] = False,
    machine: Annotated[str | None, typer.Option(help="Only this machine.")] = None,
    clickhouse: ClickHouseOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Alerts (latest state of each): rule, severity, value and threshold, raised/cleared."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if open_only:
        where.append("status = 'raised'")
    if machine:
        where.append("machine = {machine:String}")
        params["machine"] = machine
    sql = (f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts_latest"
           f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY raised_at, alert_id")
    cfg = config_from(config)
    client = client_for(clickhouse, cfg)
    try:
        result = client.query(sql, parameters=params)
    finally:
        client.close()
    print_rows(list(result.column_names), result.result_rows, fmt, title="Alerts")
