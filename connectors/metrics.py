"""Prometheus ``/metrics`` of a plantstream process, read from the components' own counters.

Every long-running process (an OPC UA or MQTT connector, the flows, ``plantstream run``) has one
:class:`Metrics`: a registry of its own (never prometheus_client's global default, so two
processes' worth of components in one test process do not collide) that the process's
:class:`~plantstream.connectors.health.HealthServer` serves at ``/metrics`` next to
``/healthz`` and ``/readyz`` — one port per process.

Nothing is counted twice and nothing is counted on the hot path for Prometheus' sake: the
components keep their counters as they always did (:class:`~plantstream.connectors.mqtt.MqttStats`,
:class:`~plantstream.connectors.producer.ProducerStats`,
:class:`~plantstream.connectors.clickhouse.SinkStats`, the outbox workers' status …) and a
scrape reads them (``watch_*``). Metric names carry the ``plantstream_`` prefix and their unit
(``_seconds``, ``_bytes``, ``_records``; counters end in ``_total``); docs/metrics.md lists them
with their labels.

Dead-letter reasons are free text (they name the tag, the field, the value); the ``reason``
label is their kind (:func:`reason_kind`), a short bounded word such as ``not_json`` or
``unknown_tag``, so a flood of distinct bad values cannot blow up the number of series.

Examples
--------
>>> from plantstream.connectors.clickhouse import SinkStats
>>> m = Metrics("flows")
>>> stats = SinkStats()
>>> m.watch_sink(stats)
>>> stats.record("oee_facts", 12, 0.01)
>>> text = m.render()[0].decode()
>>> 'plantstream_rows_written_total{table="oee_facts"} 12.0' in text
True
>>> 'plantstream_process_info{component="flows"} 1.0' in text
True
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one series: ``name`` without ``_total`` for counters (added when rendered).

    A histogram's ``value`` is ``(cumulative bucket counts by upper bound, sum)``.
    """

    kind: Kind
    name: str
    help: str
    labels: Mapping[str, str]
    value: Any


SampleFn = Callable[[], Iterable[Sample]]
"""Called at every scrape; yields the samples of one component."""


# -- dead-letter reasons ---------------------------------------------------------------------------

_REASON_KINDS: tuple[tuple[str, str], ...] = (
    ("not json", "not_json"),
    ("not a json object", "not_json"),
    ("oversized", "oversized"),
    ("unknown tag", "unknown_tag"),
    ("tag '", "bad_value"),
    ("tag value of", "bad_value"),
    ("field '", "bad_field"),
    ("missing field", "bad_field"),
    ("counter out of range", "counter_range"),
    ("late", "late"),
    ("clock_skew", "clock_skew"),
    ("refused by kafka", "kafka_refused"),
    ("kepserverex", "bad_payload"),
    ("one-value payload", "bad_payload"),
    ("flat payload", "bad_payload"),
    ("sparkplug", "sparkplug"),
    ("cannot convert", "conversion_failed"),
)
_WORDS = re.compile(r"[a-z][a-z_]*")
_MAX_KINDS = 64


class _Kinds:
    """Reason kinds seen beyond the known ones, at most ``_MAX_KINDS`` (then ``other``)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.lock = threading.Lock()


_EXTRA = _Kinds()


def reason_kind(reason: object) -> str:
    """The bounded kind of a dead-letter reason (the ``reason`` label of the dead-letter metrics).

    Known reasons map to fixed kinds; another reason is named by its first word (letters and
    ``_`` only), and past 64 such words every new one is ``other``.

    >>> reason_kind("not JSON: unexpected character: line 1 column 1 (char 0)")
    'not_json'
    >>> reason_kind("unknown tag 'L1.X': not in the tag dictionary")
    'unknown_tag'
    >>> reason_kind("clock_skew: 900 s behind the machine's time"), reason_kind("late")
    ('clock_skew', 'late')
    >>> reason_kind("duplicate sample"), reason_kind(""), reason_kind(None)
    ('duplicate', 'unknown', 'unknown')
    """
    text = str(reason or "").lstrip("\0").strip().lower()
    if not text:
        return "unknown"
    for prefix, kind in _REASON_KINDS:
        if text.startswith(prefix):
            return kind
    word = _WORDS.match(text)
    if word is None:
        return "other"
    kind = word.group(0)[:32]
    with _EXTRA.lock:
        if kind in _EXTRA.seen:
            return kind
        if len(_EXTRA.seen) >= _MAX_KINDS:
            return "other"
        _EXTRA.seen.add(kind)
    return kind


def count_reasons(counter: Counter[str], reasons: Iterable[object]) -> None:
    """Add each reason's kind to ``counter`` (the components' ``deadletter_reasons``)."""
    for r in reasons:
        counter[reason_kind(r)] += 1


# -- histograms kept by the components -------------------------------------------------------------

EPOCH_BUCKETS: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)
"""Upper bounds (seconds) of the epoch-duration histogram."""


@dataclass
class Buckets:
    """A small thread-safe histogram (fixed upper bounds) a component fills and a scrape reads.

    >>> b = Buckets((1.0, 10.0)); b.observe(0.5); b.observe(4.0); b.observe(40.0)
    >>> b.cumulative(), b.sum
    ([(1.0, 1), (10.0, 2), (inf, 3)], 44.5)
    """

    bounds: tuple[float, ...] = EPOCH_BUCKETS
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        i = 0
        while i < len(self.bounds) and value > self.bounds[i]:
            i += 1
        with self._lock:
            self.counts[i] += 1
            self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        with self._lock:
            counts = list(self.counts)
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self.counts)


# -- the registry ------------------------------------------------------------------------------------


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        seen: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
        samples: list[Sample] = []
        for fn in self._metrics.sources():
            samples.extend(fn())
        for s in samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            if s.kind == "histogram":
                seen[key] = s  # one component owns a histogram series
            elif key in seen and s.kind == "counter":
                prev = seen[key]
                seen[key] = Sample(s.kind, s.name, s.help, s.labels, prev.value + s.value)
            else:
                seen[key] = s
        for (name, labels), s in seen.items():
            fam = families.get(name)
            if fam is None:
                fam = families[name] = Metric(name, s.help, s.kind)
            lab = dict(labels)
            if s.kind == "counter":
                fam.add_sample(f"{name}_total", lab, float(s.value))
            elif s.kind == "gauge":
                fam.add_sample(name, lab, float(s.value))
            else:
                buckets, total = s.value
                for bound, n in buckets:
                    le = "+Inf" if bound == float("inf") else repr(float(bound))
                    fam.add_sample(f"{name}_bucket", {**lab, "le": le}, float(n))
                fam.add_sample(f"{name}_count", lab, float(buckets[-1][1] if buckets else 0))
                fam.add_sample(f"{name}_sum", lab, float(total))
        yield from families.values()


class Metrics:
    """The Prometheus metrics of one process: a registry of its own and what it watches.

    Parameters
    ----------
    component
        What the process is (``mqtt``, ``opcua``, ``flows``, ``run`` …): the ``component`` label
        of ``plantstream_process_info`` and of the dead-letter and message counters.

    Use ``watch_*`` to add a component's counters (read at every scrape), :meth:`add` for
    anything else, and serve it with
    ``HealthServer(port, health, metrics=metrics)`` (:mod:`plantstream.connectors.health`).
    """

    def __init__(self, component: str) -> None:
        self.component = component
        self.registry = CollectorRegistry(auto_describe=False)
        self._sources: list[SampleFn] = [self._info]
        self._lock = threading.Lock()
        self._started = time.time()
        self.registry.register(_Collector(self))

    def sources(self) -> list[SampleFn]:
        with self._lock:
            return list(self._sources)

    def add(self, fn: SampleFn) -> None:
        """Read ``fn``'s samples at every scrape."""
        with self._lock:
            self._sources.append(fn)

    def render(self) -> tuple[bytes, str]:
        """The text exposition of every metric and its content type (what ``/metrics`` answers)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _info(self) -> Iterable[Sample]:
        yield Sample("gauge", "plantstream_process_info",
                     "A plantstream process and what it runs (always 1).", {"component": self.component}, 1)
        yield Sample("gauge", "plantstream_process_start_time_seconds",
                     "When this plantstream process started its metrics, epoch seconds.",
                     {"component": self.component}, self._started)

    # -- connectors --

    def watch_mqtt(self, connector: Any) -> None:
        """An :class:`~plantstream.connectors.mqtt.MqttConnector` (messages in, dead letters by
        reason, connection, Sparkplug rebirth requests) and its producer."""
        self._watch_source("mqtt", lambda: connector.mqtt.source, lambda: connector.stats.messages,
                           lambda: connector.stats.measurements, lambda: connector.stats.deadletter_reasons,
                           lambda: connector._connected.is_set())

        def sparkplug() -> Iterable[Sample]:
            yield Sample("counter", "plantstream_sparkplug_rebirth_requests",
                         "Sparkplug B rebirth requests (NCMD Node Control/Rebirth) sent to edge nodes.",
                         {"source": connector.mqtt.source}, connector.stats.rebirth_requests)

        self.add(sparkplug)
        self.add(lambda: _producer_samples(connector.producer))

    def watch_opcua(self, connector: Any) -> None:
        """An :class:`~plantstream.connectors.opcua.OpcUaConnector` and its producer."""
        self._watch_source("opcua", lambda: connector.oc.source, lambda: connector.stats.received,
                           lambda: connector.stats.produced, lambda: connector.stats.deadletter_reasons,
                           lambda: connector.stats.connected)
        self.add(lambda: _producer_samples(connector.producer))

    def _watch_source(self, kind: str, source: Callable[[], str], messages: Callable[[], int],
                      measurements: Callable[[], int], reasons: Callable[[], Counter[str]],
                      connected: Callable[[], bool]) -> None:
        component = self.component

        def samples() -> Iterable[Sample]:
            src = source()
            labels = {"component": component, "source": src}
            yield Sample("counter", "plantstream_messages_in",
                         "Messages received: MQTT messages, OPC UA value changes, Kafka input records "
                         "of the flows.", labels, messages())
            yield Sample("counter", "plantstream_measurements_out",
                         "Measurements made from them and handed to Kafka.", labels, measurements())
            for reason, n in dict(reasons()).items():
                yield Sample("counter", "plantstream_deadletters",
                             "Dead letters by reason kind (see docs/metrics.md).",
                             {"component": component, "reason": reason}, n)
            yield Sample("gauge", "plantstream_source_connected",
                         "1 while the connector is connected to its MQTT broker or OPC UA server.",
                         {"source": src, "protocol": kind}, 1 if connected() else 0)

        self.add(samples)

    def watch_producer(self, producer: Any) -> None:
        """A :class:`~plantstream.connectors.producer.SpoolingProducer` on its own."""
        self.add(lambda: _producer_samples(producer))

    # -- flows --

    def watch_sink(self, stats: Any) -> None:
        """The ClickHouse sink's :class:`~plantstream.connectors.clickhouse.SinkStats`."""
        component = self.component

        def samples() -> Iterable[Sample]:
            with stats._lock:
                rows = dict(stats.rows)
                reasons = dict(stats.deadletter_reasons)
                batches, seconds, retries = stats.batches, stats.batch_seconds, stats.retries
                held = stats.held_back_s
            for table, n in sorted(rows.items()):
                yield Sample("counter", "plantstream_rows_written",
                             "Rows written to ClickHouse, by table.", {"table": table}, n)
            for reason, n in reasons.items():
                yield Sample("counter", "plantstream_deadletters",
                             "Dead letters by reason kind (see docs/metrics.md).",
                             {"component": component, "reason": reason}, n)
            yield Sample("counter", "plantstream_clickhouse_inserts", "Inserts into ClickHouse that landed.",
                         {}, batches)
            yield Sample("counter", "plantstream_clickhouse_insert_seconds",
                         "Time spent in inserts that landed.", {}, seconds)
            yield Sample("counter", "plantstream_clickhouse_insert_retries",
                         "Failed insert attempts that were retried (ClickHouse away or refusing).", {},
                         retries)
            yield Sample("counter", "plantstream_clickhouse_held_back_seconds",
                         "Time the flow waited for ClickHouse to come back.", {}, held)
            yield Sample("gauge", "plantstream_clickhouse_up",
                         "1 unless the sink's newest insert attempt failed.", {}, 0 if stats.failing else 1)

        self.add(samples)

    def watch_input(self, source: Any, counts: Any) -> None:
        """The flows' Kafka input: records read (``counts``, a :class:`FlowInputStats`) and the
        consumer lag of each partition (``source.lag()``, a
        :class:`~plantstream.connectors.kafka.KafkaInput`)."""
        component = self.component

        def samples() -> Iterable[Sample]:
            topic = getattr(source, "topic", "kafka")
            yield Sample("counter", "plantstream_messages_in",
                         "Messages received: MQTT messages, OPC UA value changes, Kafka input records "
                         "of the flows.", {"component": component, "source": f"kafka:{topic}"},
                         counts.messages)
            for part, lag in sorted(source.lag().items()):
                yield Sample("gauge", "plantstream_kafka_consumer_lag_records",
                             "Records of the input partition not read yet (high watermark - next offset).",
                             {"topic": topic, "partition": str(part)}, lag)

        self.add(samples)

    def watch_progress(self, progress: Any) -> None:
        """The dataflow's :class:`~plantstream.connectors.health.Progress`: epoch durations and
        the time since the slowest partition last turned."""

        def samples() -> Iterable[Sample]:
            b = progress.epochs
            yield Sample("histogram", "plantstream_epoch_duration_seconds",
                         "Wall time of each Bytewax epoch of the input (between two snapshots).", {},
                         (b.cumulative(), b.sum))
            yield Sample("gauge", "plantstream_dataflow_stalled_seconds",
                         "Seconds since the input partition that turned least recently last turned.", {},
                         progress.stalled_s())

        self.add(samples)

    def watch_outbox(self, workers: Sequence[Any]) -> None:
        """The outbox workers (cloud export, webhook): backlog, age of the oldest waiting record,
        deliveries, dead letters, retries."""

        def samples() -> Iterable[Sample]:
            for w in workers:
                st = w.status()
                lab = {"outbox": st["name"]}
                yield Sample("gauge", "plantstream_outbox_behind_records",
                             "Records of the outbox topics not delivered yet (webhook/cloud backlog).", lab,
                             st["behind"])
                yield Sample("gauge", "plantstream_outbox_oldest_age_seconds",
                             "Age of the oldest record waiting in the outbox.", lab, st["oldest_age_s"])
                yield Sample("gauge", "plantstream_outbox_running", "1 while the outbox worker runs.", lab,
                             1 if st["running"] else 0)
                yield Sample("counter", "plantstream_outbox_delivered_records",
                             "Records the outbox delivered.", lab, st["delivered"])
                yield Sample("counter", "plantstream_outbox_deadlettered_records",
                             "Records the destination refused for good (dead-lettered).", lab,
                             st["deadlettered"])
                yield Sample("counter", "plantstream_outbox_retries", "Delivery attempts that were retried.",
                             lab, st["retries"])

        self.add(samples)


def _producer_samples(producer: Any) -> Iterable[Sample]:
    if producer is None:
        return
    st = producer.stats
    lab = {"producer": producer.name}
    yield Sample("counter", "plantstream_producer_accepted_records",
                 "Records handed to the connector's Kafka producer.", lab, st.accepted_records)
    yield Sample("counter", "plantstream_producer_confirmed_records", "Records Kafka confirmed.", lab,
                 st.confirmed_records)
    yield Sample("counter", "plantstream_producer_deadlettered_records",
                 "Records Kafka refused for good, replaced by their dead letter.", lab,
                 st.deadlettered_records)
    yield Sample("counter", "plantstream_producer_spooled_records",
                 "Records written to the disk spool (Kafka away or slow).", lab, st.spooled_records)
    yield Sample("gauge", "plantstream_producer_pending_records",
                 "Records not confirmed by Kafka yet (memory, spool, in flight).", lab, st.pending_records)
    yield Sample("gauge", "plantstream_spool_bytes", "Bytes in the producer's disk spool.", lab,
                 st.spool_bytes)
    yield Sample("gauge", "plantstream_producer_last_delivery_timestamp_seconds",
                 "When Kafka last confirmed a record, epoch seconds (0: not yet).", lab,
                 st.last_delivery_ms / 1000)


@dataclass
class FlowInputStats:
    """What the flows' decoder counts per batch (records read), for :meth:`Metrics.watch_input`.
    Its dead letters are counted where they are written (the ClickHouse sink's ``deadletter``
    table, :meth:`Metrics.watch_sink`), with every other flow's."""

    messages: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n: int) -> None:
        with self.lock:
            self.messages += n
