"""Reading the live results of ``plantstream run`` through its read-only ClickHouse HTTP endpoint.

The simulated PLC line over OPC UA → ``plantstream init --opcua`` → ``plantstream run
--clickhouse-port 0`` (embedded Tansu broker, embedded chDB owned by the flows child, which
serves it at the URL written to ``state/endpoints.json``). While the run runs:

- ``plantstream kpi oee --clickhouse URL`` and ``kpi downtime --format json`` (through the URL,
  and through ``--state-dir state``, which finds it) return live rows, and they grow;
- a clickhouse-connect client through the URL gets typed rows (DateTime64, Nullable,
  LowCardinality, Enum8, arrays) — the same rows and types chDB returns after the run;
- INSERT/DROP/ALTER are refused (READONLY) and change nothing; bad SQL answers a ClickHouse
  error at once.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.run.test_run_opcua import EXE, _env, cli, init_config, start_simulator, stop_simulator

pytestmark = pytest.mark.integration


def kpi(tmp: Path, *args: str) -> tuple[list[dict[str, Any]], float]:
    t0 = time.monotonic()
    rows = orjson.loads(cli(tmp, "kpi", *args, "--format", "json", timeout=60))
    assert isinstance(rows, list)
    return rows, time.monotonic() - t0


def same(rows: list[Any]) -> list[tuple[Any, ...]]:
    """Rows comparable with ``==`` (a string sample's ``value`` is NaN, and NaN != NaN)."""
    return [tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row) for row in rows]


SAMPLE = (
    "SELECT ts, machine, metric, value, value_str, quality, [metric, source] AS arr, "
    "nullIf(value_str, '') AS maybe FROM measurements FINAL WHERE ts < fromUnixTimestamp64Milli({cut:Int64}) "
    "ORDER BY machine, metric, ts LIMIT 3000"
)
STOPS = "SELECT machine, start, `end`, duration_s, category, version FROM downtime_events FINAL ORDER BY machine, start"


def test_kpi_and_clients_read_the_live_run_and_cannot_write(tmp_path: Path) -> None:
    sim, endpoint, _ = start_simulator(tmp_path)
    try:
        init_config(tmp_path, endpoint)
        log_path = tmp_path / "run.log"
        log = log_path.open("wb")
        run = subprocess.Popen(
            [EXE, "run", "--config", "plant.yaml", "--duration", "45", "--no-live", "--log-every", "5",
             "--state-dir", "state", "--clickhouse-port", "0"],
            cwd=tmp_path, env=_env(), stdout=log, stderr=log,
        )
        try:
            ep_file = tmp_path / "state" / "endpoints.json"
            deadline = time.monotonic() + 120
            while not ep_file.exists():
                assert time.monotonic() < deadline and run.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.3)
            ep = json.loads(ep_file.read_text())
            url = ep["clickhouse"]["url"]
            assert url.startswith("http://127.0.0.1:") and ep["clickhouse"]["read_only"] is True
            assert ep["kafka"]["bootstrap"] and ep["pid"] == run.pid
            # live OEE and stops through the endpoint, while the run writes them
            t0 = time.monotonic()
            while True:
                assert run.poll() is None, log_path.read_text()[-4000:]
                try:
                    oee, _ = kpi(tmp_path, "oee", "--clickhouse", url, "--wide")
                    stops, _ = kpi(tmp_path, "downtime", "--clickhouse", url)
                except AssertionError:
                    oee, stops = [], []
                if oee and stops:
                    break
                assert time.monotonic() - t0 < 120, log_path.read_text()[-4000:]
                time.sleep(1)
            print(f"first live OEE and stops {time.monotonic() - t0:.1f}s after the endpoint was announced")
            assert f"ClickHouse HTTP (read-only) for Grafana and plantstream kpi: {url}" in log_path.read_text()
            first_planned = sum(r["planned_min"] or 0 for r in oee)
            first_stops = len(stops)

            client = clickhouse_connect.get_client(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]))
            # the cut halves what has landed so far (the simulated line's clock runs fast, but how far
            # it is after the first OEE window varies with the machine's load)
            lo, hi = client.query(
                "SELECT toUnixTimestamp64Milli(min(ts)), toUnixTimestamp64Milli(max(ts)) FROM measurements"
            ).result_rows[0]
            assert hi > lo, (lo, hi)
            cut = lo + (hi - lo) // 2 + 1
            time.sleep(3)  # every sample before the cut has landed
            live = client.query(SAMPLE, parameters={"cut": cut})
            assert live.result_rows, "no measurements before the cut"
            live_stops = client.query(STOPS)
            count = client.command("SELECT count() FROM downtime_events")
            for sql in ("INSERT INTO downtime_events (machine, start) VALUES ('x', now64(3))",
                        "DROP TABLE downtime_events", "ALTER TABLE measurements DELETE WHERE 1",
                        "TRUNCATE TABLE measurements"):
                with pytest.raises(DatabaseError) as info:
                    client.command(sql)
                assert info.value.code == 164 and "READONLY" in str(info.value)
            t1 = time.monotonic()
            with pytest.raises(DatabaseError) as info:
                client.query("SELECT machine FROM downtime_events WHERE")
            assert info.value.code == 62 and time.monotonic() - t1 < 5
            assert client.command("SELECT count() FROM downtime_events") >= count  # nothing dropped

            # later: more facts, more stops; --state-dir finds the endpoint through endpoints.json
            time.sleep(8)
            oee2, took_oee = kpi(tmp_path, "oee", "--clickhouse", url, "--wide")
            stops2, took_stops = kpi(tmp_path, "downtime", "--state-dir", "state")
            status_rows, _ = kpi(tmp_path, "downtime", "--state-dir", "state", "--machine", stops2[0]["machine"])
            print(f"kpi oee {took_oee:.2f}s, kpi downtime --state-dir {took_stops:.2f}s (CLI start included); "
                  f"planned min {first_planned:.1f} → {sum(r['planned_min'] or 0 for r in oee2):.1f}, "
                  f"stops {first_stops} → {len(stops2)}")
            assert sum(r["planned_min"] or 0 for r in oee2) > first_planned
            assert len(stops2) >= first_stops and status_rows
            assert took_stops < 10  # the CLI start included; the query itself takes milliseconds
            client.close()
            assert run.wait(timeout=180) == 0, log_path.read_text()[-4000:]
        finally:
            if run.poll() is None:
                run.terminate()
                run.wait(timeout=60)
    finally:
        stop_simulator(sim, tmp_path)
    assert not (tmp_path / "state" / "endpoints.json").exists()
    # after the run: chDB itself returns the same typed rows
    after = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'state' / 'clickhouse'}")
    try:
        want = after.query(SAMPLE, parameters={"cut": cut})
        assert [t.name for t in live.column_types] == [t.name for t in want.column_types]
        names = dict(zip(live.column_names, (t.name for t in live.column_types), strict=True))
        assert names["ts"] == "DateTime64(3, 'UTC')" and names["machine"] == "LowCardinality(String)"
        assert names["maybe"] == "Nullable(String)" and names["arr"] == "Array(LowCardinality(String))"
        assert names["quality"].startswith("Enum8(")
        assert same(live.result_rows) == same(want.result_rows)
        stops_after = after.query(STOPS)
        assert [t.name for t in live_stops.column_types] == [t.name for t in stops_after.column_types]
        assert dict(zip(live_stops.column_names, (t.name for t in live_stops.column_types), strict=True))[
            "end"] == "Nullable(DateTime64(3, 'UTC'))"
        seen = {(r[0], r[1]) for r in stops_after.result_rows}
        assert all((r[0], r[1]) in seen for r in live_stops.result_rows)  # every live stop is kept
    finally:
        after.close()
