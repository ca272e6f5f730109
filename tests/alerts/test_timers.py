"""Timers in the Bytewax step: "machine down" fires while the stop is open, without new data.

The step maps wall time to event time with an injected clock running 1200× faster than real
time (15 event minutes = 0.75 s). The source sends a fault, then sends NOTHING until the alert
has come out of the flow (or a generous deadline passes), and only then ends the stop.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.testing import TestingSink, TestingSource, run_main

from plantstream.flows.alerts import alert_streams
from plantstream.operators.alerts import EventClock
from plantstream.schemas.config import build_config
from plantstream.schemas.measurement import Measurement

T0 = 1_763_791_200_000
MIN = 60_000
SPEED = 1200.0


class _Script(StatelessSourcePartition[Measurement]):
    """Fault at T0; silence until the sink holds a raised alert; then running at T0 + 16 min."""

    def __init__(self, seen: list[dict[str, Any]], log: dict[str, float]) -> None:
        self.seen, self.log, self.step = seen, log, 0

    def next_batch(self) -> list[Measurement]:
        if self.step == 0:
            self.step = 1
            self.log["fault_sent"] = time.monotonic()
            return [Measurement(T0, "press-01", "machine_state", "running"),
                    Measurement(T0 + MIN, "press-01", "machine_state", "fault")]
        if self.step == 1:
            raised = any(r["status"] == "raised" for r in self.seen)
            if not raised and time.monotonic() - self.log["fault_sent"] < 20:
                return []
            self.log["alert_seen"] = time.monotonic() if raised else float("nan")
            self.step = 2
            return [Measurement(T0 + 17 * MIN, "press-01", "machine_state", "running")]
        if self.step == 2 and any(r["status"] == "cleared" for r in self.seen):
            raise StopIteration
        return []

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + timedelta(milliseconds=5)


class _ScriptSource(DynamicSource[Measurement]):
    def __init__(self, seen: list[dict[str, Any]], log: dict[str, float]) -> None:
        self.seen, self.log = seen, log

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Script:
        return _Script(self.seen, self.log)


def test_a_16_minute_stop_raises_machine_down_at_minute_15_with_no_further_input() -> None:
    config = build_config({"alerts": {"silence": {"enabled": False}}}, {})
    seen: list[dict[str, Any]] = []
    log: dict[str, float] = {}
    flow = Dataflow("alert_timer")
    inp = op.input("script", flow, _ScriptSource(seen, log))
    op.output("out", alert_streams(config, inp, EventClock(speed=SPEED)), TestingSink(seen))
    run_main(flow)

    assert [(r["rule"], r["status"], r["ts"]) for r in seen] == [
        ("machine_down", "raised", T0 + MIN + 15 * MIN + 1),   # minute 15 of the open stop
        ("machine_down", "cleared", T0 + 17 * MIN),             # the stop lasted 16 minutes
    ]
    waited = log["alert_seen"] - log["fault_sent"]
    assert waited == waited, "no alert came out while the stop was open and no data arrived"
    assert waited >= 15 * 60 / SPEED * 0.95  # not early: 15 event minutes of wall time passed
    assert seen[0]["alert_id"] == seen[1]["alert_id"]


def test_end_of_input_fires_nothing_the_data_does_not_support() -> None:
    config = build_config({}, {})
    got: list[dict[str, Any]] = []
    flow = Dataflow("alert_eof")
    ms = [Measurement(T0, "press-01", "machine_state", "fault"),
          Measurement(T0 + 14 * MIN, "press-01", "temperature_c", 40.0),
          Measurement(T0 + 14 * MIN, "cnc-01", "machine_state", "fault"),
          Measurement(T0 + 30 * MIN, "cnc-01", "machine_state", "running")]
    inp = op.input("ms", flow, TestingSource(ms))
    op.output("out", alert_streams(config, inp, EventClock(speed=SPEED)), TestingSink(got))
    run_main(flow)
    # press-01's stop is 14 minutes old at the end of the data: no alert; cnc-01's reached 16
    assert [(r["machine"], r["status"], r["ts"]) for r in got] == [
        ("cnc-01", "raised", T0 + 29 * MIN + 1), ("cnc-01", "cleared", T0 + 30 * MIN)]
