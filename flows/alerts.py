"""The alerts flow: the rules of :mod:`plantstream.operators.alerts`, one logic per machine, with timers.

Measurements (usable quality) go, per machine, through one
:class:`~plantstream.operators.alerts.AlertLogic` holding an
:class:`~plantstream.operators.alerts.AlertEngine`, run in the machine engine
(:mod:`plantstream.flows.engine`; :func:`alert_streams` gives it an engine step of its own).
Timers: after every call the engine asks Bytewax to wake it when event time reaches the rules'
next due time (an :class:`~plantstream.operators.alerts.EventClock` maps event time to wall
time), so "machine down" is raised at minute 15 of an open stop without any new data. At the
end of input (replay) nothing is advanced: no alert beyond what the data supports.

The alert records go to ClickHouse and to the topic ``plantstream.alerts``. With
``alerts.webhook.url`` set, the webhook outbox worker (:mod:`plantstream.connectors.outbox`)
posts them from that topic at its own pace (JSON POSTs, retried forever, an idempotency key):
a webhook that is down never holds back this flow.

Unit of parallelism: the machine (Kafka key). Delivery: effectively-once into ClickHouse
(``alerts`` is a ReplacingMergeTree keyed by ``alert_id`` with a version); at-least-once to the
webhook (through the outbox), each record carrying its ``event_id`` as ``Idempotency-Key``.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Stream

from plantstream.flows.engine import MachineFlow, per_machine
from plantstream.flows.registry import Flow, FlowContext, Results, Row
from plantstream.operators.alerts import AlertState, EventClock, alert_spec
from plantstream.operators.logic import LogicSpec
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import Measurement


def alert_step(config: PlantConfig, clock: EventClock | None = None) -> LogicSpec[AlertState, Row]:
    """The alert logic spec (``clock``: real time); next to the OEE flow the engine runs its
    ``fed`` variant, which takes the OEE flow's facts."""
    return alert_spec(config, clock)


def alert_streams(config: PlantConfig, measurements: Stream[Measurement],
                  clock: EventClock | None = None) -> Stream[Row]:
    """The alert records of every machine, an engine step of their own (``clock``: real time)."""
    tagged = per_machine(alert_step(config, clock), measurements)
    return op.map("alert_rows", tagged, lambda tr: tr[1])


def _outputs(ctx: FlowContext, tagged: Stream[tuple[str, Row]]) -> Results:
    return {"alerts": op.map("alert_rows", tagged, lambda tr: tr[1])}


alerts = MachineFlow(
    lambda ctx: alert_step(ctx.config), _outputs,
    doc="Alert records (raised, escalated, cleared) into ``alerts`` and its topic (the webhook's outbox).")

FLOW = Flow(
    name="alerts", build=alerts, doc=alerts.doc, config="alerts",
    tables={"alerts": "022_alerts.sql"},
    topics={"alerts": "plantstream.alerts"},
    cloud={"alerts": "send"},
    kpi=("alerts",),
)
