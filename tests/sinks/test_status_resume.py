"""Abort and resume of the status flow: the twin after a crash and restart equals an
uninterrupted run's (Bytewax recovery snapshots of the per-machine twin + latest-version table)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.errors import BytewaxRuntimeError

from plantstream.connectors import clickhouse as chc
from plantstream.flows.replay import produce_lines, run_flow_to_end
from plantstream.flows.status import status
from plantstream.schemas.config import PlantConfig
from tests.flows.test_resume import Crash, crashing_after

T0 = 1_763_791_200_000
TWIN_SQL = ("SELECT machine, state, toUnixTimestamp64Milli(state_since), downtime_open, part_number, "
            "signals, toUnixTimestamp64Milli(last_seen), samples, version "
            "FROM machine_status FINAL ORDER BY machine")


def lines() -> list[bytes]:
    out = []
    states = ("running", "idle", "running", "fault", "running", "setup")
    for i in range(3000):
        machine = f"m{i % 3}"
        ts = T0 + (i // 3) * 1000
        value: str | float
        if i % 50 == 0:
            metric, value = "machine_state", states[(i // 50) % len(states)]
        elif i % 97 == 0:
            metric, value = "part_number", f"P-{i % 5}"
        else:
            metric, value = "temperature_c", 40 + (i % 13) / 2
        out.append(orjson.dumps({"ts": ts, "machine": machine, "metric": metric, "value": value}))
    return out


def config_for(db: str) -> PlantConfig:
    return PlantConfig.model_validate({"site": "plant-a", "clickhouse": {"database": db},
                                       "status": {"throttle_s": 30}})


@pytest.mark.integration
def test_a_restarted_status_flow_ends_with_the_same_twins(tmp_path: Path, kafka_conf: dict[str, Any],
                                                         ch_dsn: str) -> None:
    data = lines()
    assert produce_lines(kafka_conf, data) == len(data)
    suffix = tmp_path.name[-8:].replace("-", "_")
    run_flow_to_end(config_for(f"twin_ref_{suffix}"), kafka_conf, dsn=ch_dsn, flows={"status": status},
                    results_to_kafka=False)

    db = f"twin_resumed_{suffix}"
    armed = [True]
    flows = {"status": status, "crash": crashing_after(2_000, armed)}
    recovery = tmp_path / "recovery"
    with pytest.raises(BytewaxRuntimeError) as crashed:
        run_flow_to_end(config_for(db), kafka_conf, dsn=ch_dsn, flows=flows, recovery_dir=recovery,
                        epoch_interval=timedelta(milliseconds=1), results_to_kafka=False)
    assert isinstance(crashed.value.__cause__, Crash)
    run_flow_to_end(config_for(db), kafka_conf, dsn=ch_dsn, flows=flows, recovery_dir=recovery,
                    epoch_interval=timedelta(milliseconds=1), results_to_kafka=False)

    ref = chc.connect(ch_dsn, database=f"twin_ref_{suffix}")
    resumed = chc.connect(ch_dsn, database=db)
    try:
        expected = ref.query(TWIN_SQL).result_rows
        got = resumed.query(TWIN_SQL).result_rows
    finally:
        ref.close()
        resumed.close()
    assert len(expected) == 3 and [r[7] for r in expected] == [1000, 1000, 1000]
    assert got == expected
