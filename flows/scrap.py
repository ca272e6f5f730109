"""The scrap flow: scrap events with reason and cost, rolling scrap rate and first-pass yield.

Three keyed steps (see :mod:`plantstream.operators.scrap`):

1. per machine, in the machine engine (:mod:`plantstream.flows.engine`): a
   :class:`~plantstream.operators.scrap.ScrapLogic` (spec
   :func:`~plantstream.operators.scrap.scrap_spec`) turns reject deltas into scrap events
   (uncosted), hop-boundary rate contributions, and samples beyond the restatement horizon into
   dead letters; the scrap fold on the machine's event-time ledger
   (:mod:`plantstream.operators.ledger`). State: :class:`~plantstream.operators.scrap.ScrapState`,
   encoded by :data:`~plantstream.operators.scrap.SCRAP_STATE`.
2. ``scrap_rate`` keyed by ``scope|key`` (machine, line, part): a
   :class:`~plantstream.operators.scrap.RateLogic` sums contributions into ``scrap_rate`` rows
   (snapshot: :data:`~plantstream.operators.scrap.RATE_STATE` bytes).
3. ``scrap_cost`` keyed by work order: a :class:`~plantstream.operators.scrap.JoinLogic` joins
   the events with the work-order reference data and writes ``scrap_events`` (snapshot:
   :data:`~plantstream.operators.scrap.JOIN_STATE` bytes).

Work-order reference data enters in two ways, both optional: ``scrap.workorders_file`` is read
when the flow is built (a static table), and — when ``scrap.workorders_topic`` is on and
``kafka.bootstrap_servers`` is set (production) — the flow adds a second Kafka input on the
compacted topic ``plantstream.workorders`` (read from the beginning, so every work order's
latest record is replayed at start; ``PLANTSTREAM_STOP=end`` stops it at the end like the
measurements input). A record from the topic overrides the file. Embedded replays (no
bootstrap servers) use the file only. Tests and tools pass their own reference stream to
:func:`scrap_streams`.

Unit of parallelism: the machine (Kafka key), then the scope key and the work order.
Delivery: effectively-once with recovery; every row lands in a ReplacingMergeTree keyed by its
natural key with a version, so rows written again after a resume or a restatement replace
themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.inputs import Source

from plantstream.connectors import kafka
from plantstream.connectors.kafka import RawMessage
from plantstream.flows.engine import MachineFlow, per_machine
from plantstream.flows.registry import Flow, FlowContext, Results, Row
from plantstream.operators.logic import LogicSpec
from plantstream.operators.scrap import (
    Joined,
    JoinLogic,
    Output,
    RateLogic,
    ScrapState,
    WorkOrderRef,
    decode_workorder,
    load_workorders,
    scrap_spec,
)
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import Measurement


def _kind(name: str) -> Callable[[Output], Row | None]:
    return lambda kr: kr[1] if kr[0] == name else None


def workorder_source(config: PlantConfig) -> Source[RawMessage] | None:
    """The ``plantstream.workorders`` input, when configured and a Kafka cluster is set."""
    kconf = config.kafka.client_config()
    if not config.scrap.workorders_topic or "bootstrap.servers" not in kconf:
        return None
    if os.environ.get("PLANTSTREAM_STOP") == "end":
        return kafka.KafkaInput(kconf, kafka.WORKORDERS, stop="end", batched=False)
    if os.environ.get("PLANTSTREAM_STOP") == "signal":  # plantstream run: ends with the measurements
        return kafka.KafkaInput(kconf, kafka.WORKORDERS, stop=kafka.signal_stop(), batched=False)
    return kafka.KafkaInput(kconf, kafka.WORKORDERS, stop="never", batched=False)


def decode_workorders(raw: Stream[RawMessage]) -> tuple[Stream[WorkOrderRef], Stream[Row]]:
    """Reference records → :class:`WorkOrderRef`; bad ones → dead-letter rows with a reason."""
    decoded = op.map("workorders_decode", raw, lambda m: (m, decode_workorder(m.value)))
    split = op.branch("workorders_valid", decoded, lambda mr: isinstance(mr[1], WorkOrderRef))
    refs: Stream[WorkOrderRef] = op.map("workorders_refs", split.trues, lambda mr: mr[1])  # type: ignore[arg-type,return-value]
    bad: Stream[Row] = op.map("workorders_bad", split.falses, lambda mr: {
        "ts": mr[0].timestamp_ms, "source": mr[0].source, "reason": mr[1],
        "raw": mr[0].value.decode("utf-8", errors="backslashreplace")})
    return refs, bad


def scrap_step(config: PlantConfig) -> LogicSpec[ScrapState, list[Output]]:
    """Reject deltas of each machine into its :class:`~plantstream.operators.scrap.ScrapLogic` (step 1)."""
    return scrap_spec(config)


def scrap_tables(config: PlantConfig, flat: Stream[Output],
                 refs: Stream[WorkOrderRef] | None = None) -> dict[str, Stream[Row]]:
    """Steps 2 and 3 over the trackers' outputs and an optional reference-data stream."""
    static = load_workorders(config.scrap.workorders_file) if config.scrap.workorders_file else {}
    window_ms = config.scrap.window_s * 1000

    contributions = op.filter_map("scrap_contributions", flat, _kind("rate"))
    by_scope = op.key_on("scrap_rate_key", contributions, lambda c: f"{c['scope']}|{c['key']}")
    keep_ms = max(round(config.lateness.restatement_horizon_s * 1000), 2 * window_ms)
    rates = op.stateful("scrap_rate", by_scope, lambda resume: RateLogic(window_ms, keep_ms, resume))
    rate_rows = op.map("scrap_rate_rows", rates, lambda kv: kv[1])

    events = op.filter_map("scrap_event_rows", flat, _kind("scrap_events"))
    tagged: Stream[Joined] = op.map("scrap_events_tag", events, lambda r: ("event", r))
    if refs is not None:
        tagged_refs: Stream[Joined] = op.map("scrap_refs_tag", refs, lambda r: ("ref", r))
        tagged = op.merge("scrap_join_in", tagged, tagged_refs)
    by_wo = op.key_on("scrap_wo_key", tagged,
                      lambda kv: kv[1].work_order if kv[0] == "ref" else str(kv[1].get("work_order", "")))
    costed = op.stateful("scrap_cost", by_wo, lambda resume: JoinLogic(config, static, resume))
    event_rows = op.map("scrap_events_rows", costed, lambda kv: kv[1])
    return {
        "scrap_events": event_rows,
        "scrap_rate": rate_rows,
        "deadletter": op.filter_map("scrap_late_rows", flat, _kind("deadletter")),
    }


def scrap_streams(config: PlantConfig, measurements: Stream[Measurement],
                  refs: Stream[WorkOrderRef] | None = None) -> dict[str, Stream[Row]]:
    """The scrap steps, each its own Bytewax step, over a measurement stream."""
    return scrap_tables(config, per_machine(scrap_step(config), measurements), refs)


def _results(ctx: FlowContext, flat: Stream[Output]) -> Results:
    source = workorder_source(ctx.config)
    if source is None:
        return scrap_tables(ctx.config, flat)
    raw = op.input("workorders_in", flat.flow(), source)
    refs, bad = decode_workorders(raw)
    results = scrap_tables(ctx.config, flat, refs)
    results["deadletter"] = op.merge("scrap_deadletter", results["deadletter"], bad)
    return results


scrap = MachineFlow(
    lambda ctx: scrap_step(ctx.config), _results,
    doc="Scrap events (reason, category, part, work order, cost) and rolling scrap rate / FPY.")

FLOW = Flow(
    name="scrap", build=scrap, doc=scrap.doc, config="scrap",
    tables={"scrap_events": "020_scrap_events.sql", "scrap_rate": "021_scrap_rate.sql"},
    topics={"scrap_events": "plantstream.scrap"},
    cloud={"scrap_events": "coalesce"},
    kpi=("scrap",),
)
