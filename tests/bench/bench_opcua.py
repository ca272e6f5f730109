"""Benchmark of the PLC simulator and the OPC UA path.

Run: ``.venv/bin/python tests/bench/bench_opcua.py [--hours N] [--machines N]``. Figures:

- the pure simulator core (``PlcLine.run``): simulated hours and Measurements per second;
- simulator → asyncua server → OPC UA connector → spooling producer → embedded Tansu broker,
  played as fast as possible (server and client in one event loop, as in the tests): tag
  changes per second from the first write to the last record confirmed by Kafka.

Prints the figures and writes ``tests/bench/results/bench_opcua.json``. No timing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from plantstream.connectors import kafka
from plantstream.connectors.embedded import TansuBroker
from plantstream.connectors.opcua import OpcUaConnector
from plantstream.schemas.config import build_config
from plantstream.simulators.opcua_server import PlcOpcUaServer, plc_tag_dictionary
from plantstream.simulators.plc import PlcLine

START = 1763791200000
H = 3_600_000


def bench_core(hours: float, machines: int) -> dict[str, Any]:
    t = time.perf_counter()
    line = PlcLine(seed=1, machines=machines, start_ms=START)
    n = sum(1 for _ in line.run(START + round(hours * H)))
    dt = time.perf_counter() - t
    return {"machines": machines, "simulated_hours": hours, "measurements": n, "seconds": round(dt, 3),
            "measurements_per_s": round(n / dt), "simulated_hours_per_s": round(hours / dt, 1)}


async def _pipeline(hours: float, machines: int, kafka_conf: dict[str, Any], tmp: Path) -> dict[str, Any]:
    line = PlcLine(seed=1, machines=machines, start_ms=START)
    srv = PlcOpcUaServer(line, speed=0)
    async with srv:
        cfg = build_config({"tags": plc_tag_dictionary(), "opcua": {
            "endpoint": srv.endpoint, "browse": ["0:Objects/2:Channel1"], "ignore": ["*.ToolID"],
            "queue_size": 100_000,
            "publishing_interval_ms": 50, "state_file": str(tmp / "state.json")},
            "producer": {"spool_dir": str(tmp / "spool")}}, {})
        conn = OpcUaConnector(cfg, kafka_conf)
        stop = asyncio.Event()
        task = asyncio.create_task(conn.run(stop))
        while conn.stats.produced == 0:
            await asyncio.sleep(0.01)
        t = time.perf_counter()
        writes = await srv.play(until_ms=START + round(hours * H))
        t_played = time.perf_counter() - t
        while conn.stats.received < writes + conn.stats.nodes // 2:
            last = conn.stats.received
            await asyncio.sleep(0.3)
            if conn.stats.received == last:
                break
        assert conn.producer is not None
        await asyncio.to_thread(conn.producer.flush, 60)
        dt = time.perf_counter() - t
        stop.set()
        stats = await task
    return {"machines": machines, "simulated_hours": hours, "tag_writes": writes,
            "produced": stats.produced, "seconds_to_play": round(t_played, 3),
            "seconds_to_confirmed": round(dt, 3), "tag_changes_per_s": round(writes / dt)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--machines", type=int, default=3)
    args = ap.parse_args()
    out: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    out["core"] = bench_core(24.0, args.machines)
    print("simulator core:", out["core"], flush=True)
    with tempfile.TemporaryDirectory() as d:
        broker = TansuBroker(Path(d) / "logs").start()
        try:
            conf = {"bootstrap.servers": broker.bootstrap}
            kafka.create_topics(conf, {t: 4 for t in kafka.ALL_TOPICS})
            out["pipeline"] = asyncio.run(_pipeline(args.hours, args.machines, conf, Path(d)))
        finally:
            broker.stop()
    print("simulator → OPC UA → connector → Kafka:", out["pipeline"], flush=True)
    res = Path(__file__).parent / "results"
    res.mkdir(exist_ok=True)
    (res / "bench_opcua.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
