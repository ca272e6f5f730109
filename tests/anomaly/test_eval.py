"""``eval anomaly``: labelled data streamed through the anomaly flow via replay, then scored.

The NAB machine-temperature file (real data, labelled by Numenta; MIT) is kept in
``tests/anomaly/data/nab`` with its licence, so the tests run on any clone.
"""

from __future__ import annotations

import csv
import math
import uuid
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from plantstream.cli.anomaly import evaluate, read_nab
from plantstream.cli.main import app
from plantstream.schemas.config import PlantConfig
from tests.anomaly.synthetic import STEP_MS, T0, Plan, generate

pytestmark = pytest.mark.integration

NAB_DIR = Path(__file__).resolve().parent / "data" / "nab"
NAB_FILE = NAB_DIR / "machine_temperature_system_failure.csv"


def nab_file() -> Path:
    assert NAB_FILE.is_file(), f"NAB data missing from the repository: {NAB_FILE}"
    return NAB_FILE


def test_nab_machine_temperature_meets_the_bar(ch_dsn: str) -> None:
    series = read_nab(nab_file(), signal="temperature_c")
    assert len(series.ts) == 22_695 and len(series.windows) == 4 and series.train == 750
    [result] = evaluate([series], PlantConfig(), nab=True, dsn=ch_dsn,
                        database=f"nab_{uuid.uuid4().hex[:8]}")
    assert result.detected >= 3, f"only {result.detected} of 4 labelled windows detected"
    assert result.false_alarm_episodes <= 3
    assert result.nab_score is not None and math.isfinite(result.nab_score)
    # 3 windows hit early and 2 false positives cannot score below 50 on the standard profile
    assert result.nab_score > 50
    assert result.median_delay_s is not None and len(result.delays_s) == result.detected
    assert 0 <= result.false_alarm_rate < 0.01


def test_eval_csv_reports_pointwise_and_episode_metrics(tmp_path: Path, ch_dsn: str) -> None:
    """A generic labelled CSV (timestamp, signals, label) through the CLI, JSON out."""
    plan = Plan("csv-press", 1500, anomalies=[(600, 640, "overheat"), (1000, 1040, "bearing")])
    rows: dict[int, dict[str, float]] = {}
    for m in generate(plan):
        if m.metric != "machine_state":
            rows.setdefault(m.ts, {})[m.metric] = float(m.value)
    path = tmp_path / "press.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "ambient_temperature_c", "temperature_c", "vibration_rms_mms", "anomaly"])
        for ts, sig in sorted(rows.items()):
            i = (ts - T0) // STEP_MS
            label = int(any(a <= i <= b for a, b, _ in plan.anomalies))
            w.writerow([ts, sig["ambient_temperature_c"], sig["temperature_c"], sig["vibration_rms_mms"], label])
    result = CliRunner().invoke(app, [
        "eval", "anomaly", str(path), "--format", "csv", "--timestamp-column", "time",
        "--label-column", "anomaly", "--train", "300", "-o", "json", "--clickhouse", ch_dsn])
    assert result.exit_code == 0, result.output
    [r] = orjson.loads(result.stdout[result.stdout.index("["):])
    assert r["windows"] == 2 and r["detected"] == 2 and r["false_alarm_episodes"] == 0
    # an overheating episode outlasts its label by up to the thermal window (the rolling max
    # remembers the peak for 60 samples): false-alarm points after it, none missed inside
    assert r["f1"] > 0.6 and r["false_alarm_rate"] < 0.08 and r["missed_alarm_rate"] < 0.05
    assert r["median_delay_s"] is not None and r["median_delay_s"] <= 5 * 60


def test_missing_labels_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "lonely.csv"
    path.write_text("timestamp,value\n2024-01-01 00:00:00,1.0\n")
    result = CliRunner().invoke(app, ["eval", "anomaly", str(path)])
    assert result.exit_code != 0
    assert "labels" in str(result.exception) or "labels" in result.output
