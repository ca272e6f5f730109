"""A late scrap reclassification through replay and ClickHouse: the events it covers are written
again with the new reason (and keep their cost), nothing is counted twice; a reject counter
sample older than the restatement horizon is dead-lettered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from plantstream.cli.main import app

T0 = 1_763_791_200_000
MIN = 60_000


def _m(minute: float, metric: str, value: Any) -> dict[str, Any]:
    return {"ts": T0 + int(minute * MIN), "machine": "press-01", "metric": metric, "value": value}


@pytest.mark.integration
def test_a_late_reclassification_restates_scrap_events_in_clickhouse(tmp_path: Path, ch_dsn: str,
                                                                       ch_db: str) -> None:
    samples = [_m(0, "work_order", "WO-7"), _m(0, "reject_count", 0), _m(0, "good_count", 0),
               _m(1, "scrap_reason", "burr")]
    samples += [_m(1 + k, "reject_count", k) for k in range(1, 6)]  # minutes 2..6: burr
    samples += [_m(7, "scrap_reason", "dent"), _m(8, "reject_count", 6), _m(9, "reject_count", 7),
                _m(30, "good_count", 100)]
    # 25 minutes late: the rejects from minute 4 on (until the dent) were porosity; and a reject
    # counter sample that cannot be placed any more (two days old: beyond the 24 h horizon)
    samples += [_m(4, "scrap_reason", "porosity"), _m(-2 * 24 * 60, "reject_count", 99)]
    data = tmp_path / "late.jsonl"
    data.write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in samples))
    wo = tmp_path / "wo.csv"
    wo.write_text("work_order,part_number,material_cost\nWO-7,P-1,1.25\n")
    cfg = tmp_path / "plant.yaml"
    cfg.write_text(yaml.safe_dump({"clickhouse": {"database": ch_db}, "scrap": {"workorders_file": str(wo)},
                                   "lateness": {"allowed_lateness_s": 60}}))
    runner = CliRunner()
    res = runner.invoke(app, ["replay", str(data), "--config", str(cfg), "--clickhouse", ch_dsn,
                              "--flows", "scrap", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.stdout)["deadlettered"] == 1  # the two-day-old reject
    res = runner.invoke(app, ["kpi", "scrap", "--by", "reason", "--config", str(cfg), "--clickhouse", ch_dsn,
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    got = {r["reason"]: (r["quantity"], r["cost"], r["all_costed"]) for r in orjson.loads(res.stdout)}
    assert got == {"burr": (2, 2.5, 1), "porosity": (3, 3.75, 1), "dent": (2, 2.5, 1)}
