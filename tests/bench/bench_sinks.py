"""Benchmark of the result sinks: ClickHouse insert throughput and the machine twin's cost.

Run: ``.venv/bin/python tests/bench/bench_sinks.py [--rows N]``. Figures:

- ClickHouse sink into embedded chDB (``measurements`` rows, batches of 10 000 and 50 000), with
  and without ``insert_deduplication_token`` (the hash of each batch): rows per second, batch
  latency p50/p99, and the share of time spent hashing;
- the ``status`` flow (machine twin) on one Bytewax worker over 100 machines × 10 signals:
  samples per second and rows written;
- the cloud meter: bytes sent vs raw bytes for the same stream with hourly rollups.

Prints a table and writes ``tests/bench/results/bench_sinks.json``. No timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from plantstream.connectors import clickhouse as chc
from plantstream.flows.registry import FlowContext
from plantstream.flows.status import status
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import Measurement

T0 = 1_763_791_200_000


def measurement_rows(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [("measurements", {"ts": T0 + i * 10, "site": "plant-a", "line": "line-1",
                              "machine": f"m{i % 100:03d}", "metric": "temperature_c",
                              "value": 20.0 + (i % 500) / 10, "value_str": "", "unit": "degC",
                              "source": "bench", "quality": "good"}) for i in range(n)]


def bench_clickhouse(dsn: str, rows: int, batch_rows: int, dedup: bool) -> dict[str, Any]:
    db = f"bench_{batch_rows}_{int(dedup)}"
    client = chc.connect(dsn, database=db)
    chc.migrate(client)
    data = measurement_rows(rows)
    sink = chc.ClickHouseSink(lambda: chc.connect(dsn, database=db), batch_rows=batch_rows,
                              dedup_tokens=dedup)
    part = sink.build_part("out", "clickhouse-0", None)
    started = time.perf_counter()
    for i in range(0, rows, 1000):
        part.write_batch(data[i:i + 1000])
    part.close()
    seconds = time.perf_counter() - started
    blocks = [[list(r.values()) for _, r in data[i:i + batch_rows]] for i in range(0, rows, batch_rows)]
    columns = tuple(data[0][1])
    t0 = time.perf_counter()
    for block in blocks:
        chc.dedup_token("measurements", columns, block)
    hash_s = time.perf_counter() - t0
    stored = client.query("SELECT count() FROM measurements").result_rows[0][0]
    client.command(f"DROP DATABASE {db} SYNC")
    client.close()
    s = sink.stats
    return {"rows": rows, "batch_rows": batch_rows, "dedup_tokens": dedup, "stored": stored,
            "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds),
            "batches": s.batches, "latency_p50_s": round(s.latency(0.5), 4),
            "latency_p99_s": round(s.latency(0.99), 4),
            "hash_share": round(hash_s / seconds, 3) if dedup else 0.0}


def bench_status(machines: int, seconds: int) -> dict[str, Any]:
    signals = [f"signal_{k}" for k in range(10)]
    samples = [Measurement(T0 + t * 1000, f"m{m:03d}", sig, float((t * 7 + m + k) % 50), site="plant-a",
                           line="line-1")
               for t in range(seconds) for m in range(machines) for k, sig in enumerate(signals)]
    flow = Dataflow("bench_status")
    ms = op.input("in", flow, TestingSource(samples, batch_size=1000))
    results = status(FlowContext(PlantConfig()), ms)
    out: list[Any] = []
    op.output("out", results["machine_status"], TestingSink(out))
    started = time.perf_counter()
    run_main(flow, epoch_interval=timedelta(seconds=2))
    took = time.perf_counter() - started
    return {"machines": machines, "event_seconds": seconds, "samples": len(samples),
            "seconds": round(took, 3), "samples_per_s": round(len(samples) / took), "rows": len(out)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    dsn = f"chdb://{tempfile.mkdtemp(prefix='bench-sinks-')}"
    results: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version(),
                               "clickhouse": [], "status": None}
    bench_clickhouse(dsn, 20_000, 10_000, False)  # warm-up: the first chDB database and inserts
    print(f"{'batch':>7} {'dedup':>5} {'rows/s':>9} {'p50 s':>7} {'p99 s':>7} {'hash':>6}")
    for batch_rows in (10_000, 50_000):
        for dedup in (False, True):
            r = bench_clickhouse(dsn, args.rows, batch_rows, dedup)
            results["clickhouse"].append(r)
            print(f"{batch_rows:>7} {dedup!s:>5} {r['rows_per_s']:>9,} {r['latency_p50_s']:>7} "
                  f"{r['latency_p99_s']:>7} {r['hash_share']:>6.1%}")
    st = bench_status(100, 120)
    results["status"] = st
    print(f"status flow: {st['samples']:,} samples of 100 machines in {st['seconds']} s = "
          f"{st['samples_per_s']:,}/s, {st['rows']:,} machine_status rows")
    out = Path(__file__).parent / "results" / "bench_sinks.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
