"""The daily insights report's data: one production day read from ClickHouse.

:func:`load_daily` gathers what ``plantstream report daily`` shows, reusing the queries of
``kpi oee`` (:func:`flows.cli_oee.oee_sql`), ``kpi scrap`` (:func:`flows.cli_scrap.scrap_report`)
and ``kpi anomalies`` (:func:`flows.cli_anomaly.list_anomalies`), so the report and the CLI always
agree. Everything reads the ``*_latest`` views (or ``FINAL``): a replay or a restatement never
counts twice. Ratios come from sums over the day, never from averaged percentages.

The day is the local calendar day ``[00:00, 24:00)`` of ``--date`` in the plant's ``timezone``:
OEE windows that start in it, stops that start in it, scrap events in it and anomaly episodes
that overlap it. Rendering is in :mod:`operators.report`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from plantstream.schemas.config import PlantConfig


@dataclass(frozen=True, slots=True)
class OeeRow:
    """Sums and ratios of one machine (or the plant) over the day; ratios ``None`` without a base."""

    name: str
    line: str
    planned_min: float
    run_min: float
    unplanned_stop_min: float
    setup_min: float
    small_stop_min: float
    good: int
    reject: int
    stops: int
    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None

    @property
    def total(self) -> int:
        return self.good + self.reject


@dataclass(frozen=True, slots=True)
class DowntimeCause:
    """One downtime reason of the day: events and minutes (stops that start in the day)."""

    reason: str
    category: str
    planned: bool
    events: int
    minutes: float


@dataclass(frozen=True, slots=True)
class ScrapReason:
    """One scrap reason of the day: quantity, cost, share of all rejects."""

    reason: str
    category: str
    quantity: int
    cost: float
    share: float | None
    all_costed: bool


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One anomaly episode that overlaps the day."""

    machine: str
    model: str
    start_ms: int
    end_ms: int
    score: float
    severity: str
    signals: dict[str, float]
    hypothesis: str
    is_open: bool


@dataclass
class DailyReport:
    """Everything the daily report shows, for one production day."""

    site: str
    day: dt.date
    timezone: str
    start_ms: int
    end_ms: int
    plant: OeeRow | None
    machines: list[OeeRow] = field(default_factory=list)
    downtime: list[DowntimeCause] = field(default_factory=list)
    small_stops: tuple[int, float] = (0, 0.0)
    """Stops shorter than the micro-stop threshold (performance loss): events, minutes."""
    scrap: list[ScrapReason] = field(default_factory=list)
    currency: str = ""
    anomalies: list[Anomaly] = field(default_factory=list)
    alerts: int = 0
    """Alerts raised in the day."""

    @property
    def downtime_min(self) -> float:
        """Minutes of stops (small stops excluded: they are a performance loss)."""
        return sum(c.minutes for c in self.downtime)

    @property
    def scrap_cost(self) -> float:
        return sum(s.cost for s in self.scrap)


def day_bounds(day: dt.date, config: PlantConfig) -> tuple[int, int]:
    """Epoch ms of local midnight of ``day`` and of the next day in the plant's time zone.

    >>> from plantstream.schemas.config import build_config
    >>> day_bounds(dt.date(2026, 3, 29), build_config({"timezone": "Europe/Berlin"}, {}))
    (1774738800000, 1774821600000)

    (a 23-hour day: summer time starts that night.)
    """
    tz = config.tz
    lo = dt.datetime.combine(day, dt.time(), tzinfo=tz)
    hi = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return round(lo.timestamp() * 1000), round(hi.timestamp() * 1000)


def default_day(config: PlantConfig, now: dt.datetime | None = None) -> dt.date:
    """Yesterday in the plant's time zone (the report is read the morning after).

    >>> from plantstream.schemas.config import build_config
    >>> tokyo = build_config({"timezone": "Asia/Tokyo"}, {})
    >>> default_day(tokyo, dt.datetime(2026, 11, 22, 16, tzinfo=dt.UTC))
    datetime.date(2026, 11, 22)
    """
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(config.tz).date() - dt.timedelta(days=1)


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


def _oee_rows(client: Any, by: str, start: int, end: int) -> list[dict[str, Any]]:
    from plantstream.cli.oee import oee_sql

    sql, params = oee_sql(by, start, end)
    res = client.query(sql, parameters=params)
    return [dict(zip(res.column_names, r, strict=True)) for r in res.result_rows]


def _oee(name: str, line: str, r: dict[str, Any]) -> OeeRow:
    return OeeRow(name, line, float(r["planned_min"]), float(r["run_min"]), float(r["unplanned_stop_min"]),
                  float(r["setup_min"]), float(r["small_stop_min"]), int(r["good"]), int(r["reject"]),
                  int(r["stops"]), _f(r["availability"]), _f(r["performance"]), _f(r["quality"]),
                  _f(r["oee"]))


def load_daily(client: Any, config: PlantConfig, day: dt.date) -> DailyReport:
    """Read one production day's OEE, downtime, scrap, anomalies and alerts from ClickHouse.

    The plant row sums every machine's seconds and counts of the day, then takes the ratios
    (``oee_sql(by="site")``); with several sites in one database their sums are added too.
    """
    from plantstream.cli.anomaly import list_anomalies
    from plantstream.cli.scrap import scrap_report

    start, end = day_bounds(day, config)
    machines = [_oee(r["machine"], r["line"], r) for r in _oee_rows(client, "machine", start, end)
                if r["planned_min"] or r["total"]]
    sites = _oee_rows(client, "site", start, end)
    plant: OeeRow | None = None
    if len(sites) == 1:
        plant = _oee(str(sites[0]["site"]) or config.site, "", sites[0])
    elif sites:  # several sites in one database: sums of sums, then the ratios
        keys = ("planned_min", "run_min", "unplanned_stop_min", "setup_min", "small_stop_min", "ideal_min",
                "good", "reject", "stops")
        s = {k: sum(r[k] for r in sites) for k in keys}
        total = s["good"] + s["reject"]
        a = s["run_min"] / s["planned_min"] if s["planned_min"] else None
        p = s["ideal_min"] / s["run_min"] if s["run_min"] else None
        q = s["good"] / total if total else None
        o = a * p * q if a is not None and p is not None and q is not None else None
        plant = OeeRow(config.site, "", s["planned_min"], s["run_min"], s["unplanned_stop_min"],
                       s["setup_min"], s["small_stop_min"], int(s["good"]), int(s["reject"]), int(s["stops"]),
                       a, p, q, o)

    params = {"start": start, "end": end}
    period = ("start >= fromUnixTimestamp64Milli({start:Int64}) "
              "AND start < fromUnixTimestamp64Milli({end:Int64})")
    rows = client.query(
        "SELECT reason, category, max(planned) AS planned, count() AS events, "
        "sum(duration_s) / 60 AS minutes "
        f"FROM downtime_events_latest WHERE {period} AND small_stop = 0 "
        "GROUP BY reason, category ORDER BY minutes DESC, reason", parameters=params).result_rows
    downtime = [DowntimeCause(str(r) or "unassigned", str(c), bool(p), int(n), float(m))
                for r, c, p, n, m in rows]
    [(n_small, small_min)] = client.query(
        f"SELECT count(), sum(duration_s) / 60 FROM downtime_events_latest WHERE {period} AND small_stop = 1",
        parameters=params).result_rows

    columns, srows = scrap_report(client, "reason", start, end, config.scrap.hop_s * 1000)
    scrap = []
    for r in srows:
        d = dict(zip(columns, r, strict=True))
        scrap.append(ScrapReason(str(d["reason"]), str(d["category"]), int(d["quantity"]), float(d["cost"]),
                                 _f(d["share"]), bool(d["all_costed"])))
    [(currency,)] = client.query(
        "SELECT any(currency) FROM scrap_events_latest WHERE ts >= fromUnixTimestamp64Milli({start:Int64}) "
        "AND ts < fromUnixTimestamp64Milli({end:Int64}) AND costed = 1", parameters=params).result_rows

    anomalies = []
    for a in list_anomalies(client, since=str(start), limit=500, epoch_ms=True):
        machine, model, a_start, a_end, score, _thr, severity, signals, hypothesis, _points, is_open = a
        if int(a_start) >= end:
            continue
        anomalies.append(Anomaly(str(machine), str(model), int(a_start), int(a_end), float(score),
                                 str(severity), dict(signals), str(hypothesis), bool(is_open)))
    anomalies.reverse()  # oldest first, as a manager reads the day
    [(alerts,)] = client.query(
        "SELECT count() FROM alerts_latest WHERE raised_at >= fromUnixTimestamp64Milli({start:Int64}) "
        "AND raised_at < fromUnixTimestamp64Milli({end:Int64})", parameters=params).result_rows
    return DailyReport(config.site, day, config.timezone, start, end, plant, machines, downtime,
                       (int(n_small), float(small_min or 0.0)), scrap, str(currency or ""), anomalies,
                       int(alerts))

