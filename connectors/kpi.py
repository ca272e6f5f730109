"""The KPI queries: every SQL that reads results for people, in one place.

``plantstream kpi …``, ``plantstream status``, the daily report (:mod:`plantstream.connectors.report`)
and the dashboard tests read ClickHouse through these functions, so they always agree. Each
query reads the latest version of every fact and event (``*_latest`` views or ``FINAL``): a
replay or a restatement never counts twice.

The availability, performance, quality, OEE and TEEP ratios are not written here: they are the
ClickHouse functions ``kpi_availability``, ``kpi_performance``, ``kpi_quality``, ``kpi_oee``,
``kpi_teep``, ``kpi_mtbf`` and ``kpi_mttr`` of migration ``050_kpi_ratios.sql``, applied to the
sums of the group read (never to averaged percentages).

Filters (time range, machine, line, site) are one :class:`Filter` whose values travel as query
parameters, never spliced into the SQL text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from plantstream.schemas.errors import ConfigError

__all__ = [
    "ALERT_COLUMNS",
    "ANOMALY_COLUMNS",
    "DOWNTIME_COLUMNS",
    "OEE_GROUPS",
    "RATIO_FUNCTIONS",
    "SCRAP_GROUPS",
    "STATUS_COLUMNS",
    "Filter",
    "alerts_raised",
    "alerts_sql",
    "downtime_causes",
    "downtime_parts",
    "downtime_rows",
    "downtime_sql",
    "group_columns",
    "list_anomalies",
    "oee_rows",
    "oee_sql",
    "rows_of",
    "scrap_currency",
    "scrap_report",
    "small_stops",
    "status_sql",
]

RATIO_FUNCTIONS = ("kpi_availability", "kpi_performance", "kpi_quality", "kpi_oee", "kpi_teep",
                   "kpi_mtbf", "kpi_mttr")
"""The ClickHouse functions that define the ratios (migration ``050_kpi_ratios.sql``)."""


@dataclass(frozen=True, slots=True)
class Filter:
    """What a KPI query reads: a time range ``[start_ms, end_ms)`` and optional machine/line/site.

    >>> sql, params = Filter(start_ms=1, machine="press-01").where("window_start")
    >>> sql
    ' WHERE window_start >= fromUnixTimestamp64Milli({start:Int64}) AND machine = {machine:String}'
    >>> params
    {'start': 1, 'machine': 'press-01'}
    >>> Filter().where("ts")
    ('', {})
    """

    start_ms: int | None = None
    end_ms: int | None = None
    machine: str | None = None
    line: str | None = None
    site: str | None = None

    def conditions(self, time: str | None, *, until: str | None = None) -> tuple[list[str], dict[str, Any]]:
        """SQL conditions and their parameters.

        ``time`` is the column the range applies to (``None``: no time filter). With ``until``
        (an interval's end column) a row is in range when the interval overlaps it:
        ``until >= start AND time < end``.
        """
        where: list[str] = []
        params: dict[str, Any] = {}
        if time is not None and self.start_ms is not None:
            where.append(f"{until or time} >= fromUnixTimestamp64Milli({{start:Int64}})")
            params["start"] = self.start_ms
        if time is not None and self.end_ms is not None:
            where.append(f"{time} < fromUnixTimestamp64Milli({{end:Int64}})")
            params["end"] = self.end_ms
        for column in ("machine", "line", "site"):
            value = getattr(self, column)
            if value:
                where.append(f"{column} = {{{column}:String}}")
                params[column] = value
        return where, params

    def where(self, time: str | None, *, until: str | None = None,
              extra: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
        """`` WHERE …`` (or ``''``) and the parameters: :meth:`conditions` plus ``extra`` SQL."""
        where, params = self.conditions(time, until=until)
        where += list(extra)
        return (f" WHERE {' AND '.join(where)}" if where else ""), params


def rows_of(client: Any, sql: str, params: dict[str, Any] | None = None) -> tuple[list[str], list[list[Any]]]:
    """Column names and rows of a query."""
    result = client.query(sql, parameters=params or {})
    return [str(c).strip("`") for c in result.column_names], [list(r) for r in result.result_rows]


# -- OEE -------------------------------------------------------------------------------------------

OEE_GROUPS: dict[str, tuple[str, ...]] = {
    "machine": ("site", "line", "machine"),
    "line": ("site", "line"),
    "site": ("site",),
    "shift": ("day", "shift"),
    "day": ("day",),
}
"""``--by`` names and the columns they group by."""

_OEE_SUMS = (
    "sum(all_s) / 60 AS all_min, sum(planned_s) / 60 AS planned_min, sum(run_s) / 60 AS run_min, "
    "sum(unplanned_stop_s) / 60 AS unplanned_stop_min, sum(setup_s) / 60 AS setup_min, "
    "sum(small_stop_s) / 60 AS small_stop_min, sum(excluded_s) / 60 AS excluded_min, "
    "sum(unscheduled_run_s) / 60 AS unscheduled_run_min, sum(ideal_s) / 60 AS ideal_min, "
    "sum(total) AS total, sum(good) AS good, sum(reject) AS reject, sum(stops) AS stops"
)
_OEE_RATIOS = (
    "kpi_availability(run_min, planned_min) AS availability, "
    "kpi_performance(ideal_min, run_min) AS performance, "
    "kpi_quality(good, total) AS quality, "
    "kpi_oee(planned_min, run_min, ideal_min, good, total) AS oee, "
    "kpi_teep(all_min, planned_min, run_min, ideal_min, good, total) AS teep, "
    "kpi_mtbf(run_min, stops) AS mtbf_min, "
    "kpi_mttr(unplanned_stop_min, stops) AS mttr_min"
)


def group_columns(by: str | Sequence[str]) -> list[str]:
    """Group keys for ``--by`` (one name or several, comma-separated; empty: no grouping).

    >>> group_columns("machine,shift")
    ['site', 'line', 'machine', 'day', 'shift']
    >>> group_columns("")
    []
    """
    names = [p.strip() for p in by.split(",")] if isinstance(by, str) else list(by)
    cols: list[str] = []
    for name in (n for n in names if n):
        if name not in OEE_GROUPS:
            msg = f"--by {name!r}: choose from {', '.join(OEE_GROUPS)} (comma-separated for several)"
            raise ConfigError(msg)
        cols.extend(c for c in OEE_GROUPS[name] if c not in cols)
    return cols


def oee_sql(by: str | Sequence[str], flt: Filter | None = None) -> tuple[str, dict[str, Any]]:
    """The OEE query: minutes and counts summed per group, then the ratios from the sums.

    Windows that start in the filter's range are read. ``by=""`` sums everything into one row
    (the plant). Columns: the group keys, ``all_min`` … ``ideal_min``, ``total``, ``good``,
    ``reject``, ``stops``, ``availability``, ``performance``, ``quality``, ``oee``, ``teep``,
    ``mtbf_min``, ``mttr_min``.
    """
    cols = group_columns(by)
    where, params = (flt or Filter()).where("window_start")
    keys = ", ".join(cols)
    group = f" GROUP BY {keys} ORDER BY {keys}" if cols else ""
    select = f"{keys}, " if cols else ""
    return f"SELECT {select}{_OEE_SUMS}, {_OEE_RATIOS} FROM oee_facts_latest{where}{group}", params


def oee_rows(client: Any, by: str | Sequence[str], flt: Filter | None = None) -> list[dict[str, Any]]:
    """:func:`oee_sql` run: one dict per group."""
    columns, rows = rows_of(client, *oee_sql(by, flt))
    return [dict(zip(columns, r, strict=True)) for r in rows]


# -- downtime --------------------------------------------------------------------------------------

DOWNTIME_COLUMNS = ("machine", "line", "site", "start", "end", "duration_s", "state", "fault_code",
                    "reason", "category", "planned", "small_stop", "is_open", "segments", "version")
"""``reason`` and ``category`` are the first part's; ``segments`` lists the parts of a stop split
by an operator (empty when unsplit, see :func:`downtime_parts`); ``version`` rises with every
restatement of the stop (a late reason, a split, a correction)."""


def downtime_sql(flt: Filter | None = None, *, small: bool = True) -> tuple[str, dict[str, Any]]:
    """Downtime events (open ones included) that start in the range; ``small=False`` drops small stops."""
    where, params = (flt or Filter()).where("start", extra=() if small else ("small_stop = 0",))
    cols = ", ".join("`end`" if c == "end" else c for c in DOWNTIME_COLUMNS)
    return f"SELECT {cols} FROM downtime_events_latest{where} ORDER BY machine, start", params


def _ms(v: Any) -> int:
    """Epoch ms of a ClickHouse DateTime64 as read (chDB gives naive UTC datetimes) or of ms."""
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        return round(v.timestamp() * 1000)
    return int(v)


def downtime_parts(start: Any, end: Any, duration_s: float,
                   segments: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parts of a split stop with their times: ``from``, ``to`` (the next part's start, the
    stop's end, or None while it is open), ``duration_s``, ``reason``, ``category``; ``[]``
    when the stop is not split. The parts' seconds sum to the stop's ``duration_s`` (as the
    view ``downtime_segments_latest`` counts them).

    >>> t = dt.datetime(2026, 11, 23, 10, 0)
    >>> parts = downtime_parts(t, t + dt.timedelta(minutes=40), 2400.0, [
    ...     {"from": t, "reason": "jam", "category": "material"},
    ...     {"from": t + dt.timedelta(minutes=25), "reason": "no operator", "category": "operator"}])
    >>> [(p["reason"], p["duration_s"] / 60, p["to"].minute) for p in parts]
    [('jam', 25.0, 25), ('no operator', 15.0, 40)]
    """
    if not segments:
        return []
    start_ms = _ms(start)
    stop_end = start_ms + round(float(duration_s) * 1000)
    out: list[dict[str, Any]] = []
    for i, seg in enumerate(segments):
        last = i + 1 == len(segments)
        to = end if last else segments[i + 1]["from"]
        to_ms = stop_end if last else _ms(to)
        out.append({"from": seg["from"], "to": to, "duration_s": max(0, to_ms - _ms(seg["from"])) / 1000,
                    "reason": seg["reason"], "category": seg["category"]})
    return out


def downtime_rows(client: Any, flt: Filter | None = None, *,
                  small: bool = True) -> tuple[list[str], list[list[Any]]]:
    """:func:`downtime_sql` run, each stop's ``segments`` as :func:`downtime_parts` (with their
    ends and durations)."""
    names, rows = rows_of(client, *downtime_sql(flt, small=small))
    if not rows:  # (chDB names no columns of an empty result)
        return list(DOWNTIME_COLUMNS), rows
    i, s, e, d = (names.index(c) for c in ("segments", "start", "end", "duration_s"))
    for row in rows:
        row[i] = downtime_parts(row[s], row[e], row[d], row[i] or [])
    return names, rows


def downtime_causes(client: Any, flt: Filter) -> list[tuple[str, str, bool, int, float]]:
    """Stops (small stops excluded) by reason: (reason, category, planned, events, minutes), longest first.

    A stop split by an operator counts each part under its own reason (``downtime_segments_latest``):
    the minutes of all reasons sum to those of the stops, and a split stop is an event of each
    of its reasons.
    """
    where, params = flt.where("start", extra=("small_stop = 0",))
    _, rows = rows_of(client, "SELECT reason, category, max(planned) AS planned, "
                              "uniqExact(machine, start) AS events, "
                              f"sum(duration_s) / 60 AS minutes FROM downtime_segments_latest{where} "
                              "GROUP BY reason, category ORDER BY minutes DESC, reason", params)
    return [(str(r) or "unassigned", str(c), bool(p), int(n), float(m)) for r, c, p, n, m in rows]


def small_stops(client: Any, flt: Filter) -> tuple[int, float]:
    """Stops shorter than the micro-stop threshold (a performance loss): events and minutes."""
    where, params = flt.where("start", extra=("small_stop = 1",))
    sql = f"SELECT count(), sum(duration_s) / 60 FROM downtime_events_latest{where}"
    _, [(n, minutes)] = rows_of(client, sql, params)
    return int(n), float(minutes or 0.0)


# -- scrap -----------------------------------------------------------------------------------------

SCRAP_GROUPS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "machine": (("site", "line", "machine"), "machine"),
    "line": (("site", "line"), "line"),
    "part": (("part_number",), "part"),
    "reason": (("reason", "category"), None),
}
"""--by → (event group columns, scrap_rate scope whose key is the last group column)."""


def scrap_report(client: Any, by: str, flt: Filter | None, hop_ms: int) -> tuple[list[str], list[list[Any]]]:
    """Scrap per group: quantity, costs, production, rate (and first-pass yield or Pareto share).

    Sums the latest version of every scrap event (``scrap_events_latest``) and the additive hop
    counts of ``scrap_rate_latest`` over the range, then the rate ``rejects / (good + rejects)``
    from those sums. ``by="reason"`` is the Pareto: reasons by quantity with their share.
    Machine and line filters apply to the events; production counts follow the groups.
    """
    if by not in SCRAP_GROUPS:
        msg = f"--by {by!r}: choose from {', '.join(SCRAP_GROUPS)}"
        raise ConfigError(msg)
    flt = flt or Filter()
    cols, scope = SCRAP_GROUPS[by]
    ev_where, params = flt.where("ts")
    rate_where: list[str] = []
    if flt.start_ms is not None:
        rate_where.append("window_end > fromUnixTimestamp64Milli({start:Int64})")
    if flt.end_ms is not None:
        end = flt.end_ms
        rate_where.append("window_end <= fromUnixTimestamp64Milli({end_hop:Int64})")
        params["end_hop"] = end + hop_ms - end % hop_ms if end % hop_ms else end
    keys = ", ".join(cols)
    events = rows_of(client, f"SELECT {keys}, sum(quantity) AS quantity, "
                     "sum(material_cost) AS material_cost, "
                     "sum(labor_cost) AS labor_cost, sum(cost) AS cost, min(costed) AS all_costed "
                     f"FROM scrap_events_latest{ev_where} GROUP BY {keys}", params)[1]
    rate_scope = scope or "machine"
    _, rate_rows = rows_of(client, "SELECT key, sum(good) AS good, sum(reject) AS reject, any(site), "
                           "any(line) FROM scrap_rate_latest WHERE scope = {scope:String}"
                           f"{''.join(' AND ' + w for w in rate_where)} GROUP BY key",
                           params | {"scope": rate_scope})
    if scope == "machine" and flt.machine:
        rate_rows = [r for r in rate_rows if r[0] == flt.machine]
    if flt.line and scope in ("machine", "line"):
        rate_rows = [r for r in rate_rows if r[4 if scope == "machine" else 0] == flt.line]
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
        good, reject = prod.get(key[-1], (0, 0)) if scope is not None else (all_good, all_rejects)
        produced = good + reject
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


def scrap_currency(client: Any, flt: Filter) -> str:
    """The currency of the costed scrap events in the range (``''`` when none is costed)."""
    where, params = flt.where("ts", extra=("costed = 1",))
    _, [(currency,)] = rows_of(client, f"SELECT any(currency) FROM scrap_events_latest{where}", params)
    return str(currency or "")


# -- alerts ----------------------------------------------------------------------------------------

ALERT_COLUMNS = ("alert_id", "machine", "line", "rule", "signal", "severity", "status", "raised_at",
                 "cleared_at", "value", "threshold", "message")


def alerts_sql(flt: Filter | None = None, *, open_only: bool = False) -> tuple[str, dict[str, Any]]:
    """Alerts (latest state of each) raised in the range; ``open_only``: not cleared yet."""
    where, params = (flt or Filter()).where("raised_at", extra=("status = 'raised'",) if open_only else ())
    return f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts_latest{where} ORDER BY raised_at, alert_id", params


def alerts_raised(client: Any, flt: Filter) -> int:
    """How many alerts were raised in the range."""
    where, params = flt.where("raised_at")
    _, [(n,)] = rows_of(client, f"SELECT count() FROM alerts_latest{where}", params)
    return int(n)


# -- anomalies -------------------------------------------------------------------------------------

ANOMALY_COLUMNS = ("machine", "model", "start", "end", "score", "threshold", "severity", "signals",
                   "hypothesis", "points", "is_open")


def list_anomalies(client: Any, flt: Filter | None = None, *, limit: int = 1000,
                   epoch_ms: bool = False) -> list[list[Any]]:
    """Anomaly episodes that overlap the range (latest version of each), newest first.

    Rows follow :data:`ANOMALY_COLUMNS`; ``start``/``end`` are RFC 3339 strings, or epoch ms
    with ``epoch_ms``; ``signals`` is a dict of z-scores.
    """
    where, params = (flt or Filter()).where("start", until="`end`")
    times = "toUnixTimestamp64Milli(start), toUnixTimestamp64Milli(`end`)" if epoch_ms else "start, `end`"
    _, found = rows_of(client, f"SELECT machine, model, {times}, score, threshold, severity, signals, "
                       f"hypothesis, points, is_open FROM anomalies FINAL{where} "
                       f"ORDER BY start DESC, machine, model LIMIT {int(limit)}", params)
    rows = [[*r[:7], dict(r[7]), *r[8:]] for r in found]
    if not epoch_ms:
        for row in rows:
            row[2], row[3] = rfc3339(row[2]), rfc3339(row[3])
    return rows


def rfc3339(v: Any) -> Any:
    """A datetime as RFC 3339 UTC with ``Z`` (chDB returns naive UTC), milliseconds when there are any.

    >>> rfc3339(dt.datetime(2026, 11, 22, 6, 0, 5)), rfc3339(dt.datetime(2026, 11, 22, 6, 0, 5, 250_000))
    ('2026-11-22T06:00:05Z', '2026-11-22T06:00:05.250Z')
    """
    if not isinstance(v, dt.datetime):
        return v
    if v.tzinfo is not None:
        v = v.astimezone(dt.UTC).replace(tzinfo=None)
    spec = "milliseconds" if v.microsecond else "seconds"
    return v.isoformat(timespec=spec) + "Z"


# -- machine status --------------------------------------------------------------------------------

STATUS_COLUMNS = ("machine", "site", "line", "state", "state_since", "downtime_open", "downtime_since",
                  "fault_code", "reason_code", "part_number", "work_order", "signals", "last_seen")


def status_sql(flt: Filter | None = None) -> tuple[str, dict[str, Any]]:
    """What each machine is doing now (the digital twin, ``machine_status``), by site, line, machine."""
    where, params = (flt or Filter()).where(None)
    return (f"SELECT {', '.join(STATUS_COLUMNS)} FROM machine_status FINAL{where} "
            "ORDER BY site, line, machine"), params
