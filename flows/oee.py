"""The OEE flow: time-in-state facts, downtime events and late data, one logic per machine.

Measurements of usable quality go, per machine, through one
:class:`~plantstream.operators.oee.OeeLogic` (its spec :func:`~plantstream.operators.oee.oee_spec`),
run in the machine engine (:mod:`plantstream.flows.engine`): its accounting is an
:class:`~plantstream.operators.oee.OeeAccounting` (the OEE fold on the machine's event-time
ledger, :mod:`plantstream.operators.ledger`). The OEE metrics
(:data:`~plantstream.operators.oee.OEE_METRICS`) are accounted; of every other metric the
engine hands over at most one sample every 5 s of event time
(:class:`~plantstream.operators.oee.Ticks`), a tick of the machine's event time (a PLC reports
its state only when it changes, so without ticks a machine sitting in one state for an hour
would leave that hour's windows open). Its state is
:class:`~plantstream.operators.oee.OeeState`, encoded by
:data:`~plantstream.operators.oee.OEE_STATE` (kind ``oee``, format version, plain data). The
logic emits ``(table, row)`` pairs, split into ``oee_facts``, ``downtime_events`` and
``deadletter`` (samples beyond the restatement horizon, reason ``late``; wrong clocks,
``clock_skew``; redeliveries, ``duplicate``).

Unit of parallelism: the machine (Kafka key). Delivery: effectively-once with recovery — the
state is snapshotted with the input offsets, and every row lands in a ReplacingMergeTree keyed
by its natural key with a version, so rows re-emitted after a resume replace themselves.
"""

from __future__ import annotations

from bytewax.dataflow import Stream

from plantstream.flows.engine import MachineFlow, split_tables
from plantstream.flows.registry import Flow, FlowContext, Results, Row
from plantstream.operators.logic import LogicSpec
from plantstream.operators.oee import OeeState, Output, accounting_factory, oee_spec

__all__ = ["accounting_factory", "oee", "oee_step", "oee_tables"]


def oee_step(ctx: FlowContext) -> LogicSpec[OeeState, list[Output]]:
    """OEE samples and ticks of each machine into its :class:`~plantstream.operators.oee.OeeLogic`."""
    return oee_spec(ctx.config)


def oee_tables(ctx: FlowContext, tagged: Stream[tuple[str, Row]]) -> Results:
    return split_tables("oee", tagged, ("oee_facts", "downtime_events", "deadletter"))


oee = MachineFlow(
    oee_step, oee_tables,
    doc="OEE facts per machine and window, downtime events, late data to the dead letter.")

FLOW = Flow(
    name="oee", build=oee, doc=oee.doc, config="losses",
    tables={"oee_facts": "010_oee_facts.sql", "downtime_events": "011_downtime_events.sql"},
    topics={"oee_facts": "plantstream.oee", "downtime_events": "plantstream.downtime"},
    cloud={"oee_facts": "rollup", "downtime_events": "coalesce"},
    kpi=("oee", "downtime"),
)
