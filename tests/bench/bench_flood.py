"""Benchmark of a flood of machine ids: memory of the machine engine for 1k, 10k and 100k ids.

Run: ``.venv/bin/python tests/bench/bench_flood.py [--sizes 1000,10000,100000]``. Every per-machine
flow (status, OEE, scrap, anomaly, alerts) runs in 32 engine shards, as the plant's dataflow runs
them, with the plant's ``state:`` limits; each id sends a machine state, a counter and a sensor
value. Two scenarios per size:

- ``default``: the default limits (``max_unconfigured_machines`` 1,000): ids beyond the cap are
  archived only;
- ``uncapped``: the cap raised above the size, so every id gets state: what one admitted
  machine costs, live and encoded (``state_bytes``), and after eviction (every machine idle,
  only its encoded bytes kept).

Figures: RSS growth of the process (``/proc/self/statm``), retained Python memory
(tracemalloc), machines with state, encoded state bytes (total and per machine), live logic
bytes per machine. Prints a table and writes ``tests/bench/results/bench_flood.json``. No timing
is asserted (seconds are reported for information only).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import random
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

from plantstream.flows.engine import SHARDS, EngineRun, StateLimits, shard_of
from plantstream.operators.alerts import EventClock, alert_spec
from plantstream.operators.anomaly import anomaly_spec
from plantstream.operators.logic import ManualClock
from plantstream.operators.oee import oee_spec
from plantstream.operators.scrap import scrap_spec
from plantstream.operators.status import status_spec
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.schemas.measurement import Measurement

T0 = 1_763_791_200_000
RESULTS = Path(__file__).parent / "results" / "bench_flood.json"


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def config(cap: int) -> PlantConfig:
    return build_config({"site": "plant-a", "lines": [{"id": "line-1", "machines": [{"id": "press-01"}]}],
                         "state": {"max_unconfigured_machines": cap, "idle_evict_s": 600}}, {})


def shards(cfg: PlantConfig, clock: ManualClock) -> dict[str, EngineRun]:
    specs = [status_spec(5.0, 60.0, now=clock, max_signals=cfg.state.max_signals_per_machine),
             oee_spec(cfg, now=clock), scrap_spec(cfg), anomaly_spec(cfg.anomaly, cfg.state.max_signals_per_machine),
             alert_spec(cfg, EventClock(1.0, clock.wall))]
    base = StateLimits.from_config(cfg)
    limits = StateLimits(base.configured, base.max_unconfigured, base.idle_evict_s, clock.wall)
    return {f"s{k}": EngineRun(*specs, limits=limits) for k in range(SHARDS)}


def run(size: int, cap: int, seed: int = 1) -> dict[str, Any]:
    clock = ManualClock()
    engines = shards(config(cap), clock)
    rng = random.Random(seed)
    ids = [f"{rng.getrandbits(64):016x}" for _ in range(size)]
    gc.collect()
    rss0 = _rss()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    for start in range(0, size, 2_000):
        by: dict[str, list[Measurement]] = {}
        for k, mid in enumerate(ids[start:start + 2_000], start):
            for m in (Measurement(T0 + k, mid, "machine_state", "running", "plant-a", ""),
                      Measurement(T0 + k, mid, "good_count", k, "plant-a", ""),
                      Measurement(T0 + k, mid, "temperature_c", 20.0 + k % 5, "plant-a", "")):
                by.setdefault(shard_of(mid), []).append(m)
        for key, ms in by.items():
            engines[key].batch(ms)
    seconds = time.perf_counter() - started
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - base
    rss = _rss() - rss0
    admitted = sum(len({m for logics in e.engine.logics for m in logics}) for e in engines.values())
    state = sum(sum(e.engine.state_bytes().values()) for e in engines.values())
    # every machine idle: timers fire, then each shard's sweep takes them out of live memory
    clock.advance(timedelta(minutes=20))
    for e in engines.values():
        e.notify(clock.now)
        e.engine._sweep(clock.wall())
    gc.collect()
    evicted_retained = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    live = sum(len({m for logics in e.engine.logics for m in logics}) for e in engines.values())
    per = max(admitted, 1)
    return {"ids": size, "cap": cap, "machines_with_state": admitted, "seconds": round(seconds, 3),
            "rss_growth_mib": round(rss / 2**20, 2), "retained_mib": round(retained / 2**20, 2),
            "state_bytes": state, "state_bytes_per_machine": round(state / per),
            "retained_bytes_per_machine": round(retained / per),
            "live_after_eviction": live, "retained_after_eviction_mib": round(evicted_retained / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    logging.getLogger("plantstream.flows.engine").setLevel(logging.ERROR)  # a notice per admitted id
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows: list[dict[str, Any]] = []
    for size in sizes:
        rows.append({"scenario": "default"} | run(size, 1_000))
        rows.append({"scenario": "uncapped"} | run(size, size + 1))
    print(f"{'scenario':<9} {'ids':>7} {'state':>6} {'RSS MiB':>8} {'kept MiB':>9} {'B/machine':>10} "
          f"{'enc B/m':>8} {'evicted MiB':>12}")
    for r in rows:
        print(f"{r['scenario']:<9} {r['ids']:>7} {r['machines_with_state']:>6} {r['rss_growth_mib']:>8} "
              f"{r['retained_mib']:>9} {r['retained_bytes_per_machine']:>10} {r['state_bytes_per_machine']:>8} "
              f"{r['retained_after_eviction_mib']:>12}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"python": platform.python_version(), "machine": platform.machine(),
                                   "shards": SHARDS, "runs": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
