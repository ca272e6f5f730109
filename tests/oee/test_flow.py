"""The registered ``oee`` flow on Bytewax: one worker and a two-worker cluster give the same
facts and events as the pure accounting fed only the OEE metrics (the other metrics are ticks
of event time, which close windows sooner but change no result)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from plantstream.flows.oee import accounting_factory, oee
from plantstream.flows.registry import FlowContext
from plantstream.schemas.config import build_config
from plantstream.schemas.measurement import Measurement
from plantstream.simulators import plc
from tests.oee.test_ground_truth import CONFIG, T0

CFG = build_config(CONFIG, {})


def measurements() -> list[Measurement]:
    line = plc.PlcLine(seed=5, machines=3, start_ms=T0, config=CFG, sample_ms=300_000)
    return list(line.run(T0 + 3 * 3_600_000))


def latest(rows: list[tuple[str, dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
    """Per table the latest version of each natural key, without the version."""
    facts: dict[tuple[Any, ...], tuple[int, list[dict[str, Any]]]] = {}
    events: dict[tuple[Any, ...], dict[str, Any]] = {}
    for table, r in rows:
        if table == "oee_facts":
            k = (r["machine"], r["window_start"])
            v, group = facts.get(k, (-1, []))
            if r["version"] > v:
                facts[k] = (r["version"], [r])
            elif r["version"] == v:
                group.append(r)
        elif table == "downtime_events":
            k = (r["machine"], r["start"])
            if k not in events or events[k]["version"] < r["version"]:
                events[k] = r
    strip = lambda r: tuple(sorted((c, v) for c, v in r.items() if c != "version"))  # noqa: E731
    return (sorted(strip(r) for _, g in facts.values() for r in g),
            sorted(strip(r) for r in events.values() if not r["deleted"]))


def tagger(table: str) -> Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]:
    return lambda r: (table, r)


def flow_rows(ms: list[Measurement], workers: int) -> list[tuple[str, dict[str, Any]]]:
    flow = Dataflow("oee_test")
    stream = op.input("in", flow, TestingSource(ms, batch_size=500))
    results = oee(FlowContext(CFG), stream)
    out: list[tuple[str, dict[str, Any]]] = []
    for table, rows in results.items():
        op.output(f"out_{table}", op.map(f"tag_{table}", rows, tagger(table)), TestingSink(out))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out


def test_one_and_two_workers_give_the_accounting_result() -> None:
    ms = measurements()
    make = accounting_factory(CFG)
    expected: list[tuple[str, dict[str, Any]]] = []
    for machine in sorted({m.machine for m in ms}):
        acc = make(machine)
        first = next(m for m in ms if m.machine == machine)
        acc.site, acc.line = first.site, first.line  # the source's site and line win
        expected += acc.process((m.ts, m.metric, m.value) for m in ms
                                if m.machine == machine and m.metric not in ("cycle_time_ms", "scrap_reason")
                                and not m.metric.endswith(("_c", "_mms", "_rpm")))
        expected += acc.finish()
    want = latest(expected)
    assert len(want[0]) > 3 * 170 and len(want[1]) > 10
    assert latest(flow_rows(ms, 1)) == want
    assert latest(flow_rows(ms, 2)) == want


def test_a_machine_that_stops_sending_shows_its_open_stop_after_the_allowed_lateness() -> None:
    from datetime import UTC, datetime, timedelta

    from plantstream.flows.engine import EngineRun
    from plantstream.operators.logic import ManualClock
    from plantstream.operators.oee import oee_spec

    clock = ManualClock(datetime(2026, 11, 22, 6, tzinfo=UTC))
    run = EngineRun(oee_spec(CFG, now=clock))
    emitted = run.batch([Measurement(ts, "press-01", metric, value) for ts, metric, value in (
        (T0, "machine_state", "running"), (T0 + 30_000, "fault_code", 101),
        (T0 + 30_000, "machine_state", "fault"))])
    assert not [r for _, t, r in emitted if t == "downtime_events"]
    # nothing more arrives: the timer is due one allowed lateness (60 s) of wall time later
    assert run.notify(clock.advance(timedelta(seconds=59))) == []
    rows = run.notify(clock.advance(timedelta(seconds=2)))
    [event] = [r for _, t, r in rows if t == "downtime_events"]
    assert (event["start"], event["end"], event["is_open"], event["reason"]) == (
        T0 + 30_000, None, 1, "hydraulic_pressure_low")
    assert run.engine.notify_at() is None
    # a sample from before the flushed point restates instead of being applied out of order
    rows = run.batch([Measurement(T0 + 20_000, "press-01", "machine_state", "idle")]) + run.eof()
    events: dict[int, dict[str, Any]] = {}
    for _, t, r in rows:
        if t == "downtime_events" and r["version"] > events.get(r["start"], {"version": -1})["version"]:
            events[r["start"]] = r
    assert events[T0 + 20_000]["state"] == "idle" and events[T0 + 20_000]["end"] == T0 + 30_000


def test_a_sensor_only_machine_keeps_no_oee_state() -> None:
    from plantstream.flows.engine import EngineRun
    from plantstream.operators.oee import oee_spec

    run = EngineRun(oee_spec(CFG))
    sensor = [Measurement(T0 + k * 5_000, "chiller-1", "temperature_c", 4.0) for k in range(20)]
    assert run.batch(sensor) == [] and run.eof() == []
    assert run.snapshot() == {"oee": {}}
    run.batch([Measurement(T0 + 200_000, "chiller-1", "machine_state", "running")])
    assert set(run.snapshot()["oee"]) == {"chiller-1"}


def test_facts_and_events_carry_the_site_and_line_the_source_sent() -> None:
    # a bakery machine publishes its own site and line; the plant config's site is plant-a
    base = 1_763_791_200_000
    ms = [Measurement(base, "seattle-fryer-1", "machine_state", "running", "seattle", "seattle-line-1"),
          Measurement(base + 150_000, "seattle-fryer-1", "machine_state", "fault", "seattle", "seattle-line-1"),
          *[Measurement(base + t * 1000, "seattle-fryer-1", "oil_temperature_c", 180.0, "seattle",
                        "seattle-line-1") for t in range(0, 600, 5)]]
    rows = flow_rows(ms, 1)
    facts = [r for t, r in rows if t == "oee_facts"]
    events = [r for t, r in rows if t == "downtime_events"]
    assert CFG.site != "seattle"
    assert len(facts) == 10 and events  # minutes 0-9, the last one as of the last tick
    assert {(r["site"], r["line"]) for r in facts + events} == {("seattle", "seattle-line-1")}
