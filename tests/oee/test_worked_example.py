"""The oee.com worked example through ``plantstream replay`` and ``plantstream kpi``."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from plantstream.cli.main import app
from tests.oee import worked


@pytest.mark.integration
def test_worked_example_through_replay_gives_the_published_oee(
    tmp_path: Path, ch_dsn: str, ch_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the embedded broker's work directory goes to the test's tmp
    cfg = tmp_path / "plant.yaml"
    cfg.write_text(yaml.safe_dump(worked.CONFIG | {"clickhouse": {"database": ch_db}}))
    data = tmp_path / "shift.jsonl"
    # The operator types a reason for the first fault (07:00-07:20) ten minutes after it ended.
    reason = {"ts": worked.local_ms(7, 30), "machine": "press-01", "metric": "reason_code",
              "value": "seal replaced"}
    stream = sorted([*worked.measurements(), reason], key=lambda m: int(m["ts"]))  # type: ignore[call-overload]
    data.write_bytes(worked.jsonl(stream))
    runner = CliRunner()
    res = runner.invoke(app, ["replay", str(data), "--config", str(cfg), "--clickhouse", ch_dsn,
                              "--flows", "oee", "--format", "json"])
    assert res.exit_code == 0, res.output

    res = runner.invoke(app, ["kpi", "oee", "--by", "machine,shift", "--config", str(cfg),
                              "--clickhouse", ch_dsn, "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = orjson.loads(res.stdout)
    assert len(rows) == 1
    r = rows[0]
    assert (r["machine"], r["line"], r["site"], r["shift"], r["day"]) == (
        "press-01", "line-1", "plant-a", "early", "2026-11-23")
    assert r["planned_min"] == pytest.approx(420, abs=1e-6)
    assert r["run_min"] == pytest.approx(373, abs=1e-6)
    assert r["unplanned_stop_min"] == pytest.approx(47, abs=1e-6)
    assert r["excluded_min"] == pytest.approx(60, abs=1e-6)
    assert (r["total"], r["good"], r["reject"]) == (19_271, 19_271 - 423, 423)
    assert 100 * r["availability"] == pytest.approx(88.81, abs=0.05)
    assert 100 * r["performance"] == pytest.approx(86.11, abs=0.05)
    assert 100 * r["quality"] == pytest.approx(97.80, abs=0.05)
    assert 100 * r["oee"] == pytest.approx(74.79, abs=0.05)
    # OEE = good count x ideal cycle / planned production time: both forms agree.
    oee_good = r["good"] * 1.0 / (r["planned_min"] * 60)
    assert r["oee"] == pytest.approx(oee_good, rel=1e-9)
    # TEEP = OEE x planned / all time: all time is the 8 h of the shift the machine was seen.
    assert r["teep"] == pytest.approx(r["oee"] * 420 / 480, rel=1e-9)

    res = runner.invoke(app, ["kpi", "downtime", "--config", str(cfg), "--clickhouse", ch_dsn,
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    events = orjson.loads(res.stdout)
    stops = [(e["state"], e["duration_s"], e["fault_code"], e["reason"], e["category"], e["planned"])
             for e in events]
    assert stops == [
        ("fault", 1200.0, "E-HYD", "seal replaced", "mechanical", 0),
        ("fault", 1620.0, "E-ELEC", "drive trip", "electrical", 0),
    ]
