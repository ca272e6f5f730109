"""Kafka: topic names and creation, producer settings, the measurement source and result sink.

Everything here speaks the Kafka protocol through confluent-kafka (librdkafka), so it works
the same against the embedded Tansu broker, a Kafka cluster or Azure Event Hubs.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from plantstream.schemas.config import KafkaConfig
from plantstream.schemas.errors import ConfigError, ConnectorError
from plantstream.schemas.kafka_config import TopicConfig
from plantstream.schemas.measurement import DEADLETTER_RAW_BYTES, DeadLetter

log = logging.getLogger(__name__)

MEASUREMENTS = "plantstream.measurements"
DEADLETTER = "plantstream.deadletter"
WORKORDERS = "plantstream.workorders"
CLOUD_OUTBOX = "plantstream.outbox.cloud"
"""The cloud export's records, picked, rolled up and coalesced by the flows, waiting for the cloud
outbox worker (:mod:`plantstream.connectors.outbox`) to send them."""

PLANT_TOPICS = (MEASUREMENTS, DEADLETTER, WORKORDERS)
"""The plant's own topics: the input, the dead letter and the work-order reference data. The
result topics (``plantstream.oee`` …) are declared by the flows that write them
(``topics=`` of each flow's ``FLOW``; :func:`plantstream.flows.registry.topics` lists them all)
and created by the runners that start those flows."""

ALL_TOPICS = PLANT_TOPICS
"""Deprecated name of :data:`PLANT_TOPICS` (what a broker needs before any flow runs)."""

COMPACTED = frozenset({WORKORDERS})

DAY_MS = 24 * 3600 * 1000

TOPIC_DEFAULTS: dict[str, TopicConfig] = {
    MEASUREMENTS: TopicConfig(cleanup_policy="delete", retention_ms=7 * DAY_MS),
    DEADLETTER: TopicConfig(cleanup_policy="delete", retention_ms=30 * DAY_MS),
    WORKORDERS: TopicConfig(cleanup_policy="compact"),
}
"""Built-in settings of the plant's own topics: the measurements are kept 7 days (a replay or a
restarted flow reads them back; ClickHouse keeps the archive), the dead letter 30 days, the work
orders compacted (the latest record per work order, kept for as long as the topic exists)."""

RESULT_TOPIC_DEFAULT = TopicConfig(cleanup_policy="delete", retention_ms=7 * DAY_MS)
"""Built-in settings of every other topic (the flows' result topics)."""


@dataclass(frozen=True)
class TopicSpec:
    """How to create one topic: partitions, replication factor and topic-level configs."""

    name: str
    partitions: int
    replication_factor: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicStatus:
    """What :func:`create_topics` found or did for one topic.

    ``action`` is ``created``, ``exists`` (as configured, or nothing to compare) or ``differs``
    (``partitions`` has the broker's count when it differs from the spec; ``configs`` maps a
    config key to (wanted, on the broker) for each topic config that differs).
    """

    spec: TopicSpec
    action: Literal["created", "exists", "differs"]
    partitions: int
    configs: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """One line per difference between the spec and the broker, naming the fix."""
        out = []
        if self.partitions != self.spec.partitions:
            out.append(f"topic {self.spec.name!r} has {self.partitions} partitions, the config asks for "
                       f"{self.spec.partitions}: plantstream never repartitions a topic (it would move "
                       f"machines between partitions); set partitions: {self.partitions} under "
                       f"kafka.topics.{self.spec.name} (or kafka.partitions), or recreate the topic")
        for key, (want, have) in sorted(self.configs.items()):
            out.append(f"topic {self.spec.name!r} has {key}={have}, the config asks for {want}: "
                       f"change it on the broker (kafka-configs --alter) or in kafka.topics")
        return out


def topic_specs(config: KafkaConfig, names: Iterable[str], known: Iterable[str] = ()) -> dict[str, TopicSpec]:
    """Name → :class:`TopicSpec` for ``names``: ``kafka.topics.<name>`` over the topic's built-in
    default (:data:`TOPIC_DEFAULTS`, else :data:`RESULT_TOPIC_DEFAULT`), then ``kafka.partitions``
    and ``kafka.replication_factor``.

    A ``kafka.topics`` entry that names none of ``names`` nor of ``known`` (the topics of flows
    not started now) is a ConfigError naming the topics.

    >>> from plantstream.schemas.config import KafkaConfig
    >>> kc = KafkaConfig.model_validate({"partitions": 6,
    ...                                  "topics": {MEASUREMENTS: {"retention_ms": 3600000}}})
    >>> specs = topic_specs(kc, [MEASUREMENTS, WORKORDERS, "plantstream.oee"])
    >>> specs[MEASUREMENTS].partitions, dict(specs[MEASUREMENTS].configs)
    (6, {'cleanup.policy': 'delete', 'retention.ms': '3600000'})
    >>> dict(specs[WORKORDERS].configs), dict(specs["plantstream.oee"].configs)["retention.ms"]
    ({'cleanup.policy': 'compact'}, '604800000')
    """
    wanted = list(dict.fromkeys(names))
    every = list(dict.fromkeys([*wanted, *known]))
    stray = sorted(set(config.topics) - set(every))
    if stray:
        msg = (f"plant config field 'kafka.topics.{stray[0]}': plantstream uses no topic named "
               f"{stray[0]!r}; choose from {', '.join(every)}")
        raise ConfigError(msg)
    out: dict[str, TopicSpec] = {}
    for name in wanted:
        settings = config.topics.get(name, TopicConfig()).over(TOPIC_DEFAULTS.get(name, RESULT_TOPIC_DEFAULT))
        out[name] = TopicSpec(name, settings.partitions or config.partitions,
                              settings.replication_factor or config.replication_factor,
                              settings.topic_configs())
    return out


def _as_specs(topics: Mapping[str, int] | Iterable[TopicSpec], compacted: frozenset[str]) -> list[TopicSpec]:
    if isinstance(topics, Mapping):
        return [TopicSpec(name, n, 1, {"cleanup.policy": "compact"} if name in compacted else {})
                for name, n in topics.items()]
    return list(topics)


def _broker_configs(admin: AdminClient, names: list[str], timeout_s: float) -> dict[str, dict[str, str]]:
    """Topic configs the broker reports (empty for a topic or broker that reports none)."""
    if not names:
        return {}
    out: dict[str, dict[str, str]] = {}
    try:
        futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in names],
                                         request_timeout=timeout_s)
        for res, fut in futures.items():
            entries = fut.result(timeout=timeout_s)
            out[res.name] = {k: v.value for k, v in entries.items() if v.value is not None}
    except KafkaException as exc:
        log.warning("Kafka does not describe topic configs (%s); only partitions are compared", exc)
    return out


def create_topics(conf: Mapping[str, Any], topics: Mapping[str, int] | Iterable[TopicSpec],
                  compacted: frozenset[str] = COMPACTED, timeout_s: float = 15.0, *,
                  compare_configs: bool = False, warn: bool = True) -> list[TopicStatus]:
    """Create the topics that do not exist yet; existing ones are left alone and compared.

    Parameters
    ----------
    conf
        librdkafka client settings (``bootstrap.servers``, security).
    topics
        :class:`TopicSpec` items (:func:`topic_specs`), or name → partitions (replication 1,
        the names in ``compacted`` compacted, other configs the broker's defaults).
    compare_configs
        Also read the topic configs of existing topics from the broker (DescribeConfigs) and
        report those that differ from the spec.
    warn
        Log each difference (:attr:`TopicStatus.problems`) as a warning.

    Returns
    -------
    list[TopicStatus]
        One per topic, in order. A partition count that differs is also logged as a warning:
        it is reported, never changed.
    """
    specs = _as_specs(topics, compacted)
    admin = AdminClient(dict(conf))
    try:
        meta = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        msg = f"cannot reach Kafka at {conf.get('bootstrap.servers')}: {exc}"
        raise ConnectorError(msg) from exc
    existing = {name: len(t.partitions) for name, t in meta.items() if t.error is None}
    created: set[str] = set()
    new = [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor,
                    config=dict(s.configs)) for s in specs if s.name not in existing]
    if new:
        for name, fut in admin.create_topics(new, operation_timeout=timeout_s,
                                             request_timeout=timeout_s).items():
            try:
                fut.result(timeout=timeout_s)
                created.add(name)
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue  # created meanwhile by another runner: compared below
                msg = f"cannot create Kafka topic {name!r}: {exc}"
                raise ConnectorError(msg) from exc
        if len(created) < len(new):
            meta = admin.list_topics(timeout=timeout_s).topics
            existing.update({n: len(t.partitions) for n, t in meta.items() if t.error is None})
    have = _broker_configs(admin, [s.name for s in specs if s.name not in created], timeout_s) \
        if compare_configs else {}
    out: list[TopicStatus] = []
    for s in specs:
        if s.name in created:
            out.append(TopicStatus(s, "created", s.partitions))
            continue
        broker = have.get(s.name, {})
        diffs = {k: (v, broker[k]) for k, v in s.configs.items() if k in broker and broker[k] != v}
        partitions = existing.get(s.name, s.partitions)
        action: Literal["exists", "differs"] = "differs" if diffs or partitions != s.partitions else "exists"
        status = TopicStatus(s, action, partitions, diffs)
        for line in status.problems if warn else ():
            log.warning("%s", line)
        out.append(status)
    return out


def producer_config(conf: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """Producer settings that never lose or reorder a record.

    Idempotent with ``acks=all``; ``message.timeout.ms=0`` turns off librdkafka's default
    five-minute expiry, which would otherwise drop records while the broker is unreachable.
    """
    out = {
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "message.timeout.ms": 0,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 262_144,
    }
    out.update(conf)
    out.update(overrides)
    return out


def produce_waiting(producer: Producer, topic: str, value: bytes, key: bytes | None, *,
                    wait_s: float = 0.1, **kwargs: Any) -> None:
    """``producer.produce`` that waits for deliveries while librdkafka's local queue is full,
    instead of dropping the record or raising ``BufferError`` to the caller."""
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            producer.poll(wait_s)


# -- source -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One Kafka message as the flows see it before decoding."""

    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    @property
    def source(self) -> str:
        return f"kafka:{self.topic}/{self.partition}@{self.offset}"


class KafkaBatch:
    """The messages of one consume call on one partition, kept as librdkafka returned them.

    The measurement source emits one of these per poll instead of one item per message, so a
    flow pays Bytewax's per-item cost once per batch; :meth:`values` is all decoding needs, and
    :meth:`raw` rebuilds one message (offset, timestamp) only for the rare dead letter.
    """

    __slots__ = ("messages", "partition", "topic")

    def __init__(self, topic: str, partition: int, messages: list[Any]) -> None:
        self.topic = topic
        self.partition = partition
        self.messages = messages

    def __len__(self) -> int:
        return len(self.messages)

    def values(self) -> list[bytes]:
        return [m.value() or b"" for m in self.messages]

    def raw(self, i: int) -> RawMessage:
        m = self.messages[i]
        return RawMessage(m.key(), m.value() or b"", self.topic, self.partition, m.offset() or 0,
                          m.timestamp()[1])


class RawBatch:
    """Already-built :class:`RawMessage` items as one batch (test sources, per-item inputs)."""

    __slots__ = ("messages", "partition", "topic")

    def __init__(self, messages: list[RawMessage]) -> None:
        self.messages = messages
        self.topic = messages[0].topic if messages else ""
        self.partition = messages[0].partition if messages else 0

    def __len__(self) -> int:
        return len(self.messages)

    def values(self) -> list[bytes]:
        return [m.value for m in self.messages]

    def raw(self, i: int) -> RawMessage:
        return self.messages[i]


Batch = KafkaBatch | RawBatch


StopWhen = Literal["end", "never"] | threading.Event
"""``"end"``: stop at the end offsets seen at start (replay); ``"never"``: tail; an Event: tail
until it is set, then drain what the topic holds at that moment and stop (demo, Ctrl-C)."""


_SIGNAL_STOP: threading.Event | None = None


def signal_stop() -> threading.Event:
    """One event per process that SIGTERM and SIGINT set: every input of a dataflow given it
    tails its topic until then, reads what the topic holds at that moment and ends, so the
    dataflow completes and its last epoch closes (``PLANTSTREAM_STOP=signal``). Installed once,
    from the main thread."""
    global _SIGNAL_STOP
    if _SIGNAL_STOP is None:
        import signal

        event = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            log.warning("signal %d: reading to the end of the topics, then closing the last epoch", signum)
            event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        _SIGNAL_STOP = event
    return _SIGNAL_STOP


class _KafkaPartition(StatefulSourcePartition[Any, int]):
    # The end of a partition is learnt from fetch responses (partition EOF events and the
    # cached high watermark), never from ListOffsets: some Kafka-protocol brokers answer that
    # request with batch counts rather than offsets.
    _SETTLE_S = 0.5
    GATHER_MS = 50

    def __init__(self, conf: dict[str, Any], topic: str, partition: int, resume: int | None,
                 stop: StopWhen, batch_size: int, batched: bool) -> None:
        self._batched = batched
        self._tp = TopicPartition(topic, partition)
        self._topic = topic
        self._partition = partition
        self._stop = stop
        self._batch_size = batch_size
        self._consumer = Consumer(conf)
        self._next = 0 if resume is None else resume
        # A fresh start reads from offset 0, not OFFSET_BEGINNING: resolving the logical offset
        # costs a ListOffsets round trip that takes half a second on some brokers (Tansu). If
        # retention has removed offset 0, auto.offset.reset=earliest moves to the first one.
        self._consumer.assign([TopicPartition(topic, partition, 0 if resume is None else resume)])
        self._awake: datetime | None = None
        self._stop_seen: float | None = None
        self._at_eof = False
        self._closed = False
        self.on_close: Callable[[_KafkaPartition], None] | None = None

    @property
    def number(self) -> int:
        return self._partition

    def lag(self) -> int | None:
        """High watermark (cached from fetches) minus the next offset; None before a fetch."""
        if self._closed:
            return None
        try:
            high = self._consumer.get_watermark_offsets(self._tp, cached=True)[1]
        except (KafkaException, RuntimeError):  # closed meanwhile
            return None
        return None if high is None or high < 0 else max(0, high - self._next)

    def _should_end(self, at_eof: bool) -> bool:
        if self._stop == "end":
            return at_eof
        if isinstance(self._stop, threading.Event) and self._stop.is_set():
            now = time.monotonic()
            if self._stop_seen is None:
                self._stop_seen = now
            if now - self._stop_seen < self._SETTLE_S:
                return False  # let a fetch made after the stop refresh the high watermark
            high = self._consumer.get_watermark_offsets(self._tp, cached=True)[1]
            return at_eof or (high >= 0 and self._next >= high)
        return False

    def next_batch(self) -> list[Any]:
        msgs = self._consumer.consume(self._batch_size, 0.01)
        if any(m.error() is not None for m in msgs):
            msgs = self._without_events(msgs)
        elif msgs:
            self._at_eof = False
        if msgs:
            self._next = (msgs[-1].offset() or 0) + 1
        elif self._should_end(self._at_eof):
            raise StopIteration
        # A full batch: more is waiting, poll again at once. A partial or empty one: the
        # partition is drained, so let Bytewax sleep a little and take what gathers meanwhile as
        # one batch (at plant load, a few dozen messages per wake-up instead of a handful, which
        # is what keeps an idle flow's CPU low; it adds at most this much latency).
        self._awake = (None if len(msgs) >= self._batch_size
                       else datetime.now(UTC) + timedelta(milliseconds=self.GATHER_MS))
        if not msgs:
            return []
        batch = KafkaBatch(self._topic, self._partition, msgs)
        return [batch] if self._batched else [batch.raw(i) for i in range(len(msgs))]

    def _without_events(self, msgs: list[Any]) -> list[Any]:
        out = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(m)
                self._at_eof = False
            elif err.code() == KafkaError._PARTITION_EOF:
                self._at_eof = True
            else:
                raise KafkaException(err)
        return out

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        self._closed = True
        if self.on_close is not None:
            self.on_close(self)
        self._consumer.close()


class KafkaInput(FixedPartitionedSource[Any, int]):
    """Read one topic; each Kafka partition is one source partition.

    Emits one :class:`KafkaBatch` per poll (up to ``batch_size`` messages), or with
    ``batched=False`` one :class:`RawMessage` per message (small reference topics).

    Partitions are the unit of parallelism. The snapshot is the next offset to read, so a
    resumed flow continues where its last completed epoch ended: at-least-once, made
    effectively-once by idempotent sinks.
    """

    def __init__(self, conf: Mapping[str, Any], topic: str = MEASUREMENTS, *,
                 stop: StopWhen = "never", batch_size: int = 10_000, batched: bool = True) -> None:
        self._batched = batched
        self._conf = dict(conf)
        self._topic = topic
        self._stop = stop
        self._batch_size = batch_size
        self._parts: dict[int, _KafkaPartition] = {}
        self._parts_lock = threading.Lock()

    @property
    def topic(self) -> str:
        return self._topic

    def lag(self) -> dict[int, int]:
        """Consumer lag of each partition this process reads: the high watermark librdkafka last
        learnt from a fetch (no request to the broker) minus the next offset to read. Partitions
        that have not fetched yet are left out."""
        with self._parts_lock:
            parts = dict(self._parts)
        out: dict[int, int] = {}
        for number, part in parts.items():
            lag = part.lag()
            if lag is not None:
                out[number] = lag
        return out

    def list_parts(self) -> list[str]:
        admin = AdminClient(self._conf)
        try:
            meta = admin.list_topics(self._topic, timeout=15.0)
        except KafkaException as exc:
            msg = f"cannot reach Kafka at {self._conf.get('bootstrap.servers')}: {exc}"
            raise ConnectorError(msg) from exc
        topic = meta.topics.get(self._topic)
        if topic is None or topic.error is not None:
            msg = (f"Kafka topic {self._topic!r} does not exist; run `plantstream kafka create-topics` "
                   "(the Helm chart's pre-install hook does) or create it")
            raise ConnectorError(msg)
        return [str(p) for p in sorted(topic.partitions)]

    def consumer_config(self, step_id: str) -> dict[str, Any]:
        """The librdkafka settings of each partition's consumer (also used by the benchmarks).

        Offsets live in Bytewax's snapshots, not in the group; fetches are large (16 MiB per
        partition) so one poll can return ``batch_size`` messages.
        """
        return {
            **self._conf,
            "group.id": f"plantstream-{step_id}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            "max.partition.fetch.bytes": 16 << 20,
            "fetch.max.bytes": 64 << 20,
        }

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaPartition:
        part = _KafkaPartition(self.consumer_config(step_id), self._topic, int(for_part), resume_state,
                               self._stop, self._batch_size, self._batched)
        part.on_close = self._forget
        with self._parts_lock:
            self._parts[int(for_part)] = part
        return part

    def _forget(self, part: _KafkaPartition) -> None:
        with self._parts_lock:
            if self._parts.get(part.number) is part:
                del self._parts[part.number]


# -- sink -------------------------------------------------------------------------------------


KafkaRecord = tuple[str, bytes | None, bytes]
"""(topic, key, value)"""


def refusal_deadletter(topic: str, key: bytes | None, value: bytes, error: str,
                       limit: int = DEADLETTER_RAW_BYTES) -> bytes:
    """The bounded dead letter (JSON) that stands for a record Kafka refused for ``topic``."""
    return DeadLetter(value, f"refused by Kafka for {topic}: {error}", f"kafka-out:{topic}",
                      int(time.time() * 1000)).to_json(limit)


class _KafkaOutPartition(StatefulSinkPartition[KafkaRecord, None]):
    def __init__(self, conf: dict[str, Any], deadletter_raw_bytes: int = DEADLETTER_RAW_BYTES) -> None:
        self._producer = Producer(conf)
        self._limit = deadletter_raw_bytes
        self._refused: list[tuple[str, bytes | None, bytes, str, bool]] = []
        self._fatal: list[str] = []
        self.sent_bytes = 0
        self.deadlettered = 0
        self.lost = 0

    def _on_delivery(self, replacing: bool, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            return
        if err.fatal():
            self._fatal.append(f"{msg.topic()}: {err}")
        else:  # refused for good (librdkafka retries the rest itself): its dead letter instead
            self._refused.append((msg.topic(), msg.key(), msg.value() or b"", err.str(), replacing))

    def _produce(self, topic: str, key: bytes | None, value: bytes, *, replacing: bool = False) -> None:
        try:
            produce_waiting(self._producer, topic, value, key,
                            on_delivery=functools.partial(self._on_delivery, replacing))
        except KafkaException as exc:  # refused before it left: larger than message.max.bytes …
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else exc
            self._refuse(topic, key, value, err.str() if isinstance(err, KafkaError) else str(err),
                         replacing=replacing)
            return
        self.sent_bytes += len(value)

    def _refuse(self, topic: str, key: bytes | None, value: bytes, error: str, *,
                replacing: bool = False) -> None:
        if replacing:
            self.lost += 1  # even the bounded dead letter of a refused record was refused
            log.error("Kafka refused the dead letter of a refused record (%d bytes) for %s: %s; the "
                      "ClickHouse deadletter table still has the row", len(value), topic, error)
            return
        log.error("Kafka refused a record of %d bytes for %s: %s; its dead letter goes to %s",
                  len(value), topic, error, DEADLETTER)
        self.deadlettered += 1
        self._produce(DEADLETTER, key, refusal_deadletter(topic, key, value, error, self._limit),
                      replacing=True)

    def write_batch(self, values: list[KafkaRecord]) -> None:
        for topic, key, value in values:
            self._produce(topic, key, value)
        self._producer.poll(0)
        self._handle_errors()

    def snapshot(self) -> None:
        # Everything of this epoch is confirmed by the broker (or dead-lettered) before the epoch
        # commits.
        self._flush()
        return None

    def _flush(self) -> None:
        while True:
            while self._producer.flush(1.0):
                log.warning("waiting for Kafka to confirm %d records", len(self._producer))
            if not self._refused:
                break
            self._handle_errors()
        self._handle_errors()

    def _handle_errors(self) -> None:
        if self._fatal:
            errors, self._fatal = self._fatal, []
            msg = f"fatal Kafka producer error on {len(errors)} records, first: {errors[0]}"
            raise ConnectorError(msg)
        refused, self._refused = self._refused, []
        for topic, key, value, error, replacing in refused:
            self._refuse(topic, key, value, error, replacing=replacing)

    def close(self) -> None:
        self._flush()


class KafkaOutput(FixedPartitionedSink[KafkaRecord, None]):
    """Produce ``(topic, key, value)`` records; waits for the broker at every epoch.

    One partition (the unit of parallelism). At-least-once: records of an epoch are confirmed
    before the epoch commits; a resume may send some again, so consumers key on the record's
    natural key and version. A record the broker refuses for good (too large, invalid) is
    replaced by its bounded dead letter on ``plantstream.deadletter`` (at most
    ``deadletter_raw_bytes`` of it, its length and SHA-256, the error): the flow goes on. Only a
    fatal producer error stops the flow (to resume from its last snapshot).
    """

    def __init__(self, conf: Mapping[str, Any], *, deadletter_raw_bytes: int = DEADLETTER_RAW_BYTES) -> None:
        self._conf = producer_config(conf)
        self._limit = deadletter_raw_bytes

    def list_parts(self) -> list[str]:
        return ["kafka-out"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _KafkaOutPartition:
        return _KafkaOutPartition(self._conf, self._limit)


def wait_for_broker(conf: Mapping[str, Any], timeout_s: float = 15.0) -> None:
    """Block until the broker answers a metadata request, or raise ConnectorError."""
    deadline = time.monotonic() + timeout_s
    admin = AdminClient(dict(conf))
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException as exc:
            last = exc
            time.sleep(0.1)
    msg = f"Kafka at {conf.get('bootstrap.servers')} did not answer within {timeout_s:g}s: {last}"
    raise ConnectorError(msg)
