"""Benchmark of the OEE flow: facts per second and per-machine state size, 10 and 10,000 machines.

Run: ``.venv/bin/python tests/bench/bench_oee.py [--minutes N]``. Each machine sends a state
change every few minutes and a cumulative ``good_count`` every 10 s of event time. Two figures
per size: the pure accounting (:class:`operators.oee.OeeAccounting`, no Bytewax) and the
registered ``oee`` flow on one Bytewax worker (``TestingSource`` → flow → ``TestingSink``,
epochs every 10 s of wall time, as in production). Prints a table and writes
``tests/bench/results/bench_oee.json``. No timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from plantstream.flows.oee import accounting_factory, oee
from plantstream.flows.registry import FlowContext
from plantstream.operators.oee import OeeAccounting
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import Measurement

T0 = 1_763_791_200_000
STATES = ("running", "running", "running", "idle", "fault", "setup")


def samples(machines: int, minutes: int, seed: int = 1) -> list[Measurement]:
    rng = random.Random(seed)
    out: list[Measurement] = []
    end = T0 + minutes * 60_000
    for i in range(machines):
        mid = f"m-{i:05d}"
        t = T0 + rng.randint(0, 9_999)
        state_at = t
        count = 0
        out.append(Measurement(t, mid, "machine_state", "running"))
        while t < end:
            if t >= state_at:
                out.append(Measurement(t, mid, "machine_state", rng.choice(STATES)))
                state_at = t + rng.randint(60_000, 600_000)
            count += rng.randint(5, 15)
            out.append(Measurement(t, mid, "good_count", count))
            t += 10_000
    out.sort(key=lambda m: m.ts)
    return out


def config(machines: int) -> PlantConfig:
    return PlantConfig.model_validate({
        "shifts": [{"name": "day", "start": "06:00", "end": "14:00",
                    "breaks": [{"start": "09:00", "minutes": 15}]}],
        "lines": [{"id": "line-1", "machines": [{"id": f"m-{i:05d}", "ideal_cycle_time_ms": 800}
                                                 for i in range(machines)]}],
        "lateness": {"allowed_lateness_s": 30},
    })


def bench_accounting(cfg: PlantConfig, data: list[Measurement]) -> dict[str, Any]:
    accs: dict[str, OeeAccounting] = {}
    make = accounting_factory(cfg)  # one shift calendar for all machines, as in the flow
    facts = 0
    started = time.perf_counter()
    for m in data:
        acc = accs.get(m.machine)
        if acc is None:
            acc = accs[m.machine] = make(m.machine)
        acc.on_sample(m.ts, m.metric, m.value, m)
        facts += sum(1 for t, _ in acc.take() if t == "oee_facts")
    for acc in accs.values():
        facts += sum(1 for t, _ in acc.finish() if t == "oee_facts")
    seconds = time.perf_counter() - started
    sizes = [len(a.dump()) for a in accs.values()]
    t = time.perf_counter()
    for a in accs.values():
        a.dump()
    snapshot_us = (time.perf_counter() - t) / len(accs) * 1e6
    return {"samples": len(data), "facts": facts, "seconds": round(seconds, 3),
            "samples_per_s": round(len(data) / seconds), "facts_per_s": round(facts / seconds),
            "state_bytes_mean": round(statistics.mean(sizes)), "state_bytes_max": max(sizes),
            "snapshot_us_per_machine": round(snapshot_us, 1)}


def bench_flow(cfg: PlantConfig, data: list[Measurement]) -> dict[str, Any]:
    flow = Dataflow("bench_oee")
    stream = op.input("in", flow, TestingSource(data, batch_size=1000))
    results = oee(FlowContext(cfg), stream)
    facts: list[Any] = []
    events: list[Any] = []
    op.output("facts", results["oee_facts"], TestingSink(facts))
    op.output("events", results["downtime_events"], TestingSink(events))
    started = time.perf_counter()
    run_main(flow, epoch_interval=timedelta(seconds=10))
    seconds = time.perf_counter() - started
    return {"samples": len(data), "facts": len(facts), "downtime_rows": len(events),
            "seconds": round(seconds, 3), "samples_per_s": round(len(data) / seconds),
            "facts_per_s": round(len(facts) / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=int, default=20, help="event time simulated per machine")
    parser.add_argument("--sizes", default="10,10000")
    args = parser.parse_args()
    report: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                              "minutes_event_time": args.minutes, "runs": []}
    print(f"{'machines':>9} {'mode':>10} {'samples':>9} {'facts':>8} {'s':>7} {'samples/s':>10} "
          f"{'facts/s':>9} {'state B':>8}")
    for n in (int(x) for x in args.sizes.split(",")):
        cfg = config(n)
        minutes = args.minutes if n <= 1000 else max(5, args.minutes // 2)
        data = samples(n, minutes if n > 10 else args.minutes * 24)
        for mode, fn in (("operator", bench_accounting), ("bytewax", bench_flow)):
            res = {"machines": n, "mode": mode, **fn(cfg, data)}
            report["runs"].append(res)
            print(f"{n:>9} {mode:>10} {res['samples']:>9} {res['facts']:>8} {res['seconds']:>7} "
                  f"{res['samples_per_s']:>10} {res['facts_per_s']:>9} {res.get('state_bytes_mean', ''):>8}")
    out = Path(__file__).with_name("results") / "bench_oee.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
