"""Work-order reference data from the compacted topic ``plantstream.workorders``, on a real broker.

The scrap flow reads the measurements topic and, as its second input, the work-order topic; the
join costs every scrap event whichever input is read first, and a malformed reference record is
dead-lettered with its reason.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from plantstream.connectors import kafka
from plantstream.flows.registry import select
from plantstream.flows.replay import produce_lines, run_flow_to_end
from plantstream.schemas.config import build_config
from plantstream.simulators import plc

T0 = 1_763_791_200_000


@pytest.mark.integration
def test_scrap_costs_join_the_workorders_topic(kafka_conf: dict[str, Any], ch_dsn: str, ch_db: str, ch: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = build_config({"microstop_threshold_s": 120, "kafka": {"bootstrap_servers": kafka_conf["bootstrap.servers"]},
                           "clickhouse": {"database": ch_db}}, {})
    line = plc.PlcLine(seed=4, machines=2, start_ms=T0, config=config, sample_ms=600_000)
    measurements = [m.to_json() for m in line.run(T0 + 2 * 3_600_000)]
    truth = line.ground_truth()
    material = {p: 0.5 + i for i, p in enumerate(sorted({w.part_number for w in truth.work_orders}))}

    producer = Producer(kafka.producer_config(kafka_conf))
    for w in truth.work_orders:
        rec = {"work_order": w.work_order, "part_number": w.part_number,
               "material_cost": material[w.part_number], "labor_rate": 0, "currency": "USD"}
        producer.produce(kafka.WORKORDERS, orjson.dumps(rec), w.work_order.encode())
    producer.produce(kafka.WORKORDERS, b'{"work_order": "WO-X", "material_cost": "cheap"}', b"WO-X")
    producer.flush()
    produce_lines(kafka_conf, measurements)

    monkeypatch.setenv("PLANTSTREAM_STOP", "end")
    run_flow_to_end(config, kafka_conf, dsn=ch_dsn, flows=select("scrap"), results_to_kafka=False)

    rows = ch.query("SELECT machine, sum(quantity), sum(cost), min(costed), any(currency) "
                    "FROM scrap_events_latest GROUP BY machine").result_rows
    expected: dict[str, float] = defaultdict(float)
    for w in truth.work_orders:
        expected[w.machine] += w.reject * material[w.part_number]
    got = {m: (int(q), float(c), int(k), cur) for m, q, c, k, cur in rows}
    assert set(got) == {m for m, c in truth.counts.items() if c["reject"]}
    for machine, (qty, cost, all_costed, currency) in got.items():
        assert qty == truth.counts[machine]["reject"]
        assert cost == pytest.approx(expected[machine], rel=1e-12)
        assert (all_costed, currency) == (1, "USD")
    [(reason,)] = ch.query("SELECT reason FROM deadletter WHERE source LIKE 'kafka:plantstream.workorders%' "
                           "OR raw LIKE '%WO-X%'").result_rows
    assert "material_cost" in reason
