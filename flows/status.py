"""The status flow: ``machine_status``, the live digital twin of every machine.

One row per machine (ReplacingMergeTree, latest version wins): state and since when, the stop in
progress, current part / work order / operator / fault, and the last value of every signal —
what the status grid shows and what answers "what is line 2 doing now"::

    SELECT machine, state, state_since, downtime_open, part_number, signals
    FROM machine_status FINAL WHERE line = 'line-2' ORDER BY machine

Per machine one twin logic (:class:`plantstream.operators.status.StatusLogic`, its spec
:func:`~plantstream.operators.status.status_spec`), run in the machine engine
(:mod:`plantstream.flows.engine`).
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Stream

from plantstream.flows.engine import MachineFlow
from plantstream.flows.registry import Flow, FlowContext, Results, Row
from plantstream.operators.logic import LogicSpec
from plantstream.operators.status import StatusState, status_spec


def status_step(ctx: FlowContext) -> LogicSpec[StatusState, Row]:
    cfg = ctx.config.status
    return status_spec(cfg.throttle_s, cfg.heartbeat_s, max_signals=ctx.config.state.max_signals_per_machine)


def _tables(ctx: FlowContext, tagged: Stream[tuple[str, Row]]) -> Results:
    return {"machine_status": op.map("status_rows", tagged, lambda tr: tr[1])}


status = MachineFlow(
    status_step, _tables,
    doc="Keep ``machine_status`` current (throttled per ``status.throttle_s`` of event time).")

FLOW = Flow(
    name="status", build=status, doc=status.doc, config="status",
    tables={"machine_status": "040_machine_status.sql"},
)
