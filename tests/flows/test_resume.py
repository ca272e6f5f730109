"""Abort and resume: a flow killed mid-stream and restarted writes the same rows as one that
was never interrupted (Bytewax recovery snapshots + idempotent ClickHouse tables)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Stream
from bytewax.errors import BytewaxRuntimeError

from plantstream.connectors import clickhouse as chc
from plantstream.flows.archive import archive
from plantstream.flows.registry import FlowContext, Results
from plantstream.flows.replay import produce_lines, run_flow_to_end
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import Measurement
from tests.flows.test_replay import valid_lines


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


def config_for(db: str) -> PlantConfig:
    return PlantConfig.model_validate({"site": "plant-a", "clickhouse": {"database": db}})


ROWS_SQL = ("select machine, metric, toUnixTimestamp64Milli(ts), toString(value), value_str "
            "from measurements final order by machine, metric, ts")


@pytest.mark.integration
def test_a_restarted_flow_writes_the_same_rows_as_an_uninterrupted_one(
    tmp_path: Path, kafka_conf: dict[str, Any], ch_dsn: str
) -> None:
    lines = [*valid_lines(6_000), b"broken line"]
    assert produce_lines(kafka_conf, lines) == len(lines)

    # Uninterrupted reference run.
    ref_db = f"ref_{tmp_path.name[-8:].replace('-', '_')}"
    run_flow_to_end(config_for(ref_db), kafka_conf, dsn=ch_dsn, flows={"archive": archive},
                    results_to_kafka=False)

    # Run that crashes part-way, then resumes from its recovery snapshots.
    db = f"resumed_{tmp_path.name[-8:].replace('-', '_')}"
    armed = [True]
    flows = {"archive": archive, "crash": crashing_after(4_000, armed)}
    recovery = tmp_path / "recovery"
    with pytest.raises(BytewaxRuntimeError) as crashed:
        run_flow_to_end(config_for(db), kafka_conf, dsn=ch_dsn, flows=flows, recovery_dir=recovery,
                        epoch_interval=timedelta(milliseconds=1), results_to_kafka=False)
    assert isinstance(crashed.value.__cause__, Crash)
    client = chc.connect(ch_dsn, database=db)
    try:
        partial = client.query("select count() from measurements final").result_rows[0][0]
        assert partial < 6_000, "the crash must happen before the end of the input"
        run_flow_to_end(config_for(db), kafka_conf, dsn=ch_dsn, flows=flows, recovery_dir=recovery,
                        epoch_interval=timedelta(milliseconds=1), results_to_kafka=False)
        resumed = client.query(ROWS_SQL).result_rows
        dead = client.query("select source, reason from deadletter final").result_rows
    finally:
        client.close()
    ref = chc.connect(ch_dsn, database=ref_db)
    try:
        expected = ref.query(ROWS_SQL).result_rows
        expected_dead = ref.query("select source, reason from deadletter final").result_rows
    finally:
        ref.close()
    assert len(expected) == 6_000
    assert resumed == expected
    assert dead == expected_dead and len(dead) == 1
