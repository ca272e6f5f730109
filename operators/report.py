"""The daily insights report: its records and its page, one self-contained HTML file.

The records (:class:`DailyReport` and the rows in it) are what
:func:`plantstream.connectors.report.load_daily` reads from ClickHouse. Rendering is pure
formatting: no I/O, no clock. Charts are drawn with matplotlib's Agg backend and embedded as
``data:image/png;base64`` URIs; styles are inline, so the file opens offline and survives being
mailed. OEE colours follow the shop-floor convention of KPI.md: green ≥ 90 %, yellow 80–90 %,
red < 80 %.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
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


TOP = 10
"""Downtime causes listed one by one; the rest are summed in one row."""
GREEN, YELLOW, RED, GREY = "#1b7f3b", "#f2c200", "#c62828", "#9e9e9e"


def oee_colour(oee: float | None) -> str:
    """Shop-floor colour of an OEE ratio (KPI.md): green ≥ 0.90, yellow 0.80–0.90, red < 0.80.

    >>> oee_colour(0.90), oee_colour(0.8999), oee_colour(0.80), oee_colour(0.7999), oee_colour(None)
    ('green', 'yellow', 'yellow', 'red', 'grey')
    """
    if oee is None:
        return "grey"
    return "green" if oee >= 0.90 else "yellow" if oee >= 0.80 else "red"


_HEX = {"green": GREEN, "yellow": YELLOW, "red": RED, "grey": GREY}
_INK = {"green": "#ffffff", "yellow": "#111111", "red": "#ffffff", "grey": "#ffffff"}


def pct(v: float | None, digits: int = 1) -> str:
    """A ratio as a percentage; an empty base shows as an en dash.

    >>> pct(0.747915), pct(None), pct(1.0234)
    ('74.8 %', '–', '102.3 %')
    """
    return "–" if v is None else f"{v * 100:.{digits}f} %"


def num(v: float, digits: int = 0) -> str:
    """A quantity with thousands separators.

    >>> num(19271), num(46.9999, 1), num(0.0, 2)
    ('19,271', '47.0', '0.00')
    """
    return f"{v:,.{digits}f}"


def _hhmm(ms: int, tz: ZoneInfo) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%H:%M")


def _png(fig: object) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")  # type: ignore[attr-defined]
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


SERIES = (("Availability", "availability", "#5c6bc0"), ("Performance", "performance", "#26a69a"),
          ("Quality", "quality", "#8d6e63"), ("OEE", "oee", None))
"""The bars of each machine in the OEE chart: label, :class:`OeeRow` field, colour (OEE: by threshold)."""


def oee_figure(machines: list[OeeRow]) -> Any:
    """The A × P × Q = OEE chart: one group of horizontal bars per machine, first machine on top.

    Horizontal bars keep every machine label on its own line however many machines the plant
    has (the figure grows 0.42 in per machine), and the legend sits above the plot, outside the
    axes, so it never covers a bar. OEE bars are coloured by the shop-floor thresholds and
    carry their value; dashed lines mark 90 % and 80 %.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    n = len(machines)
    fig = Figure(figsize=(9, 1.6 + 0.42 * n), layout="constrained")
    ax = fig.subplots()
    height = 0.2
    for i, (label, attr, colour) in enumerate(SERIES):
        vals = [(getattr(m, attr) or 0.0) * 100 for m in machines]
        ys = [y + (i - 1.5) * height for y in range(n)]
        if colour is None:
            bars = ax.barh(ys, vals, height, label=label, edgecolor="#222222",
                           color=[_HEX[oee_colour(m.oee)] for m in machines])
            for bar, v in zip(bars, vals, strict=True):
                ax.annotate(f" {v:.1f}", (v, bar.get_y() + bar.get_height() / 2), va="center", fontsize=8)
        else:
            ax.barh(ys, vals, height, label=label, color=colour)
    ax.axvline(90, color=GREEN, linestyle="--", linewidth=1)
    ax.axvline(80, color=RED, linestyle="--", linewidth=1)
    ax.set_yticks(range(n), [m.name for m in machines], fontsize=9)
    ax.set_ylim(n - 0.5, -0.5)  # first machine on top, as in the table
    most = max((v or 0.0) * 100 for m in machines for v in (m.availability, m.performance, m.quality, m.oee))
    ax.set_xlim(0, max(110.0, most + 12))
    ax.set_xlabel("%")
    ax.set_title("A × P × Q = OEE per machine (lines: 90 % and 80 %)")
    fig.legend(ncols=4, fontsize=8, loc="outside upper center")
    return fig


def charts(report: DailyReport) -> dict[str, str]:
    """PNG data URIs: ``oee`` (A/P/Q/OEE per machine), ``downtime`` and ``scrap`` Paretos."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    out: dict[str, str] = {}
    if report.machines:
        out["oee"] = _png(oee_figure(report.machines))
    if report.downtime:
        causes = report.downtime[:8][::-1]
        fig = Figure(figsize=(7, 0.9 + 0.4 * len(causes)))
        ax = fig.subplots()
        ax.barh([c.reason for c in causes], [c.minutes for c in causes],
                color=["#90a4ae" if c.planned else "#e65100" for c in causes])
        for i, c in enumerate(causes):
            ax.annotate(f" {c.minutes:.0f} min, {c.events}×", (c.minutes, i), va="center", fontsize=8)
        ax.set_xlabel("minutes")
        ax.set_xlim(0, max(c.minutes for c in causes) * 1.3 or 1)
        ax.set_title("Top downtime causes (grey: planned)")
        out["downtime"] = _png(fig)
    if report.scrap:
        reasons = report.scrap[:8][::-1]
        fig = Figure(figsize=(7, 0.9 + 0.4 * len(reasons)))
        ax = fig.subplots()
        ax.barh([s.reason for s in reasons], [s.quantity for s in reasons], color="#6d4c41")
        for i, s in enumerate(reasons):
            ax.annotate(f" {s.quantity} pcs", (s.quantity, i), va="center", fontsize=8)
        ax.set_xlabel("rejected parts")
        ax.set_xlim(0, max(s.quantity for s in reasons) * 1.25 or 1)
        ax.set_title("Scrap by reason")
        out["scrap"] = _png(fig)
    return out


_CSS = """
body{font-family:'DejaVu Sans',Arial,Helvetica,sans-serif;color:#111;background:#fff;margin:24px;
max-width:1200px}
h1{font-size:28px;margin:0 0 4px}h2{font-size:20px;margin:28px 0 8px;border-bottom:2px solid #ddd}
.sub{color:#444;margin-bottom:16px}
.tiles{display:flex;flex-wrap:wrap;gap:14px}
.tile{border:2px solid #bbb;border-radius:8px;padding:8px 16px;min-width:120px;background:#fff}
.tile .k{font-size:16px;color:inherit}.tile .v{font-size:42px;font-weight:bold;line-height:1.15}
.row{display:flex;gap:20px;align-items:flex-start}.row .chart{flex:1 1 0;min-width:0}
.row .chart img{width:100%;max-width:700px}td{white-space:nowrap}td.w{white-space:normal}
table{border-collapse:collapse;font-size:15px}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f0f0f0}td.t,th.t{text-align:left}
tr.total td{font-weight:bold;border-top:2px solid #666}
.badge{display:inline-block;padding:1px 8px;border-radius:4px;font-weight:bold}
.note{color:#555;font-size:13px}img{max-width:100%}
"""


_TINT = {"green": "#d7f0dc", "yellow": "#fff3a0", "red": "#ffd9d9", "grey": "#eeeeee"}
_DARK = {"green": "#0b4d1e", "yellow": "#111111", "red": "#8e0000", "grey": "#333333"}


def _badge(v: float | None) -> str:
    """A table cell's OEE: tinted background, dark ink, a bar in the shop-floor colour (legible in print)."""
    c = oee_colour(v)
    return (f'<span class="badge" style="background:{_TINT[c]};color:{_DARK[c]};'
            f'border-left:6px solid {_HEX[c]};padding-left:6px">{pct(v)}</span>')


def _machine_row(m: OeeRow, total: bool = False, line: bool = True) -> str:
    perf = pct(m.performance) + (" ⚠" if m.performance is not None and m.performance > 1 else "")
    line_cell = [f'<td class="t">{escape(m.line)}</td>'] if line else []
    cells = [f'<td class="t">{escape(m.name)}</td>', *line_cell,
             f"<td>{num(m.planned_min)}</td>", f"<td>{num(m.run_min)}</td>",
             f"<td>{num(m.unplanned_stop_min + m.setup_min)}</td>", f"<td>{pct(m.availability)}</td>",
             f"<td>{perf}</td>", f"<td>{pct(m.quality)}</td>", f"<td>{_badge(m.oee)}</td>",
             f"<td>{num(m.good)}</td>", f"<td>{num(m.reject)}</td>", f"<td>{m.stops}</td>"]
    return f'<tr{" class=total" if total else ""}>{"".join(cells)}</tr>'


def _tile(key: str, value: str, style: str = "") -> str:
    return (f'<div class="tile" style="{style}"><div class="k">{escape(key)}</div>'
            f'<div class="v">{escape(value)}</div></div>')


def render_html(report: DailyReport, images: dict[str, str] | None = None) -> str:
    """The report page. ``images`` defaults to :func:`charts` of the report.

    Headline tiles (plant OEE coloured, good parts, rejects, downtime minutes, scrap cost,
    anomalies), the per-machine A/P/Q/OEE table with the plant row computed from sums, top
    downtime causes, scrap by reason with cost, the day's anomaly episodes and the charts.
    """
    images = charts(report) if images is None else images
    tz = ZoneInfo(report.timezone)
    p = report.plant
    day = report.day.strftime("%A %d %B %Y")
    colour = oee_colour(p.oee if p else None)
    cur = report.currency or ""
    parts: list[str] = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Daily report {escape(report.site)} {report.day.isoformat()}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Daily insights — {escape(report.site)}</h1>",
        f'<div class="sub">{escape(day)} · 00:00–24:00 {escape(report.timezone)} · '
        f"{len(report.machines)} machines</div>",
        '<div class="tiles">',
        _tile("Plant OEE", pct(p.oee if p else None),
              f"background:{_HEX[colour]};color:{_INK[colour]};border-color:{_HEX[colour]}"),
        _tile("Good parts", num(p.good) if p else "0"),
        _tile("Rejects", num(p.reject) if p else "0"),
        _tile("Downtime min", num(report.downtime_min)),
        _tile(f"Scrap cost {cur}".strip(), num(report.scrap_cost, 2)),
        _tile("Anomalies", str(len(report.anomalies))),
        "</div>",
    ]
    if p:
        parts.append(f'<p class="note">Plant: availability {pct(p.availability)} × performance '
                     f"{pct(p.performance)} × quality {pct(p.quality)} = OEE {pct(p.oee)} — from the day's "
                     f"summed minutes and counts ({num(p.planned_min)} planned min, "
                     f"{num(p.run_min)} run min, "
                     f"{num(p.total)} parts), never averaged percentages. {report.alerts} alerts raised.</p>")
    parts += ["<h2>OEE per machine</h2>"]
    if report.machines:
        lines = any(m.line for m in report.machines)  # machines not in the config's lines have none
        parts.append(f"<table><tr><th class=t>Machine</th>{'<th class=t>Line</th>' if lines else ''}"
                     "<th>Planned min</th>"
                     "<th>Run min</th><th>Stop min</th><th>Availability</th><th>Performance</th>"
                     "<th>Quality</th><th>OEE</th><th>Good</th><th>Rejects</th><th>Stops</th></tr>")
        parts += [_machine_row(m, line=lines) for m in report.machines]
        if p:
            parts.append(_machine_row(p, total=True, line=lines))
        parts.append("</table>")
        parts.append('<p class="note">Colours: green ≥ 90 %, yellow 80–90 %, red &lt; 80 %. '
                     "⚠ performance above 100 %: the ideal cycle time is set too slow.</p>")
        if "oee" in images:
            parts.append(f'<img alt="OEE per machine" src="{images["oee"]}">')
    else:
        parts.append("<p>No production recorded this day.</p>")

    parts.append("<h2>Top downtime causes</h2>")
    if report.downtime:
        parts.append('<div class="row"><table><tr><th class=t>Reason</th><th class=t>Category</th>'
                     "<th class=t>Planned</th>"
                     "<th>Events</th><th>Minutes</th></tr>")
        for c in report.downtime[:TOP]:
            parts.append(f'<tr><td class="t">{escape(c.reason)}</td><td class="t">{escape(c.category)}</td>'
                         f'<td class="t">{"yes" if c.planned else "no"}</td><td>{c.events}</td>'
                         f"<td>{num(c.minutes, 1)}</td></tr>")
        rest = report.downtime[TOP:]
        if rest:
            parts.append(f'<tr><td class="t">{len(rest)} other reasons</td><td></td><td></td>'
                         f"<td>{sum(c.events for c in rest)}</td>"
                         f"<td>{num(sum(c.minutes for c in rest), 1)}</td>"
                         "</tr>")
        parts.append(f'<tr class=total><td class="t">All stops</td><td></td><td></td>'
                     f"<td>{sum(c.events for c in report.downtime)}</td>"
                     f"<td>{num(report.downtime_min, 1)}</td></tr>"
                     "</table>")
        if "downtime" in images:
            parts.append(f'<div class="chart"><img alt="Downtime causes" src="{images["downtime"]}"></div>')
        parts.append("</div>")
        n_small, small_min = report.small_stops
        parts.append(f'<p class="note">Plus {n_small} small stops ({num(small_min, 1)} min) shorter than the '
                     "micro-stop threshold, counted as a performance loss. Stops that start this day.</p>")
    else:
        parts.append("<p>No stops this day.</p>")

    parts.append("<h2>Scrap by reason</h2>")
    if report.scrap:
        parts.append('<div class="row"><table><tr><th class=t>Reason</th><th class=t>Category</th>'
                     f"<th>Quantity</th><th>Share</th><th>Cost {escape(cur)}</th></tr>")
        for s in report.scrap:
            cost = num(s.cost, 2) + ("" if s.all_costed else " *")
            parts.append(f'<tr><td class="t">{escape(s.reason)}</td><td class="t">{escape(s.category)}</td>'
                         f"<td>{num(s.quantity)}</td><td>{pct(s.share)}</td><td>{cost}</td></tr>")
        parts.append(f'<tr class=total><td class="t">All scrap</td><td></td>'
                     f"<td>{num(sum(s.quantity for s in report.scrap))}</td><td></td>"
                     f"<td>{num(report.scrap_cost, 2)}</td></tr></table>")
        if "scrap" in images:
            parts.append(f'<div class="chart"><img alt="Scrap by reason" src="{images["scrap"]}"></div>')
        parts.append("</div>")
        if not all(s.all_costed for s in report.scrap):
            parts.append('<p class="note">* some rejects have no work-order cost data yet.</p>')
    else:
        parts.append("<p>No scrap this day.</p>")

    parts.append("<h2>Anomalies of the day</h2>")
    if report.anomalies:
        parts.append("<table><tr><th class=t>Machine</th><th class=t>Model</th><th class=t>From–to</th>"
                     "<th class=t>Severity</th><th>Max score</th><th class=t>Signals</th>"
                     "<th class=t>Likely cause</th></tr>")
        for a in report.anomalies:
            top = sorted(a.signals.items(), key=lambda kv: -abs(kv[1]))[:3]
            sig = ", ".join(f"{k} {v:.1f}" for k, v in top)
            until = "open" if a.is_open else _hhmm(a.end_ms, tz)
            parts.append(f'<tr><td class="t">{escape(a.machine)}</td><td class="t">{escape(a.model)}</td>'
                         f'<td class="t">{_hhmm(a.start_ms, tz)}–{until}</td>'
                         f'<td class="t">{escape(a.severity)}</td><td>{a.score:.2f}</td>'
                         f'<td class="t w">{escape(sig)}</td>'
                         f'<td class="t w">{escape(a.hypothesis)}</td></tr>')
        parts.append("</table>")
    else:
        parts.append("<p>No anomalies this day.</p>")
    parts.append('<p class="note">plantstream daily report · figures from the latest version of every '
                 "fact (restatements never double).</p></body></html>")
    return "\n".join(parts)
