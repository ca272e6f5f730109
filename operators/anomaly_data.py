"""Labelled condition data sets and an offline harness for the anomaly operator.

Readers turn a labelled file into a :class:`LabelledSeries` (timestamps, signal columns, labels or
windows, training rows); :func:`series_measurements` turns series into the Measurements the flow
would see (machine = the series' name, one metric per signal, in timestamp order), and
:func:`run_offline` folds them into :class:`~plantstream.operators.anomaly.MachineMonitor` exactly
as the machine engine does (per machine, in order, in batches; the end of input closes episodes)
— minutes faster than ``replay`` for experiments. :func:`score_series` computes the metrics of
detected episodes against the labels; :func:`pooled` sums them over files.

Formats:

- **NAB**: ``timestamp,value`` plus a labels JSON with ``windows`` (probation 15 %).
- **csv**: a timestamp column, numeric signal columns and a 0/1 label column.
- **SKAB** (Skoltech Anomaly Benchmark): ``;``-separated, ``datetime`` (local time without zone,
  read as UTC), eight sensor columns, ``anomaly`` (0/1) and ``changepoint``; files without an
  ``anomaly`` column (the anomaly-free run) are all normal. The published protocol: the first 400
  rows of a file are training (known normal); outlier detection is scored point-wise on the rest.
  Sensor columns become plantstream metric names (:data:`SKAB_SIGNALS`).

Examples
--------
>>> s = LabelledSeries("m", [0, 1000, 2000, 3000], {"pressure_bar": [1.0, 1.0, 3.0, 1.0]},
...                    labels=[0, 0, 1, 0], train=1)
>>> r = score_series(s, [(2000, 2000)], nab=False)
>>> (r.tp, r.fp, r.fn, r.tn, r.f1)
(1, 0, 0, 2, 1.0)
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from plantstream.operators.anomaly import ISO_MODEL, MachineMonitor
from plantstream.operators.anomaly_eval import (
    episode_metrics,
    label_intervals,
    nab_score,
    point_metrics,
    predicted_points,
    probation_rows,
)
from plantstream.schemas.anomaly_config import AnomalyConfig
from plantstream.schemas.errors import ConfigError
from plantstream.schemas.measurement import Measurement, parse_ts

SKAB_SIGNALS: Final = {
    "Accelerometer1RMS": "vibration_1_rms_g",
    "Accelerometer2RMS": "vibration_2_rms_g",
    "Current": "current_a",
    "Pressure": "pressure_bar",
    "Temperature": "temperature_c",
    "Thermocouple": "fluid_temperature_c",
    "Voltage": "voltage_v",
    "Volume Flow RateRMS": "flow_rate_lpm",
}
"""SKAB sensor column → metric: accelerometer RMS (g) → vibration; motor body temperature →
``temperature_c`` (the thermal profile); the circulating fluid's thermocouple → ``fluid_temperature_c``."""
SKAB_TRAIN_ROWS: Final = 400
"""The SKAB protocol's training rows (known normal) at the start of every file."""
DAY_MS: Final = 86_400_000


@dataclass
class LabelledSeries:
    """One labelled file: timestamps (ms), signal columns, and labels or windows."""

    name: str
    ts: list[int]
    signals: dict[str, list[float]]
    labels: list[int] | None = None
    windows: list[tuple[int, int]] = field(default_factory=list)
    train: int = 0
    label_ts: list[int] = field(default_factory=list)
    """NAB's labelled anomaly timestamps (one per window)."""

    def intervals(self) -> list[tuple[int, int]]:
        if self.labels is not None:
            return label_intervals(self.ts, self.labels)
        return self.windows

    def point_labels(self) -> list[int]:
        if self.labels is not None:
            return self.labels
        return predicted_points(self.ts, self.windows)


def parse_time(text: str) -> int:
    """Epoch ms of an RFC 3339 time, ``YYYY-MM-DD HH:MM:SS`` (UTC) or epoch ms.

    >>> parse_time("2020-03-09 10:14:33"), parse_time("1583748873000")
    (1583748873000, 1583748873000)
    """
    s = text.strip()
    if s.isdigit():
        return int(s)
    if "T" not in s and " " in s:
        s = s.replace(" ", "T")
    if not s.endswith("Z") and "+" not in s[10:]:
        s += "Z"
    ms = parse_ts(s)
    if ms is None:
        msg = f"timestamp {text!r} is neither RFC 3339 nor 'YYYY-MM-DD HH:MM:SS' nor epoch ms"
        raise ConfigError(msg)
    return ms


def read_nab(path: Path, labels: Path | None = None, signal: str = "value") -> LabelledSeries:
    """A NAB data file and its windows (labels JSON beside it, or ``labels``)."""
    label_file = labels or _find_labels(path)
    spec = json.loads(label_file.read_text(encoding="utf-8"))
    windows = spec.get("windows")
    if windows is None:  # NAB's combined_windows.json: {"dir/file.csv": [[a, b], …]}
        windows = next((w for k, w in spec.items() if k.endswith(path.name)), None)
    if windows is None:
        msg = f"{label_file}: no windows for {path.name}; pass --labels with its NAB windows JSON"
        raise ConfigError(msg)
    ts, values = [], []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            ts.append(parse_time(row["timestamp"]))
            values.append(float(row["value"]))
    wins = [(parse_time(a.split(".")[0]), parse_time(b.split(".")[0])) for a, b in windows]
    marks = [parse_time(t.split(".")[0]) for t in spec.get("label_timestamps", [])]
    return LabelledSeries(path.stem, ts, {signal: values}, windows=wins, train=probation_rows(len(ts)),
                          label_ts=marks)


def _find_labels(path: Path) -> Path:
    for cand in sorted(path.parent.glob("*labels*.json")):
        try:
            spec = json.loads(cand.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if spec.get("file") == path.name or any(str(k).endswith(path.name) for k in spec):
            return cand
    msg = f"no labels JSON for {path.name} in {path.parent}; pass --labels FILE"
    raise ConfigError(msg)


def read_labelled_csv(path: Path, *, timestamp: str = "timestamp", label: str = "label",
                      train: int = 0) -> LabelledSeries:
    """A generic labelled CSV: timestamp column, numeric signal columns, 0/1 label column."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        for need in (timestamp, label):
            if need not in cols:
                msg = f"{path}: no column {need!r} (columns {cols}); use --timestamp-column/--label-column"
                raise ConfigError(msg)
        sigs = [c for c in cols if c not in (timestamp, label)]
        ts: list[int] = []
        labels: list[int] = []
        signals: dict[str, list[float]] = {c: [] for c in sigs}
        for row in reader:
            ts.append(parse_time(row[timestamp]))
            labels.append(1 if float(row[label] or 0) else 0)
            for c in sigs:
                signals[c].append(float(row[c]) if row[c] not in ("", None) else float("nan"))
    return LabelledSeries(path.stem, ts, signals, labels=labels, train=train)


def read_skab(path: Path, *, name: str | None = None, train: int = SKAB_TRAIN_ROWS) -> LabelledSeries:
    """A SKAB experiment file (see the module doc); ``name`` (the machine) defaults to
    ``<folder>-<file stem>`` (``valve1-0``)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter=";")
        cols = reader.fieldnames or []
        if "datetime" not in cols:
            msg = f"{path}: no 'datetime' column (columns {cols}); a SKAB file is ';'-separated"
            raise ConfigError(msg)
        sigs = [c for c in cols if c not in ("datetime", "anomaly", "changepoint")]
        has_labels = "anomaly" in cols
        ts: list[int] = []
        labels: list[int] = []
        signals: dict[str, list[float]] = {SKAB_SIGNALS.get(c, _metric_name(c)): [] for c in sigs}
        keys = [SKAB_SIGNALS.get(c, _metric_name(c)) for c in sigs]
        for row in reader:
            ts.append(parse_time(row["datetime"]))
            labels.append(1 if has_labels and float(row["anomaly"] or 0) else 0)
            for c, k in zip(sigs, keys, strict=True):
                v = row[c]
                signals[k].append(float(v) if v not in ("", None) else float("nan"))
    return LabelledSeries(name or f"{path.parent.name}-{path.stem}", ts, signals, labels=labels, train=train)


def _metric_name(column: str) -> str:
    return "_".join("".join(ch if ch.isalnum() else " " for ch in column).lower().split())


def skab_files(path: Path) -> list[Path]:
    """The SKAB files of ``path`` (a file, or every ``*.csv`` below a folder, in a stable order:
    by folder, then by number)."""
    if path.is_file():
        return [path]

    def key(p: Path) -> tuple[str, int, str]:
        return (str(p.parent), int(p.stem) if p.stem.isdigit() else 1 << 30, p.stem)

    return sorted(path.rglob("*.csv"), key=key)


def series_measurements(series: Sequence[LabelledSeries]) -> Iterator[Measurement]:
    """The Measurements of labelled series, as ``eval anomaly`` replays them (series after
    series; per row every non-NaN signal; machine = series name)."""
    for s in series:
        cols = list(s.signals.items())
        for i, t in enumerate(s.ts):
            for name, values in cols:
                v = values[i]
                if v == v:
                    yield Measurement(t, s.name, name, v, source="eval")


def run_offline(measurements: Iterable[Measurement], cfg: AnomalyConfig, *,
                batch: int = 1000) -> list[dict[str, Any]]:
    """Fold Measurements into one :class:`MachineMonitor` per machine, as the machine engine does
    (per machine in arrival order, ``batch`` samples at a time), then close the input; the anomaly
    rows written, in order."""
    monitors: dict[str, MachineMonitor] = {}
    pending: dict[str, list[Measurement]] = {}
    rows: list[dict[str, Any]] = []
    for m in measurements:
        buf = pending.setdefault(m.machine, [])
        buf.append(m)
        if len(buf) >= batch:
            mon = monitors.setdefault(m.machine, MachineMonitor.new(m.machine))
            rows += mon.fold(buf, cfg)
            pending[m.machine] = []
    for machine, buf in pending.items():
        mon = monitors.setdefault(machine, MachineMonitor.new(machine))
        if buf:
            rows += mon.fold(buf, cfg)
    for mon in monitors.values():
        rows += mon.close(cfg)
    return rows


def episodes_by_machine(rows: Iterable[dict[str, Any]]) -> dict[str, list[tuple[int, int]]]:
    """Closed episodes (start, end) of every model but the ISO rule per machine, overlapping ones
    merged (one alarm) — what ``eval anomaly`` reads back from ClickHouse ``anomalies FINAL``."""
    found: dict[tuple[str, str, int], tuple[int, int]] = {}
    for r in rows:
        if r["model"] == ISO_MODEL:
            continue
        key = (r["machine"], r["model"], r["start"])
        prev = found.get(key)
        if prev is None or r["end"] >= prev[1]:
            found[key] = (r["start"], r["end"])
    out: dict[str, list[tuple[int, int]]] = {}
    for (machine, _, _), ep in found.items():
        out.setdefault(machine, []).append(ep)
    return {k: merge_episodes(v) for k, v in out.items()}


def merge_episodes(episodes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Episodes of several models of one machine, overlapping ones merged (one alarm).

    >>> merge_episodes([(5, 9), (0, 2), (1, 3)])
    [(0, 3), (5, 9)]
    """
    out: list[tuple[int, int]] = []
    for a, b in sorted(episodes):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


@dataclass
class EvalResult:
    name: str
    rows: int
    windows: int
    detected: int
    false_alarm_episodes: int
    nab_raw: float | None
    nab_score: float | None
    f1: float
    precision: float
    recall: float
    false_alarm_rate: float
    missed_alarm_rate: float
    median_delay_s: float | None
    delays_s: list[float]
    """Per detected labelled interval: first alarm − interval (NAB: window) start."""
    label_delays_s: list[float] = field(default_factory=list)
    """NAB: per detected window, first alarm − labelled timestamp (negative = before it)."""
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    scored_ms: int = 0
    """Event time scored (after the training rows): the denominator of false episodes per day."""
    points_per_s: float | None = None
    """Throughput of the run that produced the episodes (samples per second of wall time)."""

    @property
    def false_episodes_per_day(self) -> float | None:
        return self.false_alarm_episodes * DAY_MS / self.scored_ms if self.scored_ms > 0 else None


def score_series(s: LabelledSeries, episodes: list[tuple[int, int]], *, nab: bool) -> EvalResult:
    """Metrics of detected ``episodes`` (start, end ms) against a labelled series. The NAB score
    uses NAB's windows (``nab``) or, for point labels, each labelled interval as a window (the
    NAB-style change-point score; None without any)."""
    pts = predicted_points(s.ts, episodes)
    pm = point_metrics(s.point_labels(), pts, skip=s.train)
    scored_from = s.ts[s.train] if s.train < len(s.ts) else s.ts[-1] + 1
    em = episode_metrics(s.intervals(), episodes, scored_from=scored_from)
    raw = norm = None
    windows = s.windows if nab else s.intervals()
    if windows:  # NAB's windows, or NAB-style: each labelled interval a window
        result = nab_score(s.ts, [a for a, _ in episodes], windows, probation=s.train)
        raw, norm = result.raw, result.normalized
    delays = [d / 1000.0 for d in em.delays_ms]
    label_delays = []
    for (a, b), mark in zip(s.windows, s.label_ts, strict=False):
        hits = [start for start, end in episodes if start <= b and end >= a]
        if hits:
            label_delays.append((min(hits) - mark) / 1000.0)
    scored_ms = s.ts[-1] - scored_from if s.ts and scored_from <= s.ts[-1] else 0
    return EvalResult(s.name, len(s.ts), em.intervals, em.detected, em.false_episodes, raw, norm,
                      pm.f1, pm.precision, pm.recall, pm.false_alarm_rate, pm.missed_alarm_rate,
                      statistics.median(delays) if delays else None, delays, label_delays,
                      pm.tp, pm.fp, pm.tn, pm.fn, scored_ms)


def pooled(results: Sequence[EvalResult], name: str = "pooled") -> EvalResult:
    """Results of several files pooled as the SKAB leaderboard does: point-wise metrics from the
    sums of the confusion counts (the files' predictions concatenated), delays and episodes
    over all files; the NAB score is the mean of the files'.

    >>> a = EvalResult("a", 10, 1, 1, 0, None, None, 0, 0, 0, 0, 0, 5.0, [5.0], tp=3, fp=1, tn=5, fn=1)
    >>> b = EvalResult("b", 10, 1, 0, 1, None, None, 0, 0, 0, 0, 0, None, [], tp=0, fp=0, tn=8, fn=2)
    >>> p = pooled([a, b])
    >>> (p.tp, p.fp, p.tn, p.fn, round(p.f1, 3), round(p.false_alarm_rate, 3), p.detected, p.windows)
    (3, 1, 13, 3, 0.6, 0.071, 1, 2)
    """
    tp, fp, tn, fn = (sum(getattr(r, k) for r in results) for k in ("tp", "fp", "tn", "fn"))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    delays = [d for r in results for d in r.delays_s]
    nabs = [r.nab_score for r in results if r.nab_score is not None]
    raws = [r.nab_raw for r in results if r.nab_raw is not None]
    speeds = [r.points_per_s for r in results if r.points_per_s is not None]
    return EvalResult(
        name, sum(r.rows for r in results), sum(r.windows for r in results),
        sum(r.detected for r in results), sum(r.false_alarm_episodes for r in results),
        sum(raws) if raws else None, statistics.fmean(nabs) if nabs else None, f1, prec, rec,
        fp / (fp + tn) if fp + tn else 0.0, fn / (tp + fn) if tp + fn else 0.0,
        statistics.median(delays) if delays else None, delays,
        [d for r in results for d in r.label_delays_s], tp, fp, tn, fn,
        sum(r.scored_ms for r in results), statistics.fmean(speeds) if speeds else None)


def evaluate_offline(series: Sequence[LabelledSeries], cfg: AnomalyConfig, *,
                     nab: bool) -> list[EvalResult]:
    """Score series through :func:`run_offline` (the operator without the flow); every file's
    result carries the run's throughput."""
    measurements = list(series_measurements(series))
    t0 = time.perf_counter()
    rows = run_offline(measurements, cfg)
    speed = len(measurements) / max(time.perf_counter() - t0, 1e-9)
    found = episodes_by_machine(rows)
    out = []
    for s in series:
        r = score_series(s, found.get(s.name, []), nab=nab)
        r.points_per_s = speed
        out.append(r)
    return out
