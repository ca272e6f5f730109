"""The status flow: ``machine_status``, the live digital twin of every machine.

One row per machine (ReplacingMergeTree, latest version wins): state and since when, the stop in
progress, current part / work order / operator / fault, and the last value of every signal —
what the status grid shows and what answers "what is line 2 doing now"::

    SELECT machine, state, state_since, downtime_open, part_number, signals
    FROM machine_status FINAL WHERE line = 'line-2' ORDER BY machine
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Stream

from flows.registry import FlowContext, Results, register
from operators.status import machine_status
from schemas.measurement import Measurement


@register("status")
def status(ctx: FlowContext, measurements: Stream[Measurement]) -> Results:
    """Keep ``machine_status`` current (throttled per ``status.throttle_s`` of event time)."""
    cfg = ctx.config.status
    keyed = op.key_on("status_key", measurements, lambda m: m.machine)
    rows = machine_status("status_twin", keyed, throttle_s=cfg.throttle_s,
                          heartbeat_s=cfg.heartbeat_s)
    return {"machine_status": op.map("status_rows", rows, lambda kv: kv[1])}
