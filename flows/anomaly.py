"""The anomaly flow: condition monitoring of every running machine into ``anomalies``.

Per machine one monitor holds all of the machine's models (see :mod:`operators.anomaly`), run
in the machine engine (:mod:`flows.engine`); rows are anomaly episodes, written when they open
and when they close, to ClickHouse ``anomalies`` and the ``plantstream.anomalies`` topic.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Stream

from plantstream.flows.engine import MachineFlow, MachineStep
from plantstream.flows.registry import Flow, FlowContext, Results, Row
from plantstream.operators.anomaly import anomaly_builder
from plantstream.schemas.measurement import MACHINE_STATE, Measurement, is_condition_metric


def _relevant(m: Measurement) -> bool:
    return m.metric == MACHINE_STATE or (is_condition_metric(m.metric) and m.usable
                                         and isinstance(m.value, int | float)
                                         and not isinstance(m.value, bool))


def _rows(row: Row) -> list[tuple[str, Row]]:
    return [("anomalies", row)]


def anomaly_step(ctx: FlowContext) -> MachineStep | None:
    cfg = ctx.config.anomaly
    if not cfg.enabled:
        return None
    # The monitor ignores what is not a usable number of a condition signal or a state change
    # itself, so the machine engine need not filter for it (the per-flow form filters).
    return MachineStep("anomaly", _relevant, anomaly_builder(cfg), _rows,
                       engine_filters=False, timers=False)


def _tables(ctx: FlowContext, tagged: Stream[tuple[str, Row]]) -> Results:
    return {"anomalies": op.map("anomaly_rows", tagged, lambda tr: tr[1])}


anomaly = MachineFlow(
    anomaly_step, _tables,
    doc="Condition anomalies (River/robust z-score detectors, ISO 10816 zones) per running machine.")

FLOW = Flow(
    name="anomaly", build=anomaly, doc=anomaly.doc, config="anomaly",
    tables={"anomalies": "030_anomalies.sql"},
    topics={"anomalies": "plantstream.anomalies"},
    cloud={"anomalies": "coalesce"},
    kpi=("anomalies",),
)
