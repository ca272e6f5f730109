"""Benchmark: ClickHouse arrival latency with the cloud up vs unreachable (issue 14, item 3).

Run: ``.venv/bin/python tests/bench/bench_outbox.py [--seconds S] [--rate R] [--machines M]``.

One live dataflow (archive, OEE, status and alerts flows, the cloud export through the outbox)
reads the embedded Tansu broker and writes chDB; a second Tansu broker stands in for Event
Hubs. Measurements are produced at ``--rate`` samples per second over ``--machines`` machines;
every 0.25 s one marker sample (its own machine id) records when it was produced, and a poller
records when it is in ClickHouse. Two phases of ``--seconds`` each: the cloud up, then the
cloud unreachable (frozen with SIGSTOP). Prints p50/p99 of the arrival latency per phase and the
outbox lag at the end of each, and writes ``tests/bench/results/bench_outbox.json``. The issue
asks for p99 unchanged within 20 %. No timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from bytewax.testing import run_main
from confluent_kafka import Producer

from plantstream.connectors import clickhouse as chc
from plantstream.connectors import kafka
from plantstream.connectors.embedded import TansuBroker
from plantstream.connectors.eventhubs import BandwidthMeter, target_from_config
from plantstream.connectors.outbox import workers_from_config
from plantstream.flows.main import build_dataflow, create_topics
from plantstream.flows.registry import select
from plantstream.schemas.config import PlantConfig


def quantile(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--machines", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    local = TansuBroker(work / "local").start()
    cloud = TansuBroker(work / "cloud").start()
    conf = {"bootstrap.servers": local.bootstrap}
    machines = [f"m-{i:03d}" for i in range(args.machines)]
    config = PlantConfig.model_validate({
        "site": "plant-a",
        "lines": [{"id": "line-1", "machines": [{"id": m, "ideal_cycle_time_ms": 1000} for m in machines]}],
        "eventhubs": {"bootstrap_servers": cloud.bootstrap, "topic": "kpis", "oee_rollup_s": 0,
                      "event_cadence_s": 0},
    })
    dsn = f"chdb://{work / 'chdb'}"
    client = chc.connect(dsn, database="bench")
    chc.migrate(client)
    flows = select("archive,oee,status,alerts")
    create_topics(conf, flows, 4)
    kafka.create_topics({"bootstrap.servers": cloud.bootstrap}, {"kpis": 1})
    target = target_from_config(config.eventhubs, {})
    meter = BandwidthMeter()
    workers = [w.start() for w in workers_from_config(config, conf, cloud=target, meter=meter)]
    stop_reading, stop_input = threading.Event(), threading.Event()
    sink = chc.ClickHouseSink(lambda: chc.connect(dsn, database="bench"))
    flow = build_dataflow(config, kafka.KafkaInput(conf, stop=stop_reading), sink, flows=flows,
                          kafka_sink=kafka.KafkaOutput(conf), cloud_meter=meter)
    runner = threading.Thread(target=run_main, args=(flow,), kwargs={"epoch_interval": timedelta(seconds=2)},
                              daemon=True)
    sent_at: dict[str, float] = {}
    arrived: dict[str, float] = {}
    phase_of: dict[str, str] = {}
    phase = ["cloud_up"]

    def feed() -> None:
        producer = Producer(kafka.producer_config(conf, **{"linger.ms": 5}))
        n, k, start = 0, 0, time.time()
        while not stop_input.is_set():
            now = time.time()
            due = int((now - start) * args.rate)
            while n < due:
                m = machines[n % len(machines)]
                ts = int(now * 1000)
                metric, value = (("good_count", n // len(machines)) if n % 3 else ("temperature_c", 40.0 + n % 7))
                producer.produce(kafka.MEASUREMENTS, orjson.dumps(
                    {"ts": ts, "machine": m, "metric": metric, "value": value}), m.encode())
                n += 1
            marker = f"marker-{k:06d}"
            sent_at[marker], phase_of[marker] = time.time(), phase[0]
            producer.produce(kafka.MEASUREMENTS, orjson.dumps(
                {"ts": int(time.time() * 1000), "machine": marker, "metric": "temperature_c", "value": 1.0,
                 "site": "plant-a", "line": "line-1"}), marker.encode())
            k += 1
            producer.poll(0)
            stop_input.wait(0.25)
        producer.flush(30)

    def poll() -> None:
        reader = chc.connect(dsn, database="bench")
        while not stop_reading.is_set():
            rows = reader.query("SELECT DISTINCT machine FROM measurements WHERE machine LIKE 'marker-%'").result_rows
            now = time.time()
            for (m,) in rows:
                arrived.setdefault(m, now)
            time.sleep(0.1)

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=poll, daemon=True)]
    runner.start()
    for t in threads:
        t.start()
    lags: dict[str, Any] = {}
    time.sleep(args.seconds)
    lags["cloud_up"] = [w.status() for w in workers]
    phase[0] = "cloud_unreachable"
    cloud.pause()
    time.sleep(args.seconds)
    lags["cloud_unreachable"] = [w.status() for w in workers]
    cloud.resume()
    stop_input.set()
    time.sleep(5)
    stop_reading.set()
    runner.join(120)
    for w in workers:
        w.stop(drain_s=60)
    results: dict[str, Any] = {"machine": platform.platform(), "python": platform.python_version(),
                               "seconds_per_phase": args.seconds, "rate": args.rate, "machines": args.machines}
    for name in ("cloud_up", "cloud_unreachable"):
        lat = [arrived[m] - sent_at[m] for m, p in phase_of.items() if p == name and m in arrived]
        missing = sum(1 for m, p in phase_of.items() if p == name and m not in arrived)
        results[name] = {"markers": len(lat), "missing": missing, "p50_s": round(quantile(lat, 0.5), 3),
                         "p99_s": round(quantile(lat, 0.99), 3), "outbox": lags[name]}
        print(f"{name:18s} ClickHouse arrival p50 {results[name]['p50_s']:.3f}s p99 {results[name]['p99_s']:.3f}s "
              f"({len(lat)} markers, {missing} missing); cloud behind "
              f"{[s['behind'] for s in lags[name] if s['name'] == 'cloud']}")
    up, down = results["cloud_up"]["p99_s"], results["cloud_unreachable"]["p99_s"]
    results["p99_ratio"] = round(down / up, 3) if up else None
    print(f"p99 unreachable / up: {results['p99_ratio']}")
    out = Path(__file__).parent / "results" / "bench_outbox.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    local.stop()
    cloud.stop()


if __name__ == "__main__":
    main()
