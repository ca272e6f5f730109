"""The connectors' Kafka producer: never drops a record, keeps order, confirms record sets.

Both OT connectors (OPC UA and MQTT) hand their Measurements to one :class:`SpoolingProducer`.
It produces with key = machine id (so one machine's records stay in one partition, in order),
``enable.idempotence``, ``acks=all``, compression, and ``message.timeout.ms=0`` — librdkafka's
default five-minute message timeout would silently drop records during a long outage.

While Kafka is unreachable, records are held in three tiers, in this order, and delivered in
submission order once it is back:

1. librdkafka's queue, at most ``producer.inflight_records`` records;
2. memory, at most ``producer.memory_records`` records / ``producer.memory_bytes`` bytes;
3. a disk spool of append-only, CRC-checked segment files under ``producer.spool_dir/<name>``
   (``name`` = ``mqtt``, ``opcua`` …; one process at a time, enforced by a lock file), at
   most ``producer.spool_max_bytes``. When that is full too, :meth:`SpoolingProducer.send`
   blocks (the MQTT connector then stops acknowledging, so the MQTT broker holds the data).

A spool left behind by a crash or a shutdown during an outage is delivered first at the next
start. A record Kafka refuses for good (too large for the broker, an invalid record — refused
when it is produced or in its delivery report) becomes that record's dead letter on
``plantstream.deadletter``: a bounded prefix of the refused bytes, their length and SHA-256, and
the broker's error (``kafka.deadletter_raw_bytes``). The record set then counts as confirmed, so
the thread goes on, the MQTT message is acknowledged and nothing returns from the spool. Only
when the dead letter is refused as well is a bounded line written to
``spool_dir/<name>/rejected.jsonl`` and logged — never dropped silently.

:meth:`SpoolingProducer.health` tells whether the producer thread is alive and Kafka delivers
(the connector's ``/healthz`` and ``/readyz``, :mod:`plantstream.connectors.health`).

Delivery guarantee: at-least-once, in order per key. Duplicates can only appear after a crash or
a shutdown with Kafka unreachable (records both spooled and re-sent by the source); cumulative
counters and keyed state records absorb them.

API (used by ``connectors.opcua`` and ``connectors.mqtt``)
-----------------------------------------------------------
``producer = SpoolingProducer(kafka_conf, config.producer).start()``

``producer.send(records, on_confirmed=None)``
    ``records`` is a sequence of ``(topic, key, value)`` (:data:`Record`); ``on_confirmed()`` is
    called once Kafka confirmed every record of this set and of every earlier set (also for an
    empty set). It runs on the producer's thread: keep it short (``client.ack(mid, qos)``).
    Sets handed over while records are spooled get their callback after delivery from the spool,
    in order.
``producer.send_measurements(measurements, on_confirmed=None, deadletters=())``
    Shortcut: Measurements to ``producer.topic`` keyed by machine, dead letters to
    ``plantstream.deadletter``, all in one record set.
``producer.flush(timeout_s) -> bool``: wait until everything is confirmed.
``producer.close(timeout_s=10.0)``: flush for up to ``timeout_s``; what Kafka has not confirmed
by then is written to the spool, to go first at the next start.
``producer.stats``: a :class:`ProducerStats` (accepted, confirmed, spooled, rejected, …).

Examples
--------
>>> import tempfile
>>> from plantstream.schemas.tags_config import ProducerConfig
>>> d = tempfile.mkdtemp()
>>> p = SpoolingProducer({"bootstrap.servers": "127.0.0.1:1"}, ProducerConfig(spool_dir=d)).start()
>>> p.send([("t", b"m1", b"1"), ("t", b"m1", b"2")])
>>> p.send([("t", b"m1", b"3")])
>>> p.close(timeout_s=0.1)           # Kafka unreachable: all three wait in the spool
>>> p2 = SpoolingProducer({"bootstrap.servers": "127.0.0.1:1"}, ProducerConfig(spool_dir=d)).start()
>>> p2.stats.recovered_records
3
>>> p2.close(timeout_s=0.1)
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from plantstream.connectors.kafka import DEADLETTER, produce_waiting, producer_config
from plantstream.schemas.errors import ConnectorError
from plantstream.schemas.measurement import DEADLETTER_RAW_BYTES, DeadLetter, Measurement, raw_prefix
from plantstream.schemas.tags_config import ProducerConfig

log = logging.getLogger(__name__)

Record = tuple[str, bytes | None, bytes]
"""(topic, key, value)"""

_FRAME = struct.Struct(">II")  # payload length, crc32(payload)
_BATCH = struct.Struct(">QI")  # seq, record count
_TOPIC = struct.Struct(">H")
_KEY = struct.Struct(">i")  # -1 = no key
_VALUE = struct.Struct(">I")
_SEG_SUFFIX = ".spool"
_FRONT_BASE = 10**12  # segment numbers: new ones count up from here, "front" ones count down


def measurement_record(m: Measurement, topic: str) -> Record:
    """A Measurement as a Kafka record keyed by its machine id."""
    return (topic, m.machine.encode(), m.to_json())


def deadletter_record(d: DeadLetter, topic: str = DEADLETTER, limit: int = DEADLETTER_RAW_BYTES) -> Record:
    """A dead letter as a Kafka record: bounded (:meth:`DeadLetter.to_json`), no key."""
    return (topic, None, d.to_json(limit))


def refused_record(record: Record, error: str, name: str, limit: int = DEADLETTER_RAW_BYTES) -> Record:
    """The dead letter that replaces a record Kafka refused: bounded, keyed like the record.

    >>> t, k, v = refused_record(("plantstream.measurements", b"m1", b"\\xff" * 300_000),
    ...                          "Broker: Message size too large", "mqtt")
    >>> t, k, len(v) < 5000, orjson.loads(v)["length"]
    ('plantstream.deadletter', b'm1', True, 300000)
    """
    topic, key, value = record
    reason = f"refused by Kafka for {topic}: {error}"
    dead = DeadLetter(value, reason, f"{name}:{topic}", int(time.time() * 1000))
    return (DEADLETTER, key, dead.to_json(limit))


@dataclass
class ProducerStats:
    """Counters of a :class:`SpoolingProducer` (records unless stated)."""

    accepted_records: int = 0
    confirmed_records: int = 0
    rejected_records: int = 0
    spooled_records: int = 0
    """Records written to the disk spool since start."""
    recovered_records: int = 0
    """Records found in the spool at start (left by an earlier run)."""
    spool_bytes: int = 0
    max_spool_bytes: int = 0
    confirmed_sets: int = 0
    producer_rebuilds: int = 0
    deadlettered_records: int = 0
    """Records Kafka refused that went to the dead-letter topic in their place."""
    first_error: str = ""
    last_error: str = ""
    last_error_ms: int = 0
    last_delivery_ms: int = 0
    """When Kafka last confirmed a record, epoch ms (0: not yet)."""

    @property
    def pending_records(self) -> int:
        return self.accepted_records + self.recovered_records - self.confirmed_records - self.rejected_records


@dataclass(slots=True)
class _Batch:
    seq: int
    records: list[Record]
    nbytes: int
    on_confirmed: Callable[[], None] | None = None
    remaining: int = 0
    segment: int | None = None
    produced: bool = False


def _encode_batch(seq: int, records: Sequence[Record]) -> bytes:
    parts = [_BATCH.pack(seq, len(records))]
    for topic, key, value in records:
        t = topic.encode()
        parts.append(_TOPIC.pack(len(t)))
        parts.append(t)
        if key is None:
            parts.append(_KEY.pack(-1))
        else:
            parts.append(_KEY.pack(len(key)))
            parts.append(key)
        parts.append(_VALUE.pack(len(value)))
        parts.append(value)
    payload = b"".join(parts)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _decode_batch(payload: bytes) -> tuple[int, list[Record]]:
    seq, n = _BATCH.unpack_from(payload, 0)
    pos = _BATCH.size
    out: list[Record] = []
    for _ in range(n):
        (tl,) = _TOPIC.unpack_from(payload, pos)
        pos += _TOPIC.size
        topic = payload[pos:pos + tl].decode()
        pos += tl
        (kl,) = _KEY.unpack_from(payload, pos)
        pos += _KEY.size
        key = None
        if kl >= 0:
            key = payload[pos:pos + kl]
            pos += kl
        (vl,) = _VALUE.unpack_from(payload, pos)
        pos += _VALUE.size
        out.append((topic, key, payload[pos:pos + vl]))
        pos += vl
    return seq, out


def _read_frame(f: BinaryIO) -> bytes | None:
    """The next frame's payload; None at a clean end; raises ValueError on a torn/corrupt frame."""
    head = f.read(_FRAME.size)
    if not head:
        return None
    if len(head) < _FRAME.size:
        msg = "torn frame header"
        raise ValueError(msg)
    length, crc = _FRAME.unpack(head)
    payload = f.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        msg = "torn or corrupt frame"
        raise ValueError(msg)
    return payload


class _Spool:
    """FIFO of record batches in segment files ``<n>.spool``; not thread-safe (caller locks)."""

    def __init__(self, directory: Path, segment_bytes: int, fsync: bool) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.segments: list[int] = []  # unread or partly read, oldest first
        self.sizes: dict[int, int] = {}
        self.outstanding: dict[int, int] = {}  # batches read from a segment, not yet confirmed
        self.fully_read: set[int] = set()
        self.unread_batches = 0
        self.unread_records = 0
        self.bytes = 0
        self._writer: BinaryIO | None = None
        self._writer_seg: int | None = None
        self._reader: BinaryIO | None = None
        self._reader_seg: int | None = None
        self._recover()

    def _recover(self) -> None:
        for p in sorted(self.dir.glob(f"*{_SEG_SUFFIX}"), key=lambda p: int(p.stem)):
            seg = int(p.stem)
            batches = records = 0
            good = 0
            with open(p, "rb") as f:
                while True:
                    try:
                        payload = _read_frame(f)
                    except ValueError:
                        log.error("spool segment %s has a torn or corrupt frame at byte %d (a crash "
                                  "while writing); the rest is kept in %s.corrupt", p, good, p)
                        f.seek(good)
                        rest = f.read()
                        Path(f"{p}.corrupt").write_bytes(rest)
                        break
                    if payload is None:
                        break
                    batches += 1
                    records += _BATCH.unpack_from(payload, 0)[1]
                    good = f.tell()
            if good != p.stat().st_size:
                os.truncate(p, good)
            if batches == 0:
                p.unlink()
                continue
            self.segments.append(seg)
            self.sizes[seg] = good
            self.bytes += good
            self.unread_batches += batches
            self.unread_records += records

    def _path(self, seg: int) -> Path:
        return self.dir / f"{seg}{_SEG_SUFFIX}"

    def _next_seg(self) -> int:
        known = [*self.segments, *self.outstanding]
        return max(max(known, default=_FRONT_BASE - 1) + 1, _FRONT_BASE)

    def write(self, seq: int, records: Sequence[Record]) -> int:
        """Append one batch at the tail; returns its segment."""
        frame = _encode_batch(seq, records)
        if self._writer is None or self.sizes.get(self._writer_seg or 0, 0) >= self.segment_bytes:
            self.roll()
            seg = self._next_seg()
            self._writer = open(self._path(seg), "ab")  # noqa: SIM115 - long-lived writer
            self._writer_seg = seg
            self.segments.append(seg)
            self.sizes[seg] = 0
        seg = self._writer_seg  # type: ignore[assignment]
        self._writer.write(frame)
        self._writer.flush()
        if self.fsync:
            os.fsync(self._writer.fileno())
        self.sizes[seg] += len(frame)
        self.bytes += len(frame)
        self.unread_batches += 1
        self.unread_records += len(records)
        return seg

    def write_front(self, items: Sequence[tuple[int, Sequence[Record]]]) -> None:
        """Write batches that are older than everything spooled into one segment in front."""
        if not items:
            return
        known = [*self.segments, *self.outstanding, *self.fully_read]
        seg = min(min(known, default=_FRONT_BASE), _FRONT_BASE) - 1
        data = b"".join(_encode_batch(seq, recs) for seq, recs in items)
        with open(self._path(seg), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.segments.insert(0, seg)
        self.sizes[seg] = len(data)
        self.bytes += len(data)
        self.unread_batches += len(items)
        self.unread_records += sum(len(r) for _, r in items)

    def drain_current(self) -> list[tuple[int, list[Record]]]:
        """The unread rest of the segment being read (so it can be rewritten elsewhere)."""
        out: list[tuple[int, list[Record]]] = []
        seg, reader = self._reader_seg, self._reader
        if seg is None or reader is None:
            return out
        while True:
            try:
                payload = _read_frame(reader)
            except ValueError:
                payload = None
            if payload is None:
                break
            seq, records = _decode_batch(payload)
            self.unread_batches -= 1
            self.unread_records -= len(records)
            out.append((seq, records))
        reader.close()
        self._reader = self._reader_seg = None
        if seg in self.segments:
            self.segments.remove(seg)
        self.fully_read.add(seg)
        return out

    def discard_read(self) -> None:
        """Delete every segment that was (partly) read: its content is confirmed or rewritten."""
        for seg in [*self.outstanding, *self.fully_read]:
            if seg in self.segments:
                self.segments.remove(seg)
            self.outstanding.pop(seg, None)
            self.fully_read.discard(seg)
            self.bytes -= self.sizes.pop(seg, 0)
            self._path(seg).unlink(missing_ok=True)

    def roll(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._writer_seg = None

    def read(self) -> tuple[int, int, list[Record]] | None:
        """The oldest unread batch as (segment, seq, records), or None when all is read."""
        while self.segments:
            seg = self.segments[0]
            if seg == self._writer_seg:
                self.roll()
            if self._reader_seg != seg:
                self._reader = open(self._path(seg), "rb")  # noqa: SIM115 - closed at segment end
                self._reader_seg = seg
            assert self._reader is not None
            try:
                payload = _read_frame(self._reader)
            except ValueError:
                log.error("spool segment %s is corrupt after byte %d; skipping the rest",
                          self._path(seg), self._reader.tell())
                payload = None
            if payload is None:
                self._reader.close()
                self._reader = self._reader_seg = None
                self.segments.pop(0)
                self.fully_read.add(seg)
                self._maybe_delete(seg)
                continue
            seq, records = _decode_batch(payload)
            self.outstanding[seg] = self.outstanding.get(seg, 0) + 1
            self.unread_batches -= 1
            self.unread_records -= len(records)
            if self._reader.tell() >= self.sizes.get(seg, 0):  # the writer rolled: nothing more comes
                self._reader.close()
                self._reader = self._reader_seg = None
                self.segments.pop(0)
                self.fully_read.add(seg)
            return seg, seq, records
        return None

    def confirmed(self, seg: int) -> None:
        self.outstanding[seg] -= 1
        self._maybe_delete(seg)

    def _maybe_delete(self, seg: int) -> None:
        if seg in self.fully_read and self.outstanding.get(seg, 0) == 0:
            self.fully_read.discard(seg)
            self.outstanding.pop(seg, None)
            self.bytes -= self.sizes.pop(seg, 0)
            self._path(seg).unlink(missing_ok=True)

    def close(self) -> None:
        self.roll()
        if self._reader is not None:
            self._reader.close()
            self._reader = self._reader_seg = None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def check_spool_space(spool_dir: Path, spool_max_bytes: int, name: str = "connector") -> int:
    """Stop at start when the spool may grow beyond the free space of its filesystem.

    The spool can hold ``producer.spool_max_bytes``; what it holds already (segments left by
    an earlier run) counts as room. A limit larger than that room is a ConnectorError naming
    both values and the fixes, at start, instead of a full disk (or an evicted pod) during the
    Kafka outage the spool is there for. Returns the free bytes of the filesystem.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> check_spool_space(d, 4096) > 0
    True
    >>> try:
    ...     check_spool_space(d, 1 << 62, "mqtt")
    ... except ConnectorError as exc:
    ...     print(str(exc)[:53])
    producer.spool_max_bytes is 4611686018427387904 bytes
    """
    st = os.statvfs(spool_dir)
    free = st.f_bavail * st.f_frsize
    spooled = sum(p.stat().st_size for p in spool_dir.glob(f"*{_SEG_SUFFIX}"))
    if spool_max_bytes > free + spooled:
        room = free + spooled
        msg = (f"producer.spool_max_bytes is {spool_max_bytes} bytes ({_size(spool_max_bytes)}) but the "
               f"filesystem of the {name} spool {spool_dir} has {_size(free)} free"
               f"{f' plus {_size(spooled)} already spooled' if spooled else ''}: lower "
               f"producer.spool_max_bytes (PLANTSTREAM__PRODUCER__SPOOL_MAX_BYTES) to at most {room}, or "
               f"give producer.spool_dir a larger volume (Helm: connectors.{name}.persistence.size)")
        raise ConnectorError(msg)
    return free


class SpoolingProducer:
    """Produce record sets to Kafka in order; hold them in memory, then on disk, while it is away.

    One background thread owns the librdkafka producer. Thread-safe: :meth:`send` may be called
    from any thread. At-least-once, in order per key (see the module docstring).
    """

    def __init__(self, kafka_conf: Mapping[str, Any], config: ProducerConfig | None = None, *,
                 name: str = "connector", deadletter_raw_bytes: int = DEADLETTER_RAW_BYTES) -> None:
        self.config = config or ProducerConfig()
        self.deadletter_raw_bytes = deadletter_raw_bytes
        self.topic = self.config.topic
        self.name = name
        c = self.config
        self._conf = producer_config(
            kafka_conf,
            **{
                "compression.type": c.compression,
                "linger.ms": c.linger_ms,
                "message.timeout.ms": 0,
                "queue.buffering.max.messages": max(c.inflight_records * 2, 1000),
                "enable.idempotence": True,
                "acks": "all",
            },
        )
        self.stats = ProducerStats()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._mem: deque[_Batch] = deque()
        self._mem_records = 0
        self._mem_bytes = 0
        self._inflight: deque[_Batch] = deque()
        self._inflight_records = 0
        self._callbacks: dict[int, Callable[[], None] | None] = {}
        self._seq = time.time_ns()
        self._spool: _Spool | None = None
        self._producer: Producer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._fatal: KafkaError | None = None
        self._refused: list[tuple[_Batch, Record, str, bool]] = []  # delivery reports to dead-letter
        self.spool_dir = Path(c.spool_dir) / name
        self._rejected_path = self.spool_dir / "rejected.jsonl"
        self._lock_file: Any = None
        self._started_ms = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> SpoolingProducer:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        check_spool_space(self.spool_dir, self.config.spool_max_bytes, self.name)
        self._lock_file = open(self.spool_dir / ".lock", "a+b")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            self._lock_file = None
            msg = (f"the spool {self.spool_dir} is in use by another {self.name} producer; give each "
                   "connector process its own producer.spool_dir (or a different name)")
            raise ConnectorError(msg) from None
        self._spool = _Spool(self.spool_dir, self.config.spool_segment_bytes,
                             self.config.fsync)
        self.stats.recovered_records = self._spool.unread_records
        self.stats.spool_bytes = self.stats.max_spool_bytes = self._spool.bytes
        if self._spool.unread_records:
            log.warning("%s producer: %d records left in the spool %s by an earlier run go first",
                        self.name, self._spool.unread_records, self.spool_dir)
        self._producer = Producer(self._conf)
        self._started_ms = int(time.time() * 1000)
        self._thread = threading.Thread(target=self._pump, name=f"plantstream-producer-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> SpoolingProducer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending -------------------------------------------------------------------------------

    def send(self, records: Sequence[Record], on_confirmed: Callable[[], None] | None = None) -> None:
        """Hand over one record set; ``on_confirmed`` fires once Kafka confirmed it and all before."""
        recs = list(records)
        nbytes = sum(len(v) + len(k or b"") + len(t) for t, k, v in recs)
        c = self.config
        with self._cond:
            if self._closed or self._spool is None:
                msg = f"{self.name} producer is closed (or not started); call start() first"
                raise ConnectorError(msg)
            self._seq += 1
            seq = self._seq
            self.stats.accepted_records += len(recs)
            spool = self._spool
            fits = (self._mem_records + len(recs) <= c.memory_records
                    and self._mem_bytes + nbytes <= c.memory_bytes) or not self._mem
            if spool.unread_batches == 0 and fits:
                self._mem.append(_Batch(seq, recs, nbytes, on_confirmed, len(recs)))
                self._mem_records += len(recs)
                self._mem_bytes += nbytes
            else:
                warned = False
                while spool.bytes + nbytes > c.spool_max_bytes and spool.bytes > 0 and not self._closed:
                    if not warned:
                        log.warning("%s producer: spool %s is full (%d bytes); waiting for Kafka",
                                    self.name, self.spool_dir, spool.bytes)
                        warned = True
                    self._cond.wait(1.0)
                spool.write(seq, recs)
                self._callbacks[seq] = on_confirmed
                self.stats.spooled_records += len(recs)
                self.stats.spool_bytes = spool.bytes
                self.stats.max_spool_bytes = max(self.stats.max_spool_bytes, spool.bytes)
            self._cond.notify_all()

    def send_measurements(self, measurements: Iterable[Measurement],
                          on_confirmed: Callable[[], None] | None = None,
                          deadletters: Iterable[DeadLetter] = ()) -> None:
        """Measurements (keyed by machine) and dead letters as one record set."""
        recs = [measurement_record(m, self.topic) for m in measurements]
        recs.extend(deadletter_record(d, limit=self.deadletter_raw_bytes) for d in deadletters)
        self.send(recs, on_confirmed)

    @property
    def pending(self) -> int:
        """Record sets handed over and not yet confirmed (memory, spool and in flight)."""
        with self._lock:
            return len(self._mem) + len(self._inflight) + (self._spool.unread_batches if self._spool else 0)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every record set handed over so far is confirmed; False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._mem or self._inflight or (self._spool is not None and self._spool.unread_batches):
                if self._thread is None or not self._thread.is_alive():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.2 if left is None else min(left, 0.2))
            return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush for up to ``timeout_s``; spool whatever Kafka has not confirmed. Idempotent."""
        if self._closed or self._spool is None:
            return
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._cond:
            spool = self._spool
            leftovers = [(b.seq, b.records) for b in self._inflight if b.remaining > 0]
            leftovers += [(b.seq, b.records) for b in self._mem]
            if leftovers:
                # Older than anything still in the spool: one segment in front, in order, plus the
                # unread rest of a partly read segment, so that no batch is written twice.
                n = sum(len(r) for _, r in leftovers)
                leftovers += spool.drain_current()
                spool.discard_read()
                spool.write_front(leftovers)
                log.warning("%s producer: Kafka did not confirm %d records within %.1fs; they wait in "
                            "the spool %s for the next start", self.name, n, timeout_s, self.spool_dir)
            self._mem.clear()
            self._inflight.clear()
            self.stats.spool_bytes = spool.bytes
            spool.close()
        if self._producer is not None:
            self._producer.purge()
            self._producer.poll(0)
            self._producer = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    # -- the producer thread ------------------------------------------------------------------

    def _pump(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._stopping:
                        return
                    self._refill()
                    to_produce = self._take()
                for b in to_produce:
                    self._produce(b)
                assert self._producer is not None
                self._producer.poll(0 if to_produce else 0.05)
                if self._fatal is not None:
                    self._rebuild()
                if self._refused:
                    self._deadletter_refused()
                self._complete()
        except BaseException as exc:  # the thread must not die silently: health() reports it
            log.exception("%s producer thread failed; /healthz reports it", self.name)
            self._error(f"producer thread failed: {exc!r}")
            with self._cond:
                self._cond.notify_all()

    def _error(self, text: str) -> None:
        self.stats.first_error = self.stats.first_error or text
        self.stats.last_error = text
        self.stats.last_error_ms = int(time.time() * 1000)

    @property
    def alive(self) -> bool:
        """True while the producer thread runs (started, not closed, not failed)."""
        return self._thread is not None and self._thread.is_alive()

    def health(self, stall_s: float = 60.0) -> dict[str, Any]:
        """What ``/healthz`` and ``/readyz`` report.

        ``live``: the producer thread runs. ``ready``: live, and Kafka confirmed a record within
        ``stall_s`` seconds whenever records are waiting (a long outage makes it not ready, never
        not live: the spool holds the data).
        """
        now = int(time.time() * 1000)
        st = self.stats
        live = self.alive and not self._closed
        pending = st.pending_records
        waiting_since = st.last_delivery_ms or self._started_ms
        stalled = pending > 0 and now - waiting_since > stall_s * 1000
        return {"live": live, "ready": live and not stalled, "name": self.name,
                "thread_alive": self.alive, "pending_records": pending,
                "spool_bytes": st.spool_bytes, "last_delivery_ms": st.last_delivery_ms,
                "last_error": st.last_error, "last_error_ms": st.last_error_ms,
                "deadlettered_records": st.deadlettered_records, "rejected_records": st.rejected_records}

    def _refill(self) -> None:
        """Move batches from the spool into memory while memory has room (lock held)."""
        spool = self._spool
        assert spool is not None
        c = self.config
        while spool.unread_batches and (not self._mem or (
                self._mem_records < c.memory_records // 2 and self._mem_bytes < c.memory_bytes // 2)):
            got = spool.read()
            if got is None:
                break
            seg, seq, recs = got
            nbytes = sum(len(v) + len(k or b"") + len(t) for t, k, v in recs)
            cb = self._callbacks.pop(seq, None)
            self._mem.append(_Batch(seq, recs, nbytes, cb, len(recs), seg))
            self._mem_records += len(recs)
            self._mem_bytes += nbytes
        self.stats.spool_bytes = spool.bytes

    def _take(self) -> list[_Batch]:
        """Batches that fit in librdkafka's budget now (lock held)."""
        out = []
        budget = self.config.inflight_records
        while self._mem and (self._inflight_records + len(self._mem[0].records) <= budget
                             or not self._inflight):
            b = self._mem.popleft()
            self._mem_records -= len(b.records)
            self._mem_bytes -= b.nbytes
            self._inflight.append(b)
            self._inflight_records += len(b.records)
            out.append(b)
        return out

    def _produce(self, b: _Batch) -> None:
        assert self._producer is not None
        b.produced = True
        for record in b.records:
            self._produce_one(b, record, replacing=False)

    def _produce_one(self, b: _Batch, record: Record, *, replacing: bool) -> None:
        """Produce one record of ``b``; a record librdkafka refuses at once (larger than
        ``message.max.bytes``, an invalid topic …) is replaced by its dead letter."""
        assert self._producer is not None
        topic, key, value = record
        try:
            produce_waiting(self._producer, topic, value, key, wait_s=0.05,
                            on_delivery=self._delivery_callback(b, record, replacing))
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            self._refuse(b, record, err.str() if err is not None else str(exc), replacing)

    def _refuse(self, b: _Batch, record: Record, error: str, replacing: bool) -> None:
        """Kafka refused ``record`` for good: its dead letter takes its place in ``b``."""
        text = f"Kafka refused a record of {len(record[2])} bytes for {record[0]}: {error}"
        self._error(text)
        if not replacing:
            log.error("%s producer: %s; it goes to %s as a dead letter", self.name, text, DEADLETTER)
            self.stats.deadlettered_records += 1
            self._produce_one(b, refused_record(record, error, self.name, self.deadletter_raw_bytes),
                              replacing=True)
            return
        self._reject(record, error)  # even its bounded dead letter was refused
        b.remaining -= 1
        self._inflight_records -= 1

    def _delivery_callback(self, b: _Batch, record: Record, replacing: bool
                           ) -> Callable[[KafkaError | None, Any], None]:
        gen = self.stats.producer_rebuilds

        def done(err: KafkaError | None, msg: Any) -> None:
            if gen != self.stats.producer_rebuilds or self._stopping:
                return  # from a producer that was replaced, or purged at close
            if err is not None:
                if err.fatal():
                    self._fatal = err
                    return
                # Not counted done yet: its dead letter replaces it (produced outside poll()).
                self._refused.append((b, record, err.str(), replacing))
                return
            self.stats.confirmed_records += 1
            self.stats.last_delivery_ms = int(time.time() * 1000)
            b.remaining -= 1
            self._inflight_records -= 1

        return done

    def _deadletter_refused(self) -> None:
        refused, self._refused = self._refused, []
        for b, record, error, replacing in refused:
            self._refuse(b, record, error, replacing)

    def _reject(self, record: Record, error: str) -> None:
        """Last resort: the refused record's bounded dead letter, as one line of rejected.jsonl."""
        self.stats.rejected_records += 1
        topic, key, value = record
        log.error("%s producer: Kafka refused the dead letter of a record for %s too (%s); it is kept "
                  "in %s", self.name, topic, error, self._rejected_path)
        dl = DeadLetter(value, f"refused by Kafka for {topic}: {error}", f"{self.name}:{topic}",
                        int(time.time() * 1000)).row(self.deadletter_raw_bytes)
        dl["key"] = raw_prefix(key or b"", 1024)
        with open(self._rejected_path, "ab") as f:
            f.write(orjson.dumps(dl) + b"\n")

    def _rebuild(self) -> None:
        """A fatal producer error (idempotence state lost): new producer, resend what is unconfirmed."""
        err, self._fatal = self._fatal, None
        log.error("%s producer: fatal Kafka error %s; rebuilding the producer and resending %d "
                  "unconfirmed records (duplicates possible)", self.name, err, self._inflight_records)
        assert self._producer is not None
        self.stats.producer_rebuilds += 1
        self._refused.clear()  # their batches are produced again in full below
        self._producer.purge()
        self._producer = Producer(self._conf)
        with self._cond:
            again = [b for b in self._inflight if b.remaining > 0]
            self._inflight_records = 0
        for b in again:
            self.stats.confirmed_records -= len(b.records) - b.remaining
            b.remaining = len(b.records)
            self._inflight_records += len(b.records)
            self._produce(b)

    def _complete(self) -> None:
        """Fire the callbacks of the leading confirmed record sets, in order."""
        fired: list[Callable[[], None]] = []
        with self._cond:
            if not self._inflight or self._inflight[0].remaining > 0:
                return
            spool = self._spool
            assert spool is not None
            while self._inflight and self._inflight[0].remaining <= 0:
                b = self._inflight.popleft()
                self.stats.confirmed_sets += 1
                if b.segment is not None:
                    spool.confirmed(b.segment)
                if b.on_confirmed is not None:
                    fired.append(b.on_confirmed)
            self.stats.spool_bytes = spool.bytes
            self._cond.notify_all()
        for cb in fired:
            try:
                cb()
            except Exception:
                log.exception("%s producer: an on_confirmed callback failed", self.name)
