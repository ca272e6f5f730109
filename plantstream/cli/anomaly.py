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
- ``--format skab``: a SKAB experiment file or a folder of them (searched recursively), scored
  with the published protocol: the first 400 rows of a file are training, point-wise F1,
  false-alarm and missed-alarm rates on the rest; the NAB-style score takes each labelled
  interval as a window (see :mod:`plantstream.operators.anomaly_data`).

A directory PATH evaluates every data file in it and adds a pooled row: the point-wise metrics
from the summed confusion counts (the files' predictions concatenated, as the SKAB leaderboard
pools), false alarms per day of scored event time, and the replay's throughput (points/s).
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from plantstream.cli.common import (
    ClickHouseOpt,
    ColumnsOpt,
    ConfigOpt,
    FormatOpt,
    LineOpt,
    MachineOpt,
    RunStateOpt,
    ToOpt,
    WideOpt,
    clickhouse,
    config_from,
    kpi_filter,
)
from plantstream.cli.output import Col, View, check_format, emit
from plantstream.connectors import kpi
from plantstream.operators.anomaly_data import (
    EvalResult,
    LabelledSeries,
    merge_episodes,
    pooled,
    read_labelled_csv,
    read_nab,
    read_skab,
    score_series,
    series_measurements,
    skab_files,
)
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import ConfigError

__all__ = [
    "EvalResult",
    "LabelledSeries",
    "eval_anomaly",
    "evaluate",
    "kpi_anomalies",
    "load_series",
    "read_labelled_csv",
    "read_nab",
    "read_skab",
    "score_series",
    "series_lines",
]

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
    state_dir: RunStateOpt = None,
    fmt: FormatOpt = "table",
    columns: ColumnsOpt = None,
    wide: WideOpt = False,
) -> None:
    """Anomaly episodes: machine, model, start, end, max score, severity, signals, hypothesis."""
    check_format(fmt)
    flt = kpi_filter(since, end, machine=machine, line=line, start_option="--since")
    with clickhouse(clickhouse_dsn, config_from(config), state_dir) as client:
        rows = kpi.list_anomalies(client, flt, limit=limit, epoch_ms=epoch_ms)
    emit(ANOMALY_COLUMNS, rows, fmt, view=ANOMALIES_VIEW, selected=columns, wide=wide)


# -- evaluation -----------------------------------------------------------------------------------


def series_lines(series: Sequence[LabelledSeries]) -> list[bytes]:
    """The Measurements (JSON lines) of labelled series (:func:`series_measurements`)."""
    return [orjson.dumps({"ts": m.ts, "machine": m.machine, "metric": m.metric, "value": m.value,
                          "source": m.source}) for m in series_measurements(series)]


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
        lines = series_lines(series)
        data.write_bytes(b"\n".join(lines) + b"\n")
        t0 = time.perf_counter()
        replay(data, config, dsn=target, flows={"anomaly": anomaly}, workdir=work, database=db)
        speed = len(lines) / max(time.perf_counter() - t0, 1e-9)
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
    out = [score_series(s, merge_episodes(by_machine.get(s.name, [])), nab=nab) for s in series]
    for r in out:
        r.points_per_s = speed
    return out


def load_series(path: Path, fmt: str, *, labels: Path | None, signal: str, timestamp: str,
                label: str, train: int | None) -> list[LabelledSeries]:
    if fmt not in ("nab", "csv", "skab"):
        msg = f"--format must be nab, csv or skab, got {fmt!r}"
        raise ConfigError(msg)
    if not path.exists():
        msg = f"data set {str(path)!r} does not exist"
        raise ConfigError(msg)
    if fmt == "skab":
        files = skab_files(path)
        if not files:
            msg = f"no SKAB files (*.csv) in {str(path)!r}"
            raise ConfigError(msg)
        return [read_skab(f) if train is None else read_skab(f, train=train) for f in files]
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
    fmt: Annotated[str, typer.Option("--format", help="nab, csv or skab.")] = "nab",
    labels: Annotated[Path | None, typer.Option(help="NAB labels/windows JSON.")] = None,
    signal: Annotated[str, typer.Option(help="Metric name of a NAB file's value column.")] = "value",
    timestamp_column: Annotated[str, typer.Option(help="CSV timestamp column.")] = "timestamp",
    label_column: Annotated[str, typer.Option(help="CSV 0/1 label column.")] = "label",
    train: Annotated[int | None, typer.Option(
        help="Rows at the start of each file not scored (default: NAB probation, SKAB 400, csv 0).")] = None,
    warmup_s: Annotated[float | None, typer.Option(
        "--warmup-s", help="Override anomaly.warmup_s (seconds of running time that only learn).")] = None,
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
    if warmup_s is not None:
        anomaly = cfg.anomaly.model_dump(exclude_unset=True) | {"warmup_s": warmup_s}
        cfg = cfg.model_copy(update={"anomaly": type(cfg.anomaly).model_validate(anomaly)})
    series = load_series(path, fmt, labels=labels, signal=signal, timestamp=timestamp_column,
                         label=label_column, train=train)
    results = evaluate(series, cfg, nab=fmt == "nab", dsn=clickhouse_dsn)
    if output != "table":  # every metric, raw (and the pooled row for several files)
        data = [asdict(r) | {"false_episodes_per_day": r.false_episodes_per_day}
                for r in ([*results, pooled(results)] if len(results) > 1 else results)]
        if output == "json":
            sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            names = [k for k in data[0] if not k.endswith("delays_s")] if data else []
            emit(names, [[d[k] for k in names] for d in data], "csv")
        return
    if len(results) > 1:
        results = [*results, pooled(results)]
    cols = ["file", "rows", "windows hit", "false ep.", "false ep./day", "NAB", "F1", "FAR", "MAR",
            "delay s", "points/s"]
    rows = [[r.name, r.rows, f"{r.detected}/{r.windows}", r.false_alarm_episodes,
             r.false_episodes_per_day, r.nab_score, _fmt(r.f1), r.false_alarm_rate, r.missed_alarm_rate,
             r.median_delay_s, r.points_per_s]
            for r in results]
    # 80 columns: the per-day rate and the speed only when the terminal has room for them
    # (every metric is in --output json/csv); FAR and MAR are point-wise rates, delay the median.
    view = View(default=("file", "rows", "windows hit", "false ep.", "NAB", "F1", "FAR", "MAR", "delay s"),
                cols={"rows": Col("rows", "int"), "false ep.": Col("false ep.", "int"),
                      "false ep./day": Col("false ep./day", "min"), "NAB": Col("NAB", "min"),
                      "FAR": Col("FAR", "pct"), "MAR": Col("MAR", "pct"),
                      "delay s": Col("delay s", "int"), "points/s": Col("points/s", "int")})
    emit(cols, rows, "table", view=view, wide=Console().width >= 132,
         title=f"anomaly evaluation ({cfg.anomaly.detector}"
                                    f"{', process model' if cfg.anomaly.process else ''})")
