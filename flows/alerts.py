"""The alerts flow: the rules of :mod:`operators.alerts`, one step per machine, with timers.

Measurements (usable quality) go, per machine, through one :class:`AlertLogic` holding an
:class:`operators.alerts.AlertEngine` (in the machine engine, :mod:`flows.engine`, or as its
own ``op.stateful`` step keyed by machine through :func:`alert_streams`). Timers: after every activation the
step asks Bytewax to wake it (``notify_at``) when event time reaches the engine's next due
time, mapping event time to wall time with an :class:`~operators.alerts.EventClock` (last
event ts + wall time elapsed since it); on wake-up (``on_notify``) the engine advances to the
current event time and fires what is due — so "machine down" is raised at minute 15 of an open
stop without any new data. At the end of input (replay) nothing is advanced: no alert beyond
what the data supports.

With ``alerts.webhook.url`` set, the alert records also go to a
:class:`connectors.webhook.WebhookSink` (JSON POSTs with retries and an idempotency key).

Unit of parallelism: the machine (Kafka key). Delivery: effectively-once into ClickHouse
(``alerts`` is a ReplacingMergeTree keyed by ``alert_id`` with a version); at-least-once to the
webhook, each record carrying its ``event_id`` as ``Idempotency-Key``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import bytewax.operators as op
from bytewax.dataflow import Stream

from plantstream.flows.engine import MachineFlow, MachineStep, per_machine
from plantstream.flows.registry import Flow, FlowContext, Results, Row
from plantstream.operators.alerts import AlertEngine, EventClock
from plantstream.operators.shifts import ShiftCalendar
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import Measurement

Emit = tuple[list[Row], bool]


class AlertLogic(op.StatefulLogic[Measurement, Row, bytes]):
    """Bytewax glue for one machine's :class:`AlertEngine`: samples, timers, bytes snapshot."""

    def __init__(self, make: Callable[[str, str, str], AlertEngine], clock: EventClock,
                 resume: bytes | None) -> None:
        self.make = make
        self.clock = clock
        self.engine: AlertEngine | None = None
        self.last_ts = -1
        self.last_wall = clock.wall()
        if resume:
            self.engine = make(*AlertEngine.identity_of(resume))
            self.engine.load(resume)
            self.last_ts = self.engine.now

    def on_item(self, value: Measurement) -> Emit:
        if self.engine is None:
            self.engine = self.make(value.machine, value.site, value.line)
        out = self.engine.on_sample(value.ts, value.metric, value.value)
        if value.ts >= self.last_ts:
            self.last_ts, self.last_wall = value.ts, self.clock.wall()
        return out, op.StatefulLogic.RETAIN

    def on_items(self, values: list[Measurement]) -> Emit:
        """:meth:`on_item` for a machine's samples of one batch, in order (the engine's path)."""
        if self.engine is None:
            first = values[0]
            self.engine = self.make(first.machine, first.site, first.line)
        out = self.engine.on_samples(values)
        top = max(m.ts for m in values)
        if top >= self.last_ts:
            self.last_ts, self.last_wall = top, self.clock.wall()
        return out, op.StatefulLogic.RETAIN

    def on_upstream(self, items: list[list[tuple[str, Row]]]) -> Emit:
        """The OEE flow's outputs for this machine (see :func:`alert_step`, ``fed``)."""
        if self.engine is None:
            return [], op.StatefulLogic.RETAIN  # nothing sampled yet: nothing to judge
        out: list[Row] = []
        for outputs in items:
            out += self.engine.on_facts(outputs)
        return out, op.StatefulLogic.RETAIN

    def on_notify(self) -> Emit:
        if self.engine is None or self.last_ts < 0:
            return [], op.StatefulLogic.RETAIN
        now = self.clock.event_now(self.last_ts, self.last_wall)
        return self.engine.advance(now), op.StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self.engine is None or self.last_ts < 0:
            return None
        due = self.engine.next_due()
        return None if due is None else self.clock.datetime_at(due, self.last_ts, self.last_wall)

    def on_eof(self) -> Emit:
        return ([] if self.engine is None else self.engine.finish()), op.StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return b"" if self.engine is None else self.engine.dump()


def _usable(m: Measurement) -> bool:
    return m.quality != "bad"


def _rows(row: Row) -> list[tuple[str, Row]]:
    return [("alerts", row)]


def alert_step(config: PlantConfig, clock: EventClock | None = None, *, fed: bool = False) -> MachineStep:
    """Usable samples of each machine into its :class:`AlertLogic` (``clock``: real time).

    The OEE and quality rules need OEE facts. Alone, each machine's engine keeps an OEE
    accounting of its own; in the machine engine next to the OEE flow, the step built with
    ``fed=True`` takes that flow's facts instead (:attr:`MachineStep.fed`), the same facts
    without computing them twice.
    """
    calendar = ShiftCalendar.from_config(config)
    the_clock = clock or EventClock(1.0, time.time)

    def make(machine: str, site: str, line: str) -> AlertEngine:
        return AlertEngine.for_config(config, machine, site, line, calendar, own_oee=not fed)

    return MachineStep("alerts", _usable, lambda resume: AlertLogic(make, the_clock, resume), _rows,
                       upstream="oee" if fed else None,
                       fed=None if fed else ("oee", lambda: alert_step(config, clock, fed=True)))


def alert_streams(config: PlantConfig, measurements: Stream[Measurement],
                  clock: EventClock | None = None) -> Stream[Row]:
    """The alert records of every machine, as a per-flow step (``clock`` defaults to real time)."""
    tagged = per_machine(alert_step(config, clock), measurements)
    return op.map("alert_rows", tagged, lambda tr: tr[1])


def _outputs(ctx: FlowContext, tagged: Stream[tuple[str, Row]]) -> Results:
    rows = op.map("alert_rows", tagged, lambda tr: tr[1])
    hook = ctx.config.alerts.webhook
    if hook.url:
        from plantstream.connectors.webhook import WebhookSink

        op.output("alerts_webhook", rows, WebhookSink.from_config(hook))
    return {"alerts": rows}


alerts = MachineFlow(
    lambda ctx: alert_step(ctx.config), _outputs,
    doc="Alert records (raised, escalated, cleared) into ``alerts``, the topic and the webhook.")

FLOW = Flow(
    name="alerts", build=alerts, doc=alerts.doc, config="alerts",
    tables={"alerts": "022_alerts.sql"},
    topics={"alerts": "plantstream.alerts"},
    cloud={"alerts": "send"},
    kpi=("alerts",),
)
