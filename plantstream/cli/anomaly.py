"""``plantstream kpi anomalies`` and ``plantstream eval anomaly``.

``kpi anomalies`` lists anomaly episodes from ClickHouse. ``eval anomaly PATH`` streams a
labelled data set through the same anomaly operator, via ``replay`` (embedded broker, the
``anomaly`` flow, ClickHouse), and prints the standard metrics:

- ``--format nab``: a NAB data file (``timestamp,value``) with its labels JSON (``windows``),
  found beside it (``*labels*.json`` whose ``file`` names the CSV) or given by ``--labels``.
  Reports the NAB standard-profile score, windows detected, false-alarm episodes after the
  probation period, point-wise F1 / false-alarm / missed-alarm rates (points inside windows are
  the positives) and the detection delay.
- ``--format csv``: a generic labelled CSV: a timestamp column (RFC 3339, ``YYYY-MM-DD
  HH:MM:SS`` UTC or epoch ms), signal columns and a 0/1 label column; the first ``--train``
  rows are not scored (training).

A directory PATH evaluates every data file in it and adds a total row.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import orjson
import typer

from plantstream.cli.common import (
    ClickHouseOpt,
    ColumnsOpt,
    ConfigOpt,
    FormatOpt,
    LineOpt,
    MachineOpt,
    ToOpt,
    WideOpt,
    clickhouse,
    config_from,
    kpi_filter,
)
from plantstream.cli.output import Col, View, check_format, emit
from plantstream.connectors import kpi
from plantstream.operators.anomaly_eval import (
    episode_metrics,
    label_intervals,
    nab_score,
    point_metrics,
    predicted_points,
    probation_rows,
)
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import ConfigError
from plantstream.schemas.measurement import parse_ts

DETECTORS = ("zscore", "gaussian", "hst", "ilof", "ocsvm")
ANOMALY_COLUMNS = list(kpi.ANOMALY_COLUMNS)
ANOMALIES_VIEW = View(default=("machine", "model", "start", "score", "severity", "hypothesis"),
                      cols={"start": Col("start (UTC)"), "end": Col("end (UTC)"),
                            "score": Col("score", "num"), "threshold": Col("threshold", "num"),
                            "is_open": Col("open")},
                      title="Anomaly episodes")


def kpi_anomalies(
    machine: MachineOpt = None,
    line: LineOpt = None,
    since: Annotated[str | None, typer.Option(help="Episodes that end at or after this time "
                                                   "(RFC 3339 or epoch ms).")] = None,
    end: ToOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many episodes, newest first.")] = 1000,
    epoch_ms: Annotated[bool, typer.Option("--epoch-ms", help="start/end as epoch ms "
                                                               "(default RFC 3339).")] = False,
    clickhouse_dsn: ClickHouseOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
    columns: ColumnsOpt = None,
    wide: WideOpt = False,
) -> None:
    """Anomaly episodes: machine, model, start, end, max score, severity, signals, hypothesis."""
    check_format(fmt)
    flt = kpi_filter(since, end, machine=machine, line=line, start_option="--since")
    with clickhouse(clickhouse_dsn, config_from(config)) as client:
        rows = kpi.list_anomalies(client, flt, limit=limit, epoch_ms=epoch_ms)
    emit(ANOMALY_COLUMNS, rows, fmt, view=ANOMALIES_VIEW, selected=columns, wide=wide)


# -- evaluation -----------------------------------------------------------------------------------


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


def _ms(text: str) -> int:
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
            ts.append(_ms(row["timestamp"]))
            values.append(float(row["value"]))
    wins = [(_ms(a.split(".")[0]), _ms(b.split(".")[0])) for a, b in windows]
    marks = [_ms(t.split(".")[0]) for t in spec.get("label_timestamps", [])]
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
            ts.append(_ms(row[timestamp]))
            labels.append(1 if float(row[label] or 0) else 0)
            for c in sigs:
                signals[c].append(float(row[c]) if row[c] not in ("", None) else float("nan"))
    return LabelledSeries(path.stem, ts, signals, labels=labels, train=train)


def series_lines(series: Sequence[LabelledSeries]) -> list[bytes]:
    """The Measurements (JSON lines) of labelled series; machine = file name."""
    lines = []
    for s in series:
        for i, t in enumerate(s.ts):
            for name, values in s.signals.items():
                v = values[i]
                if v == v:  # not NaN
                    lines.append(orjson.dumps({"ts": t, "machine": s.name, "metric": name, "value": v,
                                               "source": "eval"}))
    return lines


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


def score_series(s: LabelledSeries, episodes: list[tuple[int, int]], *, nab: bool) -> EvalResult:
    """Metrics of detected ``episodes`` (start, end ms) against a labelled series."""
    pts = predicted_points(s.ts, episodes)
    pm = point_metrics(s.point_labels(), pts, skip=s.train)
    scored_from = s.ts[s.train] if s.train < len(s.ts) else s.ts[-1] + 1
    em = episode_metrics(s.intervals(), episodes, scored_from=scored_from)
    raw = norm = None
    if nab:
        result = nab_score(s.ts, [a for a, _ in episodes], s.windows, probation=s.train)
        raw, norm = result.raw, result.normalized
    delays = [d / 1000.0 for d in em.delays_ms]
    label_delays = []
    for (a, b), mark in zip(s.windows, s.label_ts, strict=False):
        hits = [start for start, end in episodes if start <= b and end >= a]
        if hits:
            label_delays.append((min(hits) - mark) / 1000.0)
    return EvalResult(s.name, len(s.ts), em.intervals, em.detected, em.false_episodes, raw, norm,
                      pm.f1, pm.precision, pm.recall, pm.false_alarm_rate, pm.missed_alarm_rate,
                      statistics.median(delays) if delays else None, delays, label_delays)


def evaluate(series: Sequence[LabelledSeries], config: PlantConfig, *, nab: bool,
             dsn: str | None = None, database: str | None = None,
             workdir: Path | None = None) -> list[EvalResult]:
    """Replay labelled series through the ``anomaly`` flow and score the episodes it writes."""
    from plantstream.connectors import clickhouse as ch
    from plantstream.flows.anomaly import anomaly
    from plantstream.flows.replay import replay

    db = database or f"eval_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="plantstream-eval-") as tmp:
        work = workdir or Path(tmp)
        target = dsn or f"chdb://{Path(tmp) / 'clickhouse'}"
        data = Path(tmp) / "eval.jsonl"
        data.write_bytes(b"\n".join(series_lines(series)) + b"\n")
        replay(data, config, dsn=target, flows={"anomaly": anomaly}, workdir=work, database=db)
        client = ch.connect(target, database=db)
        try:
            found = client.query(
                "SELECT machine, toUnixTimestamp64Milli(start), toUnixTimestamp64Milli(`end`) "
                "FROM anomalies FINAL WHERE model != 'iso10816' ORDER BY machine, start").result_rows
            if database is None:
                client.command(f"DROP DATABASE IF EXISTS {db}")
        finally:
            client.close()
    by_machine: dict[str, list[tuple[int, int]]] = {}
    for machine, start, end in found:
        by_machine.setdefault(machine, []).append((int(start), int(end)))
    return [score_series(s, _merge(by_machine.get(s.name, [])), nab=nab) for s in series]


def _merge(episodes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Episodes of several models of one machine, overlapping ones merged (one alarm)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(episodes):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def load_series(path: Path, fmt: str, *, labels: Path | None, signal: str, timestamp: str,
                label: str, train: int | None) -> list[LabelledSeries]:
    if fmt not in ("nab", "csv"):
        msg = f"--format must be nab or csv, got {fmt!r}"
        raise ConfigError(msg)
    if not path.exists():
        msg = f"data set {str(path)!r} does not exist"
        raise ConfigError(msg)
    files = sorted(p for p in path.glob("*.csv")) if path.is_dir() else [path]
    out = []
    for f in files:
        if fmt == "nab":
            s = read_nab(f, labels, signal)
            if train is not None:
                s.train = train
        else:
            s = read_labelled_csv(f, timestamp=timestamp, label=label, train=train or 0)
        out.append(s)
    return out


def _fmt(v: float | None, digits: int = 3) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def eval_anomaly(
    path: Annotated[Path, typer.Argument(help="Labelled data file or directory of them.")],
    fmt: Annotated[str, typer.Option("--format", help="nab or csv.")] = "nab",
    labels: Annotated[Path | None, typer.Option(help="NAB labels/windows JSON.")] = None,
    signal: Annotated[str, typer.Option(help="Metric name of a NAB file's value column.")] = "value",
    timestamp_column: Annotated[str, typer.Option(help="CSV timestamp column.")] = "timestamp",
    label_column: Annotated[str, typer.Option(help="CSV 0/1 label column.")] = "label",
    train: Annotated[int | None, typer.Option(
        help="Rows at the start of each file not scored (default: NAB probation, or 0 for csv).")] = None,
    detector: Annotated[str | None, typer.Option(
        help="Override the detector: zscore, gaussian, hst, ilof, ocsvm.")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table, json or csv.")] = "table",
    config: ConfigOpt = None,
    clickhouse_dsn: ClickHouseOpt = None,
) -> None:
    """Stream a labelled data set through the anomaly operator (via replay) and print the metrics."""
    check_format(output)
    cfg = config_from(config)
    if detector:
        if detector not in DETECTORS:
            msg = f"--detector {detector!r}: choose one of {', '.join(DETECTORS)}"
            raise ConfigError(msg)
        cfg = cfg.model_copy(update={"anomaly": cfg.anomaly.model_copy(update={"detector": detector})})
    series = load_series(path, fmt, labels=labels, signal=signal, timestamp=timestamp_column,
                         label=label_column, train=train)
    results = evaluate(series, cfg, nab=fmt == "nab", dsn=clickhouse_dsn)
    if output != "table":  # every metric, raw
        data = [asdict(r) for r in results]
        if output == "json":
            sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            names = [k for k in data[0] if not k.endswith("delays_s")] if data else []
            emit(names, [[d[k] for k in names] for d in data], "csv")
        return
    cols = ["file", "rows", "windows hit", "false alarms", "NAB score", "F1", "false-alarm rate",
            "missed-alarm rate", "median delay (s)"]
    rows = [[r.name, r.rows, f"{r.detected}/{r.windows}", r.false_alarm_episodes, _fmt(r.nab_score, 1),
             _fmt(r.f1), _fmt(r.false_alarm_rate, 4), _fmt(r.missed_alarm_rate), _fmt(r.median_delay_s, 0)]
            for r in results]
    emit(cols, rows, "table", title=f"anomaly evaluation ({cfg.anomaly.detector})")
