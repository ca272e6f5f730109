"""The anomaly flow: condition monitoring of every running machine into ``anomalies``.

Per machine one monitor holds all of the machine's models (see :mod:`plantstream.operators.anomaly`,
:class:`~plantstream.operators.anomaly.AnomalyLogic`), run in the machine engine
(:mod:`plantstream.flows.engine`); rows are anomaly episodes, written when they open and when
they close, to ClickHouse ``anomalies`` and the ``plantstream.anomalies`` topic.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Stream

from plantstream.flows.engine import MachineFlow
from plantstream.flows.registry import Flow, FlowContext, Results, Row
from plantstream.operators.anomaly import MachineMonitor, anomaly_spec
from plantstream.operators.logic import LogicSpec


def anomaly_step(ctx: FlowContext) -> LogicSpec[MachineMonitor, Row] | None:
    cfg = ctx.config.anomaly
    return anomaly_spec(cfg, ctx.config.state.max_signals_per_machine) if cfg.enabled else None


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
