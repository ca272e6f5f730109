"""Abort and resume: the scrap and alerts flows killed mid-run and restarted from their recovery
snapshots write the same scrap events, scrap rates and alerts as an uninterrupted run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.errors import BytewaxRuntimeError

from plantstream.connectors import clickhouse as chc
from plantstream.flows.alerts import alerts
from plantstream.flows.replay import produce_lines, run_flow_to_end
from plantstream.flows.scrap import scrap
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.simulators import plc
from tests.flows.test_resume import Crash, crashing_after

T0 = 1_763_791_200_000
QUERIES = {
    "scrap_events": "SELECT * EXCEPT (stored_at, version) FROM scrap_events_latest ORDER BY machine, ts",
    "scrap_rate": "SELECT * EXCEPT (stored_at, version) FROM scrap_rate_latest ORDER BY scope, key, window_end",
    "alerts": "SELECT * EXCEPT (stored_at, version) FROM alerts_latest ORDER BY alert_id",
}


def config_for(db: str) -> PlantConfig:
    return build_config({"microstop_threshold_s": 120, "clickhouse": {"database": db}}, {})


def results(dsn: str, db: str) -> dict[str, list[tuple[Any, ...]]]:
    client = chc.connect(dsn, database=db)
    try:
        return {t: [tuple(r) for r in client.query(q).result_rows] for t, q in QUERIES.items()}
    finally:
        client.close()


@pytest.mark.integration
def test_scrap_and_alerts_resumed_mid_run_equal_an_uninterrupted_run(
    tmp_path: Path, kafka_conf: dict[str, Any], ch_dsn: str
) -> None:
    line = plc.PlcLine(seed=5, machines=2, start_ms=T0, config=config_for("x"), sample_ms=600_000)
    lines = [m.to_json() for m in line.run(T0 + 4 * 3_600_000)]
    assert produce_lines(kafka_conf, lines) == len(lines)
    suffix = tmp_path.name[-8:].replace("-", "_")

    ref_db = f"scrap_ref_{suffix}"
    chc.migrate(chc.connect(ch_dsn, database=ref_db))
    run_flow_to_end(config_for(ref_db), kafka_conf, dsn=ch_dsn, flows={"scrap": scrap, "alerts": alerts},
                    results_to_kafka=False)
    expected = results(ch_dsn, ref_db)
    assert all(len(rows) > 3 for rows in expected.values()), {t: len(r) for t, r in expected.items()}

    db = f"scrap_res_{suffix}"
    chc.migrate(chc.connect(ch_dsn, database=db))
    armed = [True]
    flows = {"scrap": scrap, "alerts": alerts, "crash": crashing_after(len(lines) // 2, armed)}
    recovery = tmp_path / "recovery"
    with pytest.raises((Crash, BytewaxRuntimeError)):
        run_flow_to_end(config_for(db), kafka_conf, dsn=ch_dsn, flows=flows, recovery_dir=recovery,
                        epoch_interval=timedelta(milliseconds=20), results_to_kafka=False)
    assert results(ch_dsn, db) != expected, "the crash must happen mid-run"
    run_flow_to_end(config_for(db), kafka_conf, dsn=ch_dsn, flows=flows, recovery_dir=recovery,
                    epoch_interval=timedelta(milliseconds=20), results_to_kafka=False)
    assert results(ch_dsn, db) == expected
