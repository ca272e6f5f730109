"""The status flow: ``machine_status``, the live digital twin of every machine.

One row per machine (ReplacingMergeTree, latest version wins): state and since when, the stop in
progress, current part / work order / operator / fault, and the last value of every signal —
what the status grid shows and what answers "what is line 2 doing now"::

    SELECT machine, state, state_since, downtime_open, part_number, signals
    FROM machine_status FINAL WHERE line = 'line-2' ORDER BY machine

Per machine one twin logic (:func:`operators.status.status_builder`), run in the machine
engine (:mod:`flows.engine`).
"""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream

from plantstream.flows.engine import MachineFlow, MachineStep
from plantstream.flows.registry import Flow, FlowContext, Results, Row
from plantstream.operators.status import status_builder


def _rows(row: dict[str, Any]) -> list[tuple[str, Row]]:
    return [("machine_status", row)]


def status_step(ctx: FlowContext) -> MachineStep:
    cfg = ctx.config.status
    return MachineStep("status", None, status_builder(cfg.throttle_s, cfg.heartbeat_s), _rows)


def _tables(ctx: FlowContext, tagged: Stream[tuple[str, Row]]) -> Results:
    return {"machine_status": op.map("status_rows", tagged, lambda tr: tr[1])}


status = MachineFlow(
    status_step, _tables,
    doc="Keep ``machine_status`` current (throttled per ``status.throttle_s`` of event time).")

FLOW = Flow(
    name="status", build=status, doc=status.doc, config="status",
    tables={"machine_status": "040_machine_status.sql"},
)
