"""Machine-down alerts against the PLC simulator's true stops, via ``replay`` and ``kpi alerts``.

Every true unplanned stop (consecutive ``fault``/``idle`` intervals) that ended after more than
15 minutes must raise exactly one ``machine_down`` alert at ``start + 15 min + 1 ms`` and clear
it at the stop's end; shorter stops raise nothing; ``--open`` lists only alerts not cleared.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from plantstream.cli.main import app
from plantstream.schemas.config import build_config
from plantstream.simulators import plc

T0 = 1_763_791_200_000
RUN_MS = 8 * 3_600_000
DOWN = 15 * 60_000


def _true_down_episodes(truth: plc.GroundTruth, machine: str) -> list[tuple[int, int]]:
    """Consecutive fault/idle intervals merged into stops, (start, end)."""
    eps: list[tuple[int, int]] = []
    for s in truth.states:
        if s.machine != machine or s.state not in ("fault", "idle"):
            continue
        if eps and eps[-1][1] == s.start_ms:
            eps[-1] = (eps[-1][0], s.end_ms)
        else:
            eps.append((s.start_ms, s.end_ms))
    return eps


@pytest.mark.integration
def test_machine_down_alerts_match_the_true_stops_and_kpi_alerts_lists_them(
        tmp_path: Path, ch_dsn: str, ch_db: str) -> None:
    config = build_config({"microstop_threshold_s": 120}, {})
    line = plc.PlcLine(seed=21, machines=3, start_ms=T0, config=config, sample_ms=600_000)
    data = tmp_path / "run.jsonl"
    line.write_replay_file(data, T0 + RUN_MS)
    truth = line.ground_truth()
    cfg = tmp_path / "plant.yaml"
    cfg.write_text(yaml.safe_dump({"microstop_threshold_s": 120, "clickhouse": {"database": ch_db}}))

    runner = CliRunner()
    res = runner.invoke(app, ["replay", str(data), "--config", str(cfg), "--clickhouse", ch_dsn,
                              "--flows", "alerts"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["kpi", "alerts", "--config", str(cfg), "--clickhouse", ch_dsn, "--format", "json"])
    assert res.exit_code == 0, res.output
    alerts: list[dict[str, Any]] = orjson.loads(res.stdout)
    assert len({a["alert_id"] for a in alerts}) == len(alerts)  # one row per alert (latest state)

    checked = 0
    for machine in line.machine_ids:
        expected = [(start, end) for start, end in _true_down_episodes(truth, machine)
                    if end - start > DOWN and end < truth.end_ms]
        got = sorted((a["raised_at"], a["cleared_at"], a["status"]) for a in alerts
                     if a["machine"] == machine and a["rule"] == "machine_down" and a["status"] == "cleared")
        assert [(_ms(r), _ms(c)) for r, c, _ in got] == [(s + DOWN + 1, e) for s, e in expected], machine
        checked += len(expected)
    assert checked >= 3  # the run has long stops to check

    res = runner.invoke(app, ["kpi", "alerts", "--open", "--config", str(cfg), "--clickhouse", ch_dsn,
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    open_alerts = orjson.loads(res.stdout)
    assert {a["alert_id"] for a in open_alerts} == {a["alert_id"] for a in alerts if a["status"] == "raised"}
    assert all(a["cleared_at"] is None for a in open_alerts)


def _ms(value: str) -> int:
    """A JSON timestamp of ``kpi … --format json`` (UTC, ISO 8601) → epoch ms."""
    dt = datetime.fromisoformat(value)
    return round((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)
