"""Abort and resume during a shift: the OEE flow killed mid-shift and restarted from its
recovery snapshots gives the same ``kpi oee`` and ``kpi downtime`` results as a run that was
never interrupted."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.errors import BytewaxRuntimeError
from typer.testing import CliRunner

from plantstream.cli.main import app
from plantstream.connectors import clickhouse as chc
from plantstream.flows.oee import oee
from plantstream.flows.replay import produce_lines, run_flow_to_end
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.simulators import plc
from tests.flows.test_resume import Crash, crashing_after
from tests.oee.test_ground_truth import CONFIG, T0


def config_for(db: str) -> PlantConfig:
    return build_config(CONFIG | {"clickhouse": {"database": db}}, {})


def kpis(dsn: str, db: str) -> tuple[Any, Any]:
    runner = CliRunner(env={"PLANTSTREAM__CLICKHOUSE__DATABASE": db})
    res = runner.invoke(app, ["kpi", "oee", "--by", "machine,shift", "--clickhouse", dsn, "--format", "json"])
    assert res.exit_code == 0, res.output
    dt = runner.invoke(app, ["kpi", "downtime", "--clickhouse", dsn, "--format", "json"])
    assert dt.exit_code == 0, dt.output
    return orjson.loads(res.stdout), orjson.loads(dt.stdout)


FACTS_SQL = ("SELECT * EXCEPT (stored_at) FROM oee_facts_latest "
             "ORDER BY machine, window_start, shift, part_number, work_order")


def facts(dsn: str, db: str) -> list[tuple[Any, ...]]:
    client = chc.connect(dsn, database=db)
    try:
        return [tuple(r) for r in client.query(FACTS_SQL).result_rows]
    finally:
        client.close()


@pytest.mark.integration
def test_oee_resumed_mid_shift_equals_an_uninterrupted_run(
    tmp_path: Path, kafka_conf: dict[str, Any], ch_dsn: str
) -> None:
    line = plc.PlcLine(seed=11, machines=2, start_ms=T0, config=config_for("x"), sample_ms=3_600_000)
    lines = [m.to_json() for m in line.run(T0 + 4 * 3_600_000)]
    oee_samples = sum(1 for raw in lines if b'"cycle_time_ms"' not in raw)
    assert produce_lines(kafka_conf, lines) == len(lines)

    ref_db = f"oee_ref_{tmp_path.name[-8:].replace('-', '_')}"
    chc.migrate(chc.connect(ch_dsn, database=ref_db))
    run_flow_to_end(config_for(ref_db), kafka_conf, dsn=ch_dsn, flows={"oee": oee}, results_to_kafka=False)

    db = f"oee_res_{tmp_path.name[-8:].replace('-', '_')}"
    chc.migrate(chc.connect(ch_dsn, database=db))
    armed = [True]
    flows = {"oee": oee, "crash": crashing_after(len(lines) // 2, armed)}
    recovery = tmp_path / "recovery"
    with pytest.raises((Crash, BytewaxRuntimeError)):
        run_flow_to_end(config_for(db), kafka_conf, dsn=ch_dsn, flows=flows, recovery_dir=recovery,
                        epoch_interval=timedelta(milliseconds=20), results_to_kafka=False)
    partial, _ = kpis(ch_dsn, db)
    expected = kpis(ch_dsn, ref_db)
    assert partial != expected[0], "the crash must happen mid-shift"
    run_flow_to_end(config_for(db), kafka_conf, dsn=ch_dsn, flows=flows, recovery_dir=recovery,
                    epoch_interval=timedelta(milliseconds=20), results_to_kafka=False)
    resumed = kpis(ch_dsn, db)
    assert oee_samples > 5_000
    assert len(expected[0]) == 2 and len(expected[1]) > 5
    # the same facts and events, row for row ...
    assert resumed[1] == expected[1]
    assert facts(ch_dsn, db) == facts(ch_dsn, ref_db)
    # ... and the same KPIs (sums may add floats in another order: equal to 1e-12)
    assert [r.keys() for r in resumed[0]] == [r.keys() for r in expected[0]]
    for got, want in zip(resumed[0], expected[0], strict=True):
        for k, v in want.items():
            assert got[k] == (pytest.approx(v, rel=1e-12) if isinstance(v, float) else v), k

