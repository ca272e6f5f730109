"""ClickHouse down for 30 s in the middle of a replay: nothing lost, nothing duplicated.

The flow is the real one (``build_dataflow`` over the embedded Kafka broker) and the sink talks
HTTP to a ClickHouse endpoint (``tests/sinks/chdb_http.py``: ClickHouse's HTTP protocol in front
of chDB). The third insert is applied but its answer is lost, then the server goes away for
30 s (connections refused) and comes back on the same port. The sink must hold the flow back,
retry with backoff, and the query results must equal the input exactly.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from datetime import timedelta
from typing import Any

import orjson
import pytest
from bytewax.testing import run_main

from plantstream.connectors import clickhouse as chc
from plantstream.connectors import kafka
from plantstream.flows.archive import archive
from plantstream.flows.main import build_dataflow
from plantstream.flows.replay import produce_lines
from plantstream.flows.status import status
from plantstream.schemas.config import ClickHouseConfig, PlantConfig
from tests.sinks.chdb_http import ChdbHttpServer

T0 = 1_763_791_200_000
OUTAGE_S = 30.0


@pytest.mark.integration
def test_clickhouse_down_for_30s_loses_nothing_and_duplicates_nothing(
        kafka_conf: dict[str, Any], ch_dsn: str, ch_db: str, ch: Any) -> None:
    machines = [f"press-{i:02d}" for i in range(4)]
    lines: list[bytes] = []
    total: dict[str, float] = defaultdict(float)
    last_temp: dict[str, float] = {}
    for step in range(600):  # 10 minutes, one sample a second per machine
        for k, machine in enumerate(machines):
            temp = 40.0 + ((step * 13 + k * 7) % 97) / 10
            lines.append(orjson.dumps({"ts": T0 + step * 1000, "machine": machine,
                                       "metric": "temperature_c", "value": temp}))
            total[machine] += temp
            last_temp[machine] = temp
    malformed = [b'{"machine": "press-00", "metric": "x"}', b"not json at all"]
    assert produce_lines(kafka_conf, lines + malformed) == len(lines) + 2

    server = ChdbHttpServer(ch_dsn).start()
    outage: dict[str, float] = {}

    def go_down_then_back() -> None:
        server.stop()
        outage["down"] = time.monotonic()
        time.sleep(OUTAGE_S)
        server.start()
        outage["up"] = time.monotonic()

    server.drop_answer_of_insert = 3
    server.on_dropped = go_down_then_back
    try:
        config = PlantConfig.model_validate({
            "site": "plant-a", "lines": [{"id": "line-1", "machines": [{"id": m} for m in machines]}],
            "clickhouse": {"url": server.url, "database": ch_db, "batch_rows": 500,
                           "retry_initial_s": 0.5, "retry_max_s": 4.0},
        })
        assert isinstance(config.clickhouse, ClickHouseConfig)
        sink = chc.ClickHouseSink.from_config(config.clickhouse)
        flow = build_dataflow(config, kafka.KafkaInput(kafka_conf, stop="end", batch_size=200), sink,
                              flows={"archive": archive, "status": status})
        started = time.monotonic()
        run_main(flow, epoch_interval=timedelta(milliseconds=200))
        finished = time.monotonic()
    finally:
        server.close()

    # The outage happened while the flow ran, and the flow waited for ClickHouse to return.
    assert "up" in outage, "the server never went down: the flow wrote fewer than 3 batches"
    assert started < outage["down"] < outage["up"] < finished
    stats = sink.stats
    assert stats.retries >= 4 and stats.held_back_s >= OUTAGE_S - 8
    assert server.url in stats.last_error  # the failure names the unreachable server
    # One batch was applied twice (its first answer was lost): the retry really re-sent it.
    assert server.inserts == stats.batches + 1
    print(f"outage {OUTAGE_S:.0f}s: {stats.as_dict()}; wall {finished - started:.1f}s; "
          f"server inserts {server.inserts}/{server.insert_attempts} attempts")

    # Nothing lost, nothing duplicated: query results equal the input.
    got = ch.query("SELECT machine, count(), sum(value), argMax(value, ts) FROM measurements FINAL "
                   "GROUP BY machine ORDER BY machine").result_rows
    assert [(m, n) for m, n, _, _ in got] == [(m, 600) for m in machines]
    for m, _, s, last in got:
        assert math.isclose(s, total[m], rel_tol=1e-12) and last == last_temp[m]
    keys = ch.query("SELECT count(), uniqExact(machine, metric, ts) FROM measurements FINAL").result_rows
    assert keys == [(len(lines), len(lines))]
    assert ch.query("SELECT count() FROM deadletter FINAL").result_rows == [(2,)]
    status_rows = ch.query("SELECT machine, signals['temperature_c'], toUnixTimestamp64Milli(last_seen) "
                           "FROM machine_status FINAL ORDER BY machine").result_rows
    assert status_rows == [(m, last_temp[m], T0 + 599_000) for m in machines]
