"""Benchmark of the MQTT path: tag mapping, the spooling producer and MQTT → Kafka end to end.

Run: ``.venv/bin/python tests/bench/bench_mqtt.py [--minutes N] [--machines N]``. Figures:

- payload decoding + tag mapping (``MqttConnector.convert``) of bakery messages, no I/O:
  messages and records per second;
- the spooling producer into the embedded Tansu broker: records per second with Kafka up, and
  the disk spool's write and drain rates while Kafka is frozen (SIGSTOP) and after it is back;
- bakery simulator → Mosquitto (amqtt when Mosquitto is not installed) → MQTT connector → Kafka
  with manual acknowledgements: messages per second from the first publish to the last ack.

Prints the figures and writes ``tests/bench/results/bench_mqtt.json``. No timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from plantstream.connectors import kafka
from plantstream.connectors.embedded import AmqttBroker, TansuBroker
from plantstream.connectors.mqtt import MqttConnector
from plantstream.connectors.producer import SpoolingProducer
from plantstream.schemas.tags_config import ProducerConfig
from plantstream.simulators.bakery import BakerySim, bakery_config, publish

START = 1763791200000


def _wait(cond: Any, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)


def bench_convert(messages: list[tuple[int, str, bytes]], machines: int) -> dict[str, float]:
    c = MqttConnector(bakery_config(machines), {"bootstrap.servers": "unused:1"})
    t0 = time.perf_counter()
    records = sum(len(c.convert(topic, payload, 0)[0]) for _, topic, payload in messages)
    dt = time.perf_counter() - t0
    return {"messages": len(messages), "records": records, "messages_per_s": len(messages) / dt,
            "records_per_s": records / dt}


def bench_producer(work: Path, n: int) -> dict[str, float]:
    broker = TansuBroker(work / "logs").start()
    try:
        conf = {"bootstrap.servers": broker.bootstrap}
        kafka.create_topics(conf, {t: 4 for t in kafka.ALL_TOPICS})
        value = b'{"ts":1763791200000,"machine":"m-01","metric":"good_count","value":12345,"site":"s"}'
        recs = [(kafka.MEASUREMENTS, f"m-{i % 20:02d}".encode(), value) for i in range(n)]
        out: dict[str, float] = {}
        with SpoolingProducer(conf, ProducerConfig(spool_dir=str(work / "spool-up"))) as p:
            t0 = time.perf_counter()
            for i in range(0, n, 10):
                p.send(recs[i:i + 10])
            p.flush()
            out["kafka_up_records_per_s"] = n / (time.perf_counter() - t0)
        cfg = ProducerConfig(spool_dir=str(work / "spool-down"), memory_records=1000, inflight_records=1000)
        with SpoolingProducer(conf, cfg) as p:
            broker.pause()
            t0 = time.perf_counter()
            for i in range(0, n, 10):
                p.send(recs[i:i + 10])
            out["spool_write_records_per_s"] = n / (time.perf_counter() - t0)
            out["spooled_records"] = p.stats.spooled_records
            out["spool_bytes"] = p.stats.max_spool_bytes
            broker.resume()
            t0 = time.perf_counter()
            p.flush()
            out["spool_drain_records_per_s"] = n / (time.perf_counter() - t0)
        return out
    finally:
        broker.stop()


def bench_end_to_end(work: Path, minutes: int, machines: int) -> dict[str, Any]:
    broker = TansuBroker(work / "logs").start()
    mq_stop: Any
    if shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists():
        from tests.mqtt.conftest import start_mosquitto

        mq = start_mosquitto(work / "mosquitto")
        host, port, kind, mq_stop = mq.host, mq.port, "mosquitto", mq.stop
    else:
        amq = AmqttBroker().start()
        host, port, kind, mq_stop = amq.host, amq.port, "amqtt", amq.stop
    try:
        conf = {"bootstrap.servers": broker.bootstrap}
        kafka.create_topics(conf, {t: 4 for t in kafka.ALL_TOPICS})
        cfg = bakery_config(machines, mqtt={"host": host, "port": port, "protocol": "3.1.1"},
                            producer={"spool_dir": str(work / "spool-e2e")})
        sim = BakerySim(seed=1, start_ms=START, machines=machines)
        with MqttConnector(cfg, conf) as c:
            t0 = time.perf_counter()
            n = publish(sim, host, port, end_ms=START + minutes * 60_000)
            t_pub = time.perf_counter() - t0
            _wait(lambda: c.stats.acked >= n)
            dt = time.perf_counter() - t0
            return {"broker": kind, "messages": n, "records": c.stats.measurements, "acked": c.stats.acked,
                    "publish_s": t_pub, "messages_per_s": n / dt, "records_per_s": c.stats.measurements / dt}
    finally:
        mq_stop()
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=60, help="simulated bakery minutes end to end")
    ap.add_argument("--machines", type=int, default=15)
    ap.add_argument("--records", type=int, default=200_000, help="records for the producer benchmark")
    args = ap.parse_args()
    sim = BakerySim(seed=1, start_ms=START, machines=args.machines)
    t0 = time.perf_counter()
    messages = list(sim.messages(START + args.minutes * 60_000))
    sim_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        results = {
            "platform": platform.platform(), "python": platform.python_version(),
            "simulator": {"machines": args.machines, "minutes": args.minutes, "messages": len(messages),
                          "messages_per_s": len(messages) / sim_s},
            "convert": bench_convert(messages, args.machines),
            "producer": bench_producer(work, args.records),
            "end_to_end": bench_end_to_end(work, args.minutes, args.machines),
        }
    for section, figures in results.items():
        if isinstance(figures, dict):
            print(f"{section:12s} " + "  ".join(
                f"{k}={v:,.0f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
    out = Path(__file__).parent / "results" / "bench_mqtt.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
