"""The outbox: cloud export and webhook delivery from Kafka topics, at their own pace.

The flows never talk to the cloud or to a webhook. They write their results to local Kafka
topics, as they always did (``plantstream.alerts``, ``plantstream.oee`` …, and the cloud
export's records, already picked, rolled up and coalesced by the flows' cloud policy, to
:data:`CLOUD_OUTBOX`). An :class:`OutboxWorker` reads one or more of those topics with its own
consumer group and hands the records to a delivery:

- :class:`CloudDelivery`: each record of :data:`CLOUD_OUTBOX`, as it is, to Event Hubs (or any
  Kafka topic) through an idempotent producer;
- :class:`WebhookDelivery`: each alert record of ``plantstream.alerts`` as one JSON ``POST``
  with ``Idempotency-Key: <event_id>``.

Offsets are committed only once every record before them is delivered (or dead-lettered), so a
worker that stops, crashes or waits for days resumes at the first record not yet delivered;
the topics are the durable queue (their retention bounds how long an outage may last: 7 days by
default, ``kafka.topics``). A slow or absent far side holds back only its worker: the flows and
ClickHouse go on.

Retries: forever, with capped exponential backoff (``outbox.backoff_initial_s`` doubling up to
``outbox.backoff_max_s``; the webhook's own ``alerts.webhook.backoff_*``). A record the far side
refuses for good (a webhook 3xx or 4xx other than 408/425/429; a record too large for Event
Hubs) goes to ``plantstream.deadletter`` with the reason and is not retried.

Partitions are assigned by hand (``assign()`` of every partition, at the group's committed
offsets read with ``committed()``): no group membership, no rebalances. One worker per group:
two workers of the same group would both deliver everything (the flows entry point starts the
workers in Bytewax process 0 only).

Lag (:meth:`OutboxWorker.status`): ``behind`` is the number of records between the committed
offsets and the ends of the partitions (end offsets as seen by the worker's fetches and by a
small probe consumer that keeps reading while the worker waits); ``oldest_age_s`` the age of
the oldest record read but not yet delivered (its Kafka timestamp). Both go to the log every
``outbox.log_every_s`` while the worker is behind (at INFO while the oldest undelivered record
is younger than :data:`LAG_WARN_S` and nothing failed, else WARNING), and to the health endpoint.

Delivery: at-least-once. The webhook gets the same ``Idempotency-Key`` on a repeat. A cloud
record's value carries its table (``type``), natural key and ``version``: within one run the
idempotent producer writes each record once; after a crash between delivery and commit, a
record may be sent again, identical, so a consumer keeps one record per (type, key, version).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from plantstream.connectors import kafka
from plantstream.connectors.eventhubs import TABLE_HEADER, BandwidthMeter, Target
from plantstream.connectors.webhook import WebhookSink, idempotency_key
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import DEADLETTER_RAW_BYTES, DeadLetter

log = logging.getLogger(__name__)

CLOUD_OUTBOX = kafka.CLOUD_OUTBOX
"""The local topic of the cloud export's records (written by the flows, read by the cloud worker)."""
ALERTS_TOPIC = "plantstream.alerts"
"""The alert records (the alerts flow's result topic), read by the webhook worker."""
LAG_WARN_S = 30.0
"""The lag line is a warning once the oldest undelivered record is this old (or a delivery
failed); records merely in flight are logged at INFO."""

Outcome = tuple[Literal["sent", "refused", "retry"], str]
Pause = Callable[[float], bool]
"""``pause(seconds)``: wait (keeping the lag up to date); False when the worker is stopping."""

PERMANENT_KAFKA_ERRORS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG, KafkaError.INVALID_MSG_SIZE,
    KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
})
"""Answers that will not change on a retry: the record is dead-lettered."""


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One record read from an outbox topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def source(self) -> str:
        return f"kafka:{self.topic}/{self.partition}@{self.offset}"


class Delivery(Protocol):
    """Where a worker delivers: ``deliver`` returns one :data:`Outcome` per record."""

    name: str
    destination: str

    def deliver(self, records: Sequence[OutboxRecord], pause: Pause) -> list[Outcome]: ...

    def close(self) -> None: ...


# -- deliveries ------------------------------------------------------------------------------------


class WebhookDelivery:
    """Each alert record as one ``POST`` (:meth:`WebhookSink.attempt`), in order, retried forever.

    A record is retried after ``sink.backoff(n)`` seconds (capped exponential) until the
    receiver takes it or refuses it for good; nothing after it is posted meanwhile (alerts keep
    their order).

    >>> d = WebhookDelivery(WebhookSink("http://127.0.0.1:9/hook"))
    >>> d.deliver([OutboxRecord("t", 0, 0, None, b"not json", 0)], lambda s: True)
    [('refused', 'not an alert record (JSON object expected)')]
    """

    name = "webhook"

    def __init__(self, sink: WebhookSink) -> None:
        self.sink = sink
        self.destination = sink.destination

    def deliver(self, records: Sequence[OutboxRecord], pause: Pause) -> list[Outcome]:
        out: list[Outcome] = []
        for i, rec in enumerate(records):
            try:
                row = orjson.loads(rec.value)
            except orjson.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                out.append(("refused", "not an alert record (JSON object expected)"))
                continue
            attempt = 0
            while True:
                attempt += 1
                outcome = self.sink.attempt(row)
                if outcome[0] != "retry":
                    out.append(outcome)
                    break
                delay = self.sink.backoff(attempt)
                self.sink.stats.add(retries=1)
                if attempt <= 3 or attempt % 10 == 0:
                    log.warning("webhook %s: alert record %s not delivered (%s), attempt %d; retrying in "
                                "%.1fs (the flows go on; it waits in %s)", self.destination,
                                idempotency_key(row), outcome[1], attempt, delay, rec.topic)
                if not pause(delay):
                    return [*out, *(("retry", "stopped") for _ in records[i:])]
        return out

    def close(self) -> None:
        return None


class CloudDelivery:
    """Each record of the cloud outbox, as it is, to the cloud target (Event Hubs or a topic).

    The producer is idempotent and never expires a record (``message.timeout.ms=0``): while the
    cloud is unreachable librdkafka keeps retrying (its own capped backoff) and the worker
    waits; a record refused for good (:data:`PERMANENT_KAFKA_ERRORS`, e.g. larger than Event
    Hubs' 1 MB) is dead-lettered. A fatal producer error drops the producer; the records are
    retried with a new one.
    """

    name = "cloud"

    def __init__(self, target: Target, meter: BandwidthMeter | None = None) -> None:
        self.target = target
        self.meter = meter if meter is not None else BandwidthMeter()
        self.destination = f"{target.conf.get('bootstrap.servers', '?')}/{target.topic}"
        self._conf = kafka.producer_config(target.conf)
        self._producer: Producer | None = None

    def _on_delivery(self, outcomes: list[Outcome | None], i: int, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            outcomes[i] = ("sent", "")
            self.meter.add_sent(len(msg.key() or b"") + len(msg.value() or b""))
        elif err.code() in PERMANENT_KAFKA_ERRORS:
            outcomes[i] = ("refused", f"refused by the cloud ({self.target.topic}): {err.str()}")
        else:
            if err.fatal():
                self._producer = None
            outcomes[i] = ("retry", err.str())

    def deliver(self, records: Sequence[OutboxRecord], pause: Pause) -> list[Outcome]:
        if self._producer is None:
            self._producer = Producer(self._conf)
        producer = self._producer
        outcomes: list[Outcome | None] = [None] * len(records)
        for i, rec in enumerate(records):
            headers = list(rec.headers) or [(TABLE_HEADER, _table_of(rec.value))]
            try:
                kafka.produce_waiting(producer, self.target.topic, rec.value, rec.key, headers=headers,
                                      on_delivery=functools.partial(self._on_delivery, outcomes, i))
            except KafkaException as exc:  # refused before it left (larger than message.max.bytes …)
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if err is not None and err.code() in PERMANENT_KAFKA_ERRORS:
                    outcomes[i] = ("refused", f"refused by the cloud ({self.target.topic}): {err.str()}")
                else:
                    outcomes[i] = ("retry", str(exc))
        waited = 0
        while len(producer) > 0 or any(o is None for o in outcomes):
            producer.flush(0.5)
            waited += 1
            if waited % 60 == 0:
                log.warning("cloud %s: %d records wait for the cloud to confirm them (the flows go on)",
                            self.destination, len(producer))
            if not pause(0):
                break
        return [o if o is not None else ("retry", "stopped") for o in outcomes]

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(2.0)


def _table_of(value: bytes) -> bytes:
    try:
        row = orjson.loads(value)
    except orjson.JSONDecodeError:
        return b""
    return str(row.get("type", "")).encode() if isinstance(row, dict) else b""


# -- the worker --------------------------------------------------------------------------------------


@dataclass
class OutboxStatus:
    """What a worker reports (logs, the health endpoint)."""

    name: str
    topics: tuple[str, ...]
    destination: str
    running: bool = False
    delivered: int = 0
    deadlettered: int = 0
    retries: int = 0
    behind: int = 0
    oldest_age_s: float = 0.0
    last_error: str = ""
    last_delivery_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "topics": list(self.topics), "destination": self.destination,
                "running": self.running, "delivered": self.delivered, "deadlettered": self.deadlettered,
                "retries": self.retries, "behind": self.behind, "oldest_age_s": round(self.oldest_age_s, 3),
                "last_error": self.last_error}


class OutboxWorker:
    """Read ``topics`` with consumer group ``group_id`` and deliver every record, on a thread.

    Parameters
    ----------
    conf
        librdkafka settings of the local Kafka (where the outbox topics are).
    topics
        The topics to deliver.
    delivery
        :class:`CloudDelivery`, :class:`WebhookDelivery` or any :class:`Delivery`.
    group_id
        The consumer group that keeps the offsets (default ``plantstream-outbox-<name>``).
    backoff_initial_s, backoff_max_s
        Wait between rounds of records to retry (a cloud record after a fatal producer error …),
        doubling up to the cap.
    batch_size
        Records read and delivered per round (and held in memory at most).
    log_every_s
        How often the lag is logged while the worker is behind.
    """

    PROBE_EVERY_S = 1.0

    def __init__(self, conf: Mapping[str, Any], topics: Iterable[str], delivery: Delivery, *,
                 group_id: str | None = None, backoff_initial_s: float = 0.5, backoff_max_s: float = 60.0,
                 batch_size: int = 500, log_every_s: float = 30.0,
                 deadletter_raw_bytes: int = DEADLETTER_RAW_BYTES) -> None:
        self._conf = dict(conf)
        self.topics = tuple(topics)
        self.delivery = delivery
        self.group_id = group_id or f"plantstream-outbox-{delivery.name}"
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.batch_size = batch_size
        self.log_every_s = log_every_s
        self._limit = deadletter_raw_bytes
        self._status = OutboxStatus(delivery.name, self.topics, delivery.destination)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._committed: dict[tuple[str, int], int] = {}
        self._ends: dict[tuple[str, int], int] = {}
        self._oldest_ts: int | None = None
        self._consumer: Consumer | None = None
        self._probe: Consumer | None = None
        self._next_probe = 0.0
        self._next_log = 0.0
        self._refreshed_at = 0.0
        self.failure: BaseException | None = None

    # -- life cycle --

    def start(self) -> OutboxWorker:
        self._thread = threading.Thread(target=self._run, name=f"plantstream-outbox-{self.delivery.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def caught_up(self) -> bool:
        """Everything written to the topics so far is delivered (as far as the worker has seen)."""
        with self._lock:
            return bool(self._committed) and self._status.behind == 0 and self._oldest_ts is None

    def wait_caught_up(self, timeout_s: float) -> bool:
        """Wait until :meth:`caught_up`, judged on partition ends fetched after this call (True),
        or until ``timeout_s`` passed (False)."""
        since = time.monotonic() + 0.3  # a fetch made after the call (fetch.wait.max.ms is 100)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._thread is not None and not self._thread.is_alive():
                break
            if self._refreshed_at >= since and self.caught_up():
                return True
            time.sleep(0.1)
        return self._refreshed_at >= since and self.caught_up()

    def stop(self, drain_s: float = 0.0) -> bool:
        """Stop the worker, after up to ``drain_s`` seconds of delivering what waits; True when
        nothing was left undelivered. Idempotent. What is left stays in the topic for next time."""
        done = self.wait_caught_up(drain_s) if drain_s > 0 else self.caught_up()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        left = self.status()
        if not done:
            log.warning("outbox %s stopped with %d records not delivered yet (oldest %.0fs); they wait in "
                        "%s for the next start", self.delivery.name, left["behind"], left["oldest_age_s"],
                        ", ".join(self.topics))
        return done

    def status(self) -> dict[str, Any]:
        with self._lock:
            st = self._status
            st.oldest_age_s = (max(0.0, time.time() - self._oldest_ts / 1000)
                               if self._oldest_ts is not None else 0.0)
            return st.as_dict()

    # -- the thread --

    def _consumer_conf(self, group: str) -> dict[str, Any]:
        return {**self._conf, "group.id": group, "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100}

    def _run(self) -> None:
        try:
            self._setup()
            with self._lock:
                self._status.running = True
            while not self._stop.is_set():
                self._round()
        except BaseException as exc:  # reported by status() and the health endpoint
            self.failure = exc
            log.exception("outbox %s stopped on an error", self.delivery.name)
            with self._lock:
                self._status.last_error = repr(exc)
        finally:
            with self._lock:
                self._status.running = False
            for c in (self._consumer, self._probe):
                if c is not None:
                    c.close()
            self.delivery.close()

    def _partitions(self) -> list[TopicPartition]:
        assert self._consumer is not None
        delay = self.backoff_initial_s
        while not self._stop.is_set():
            try:
                out: list[TopicPartition] = []
                for topic in self.topics:
                    meta = self._consumer.list_topics(topic, timeout=10.0).topics.get(topic)
                    if meta is None or meta.error is not None or not meta.partitions:
                        msg = f"topic {topic!r} does not exist yet; run `plantstream kafka create-topics`"
                        raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, msg))
                    out.extend(TopicPartition(topic, p) for p in sorted(meta.partitions))
                return out
            except KafkaException as exc:
                self._note_error(f"waiting for Kafka: {exc}")
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_max_s)
        return []

    def _setup(self) -> None:
        self._consumer = Consumer(self._consumer_conf(self.group_id))
        tps = self._partitions()
        if not tps:
            return
        delay = self.backoff_initial_s
        while True:
            try:
                committed = self._consumer.committed(tps, timeout=10.0)
                break
            except KafkaException as exc:
                self._note_error(f"reading committed offsets: {exc}")
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, self.backoff_max_s)
        start = [TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)) for tp in committed]
        with self._lock:
            self._committed = {(tp.topic, tp.partition): tp.offset for tp in start}
            self._ends = dict(self._committed)
        self._consumer.assign(start)
        self._probe = Consumer(self._consumer_conf(f"{self.group_id}-probe"))
        self._probe.assign(start)
        log.info("outbox %s: delivering %s to %s from offsets %s", self.delivery.name, ", ".join(self.topics),
                 self.delivery.destination, {f"{t}/{p}": o for (t, p), o in self._committed.items()})

    def _note_error(self, text: str) -> None:
        with self._lock:
            self._status.last_error = text
            self._status.retries += 1

    def _round(self) -> None:
        consumer = self._consumer
        if consumer is None:
            self._stop.wait(0.5)
            return
        msgs = consumer.consume(self.batch_size, 0.2)
        records = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self._note_error(f"reading {m.topic()}: {err}")
                continue
            raw = m.headers() or []
            pairs = list(raw.items()) if isinstance(raw, dict) else list(raw)
            headers = tuple((str(k), v) for k, v in pairs if isinstance(v, bytes))
            records.append(OutboxRecord(m.topic() or "", m.partition() or 0, m.offset() or 0, m.key(),
                                        m.value() or b"", m.timestamp()[1], headers))
        self._refresh(consumer)
        if records:
            with self._lock:
                self._oldest_ts = min(r.timestamp_ms for r in records)
            self._deliver(records)

    def _pause(self, seconds: float) -> bool:
        """Wait up to ``seconds`` in short slices, keeping the lag fresh; False when stopping."""
        deadline = time.monotonic() + seconds
        while True:
            self._refresh(self._probe)
            left = deadline - time.monotonic()
            if self._stop.is_set():
                return False
            if left <= 0:
                return True
            self._stop.wait(min(left, 0.5))

    def _refresh(self, consumer: Consumer | None) -> None:
        """Update the ends of the partitions from ``consumer``'s fetches (the probe reads ahead,
        discarding, at most every PROBE_EVERY_S) and log the lag when it is due."""
        now = time.monotonic()
        if consumer is not None and consumer is self._probe:
            if now < self._next_probe:
                consumer = None
            else:
                self._next_probe = now + self.PROBE_EVERY_S
                for _ in range(20):
                    got = consumer.consume(1000, 0.05)
                    if not got or all(m.error() is not None for m in got):
                        break
        if consumer is not None:
            with self._lock:
                for key in self._ends:
                    high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)[1]
                    if high is not None and high > self._ends[key]:
                        self._ends[key] = high
                self._status.behind = self._behind()
            self._refreshed_at = now
        if now >= self._next_log:
            st = self.status()
            if st["behind"] or st["oldest_age_s"] > 5:
                # Records in flight are normal: a warning only once the oldest waits or fails.
                stuck = st["oldest_age_s"] > LAG_WARN_S or bool(st["last_error"])
                log.log(logging.WARNING if stuck else logging.INFO,
                        "outbox %s → %s: %d records behind, oldest undelivered %.1fs%s", st["name"],
                        st["destination"], st["behind"], st["oldest_age_s"],
                        f" (last error: {st['last_error']})" if st["last_error"] else "")
                self._next_log = now + self.log_every_s
            else:
                self._next_log = now + 1.0

    def _behind(self) -> int:
        """Records between the committed offsets and the partition ends (call with the lock)."""
        return sum(max(0, end - self._committed.get(k, 0)) for k, end in self._ends.items())

    def _deliver(self, records: list[OutboxRecord]) -> None:
        pending = records
        done: dict[int, Outcome] = {}
        delay = self.backoff_initial_s
        while pending:
            outcomes = self.delivery.deliver(pending, self._pause)
            retry = []
            for rec, outcome in zip(pending, outcomes, strict=True):
                if outcome[0] == "retry":
                    retry.append(rec)
                else:
                    done[id(rec)] = outcome
            if retry:
                self._note_error(f"{len(retry)} records to retry: {outcomes[pending.index(retry[0])][1]}")
            pending = retry
            if pending and not self._pause(delay):
                break
            delay = min(delay * 2, self.backoff_max_s)
        refused = [(r, done[id(r)][1]) for r in records if id(r) in done and done[id(r)][0] == "refused"]
        if refused:
            self._deadletter(refused)
        # Commit, per partition, up to the first record not delivered (stopping mid-way).
        commit: dict[tuple[str, int], int] = {}
        blocked: set[tuple[str, int]] = set()
        for rec in records:
            key = (rec.topic, rec.partition)
            if key in blocked:
                continue
            if id(rec) in done:
                commit[key] = rec.offset + 1
            else:
                blocked.add(key)
        self._commit(commit)
        sent = sum(1 for o in done.values() if o[0] == "sent")
        with self._lock:
            self._status.delivered += sent
            self._status.deadlettered += len(refused)
            if sent:
                self._status.last_delivery_at = time.time()
                self._status.last_error = ""
            self._oldest_ts = None if not blocked else self._oldest_ts
        if blocked and self._consumer is not None:  # stopping: read them again next time
            for key in blocked:
                first = min(r.offset for r in records if (r.topic, r.partition) == key and id(r) not in done)
                self._consumer.seek(TopicPartition(key[0], key[1], first))

    def _deadletter(self, refused: list[tuple[OutboxRecord, str]]) -> None:
        producer = Producer(kafka.producer_config(self._conf))
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(err.str())

        now_ms = int(time.time() * 1000)
        for rec, reason in refused:
            log.error("outbox %s: record %s refused for good (%s); it goes to %s", self.delivery.name,
                      rec.source, reason, kafka.DEADLETTER)
            why = f"outbox {self.delivery.name}: {reason}"
            dl = DeadLetter(rec.value, why, f"outbox:{rec.source}", now_ms)
            kafka.produce_waiting(producer, kafka.DEADLETTER, dl.to_json(self._limit), rec.key,
                                  on_delivery=on_delivery)
        while producer.flush(1.0):
            if self._stop.is_set():
                break
        if errors:
            log.error("outbox %s: %d dead letters not written (%s); the records stay dead-lettered "
                      "in the log only", self.delivery.name, len(errors), errors[0])

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if not offsets or self._consumer is None:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        delay = self.backoff_initial_s
        while True:
            try:
                self._consumer.commit(offsets=tps, asynchronous=False)
                break
            except KafkaException as exc:
                self._note_error(f"committing offsets: {exc}")
                if self._stop.wait(delay):
                    return  # not committed: delivered again next time (same key and version)
                delay = min(delay * 2, self.backoff_max_s)
        with self._lock:
            self._committed.update(offsets)
            for k, o in offsets.items():
                self._ends[k] = max(self._ends.get(k, 0), o)
            self._status.behind = self._behind()


def workers_from_config(config: PlantConfig, kafka_conf: Mapping[str, Any], *, cloud: Target | None = None,
                        meter: BandwidthMeter | None = None, webhook: bool = True) -> list[OutboxWorker]:
    """The plant's outbox workers (not started): the cloud worker when ``cloud`` names a target,
    the webhook worker when ``webhook`` and ``alerts.webhook.url`` is set."""
    ob = config.outbox
    common: dict[str, Any] = {"batch_size": ob.batch_size, "log_every_s": ob.log_every_s,
                              "deadletter_raw_bytes": config.kafka.deadletter_raw_bytes}
    out = []
    if cloud is not None:
        out.append(OutboxWorker(kafka_conf, [CLOUD_OUTBOX], CloudDelivery(cloud, meter),
                                backoff_initial_s=ob.backoff_initial_s, backoff_max_s=ob.backoff_max_s,
                                **common))
    hook = config.alerts.webhook
    if webhook and hook.url is not None and hook.url.get_secret_value():
        out.append(OutboxWorker(kafka_conf, [ALERTS_TOPIC], WebhookDelivery(WebhookSink.from_config(hook)),
                                backoff_initial_s=hook.backoff_initial_s, backoff_max_s=hook.backoff_max_s,
                                **common))
    return out
