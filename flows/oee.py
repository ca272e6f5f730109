"""The OEE flow: time-in-state facts, downtime events and late data, one step per machine.

Measurements of usable quality go, per machine, through one :class:`OeeLogic` (in the machine
engine, :mod:`flows.engine`, or as its own ``op.stateful`` step keyed by machine when the flow
is called as a function) whose accounting is an :class:`operators.oee.OeeAccounting` (the OEE
fold on the machine's event-time ledger, :mod:`operators.ledger`): the OEE metrics
(:data:`operators.oee.OEE_METRICS`) are accounted, every other metric of a machine already
known is a tick of its event time (a PLC reports its state only when it changes, so without
ticks a machine sitting in one state for an hour would leave that hour's windows open). Its
snapshot is a single ``bytes`` value (:data:`operators.oee.OEE_STATE`: kind, format version and
plain data), so the per-epoch copy Bytewax makes of every active key is a memcpy. The step
emits ``(table, row)`` pairs, split into ``oee_facts``,
``downtime_events`` and ``deadletter`` (samples beyond the restatement horizon, reason ``late``).
The engine hands a machine's samples of one batch to :meth:`OeeLogic.on_items` at once.

Unit of parallelism: the machine (Kafka key). Delivery: effectively-once with recovery — the
state is snapshotted with the input offsets, and every row lands in a ReplacingMergeTree keyed
by its natural key with a version, so rows re-emitted after a resume replace themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.dataflow import Stream

from plantstream.flows.engine import MachineFlow, MachineStep, split_tables
from plantstream.flows.registry import Flow, FlowContext, Results, Row
from plantstream.operators.oee import OEE_METRICS, OeeAccounting, Output
from plantstream.operators.shifts import ShiftCalendar
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import Measurement

Emit = tuple[list[list[Output]], bool]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OeeLogic(op.StatefulLogic[Measurement, list[Output], bytes]):
    """Bytewax glue: route one machine's samples into its accounting; snapshot as bytes.

    Bytewax builders do not see the key, so the accounting is built from the first sample's
    machine id, or from the machine id stored in the resume snapshot. When a machine goes quiet
    with samples still waiting for the watermark (a machine that stops sends nothing more), a
    timer ``allowed_lateness_s`` of wall time later applies them
    (:meth:`~operators.oee.OeeAccounting.flush`), so the open stop is visible while it lasts.
    ``now`` is injected for tests.
    """

    def __init__(self, make: Callable[[str], OeeAccounting], resume: bytes | None,
                 now: Callable[[], datetime] = _utc_now) -> None:
        self.make = make
        self.now = now
        self.acc: OeeAccounting | None = None
        self.due: datetime | None = None
        if resume:
            self.acc = make(OeeAccounting.machine_of(resume))
            self.acc.load(resume)

    def on_item(self, value: Measurement) -> Emit:
        if value.metric not in OEE_METRICS:
            if self.acc is None:  # a sensor-only asset: no OEE, no state kept
                return [], op.StatefulLogic.DISCARD
            self.acc.on_tick(value.ts)
            out = self.acc.take()
            return ([out] if out else []), op.StatefulLogic.RETAIN
        if self.acc is None:
            self.acc = self.make(value.machine)
        if value.site and value.site != self.acc.site:  # the source's site and line win over the
            self.acc.site = value.site                  # plant config's, as in every other table
        if value.line and value.line != self.acc.line:
            self.acc.line = value.line
        self.acc.on_sample(value.ts, value.metric, value.value, value)
        out = self.acc.take()
        self.due = (self.now() + timedelta(milliseconds=self.acc.lateness_ms)
                    if self.acc.buffer else None)
        return ([out] if out else []), op.StatefulLogic.RETAIN

    def on_items(self, values: list[Measurement]) -> Emit:
        """Samples of this machine that arrived together (one engine batch): the accounting
        takes them at once, so late ones among them restate once."""
        acc = self.acc
        samples: list[tuple[int, str, object]] = []
        raws: list[Measurement] = []
        tick = -1
        for value in values:
            if value.metric not in OEE_METRICS:
                if value.ts > tick:
                    tick = value.ts
                continue
            if acc is None:
                acc = self.acc = self.make(value.machine)
            if value.site and value.site != acc.site:
                acc.site = value.site
            if value.line and value.line != acc.line:
                acc.line = value.line
            samples.append((value.ts, value.metric, value.value))
            raws.append(value)
        if acc is None:  # a sensor-only asset: no OEE, no state kept
            return [], op.StatefulLogic.DISCARD
        if samples:
            acc.ingest(samples, raws)
            self.due = (self.now() + timedelta(milliseconds=acc.lateness_ms) if acc.buffer else None)
        if tick >= 0:
            acc.on_tick(tick)
        out = acc.take()
        return ([out] if out else []), op.StatefulLogic.RETAIN

    def on_notify(self) -> Emit:
        self.due = None
        if self.acc is None:
            return [], op.StatefulLogic.RETAIN
        out = self.acc.flush()
        return ([out] if out else []), op.StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.due

    def on_eof(self) -> Emit:
        if self.acc is None:
            return [], op.StatefulLogic.RETAIN
        out = self.acc.finish()
        return ([out] if out else []), op.StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return b"" if self.acc is None else self.acc.dump()


def accounting_factory(config: PlantConfig) -> Callable[[str], OeeAccounting]:
    """Machine id → its accounting; one shift calendar shared by every machine."""
    calendar = ShiftCalendar.from_config(config)
    return lambda machine: OeeAccounting.for_config(config, machine, calendar)


class Ticks:
    """What the OEE step needs to see: every usable OEE sample, and of a machine's other
    metrics at most one every ``step_ms`` of event time (5 s). Sensors report every second or
    faster; a tick every few seconds closes windows just as well, and spares the stateful step
    the rest. The cost: at the end of a replay a machine's time is known up to its last tick,
    at most ``step_ms`` before its last sample. Dropping a tick is always safe (the next one,
    or the next OEE sample, does its work), so this memory of one number per machine is not
    part of any snapshot.

    >>> from plantstream.schemas.measurement import Measurement
    >>> keep = Ticks(step_ms=5_000)
    >>> def m(ts, metric="temperature_c", quality="good"):
    ...     return Measurement(ts=ts, site="s", line="l", machine="m1", metric=metric,
    ...                        value=1.0, quality=quality, source="t")
    >>> [keep(m(t)) for t in (60_000, 61_000, 64_999, 65_000, 66_000, 80_000)]
    [True, False, False, True, False, True]
    >>> keep(m(80_001, "machine_state")), keep(m(90_000, quality="bad"))
    (True, False)
    """

    def __init__(self, step_ms: int = 5_000) -> None:
        self.step_ms = step_ms
        self.last: dict[str, int] = {}

    def __call__(self, m: Measurement) -> bool:
        if m.quality == "bad":
            return False
        if m.metric in OEE_METRICS:
            return True
        slot = m.ts // self.step_ms
        if slot <= self.last.get(m.machine, slot - 1):
            return False
        self.last[m.machine] = slot
        return True


def oee_step(ctx: FlowContext) -> MachineStep:
    """OEE samples and ticks of each machine into its :class:`OeeLogic`."""
    make = accounting_factory(ctx.config)
    return MachineStep("oee", Ticks(), lambda resume: OeeLogic(make, resume), _outputs)


def _outputs(out: list[Output]) -> list[Output]:
    return out


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
