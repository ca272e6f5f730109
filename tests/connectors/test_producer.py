"""The connectors' spooling producer against a real (embedded Tansu) Kafka broker.

What must hold: every record arrives, in order per key, exactly as handed over while the broker
is reachable; a broker outage spills to memory and the disk spool and loses nothing; record-set
callbacks fire in order and only after Kafka confirmed; a spool left by a shutdown during an
outage is delivered first at the next start.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from plantstream.connectors import kafka
from plantstream.connectors.embedded import TansuBroker
from plantstream.connectors.producer import SpoolingProducer
from plantstream.schemas.errors import ConnectorError
from plantstream.schemas.tags_config import ProducerConfig

pytestmark = pytest.mark.integration

TOPIC = kafka.MEASUREMENTS


def consume_all(conf: dict[str, Any], expected: int, topic: str = TOPIC,
                timeout_s: float = 30.0) -> list[tuple[bytes | None, bytes]]:
    """Every (key, value) of a topic, partition by partition order, once ``expected`` are read."""
    c = Consumer({**conf, "group.id": f"t-{time.monotonic_ns()}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(4)])
    out: list[tuple[bytes | None, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                err = m.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF
                    continue
                out.append((m.key(), m.value() or b""))
        # a little more, to see duplicates or strays beyond the expected count
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            out.extend((m.key(), m.value() or b"") for m in c.consume(1000, 0.1) if m.error() is None)
    finally:
        c.close()
    return out


def per_key(records: list[tuple[bytes | None, bytes]]) -> dict[bytes | None, list[bytes]]:
    out: dict[bytes | None, list[bytes]] = {}
    for k, v in records:
        out.setdefault(k, []).append(v)
    return out


def make_sets(n_sets: int, per_set: int, machines: int) -> list[list[tuple[str, bytes, bytes]]]:
    sets = []
    i = 0
    for _ in range(n_sets):
        recs = []
        for _ in range(per_set):
            m = i % machines
            recs.append((TOPIC, f"m-{m}".encode(), f"{m}:{i}".encode()))
            i += 1
        sets.append(recs)
    return sets


def expected_per_key(sets: list[list[tuple[str, bytes, bytes]]]) -> dict[bytes | None, list[bytes]]:
    return per_key([(k, v) for s in sets for _, k, v in s])


def test_delivers_everything_in_order_and_confirms_sets_in_order(broker: TansuBroker, kafka_conf: dict,
                                                                  tmp_path: Path) -> None:
    sets = make_sets(400, 10, machines=7)
    confirmed: list[int] = []
    with SpoolingProducer(kafka_conf, ProducerConfig(spool_dir=str(tmp_path / "spool"))) as p:
        for i, s in enumerate(sets):
            p.send(s, on_confirmed=partial(confirmed.append, i))
        p.send([], on_confirmed=partial(confirmed.append, -1))  # an empty set confirms after the rest
        assert p.flush(30)
        assert p.stats.spooled_records == 0
    assert confirmed == [*range(len(sets)), -1]
    got = consume_all(kafka_conf, 4000)
    assert len(got) == 4000
    assert per_key(got) == expected_per_key(sets)


def test_outage_spills_to_disk_and_loses_nothing(broker: TansuBroker, kafka_conf: dict, tmp_path: Path) -> None:
    cfg = ProducerConfig(spool_dir=str(tmp_path / "spool"), memory_records=200, inflight_records=100,
                         spool_segment_bytes=8192)
    sets = make_sets(300, 10, machines=5)
    confirmed: list[int] = []
    spool = tmp_path / "spool" / "connector"
    with SpoolingProducer(kafka_conf, cfg) as p:
        assert p.spool_dir == spool
        for i, s in enumerate(sets[:50]):
            p.send(s, on_confirmed=partial(confirmed.append, i))
        assert p.flush(30)
        broker.pause()
        try:
            for i, s in enumerate(sets[50:], start=50):
                p.send(s, on_confirmed=partial(confirmed.append, i))
            time.sleep(1.0)
            assert confirmed == list(range(50)), "nothing may be confirmed while Kafka is frozen"
            assert p.stats.spooled_records > 1000
            assert len(list(spool.glob("*.spool"))) > 1, "the spool rolls segments"
        finally:
            broker.resume()
        assert p.flush(60)
        assert p.stats.rejected_records == 0
    assert confirmed == list(range(300))
    assert list(spool.glob("*.spool")) == [], "confirmed segments are deleted"
    got = consume_all(kafka_conf, 3000)
    assert len(got) == 3000
    assert per_key(got) == expected_per_key(sets)


def test_spool_left_at_shutdown_goes_first_at_next_start(tmp_path: Path) -> None:
    spool = tmp_path / "spool" / "connector"
    broker = TansuBroker(tmp_path / "logs").start()
    try:
        conf = {"bootstrap.servers": broker.bootstrap}
        kafka.create_topics(conf, {TOPIC: 4})
        cfg = ProducerConfig(spool_dir=str(spool.parent), memory_records=100, inflight_records=50)
        sets = make_sets(100, 5, machines=3)
        broker.pause()
        p = SpoolingProducer(conf, cfg).start()
        for s in sets[:60]:
            p.send(s)
        p.close(timeout_s=0.5)  # Kafka frozen: everything goes to the spool
        assert sum(f.stat().st_size for f in spool.glob("*.spool")) > 0
        broker.resume()
        p2 = SpoolingProducer(conf, cfg).start()
        assert p2.stats.recovered_records == 300
        for s in sets[60:]:
            p2.send(s)
        assert p2.flush(30)
        p2.close()
        got = consume_all(conf, 500)
        # records in flight when Kafka froze may arrive twice (at-least-once); keeping the first
        # occurrence of each gives exactly the sent sequence, per machine
        exp = expected_per_key(sets)
        assert set(per_key(got)) == set(exp)
        for k, vs in per_key(got).items():
            seen: list[bytes] = []
            for v in vs:
                if v not in seen:
                    seen.append(v)
            assert seen == exp[k]
        assert sum(len(v) for v in exp.values()) == 500
    finally:
        broker.stop()


def test_send_after_close_is_a_clear_error(tmp_path: Path) -> None:
    p = SpoolingProducer({"bootstrap.servers": "127.0.0.1:1"}, ProducerConfig(spool_dir=str(tmp_path))).start()
    p.close(timeout_s=0.1)
    p.close()  # idempotent
    with pytest.raises(ConnectorError, match="closed"):
        p.send([(TOPIC, b"k", b"v")])


def test_send_is_thread_safe_and_keeps_per_thread_order(broker: TansuBroker, kafka_conf: dict,
                                                        tmp_path: Path) -> None:
    cfg = ProducerConfig(spool_dir=str(tmp_path / "spool"), memory_records=50, inflight_records=20)
    with SpoolingProducer(kafka_conf, cfg) as p:
        def run(t: int) -> None:
            for i in range(500):
                p.send([(TOPIC, f"t{t}".encode(), str(i).encode())])
        threads = [threading.Thread(target=run, args=(t,)) for t in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert p.flush(30)
    got = per_key(consume_all(kafka_conf, 1500))
    for t in range(3):
        assert got[f"t{t}".encode()] == [str(i).encode() for i in range(500)]


def test_a_torn_spool_tail_is_set_aside_and_the_rest_delivered(broker: TansuBroker, kafka_conf: dict,
                                                              tmp_path: Path) -> None:
    """A crash while writing leaves half a frame at the end of a segment: the whole frames before
    it are delivered, the torn bytes are kept in a ``.corrupt`` file, nothing is silently lost."""
    cfg = ProducerConfig(spool_dir=str(tmp_path / "spool"))
    spool = tmp_path / "spool" / "connector"
    sets = make_sets(20, 5, machines=2)
    p = SpoolingProducer({"bootstrap.servers": "127.0.0.1:1"}, cfg).start()
    for s in sets:
        p.send(s)
    p.close(timeout_s=0.2)
    (segment,) = spool.glob("*.spool")
    data = segment.read_bytes()
    segment.write_bytes(data + data[:30])  # half of a frame appended: a torn write
    p2 = SpoolingProducer(kafka_conf, cfg).start()
    assert p2.stats.recovered_records == 100
    assert p2.flush(30)
    p2.close()
    assert (segment.parent / f"{segment.name}.corrupt").read_bytes() == data[:30]
    assert per_key(consume_all(kafka_conf, 100)) == expected_per_key(sets)


def test_one_process_per_spool(tmp_path: Path) -> None:
    cfg = ProducerConfig(spool_dir=str(tmp_path))
    a = SpoolingProducer({"bootstrap.servers": "127.0.0.1:1"}, cfg, name="mqtt").start()
    try:
        with pytest.raises(ConnectorError, match="in use by another mqtt producer"):
            SpoolingProducer({"bootstrap.servers": "127.0.0.1:1"}, cfg, name="mqtt").start()
        other = SpoolingProducer({"bootstrap.servers": "127.0.0.1:1"}, cfg, name="opcua").start()
        other.close(timeout_s=0.1)
    finally:
        a.close(timeout_s=0.1)
    again = SpoolingProducer({"bootstrap.servers": "127.0.0.1:1"}, cfg, name="mqtt").start()
    again.close(timeout_s=0.1)


def test_a_record_kafka_refuses_becomes_its_dead_letter_and_the_thread_goes_on(
        broker: TansuBroker, kafka_conf: dict, tmp_path: Path) -> None:
    import hashlib

    import orjson

    huge = b"\xff" * 2_000_000  # beyond message.max.bytes: librdkafka refuses it at produce()
    confirmed: list[int] = []
    cfg = ProducerConfig(spool_dir=str(tmp_path))
    with SpoolingProducer(kafka_conf, cfg, name="t") as p:
        p.send([(TOPIC, b"m1", b"1"), (TOPIC, b"m1", huge), (TOPIC, b"m1", b"2")], partial(confirmed.append, 1))
        p.send([(TOPIC, b"m1", b"3")], partial(confirmed.append, 2))
        assert p.flush(30)
        assert p.alive and confirmed == [1, 2]
        assert (p.stats.deadlettered_records, p.stats.rejected_records) == (1, 0)
        assert p.health()["live"] and p.health()["ready"]
    assert [v for _, v in consume_all(kafka_conf, 3)] == [b"1", b"2", b"3"]
    [(key, value)] = consume_all(kafka_conf, 1, kafka.DEADLETTER)
    dead = orjson.loads(value)
    assert key == b"m1" and len(value) < 4096 + 512
    assert (dead["length"], dead["sha256"]) == (2_000_000, hashlib.sha256(huge).hexdigest())
    assert dead["source"] == f"t:{TOPIC}" and "refused by Kafka" in dead["reason"]
    with SpoolingProducer(kafka_conf, cfg, name="t") as again:  # nothing returns from the spool
        assert again.stats.recovered_records == 0
