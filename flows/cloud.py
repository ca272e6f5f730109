"""The cloud export: the flows' result tables to Azure Event Hubs (or any Kafka topic).

What leaves the plant is the flows' cloud policy (``cloud=`` of each flow's declaration, see
:class:`~plantstream.flows.registry.Flow`): per table, ``send`` (each record as it comes, e.g.
alerts), ``rollup`` (additive facts summed per machine over ``eventhubs.oee_rollup_s``, e.g.
OEE facts) or ``coalesce`` (an event updated every minute while open leaves as its latest
version at most every ``eventhubs.event_cadence_s``). The ``eventhubs:`` section of the plant
config may override the choice for a plant: ``tables``, ``rollup_tables`` and
``coalesced_tables`` when set there replace what the flows declare. Raw measurements never
leave (no flow declares them, and the config refuses them).

The steps that pick, sum and coalesce are here, on :mod:`plantstream.operators.rollup`, inside
the dataflow (their state is in the flows' recovery snapshots). What they choose does not go to
the cloud from the dataflow: it goes to the local topic ``plantstream.outbox.cloud``, with the
flows' other result topics, and the cloud outbox worker
(:class:`plantstream.connectors.outbox.CloudDelivery`) sends it to Event Hubs at its own pace,
so an unreachable cloud never holds back the flows or ClickHouse. The connection (connection
string, librdkafka settings, the bandwidth meter) is :mod:`plantstream.connectors.eventhubs`.

Examples
--------
>>> from plantstream.flows.registry import Flow
>>> from plantstream.schemas.sinks_config import EventHubsConfig
>>> oee = Flow(name="oee", build=lambda ctx, ms: {}, cloud={"oee_facts": "rollup",
...            "downtime_events": "coalesce"})
>>> alerts = Flow(name="alerts", build=lambda ctx, ms: {}, cloud={"alerts": "send"})
>>> p = policy(EventHubsConfig(), [oee, alerts])
>>> sorted(p.tables), sorted(p.rollup), sorted(p.coalesce)
(['alerts', 'downtime_events', 'oee_facts'], ['oee_facts'], ['downtime_events'])
>>> p = policy(EventHubsConfig(tables=("alerts",), oee_rollup_s=0), [oee, alerts])
>>> sorted(p.tables), sorted(p.rollup)
(['alerts'], [])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Stream

from plantstream.connectors.eventhubs import BandwidthMeter, record_key, record_value
from plantstream.connectors.kafka import CLOUD_OUTBOX, KafkaRecord
from plantstream.flows.registry import Flow, Row
from plantstream.operators.rollup import coalesce, rollup
from plantstream.schemas.sinks_config import EventHubsConfig


@dataclass(frozen=True)
class CloudPolicy:
    """Which result tables go to the cloud (``tables``), and which of them are rolled up or
    coalesced; the rest of ``tables`` leave as they come."""

    tables: frozenset[str]
    rollup: frozenset[str]
    coalesce: frozenset[str]

    def describe(self, cfg: EventHubsConfig) -> str:
        """One line for ``plantstream cloud settings`` and logs."""
        parts = [f"sends {', '.join(sorted(self.tables)) or 'nothing'}"]
        if self.rollup:
            parts.append(f"{', '.join(sorted(self.rollup))} summed per {cfg.oee_rollup_s}s")
        if self.coalesce:
            parts.append(f"{', '.join(sorted(self.coalesce))} as their latest version every "
                         f"{cfg.event_cadence_s:g}s")
        return "; ".join([*parts, "never raw measurements"])


def policy(cfg: EventHubsConfig, flows: Iterable[Flow]) -> CloudPolicy:
    """The cloud policy of ``flows``, with what the ``eventhubs:`` section sets explicitly."""
    declared: dict[str, str] = {}
    for flow in flows:
        declared.update(flow.cloud)
    explicit = cfg.model_fields_set
    tables = frozenset(cfg.tables if "tables" in explicit else declared)
    rolled = (frozenset(cfg.rollup_tables) if "rollup_tables" in explicit
              else frozenset(t for t, p in declared.items() if p == "rollup"))
    summed = rolled & tables if cfg.oee_rollup_s else frozenset()
    coalesced = (frozenset(cfg.coalesced_tables) if "coalesced_tables" in explicit
                 else frozenset(t for t, p in declared.items() if p == "coalesce"))
    latest = (coalesced & tables) - summed if cfg.event_cadence_s else frozenset()
    return CloudPolicy(tables, summed, latest)


def _outbox_record(tr: tuple[str, Row]) -> KafkaRecord:
    return CLOUD_OUTBOX, record_key(tr[1]), record_value(tr[0], tr[1])


def attach(cfg: EventHubsConfig, flows: Iterable[Flow], raw_sizes: Stream[tuple[int, int]],
           results: Stream[tuple[str, Row]], meter: BandwidthMeter
           ) -> tuple[CloudPolicy, Stream[KafkaRecord]]:
    """Wire the cloud export into a dataflow: count raw bytes, pick tables, roll up, coalesce.

    ``raw_sizes`` carries (bytes, messages) of each input batch: what sending the raw telemetry
    would have cost (``meter``; the cloud worker counts the bytes it sends). ``results`` are the
    ``(table, row)`` pairs of every flow. Returns the policy applied and the cloud records as
    Kafka records for :data:`~plantstream.connectors.kafka.CLOUD_OUTBOX` (key ``site/machine``,
    value the row with its ``type``: :func:`~plantstream.connectors.eventhubs.record_value`).
    """
    chosen_policy = policy(cfg, flows)
    op.inspect("cloud_count_raw", raw_sizes, lambda _step, bn: meter.add_raw(*bn))
    tables = chosen_policy.tables
    chosen = op.filter("cloud_tables", results, lambda tr: tr[0] in tables)
    summed = chosen_policy.rollup
    if summed:
        split = op.branch("cloud_is_fact", chosen, lambda tr: tr[0] in summed)
        facts = op.key_on("cloud_fact_key", split.trues,
                          lambda tr: f"{tr[0]}|{record_key(tr[1]).decode()}")
        rolled = rollup("cloud_rollup", op.map_value("cloud_fact_rows", facts, lambda tr: tr[1]),
                        period_s=cfg.oee_rollup_s, restate_buckets=cfg.restate_buckets)
        tagged = op.map("cloud_rollup_tag", rolled, lambda kv: (kv[0].split("|", 1)[0], kv[1]))
        chosen = op.merge("cloud_merge", tagged, split.falses)
    coalesced = chosen_policy.coalesce
    if coalesced:
        split_ev = op.branch("cloud_is_event", chosen, lambda tr: tr[0] in coalesced)
        events = op.key_on("cloud_event_key", split_ev.trues,
                           lambda tr: f"{tr[0]}|{record_key(tr[1]).decode()}")
        latest = coalesce("cloud_coalesce", op.map_value("cloud_event_rows", events, lambda tr: tr[1]),
                          every_s=cfg.event_cadence_s)
        tagged_ev = op.map("cloud_event_tag", latest, lambda kv: (kv[0].split("|", 1)[0], kv[1]))
        chosen = op.merge("cloud_merge_events", tagged_ev, split_ev.falses)
    return chosen_policy, op.map("cloud_records", chosen, _outbox_record)
