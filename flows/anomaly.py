"""The anomaly flow: condition monitoring of every running machine into ``anomalies``.

Per machine (key = machine id) one stateful step holds all of the machine's models (see
:mod:`operators.anomaly`); rows are anomaly episodes, written when they open and when they
close, to ClickHouse ``anomalies`` and the ``plantstream.anomalies`` topic.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Stream

from flows.registry import FlowContext, Results, register
from operators.anomaly import anomaly_op
from schemas.measurement import MACHINE_STATE, Measurement, is_condition_metric


def _relevant(m: Measurement) -> bool:
    return m.metric == MACHINE_STATE or (is_condition_metric(m.metric) and m.usable
                                         and isinstance(m.value, int | float)
                                         and not isinstance(m.value, bool))


@register("anomaly")
def anomaly(ctx: FlowContext, measurements: Stream[Measurement]) -> Results:
    """Condition anomalies (River/robust z-score detectors, ISO 10816 zones) per running machine."""
    cfg = ctx.config.anomaly
    if not cfg.enabled:
        return {}
    relevant = op.filter("anomaly_relevant", measurements, _relevant)
    keyed = op.key_on("anomaly_key", relevant, lambda m: m.machine)
    return {"anomalies": anomaly_op("anomaly_state", keyed, cfg)}
