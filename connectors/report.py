"""The daily insights report's data: one production day read from ClickHouse.

:func:`load_daily` gathers what ``plantstream report daily`` shows through the KPI queries of
:mod:`plantstream.connectors.kpi` — the same ones ``plantstream kpi oee``, ``kpi scrap`` and
``kpi anomalies`` run — so the report and the CLI always agree. Everything reads the
``*_latest`` views (or ``FINAL``): a replay or a restatement never counts twice. Ratios come from
the day's sums through the ClickHouse KPI functions, never from averaged percentages.

The day is the local calendar day ``[00:00, 24:00)`` of ``--date`` in the plant's ``timezone``:
OEE windows that start in it, stops that start in it, scrap events in it and anomaly episodes
that overlap it. The records (:class:`~plantstream.operators.report.DailyReport` …) and the
rendering are in :mod:`plantstream.operators.report`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from plantstream.connectors import kpi
from plantstream.operators.report import (
    Anomaly,
    DailyReport,
    DowntimeCause,
    OeeRow,
    ScrapReason,
    day_bounds,
)
from plantstream.schemas.config import PlantConfig

__all__ = ["load_daily"]


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


def _oee(name: str, line: str, r: dict[str, Any]) -> OeeRow:
    return OeeRow(name, line, float(r["planned_min"]), float(r["run_min"]), float(r["unplanned_stop_min"]),
                  float(r["setup_min"]), float(r["small_stop_min"]), int(r["good"]), int(r["reject"]),
                  int(r["stops"]), _f(r["availability"]), _f(r["performance"]), _f(r["quality"]),
                  _f(r["oee"]))


def load_daily(client: Any, config: PlantConfig, day: dt.date) -> DailyReport:
    """Read one production day's OEE, downtime, scrap, anomalies and alerts from ClickHouse.

    The plant row sums every machine's seconds and counts of the day, then takes the ratios
    (:func:`~plantstream.connectors.kpi.oee_sql` without grouping), whatever the number of sites.
    """
    start, end = day_bounds(day, config)
    day_range = kpi.Filter(start_ms=start, end_ms=end)
    machines = [_oee(r["machine"], r["line"], r) for r in kpi.oee_rows(client, "machine", day_range)
                if r["planned_min"] or r["total"]]
    sites = [str(r["site"]) for r in kpi.oee_rows(client, "site", day_range)]
    [everything] = kpi.oee_rows(client, "", day_range)
    plant: OeeRow | None = None
    if sites:
        plant = _oee((sites[0] or config.site) if len(sites) == 1 else config.site, "", everything)

    columns, srows = kpi.scrap_report(client, "reason", day_range, config.scrap.hop_s * 1000)
    scrap = []
    for r in srows:
        d = dict(zip(columns, r, strict=True))
        scrap.append(ScrapReason(str(d["reason"]), str(d["category"]), int(d["quantity"]), float(d["cost"]),
                                 _f(d["share"]), bool(d["all_costed"])))
    anomalies = [Anomaly(str(a[0]), str(a[1]), int(a[2]), int(a[3]), float(a[4]), str(a[6]), dict(a[7]),
                         str(a[8]), bool(a[10]))  # kpi.ANOMALY_COLUMNS
                 for a in kpi.list_anomalies(client, day_range, limit=500, epoch_ms=True)]
    anomalies.reverse()  # oldest first, as a manager reads the day
    return DailyReport(
        config.site, day, config.timezone, start, end, plant, machines,
        [DowntimeCause(*cause) for cause in kpi.downtime_causes(client, day_range)],
        kpi.small_stops(client, day_range), scrap, kpi.scrap_currency(client, day_range), anomalies,
        kpi.alerts_raised(client, day_range))
