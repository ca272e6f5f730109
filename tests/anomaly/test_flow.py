"""The anomaly flow end to end: Bytewax, the embedded broker, chDB, abort-and-resume, the CLI."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow, Stream
from bytewax.errors import BytewaxRuntimeError
from bytewax.testing import TestingSink, TestingSource, run_main
from typer.testing import CliRunner

from plantstream.cli.main import app
from plantstream.connectors import clickhouse as chc
from plantstream.flows.anomaly import anomaly
from plantstream.flows.registry import FlowContext, Results
from plantstream.flows.replay import produce_lines, run_flow_to_end
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import Measurement
from tests.anomaly.synthetic import Plan, generate, truth_ms

PLANS = [
    Plan("press-01", 1200, anomalies=[(500, 540, "overheat"), (900, 950, "bearing")], seed=1),
    Plan("press-02", 1200, anomalies=[(700, 760, "bearing")], stops=[(300, 340)], seed=2),
    Plan("cnc-01", 1200, anomalies=[(800, 830, "overheat")], seed=3),
]


def interleaved() -> list[Measurement]:
    ms = [m for p in PLANS for m in generate(p)]
    return sorted(ms, key=lambda m: m.ts)  # stable: per machine order kept


def test_flow_on_testing_source_finds_every_injected_anomaly() -> None:
    flow = Dataflow("anomaly_test")
    out: list[dict[str, Any]] = []
    results = anomaly(FlowContext(PlantConfig()), op.input("in", flow, TestingSource(interleaved())))
    op.output("out", results["anomalies"], TestingSink(out))
    run_main(flow)
    closed = [r for r in out if not r["is_open"] and r["model"] != "iso10816"]
    for plan in PLANS:
        mine = [r for r in closed if r["machine"] == plan.machine]
        for a, b in truth_ms(plan):
            assert any(r["start"] <= b and r["end"] >= a for r in mine), (plan.machine, a)
        assert len(mine) == len(plan.anomalies), mine


class Crash(RuntimeError):
    pass


def crashing_after(n: int, armed: list[bool]) -> Any:
    seen = [0]

    def crash_flow(ctx: FlowContext, measurements: Stream[Measurement]) -> Results:
        def check(step_id: str, m: Measurement) -> None:
            seen[0] += 1
            if armed[0] and seen[0] >= n:
                armed[0] = False
                raise Crash(f"simulated crash after {n} measurements")

        op.inspect("crash_check", measurements, check)
        return {}

    return crash_flow


ROWS_SQL = ("SELECT machine, model, toUnixTimestamp64Milli(start), toUnixTimestamp64Milli(`end`), "
            "score, threshold, severity, signals, hypothesis, points, is_open FROM anomalies FINAL "
            "ORDER BY machine, model, start")


def config_for(db: str) -> PlantConfig:
    return PlantConfig.model_validate({"site": "plant-a", "clickhouse": {"database": db}})


@pytest.mark.integration
def test_abort_and_resume_writes_the_same_anomalies(tmp_path: Path, kafka_conf: dict[str, Any],
                                                     ch_dsn: str) -> None:
    ms = interleaved()
    assert produce_lines(kafka_conf, [m.to_json() for m in ms]) == len(ms)
    suffix = tmp_path.name[-8:].replace("-", "_")
    ref_db, db = f"aref_{suffix}", f"ares_{suffix}"
    run_flow_to_end(config_for(ref_db), kafka_conf, dsn=ch_dsn, flows={"anomaly": anomaly},
                    results_to_kafka=False)

    armed = [True]
    flows = {"anomaly": anomaly, "crash": crashing_after(int(len(ms) * 0.6), armed)}
    recovery = tmp_path / "recovery"
    with pytest.raises((Crash, BytewaxRuntimeError)):
        run_flow_to_end(config_for(db), kafka_conf, dsn=ch_dsn, flows=flows, recovery_dir=recovery,
                        epoch_interval=timedelta(milliseconds=20), results_to_kafka=False)
    assert armed == [False], "the simulated crash must have fired"
    client = chc.connect(ch_dsn, database=db)
    ref = chc.connect(ch_dsn, database=ref_db)
    try:
        expected = ref.query(ROWS_SQL).result_rows
        partial = client.query(ROWS_SQL).result_rows
        assert len(partial) < len(expected), "the crash must happen before the last episode"
        run_flow_to_end(config_for(db), kafka_conf, dsn=ch_dsn, flows=flows, recovery_dir=recovery,
                        epoch_interval=timedelta(milliseconds=20), results_to_kafka=False)
        resumed = client.query(ROWS_SQL).result_rows
    finally:
        client.close()
        ref.close()
    n_truth = sum(len(p.anomalies) for p in PLANS)
    assert len([r for r in expected if r[1] != "iso10816"]) == n_truth
    assert all(r[10] is False or r[10] == 0 for r in expected)  # every episode closed at the end
    assert resumed == expected

    # plantstream kpi anomalies lists the same episodes
    cfg = tmp_path / "plant.yaml"
    cfg.write_text(f"site: plant-a\nclickhouse:\n  database: {ref_db}\n")
    result = CliRunner().invoke(app, ["kpi", "anomalies", "--format", "json", "--epoch-ms",
                                      "--clickhouse", ch_dsn, "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    listed = orjson.loads(result.stdout)
    assert {(e["machine"], e["model"], e["start"], e["end"]) for e in listed} == {
        (r[0], r[1], r[2], r[3]) for r in expected}
    for e in listed:
        assert set(e) >= {"machine", "start", "end", "score", "severity", "signals", "hypothesis"}
        assert 0 <= e["score"] <= 1 and e["severity"] in ("warning", "critical")
    result = CliRunner().invoke(app, ["kpi", "anomalies", "--format", "json", "--machine", "cnc-01",
                                      "--clickhouse", ch_dsn, "--config", str(cfg)])
    rfc = orjson.loads(result.stdout)
    assert [e["machine"] for e in rfc] == ["cnc-01"] and rfc[0]["start"].endswith("Z")
