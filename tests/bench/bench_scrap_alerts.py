"""Benchmark of the scrap and alerts flows: samples per second and per-machine state size.

Run: ``.venv/bin/python tests/bench/bench_scrap_alerts.py [--machines N] [--hours H]``. The PLC
simulator (``simulators/plc.py``) generates the stream. Figures: the pure operators
(:class:`operators.scrap.ScrapTracker`, :class:`operators.alerts.AlertEngine`, no Bytewax) and the
registered ``scrap`` and ``alerts`` flows on one Bytewax worker (``TestingSource`` → flow →
``TestingSink``). Prints a table and writes ``tests/bench/results/bench_scrap_alerts.json``.
No timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from plantstream.flows.alerts import alerts
from plantstream.flows.registry import FlowContext, FlowFn
from plantstream.flows.scrap import scrap
from plantstream.operators.alerts import ALERTS_CODEC, AlertEngine
from plantstream.operators.scrap import ScrapTracker
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.schemas.measurement import Measurement
from plantstream.simulators import plc

T0 = 1_763_791_200_000


def pure(ms: list[Measurement], make: Callable[[str], Any]) -> tuple[float, int]:
    """Seconds to run the operator over ``ms``, and the mean snapshot size in bytes."""
    ops: dict[str, Any] = {}
    started = time.perf_counter()
    for m in ms:
        o = ops.get(m.machine)
        if o is None:
            o = ops[m.machine] = make(m.machine)
        if isinstance(o, ScrapTracker):
            o.on_sample(m.ts, m.metric, m.value)
            o.take()
        else:
            o.on_samples([m])
    for o in ops.values():
        o.finish()
    elapsed = time.perf_counter() - started
    sizes = [len(o.dump()) if isinstance(o, ScrapTracker) else len(ALERTS_CODEC.encode(o.state()))
             for o in ops.values()]
    return elapsed, sum(sizes) // max(1, len(ops))


def flow_run(ms: list[Measurement], config: PlantConfig, fn: FlowFn) -> tuple[float, int]:
    flow = Dataflow("bench")
    inp = op.input("in", flow, TestingSource(ms, batch_size=1000))
    rows: list[Any] = []
    for i, stream in enumerate(fn(FlowContext(config), inp).values()):
        op.output(f"out{i}", stream, TestingSink(rows))
    started = time.perf_counter()
    run_main(flow, epoch_interval=timedelta(seconds=10))
    return time.perf_counter() - started, len(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machines", type=int, default=6)
    ap.add_argument("--hours", type=float, default=8.0)
    args = ap.parse_args()
    config = build_config({"microstop_threshold_s": 120}, {})
    line = plc.PlcLine(seed=3, machines=args.machines, start_ms=T0, config=config, sample_ms=60_000)
    ms = list(line.run(T0 + int(args.hours * 3_600_000)))
    results: dict[str, Any] = {"machines": args.machines, "hours": args.hours, "samples": len(ms),
                               "python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    t, size = pure(ms, lambda m: ScrapTracker.for_config(config, m))
    results["scrap_operator"] = {"seconds": t, "samples_per_s": len(ms) / t, "state_bytes": size}
    t, size = pure(ms, lambda m: AlertEngine.for_config(config, m))
    results["alerts_operator"] = {"seconds": t, "samples_per_s": len(ms) / t, "state_bytes": size}
    for name, fn in (("scrap_flow", scrap), ("alerts_flow", alerts)):
        t, rows = flow_run(ms, config, fn)
        results[name] = {"seconds": t, "samples_per_s": len(ms) / t, "rows": rows}
    print(f"{len(ms)} samples, {args.machines} machines, {args.hours:g} h of event time")
    print(f"{'':18}{'seconds':>10}{'samples/s':>12}{'state B':>10}")
    for key in ("scrap_operator", "alerts_operator", "scrap_flow", "alerts_flow"):
        r = results[key]
        print(f"{key:18}{r['seconds']:>10.2f}{r['samples_per_s']:>12,.0f}{r.get('state_bytes', ''):>10}")
    out = Path(__file__).parent / "results" / "bench_scrap_alerts.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
