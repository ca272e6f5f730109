"""Sending an entry: its Measurements and its audit record, accepted only once Kafka confirmed them.

Unlike the connectors' :class:`~plantstream.connectors.producer.SpoolingProducer`, the station
keeps nothing: an entry is produced (idempotent, ``acks=all``, ``message.timeout.ms`` =
``station.kafka_timeout_s``) and the operator is told it was accepted only when every delivery
report came back without error. When Kafka does not confirm in time the entry is refused, the
station turns read-only (a banner on every page) and its probe thread turns it back once the
broker answers metadata requests again. Nothing is queued in the browser or in the station.

A delivery that times out may still have reached the broker (Kafka offers no atomic "all or
nothing" without transactions): the audit record goes last, so ``operator_entries`` never names
an entry whose Measurements were not written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaException, Producer

from plantstream.connectors.kafka import MEASUREMENTS
from plantstream.flows.operator_entries import TOPIC as ENTRIES_TOPIC
from plantstream.station.model import Entry, EntryRefused

log = logging.getLogger(__name__)


class EntrySender:
    """Produces entries and watches whether Kafka is reachable (``ok``)."""

    def __init__(self, kafka_conf: Mapping[str, Any], timeout_s: float = 5.0, probe_s: float = 2.0) -> None:
        self.kafka_conf = dict(kafka_conf)
        self.timeout_s = timeout_s
        self.probe_s = probe_s
        self.ok = False
        self.reason = "not checked yet"
        self.accepted = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._producer: Producer | None = None
        self._thread: threading.Thread | None = None

    def _conf(self) -> dict[str, Any]:
        ms = int(self.timeout_s * 1000)
        return {
            **self.kafka_conf,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 0,
            "message.timeout.ms": ms,
            "socket.timeout.ms": max(ms, 1000),
            "request.timeout.ms": ms,
            "client.id": "plantstream-station",
        }

    def start(self) -> EntrySender:
        self._producer = Producer(self._conf())
        self.probe()
        self._thread = threading.Thread(target=self._probe_loop, name="station-kafka-probe", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._producer is not None:
            self._producer.flush(1)
            self._producer = None

    def probe(self) -> bool:
        """Ask the broker for the two topics' metadata; sets ``ok``."""
        producer = self._producer
        if producer is None:
            return False
        try:
            meta = producer.list_topics(timeout=min(self.timeout_s, 3.0))
            missing = [t for t in (MEASUREMENTS, ENTRIES_TOPIC) if t not in meta.topics]
            if missing:
                self.ok, self.reason = False, f"Kafka topic {missing[0]} does not exist"
            else:
                self.ok, self.reason = True, ""
        except KafkaException as exc:
            self.ok, self.reason = False, f"Kafka unreachable: {exc.args[0] if exc.args else exc}"
        return self.ok

    def _probe_loop(self) -> None:
        while not self._stop.wait(self.probe_s):
            with self._lock:
                self.probe()

    def send(self, entry: Entry) -> None:
        """Produce the entry's Measurements, then its audit record; return once Kafka confirmed all.

        Raises :class:`EntryRefused` (status 503) when Kafka is unreachable or does not confirm
        within the timeout."""
        if not self.ok or self._producer is None:
            self.refused += 1
            msg = f"read-only: {self.reason or 'Kafka is unreachable'}; nothing was saved, try again later"
            raise EntryRefused(msg, 503)
        with self._lock:
            producer = self._producer
            errors: list[str] = []
            pending = [0]

            def done(err: Any, msg: Any) -> None:
                pending[0] -= 1
                if err is not None:
                    errors.append(str(err))

            key = entry.machine.encode()
            try:
                for m in entry.measurements:
                    pending[0] += 1
                    producer.produce(MEASUREMENTS, m.to_json(), key, on_delivery=done)
                deadline = time.monotonic() + self.timeout_s
                while pending[0] > 0 and time.monotonic() < deadline:
                    producer.poll(0.05)
                if pending[0] == 0 and not errors:
                    pending[0] += 1
                    producer.produce(ENTRIES_TOPIC, entry.audit_json(), key, on_delivery=done)
                    while pending[0] > 0 and time.monotonic() < deadline + self.timeout_s:
                        producer.poll(0.05)
            except (BufferError, KafkaException) as exc:
                errors.append(str(exc))
            if pending[0] > 0 or errors:
                self.refused += 1
                self.ok = False
                self.reason = f"Kafka did not confirm the entry ({errors[0] if errors else 'timeout'})"
                log.warning("entry %s refused: %s", entry.entry_id, self.reason)
                msg = f"not saved: {self.reason}; the station is read-only until Kafka answers again"
                raise EntryRefused(msg, 503)
            self.accepted += 1
