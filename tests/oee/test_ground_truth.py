"""OEE and downtime against the PLC simulator's ground truth: two 8-hour shifts via replay.

The simulator (``simulators/plc.py``) knows the true state intervals, counts per
shift and downtime events with their reasons. Its Measurement stream goes through
``plantstream replay`` (embedded Kafka, the oee flow, chDB) and ``plantstream kpi`` must give
planned, run and loss minutes within 0.1 % and exact counts per machine and shift, and one
downtime event per true stop with the true reason.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from plantstream.cli.main import app
from plantstream.schemas.config import build_config
from plantstream.simulators import plc

T0 = 1_763_791_200_000  # 2025-11-22T06:00Z, a Saturday
SHIFT_MS = 8 * 3_600_000
CONFIG = {
    "site": "plant-a",
    "timezone": "UTC",
    "shifts": [{"name": "day", "start": "06:00", "end": "14:00", "days": ["sat"],
                "breaks": [{"start": "09:00", "minutes": 15}, {"start": "11:30", "minutes": 30}]},
               {"name": "late", "start": "14:00", "end": "22:00", "days": ["sat"],
                "breaks": [{"start": "18:00", "minutes": 30}]}],
    "microstop_threshold_s": 120,
    "lateness": {"allowed_lateness_s": 60},
    "losses": {
        "fault_codes": {str(k): {"reason": r, "category": c} for k, (r, c) in plc.FAULT_CODES.items()},
        "reason_codes": {k: {"reason": k, "category": c} for k, c in plc.OPERATOR_REASONS.items()},
    },
}


@pytest.mark.integration
def test_two_8_hour_shifts_match_the_plc_ground_truth(
    tmp_path: Path, ch_dsn: str, ch_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the embedded broker's work directory goes to the test's tmp
    cfg_path = tmp_path / "plant.yaml"
    cfg_path.write_text(yaml.safe_dump(CONFIG | {"clickhouse": {"database": ch_db}}))
    config = build_config(CONFIG, {})
    line = plc.PlcLine(seed=7, machines=3, start_ms=T0 - 1_800_000, config=config, sample_ms=600_000)
    data = tmp_path / "shift.jsonl"
    line.write_replay_file(data, T0 + 2 * SHIFT_MS + 1_800_000)
    truth = line.ground_truth()

    runner = CliRunner()
    res = runner.invoke(app, ["replay", str(data), "--config", str(cfg_path), "--clickhouse", ch_dsn,
                              "--flows", "oee"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["kpi", "oee", "--by", "machine,shift", "--config", str(cfg_path),
                              "--clickhouse", ch_dsn, "--format", "json"])
    assert res.exit_code == 0, res.output
    got = {(r["machine"], r["shift"]): r for r in orjson.loads(res.stdout)}

    shift_counts = {(c["machine"], c["shift"]): c for c in truth.shift_counts}
    for machine in line.machine_ids:
        for shift, start, breaks_min in (("day", T0, 45), ("late", T0 + SHIFT_MS, 30)):
            end = start + SHIFT_MS
            ms = truth.state_ms(machine, start, end)
            micro = sum(min(s.end_ms, end) - max(s.start_ms, start) for s in truth.states
                        if s.machine == machine and s.microstop and s.end_ms > start and s.start_ms < end)
            expected_min = {
                "planned_min": ms.get("running", 0) + ms.get("idle", 0) + ms.get("fault", 0)
                + ms.get("setup", 0),
                "run_min": ms.get("running", 0) + micro,
                "small_stop_min": micro,
                "setup_min": ms.get("setup", 0),
                "unplanned_stop_min": ms.get("fault", 0) + ms.get("idle", 0) - micro,
                "excluded_min": ms.get("planned_stop", 0),
            }
            assert expected_min["planned_min"] == SHIFT_MS - breaks_min * 60_000
            row = got[(machine, shift)]
            for col, ms_value in expected_min.items():
                assert ms_value > 0 or col in ("small_stop_min", "setup_min")
                assert row[col] == pytest.approx(ms_value / 60_000, rel=1e-3), (machine, shift, col)
            truth_counts = shift_counts[(machine, shift)]
            assert (row["good"], row["reject"]) == (truth_counts["good"], truth_counts["reject"])
            assert row["total"] == truth_counts["good"] + truth_counts["reject"]
        # outside the shifts the machine is off: not scheduled, no counts
        off = got.get((machine, ""))
        assert off is None or (off["planned_min"] == 0 and off["total"] == 0)

    res = runner.invoke(app, ["kpi", "downtime", "--config", str(cfg_path), "--clickhouse", ch_dsn,
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    events = orjson.loads(res.stdout)

    def ms_of(iso: str | None) -> int | None:
        return None if iso is None else round(datetime.fromisoformat(iso).timestamp() * 1000)

    mine = sorted((e["machine"], ms_of(e["start"]), ms_of(e["end"]), e["state"], e["fault_code"],
                   e["reason"], e["category"], e["planned"], e["small_stop"]) for e in events)
    true = sorted((s.machine, s.start_ms, s.end_ms, s.state, str(s.fault_code) if s.fault_code else "",
                   s.reason, s.category, int(s.state == "setup"), int(s.microstop))
                  for s in truth.downtime())
    assert len(true) > 20
    assert mine == true
    # reasons typed in by operators after the stop arrived and were applied, one event each
    assert any(s.reason_code for s in truth.downtime())
