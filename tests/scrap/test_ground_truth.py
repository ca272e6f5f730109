"""Scrap against the PLC simulator's ground truth, through ``plantstream replay`` and ``kpi scrap``.

The simulator knows every reject: its reason (``rejects_by_reason``), its work order and part
(``work_order`` records with good/reject), so the scrap quantities, the Pareto by reason, the
scrap rate and first-pass yield per machine and per part, and the costs from a work-order file
generated from the simulator's work orders must match exactly.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from plantstream.cli.main import app
from plantstream.schemas.config import build_config
from plantstream.simulators import plc

T0 = 1_763_791_200_000  # 2025-11-22T06:00Z
RUN_MS = 4 * 3_600_000
MATERIAL = {"P-100": 2.5, "P-200": 0.75, "P-300": 4.125}
LABOR_RATE, LABOR_S = 36.0, 2.0  # 0.02 per scrapped unit


def _kpi(runner: CliRunner, cfg: Path, dsn: str, by: str) -> list[dict[str, Any]]:
    res = runner.invoke(app, ["kpi", "scrap", "--by", by, "--config", str(cfg), "--clickhouse", dsn,
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    rows: list[dict[str, Any]] = orjson.loads(res.stdout)
    return rows


@pytest.mark.integration
def test_scrap_quantities_rates_costs_and_pareto_match_the_plc_ground_truth(
    tmp_path: Path, ch_dsn: str, ch_db: str
) -> None:
    config = build_config({"microstop_threshold_s": 120}, {})
    line = plc.PlcLine(seed=11, machines=3, start_ms=T0, config=config, sample_ms=600_000)
    data = tmp_path / "run.jsonl"
    line.write_replay_file(data, T0 + RUN_MS)
    truth = line.ground_truth()

    # work-order reference data generated from the simulator's work orders (deterministic)
    wo_file = tmp_path / "workorders.jsonl"
    wo_file.write_bytes(b"".join(orjson.dumps({
        "work_order": w.work_order, "part_number": w.part_number, "material_cost": MATERIAL[w.part_number],
        "labor_rate": LABOR_RATE, "labor_s_per_unit": LABOR_S, "currency": "EUR"}) + b"\n"
        for w in truth.work_orders))
    cfg = tmp_path / "plant.yaml"
    cfg.write_text(yaml.safe_dump({"microstop_threshold_s": 120, "clickhouse": {"database": ch_db},
                                   "scrap": {"workorders_file": str(wo_file),
                                             "reasons": {"tool_wear": "tooling"}}}))
    runner = CliRunner()
    res = runner.invoke(app, ["replay", str(data), "--config", str(cfg), "--clickhouse", ch_dsn,
                              "--flows", "scrap"])
    assert res.exit_code == 0, res.output

    # per machine: rejects, production and rate exactly as simulated; cost from the work orders
    wo_cost: dict[str, float] = defaultdict(float)
    for w in truth.work_orders:
        wo_cost[w.machine] += w.reject * (MATERIAL[w.part_number] + LABOR_RATE * LABOR_S / 3600)
    by_machine = {r["machine"]: r for r in _kpi(runner, cfg, ch_dsn, "machine")}
    assert set(by_machine) == set(truth.counts)
    for machine, counts in truth.counts.items():
        r = by_machine[machine]
        assert r["quantity"] == counts["reject"] > 0
        assert r["produced"] == counts["total"]
        assert r["scrap_rate"] == pytest.approx(counts["reject"] / counts["total"], rel=1e-12)
        assert r["cost"] == pytest.approx(wo_cost[machine], rel=1e-9)
        assert r["all_costed"] == 1

    # the Pareto by reason: quantities, order and shares
    truth_reasons: dict[str, int] = defaultdict(int)
    for counts in truth.counts.values():
        for reason, n in counts["rejects_by_reason"].items():
            truth_reasons[reason] += n
    pareto = _kpi(runner, cfg, ch_dsn, "reason")
    assert {r["reason"]: r["quantity"] for r in pareto} == truth_reasons
    assert [r["quantity"] for r in pareto] == sorted(truth_reasons.values(), reverse=True)
    all_rejects = sum(truth_reasons.values())
    for r in pareto:
        assert r["share"] == pytest.approx(truth_reasons[r["reason"]] / all_rejects)
        expected_cat = {"tool_wear": "tooling", "startup": "startup"}.get(r["reason"], "production")
        assert r["category"] == expected_cat

    # first-pass yield and rate per part (the simulator's work orders carry good/reject per part)
    part_truth: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for w in truth.work_orders:
        part_truth[w.part_number][0] += w.good
        part_truth[w.part_number][1] += w.reject
    by_part = {r["part_number"]: r for r in _kpi(runner, cfg, ch_dsn, "part")}
    for part, (good, reject) in part_truth.items():
        if good + reject == 0:
            continue
        r = by_part[part]
        assert (r["quantity"], r["produced"]) == (reject, good + reject)
        assert r["first_pass_yield"] == pytest.approx(good / (good + reject), rel=1e-12)

    # a period: --to a time no run of rejects spans gives the rejects before it
    cut = next(c for c in range(T0 + 2 * 3_600_000, T0 + RUN_MS, 60_000)
               if not any(s.start_ms < c <= s.end_ms for s in truth.scrap))
    res = runner.invoke(app, ["kpi", "scrap", "--by", "machine", "--to", str(cut), "--config", str(cfg),
                              "--clickhouse", ch_dsn, "--format", "json"])
    assert res.exit_code == 0, res.output
    before = {r["machine"]: r["quantity"] for r in orjson.loads(res.stdout)}
    for machine in truth.counts:
        assert before.get(machine, 0) == sum(s.quantity for s in truth.scrap
                                             if s.machine == machine and s.end_ms < cut)

    # the line (the simulator puts every machine on one line)
    [line_row] = _kpi(runner, cfg, ch_dsn, "line")
    assert line_row["quantity"] == sum(c["reject"] for c in truth.counts.values())
    assert line_row["produced"] == sum(c["total"] for c in truth.counts.values())
