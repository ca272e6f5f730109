"""Poison through `plantstream replay` and the flow's Kafka sink: one bounded dead letter, the flow
goes on (embedded Tansu broker, chDB).

Before: a 300 KB line of 0xFF bytes became a 1.2 MB dead-letter record (each byte as ``\\\\xff``),
the broker refused it (MSG_SIZE_TOO_LARGE) and the flow stopped; in production it crash-looped on
the same offset.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from plantstream.connectors import kafka
from plantstream.connectors.embedded import TansuBroker
from plantstream.flows.replay import replay
from plantstream.schemas.config import build_config
from tests.connectors.test_producer import consume_all

pytestmark = pytest.mark.integration

START = 1763791200000
POISON = b"\xff" * 300_000


def lines(n: int, start: int) -> list[bytes]:
    return [orjson.dumps({"ts": START + (start + i) * 1000, "machine": "press-01", "metric": "temperature_c",
                          "value": 60.0 + i / 100}) for i in range(n)]


def test_300kb_of_0xff_through_replay_is_one_bounded_dead_letter_and_the_rest_is_processed(
        tmp_path: Path, ch_dsn: str, ch_db: str, ch: Any) -> None:
    src = tmp_path / "poison.jsonl"
    src.write_bytes(b"\n".join([*lines(200, 0), POISON, *lines(200, 200)]) + b"\n")
    cfg = build_config({"site": "s", "lines": [{"id": "l", "machines": [{"id": "press-01"}]}]}, {})
    summary = replay(src, cfg, dsn=ch_dsn, database=ch_db,
                     workdir=tmp_path / "work")
    assert summary.records_in == 401 and summary.deadlettered == 1
    assert ch.query("SELECT count() FROM measurements FINAL").result_rows == [(400,)]
    [(reason, raw, length, sha)] = ch.query(
        "SELECT reason, raw, length, sha256 FROM deadletter FINAL").result_rows
    assert reason.startswith("oversized: 300000 bytes")
    assert (length, sha) == (300_000, hashlib.sha256(POISON).hexdigest())
    assert 0 < len(raw.encode()) <= 4096 and raw.startswith("\\xff")


def test_a_result_record_the_broker_refuses_becomes_its_dead_letter_and_the_sink_goes_on(
        broker: TansuBroker, kafka_conf: dict[str, Any]) -> None:
    topic = "plantstream.faults"
    kafka.create_topics(kafka_conf, {topic: 1})
    part = kafka.KafkaOutput(kafka_conf).build_part("kafka_out", "kafka-out", None)
    huge = b"\xff" * 2_000_000  # beyond message.max.bytes: refused before it leaves
    part.write_batch([(topic, b"m1", b"before"), (topic, b"m1", huge), (topic, b"m1", b"after")])
    part.snapshot()  # the epoch commits: no exception, nothing held back
    part.write_batch([(topic, b"m1", b"next epoch")])
    part.close()
    assert [v for _, v in consume_all(kafka_conf, 3, topic)] == [b"before", b"after", b"next epoch"]
    [(key, value)] = consume_all(kafka_conf, 1, kafka.DEADLETTER)
    dead = orjson.loads(value)
    assert key == b"m1" and len(value) < 4096 + 512
    assert dead["length"] == 2_000_000 and dead["sha256"] == hashlib.sha256(huge).hexdigest()
    assert "refused by Kafka for plantstream.faults" in dead["reason"] and "size" in dead["reason"].lower()
    assert part.deadlettered == 1 and part.lost == 0


def test_a_line_too_large_for_the_broker_is_dead_lettered_by_replay_and_the_rest_is_processed(
        tmp_path: Path, ch_dsn: str, ch_db: str, ch: Any) -> None:
    huge = b"\xff" * 2_000_000  # beyond what Kafka takes: it never reaches the flow
    src = tmp_path / "huge.jsonl"
    src.write_bytes(b"\n".join([*lines(100, 0), huge, *lines(100, 100)]) + b"\n")
    cfg = build_config({"site": "s", "lines": [{"id": "l", "machines": [{"id": "press-01"}]}]}, {})
    summary = replay(src, cfg, dsn=ch_dsn, database=ch_db, workdir=tmp_path / "work")
    assert summary.records_in == 201 and summary.deadlettered == 1
    assert ch.query("SELECT count() FROM measurements FINAL").result_rows == [(200,)]
    [(source, reason, raw, length, sha)] = ch.query(
        "SELECT source, reason, raw, length, sha256 FROM deadletter FINAL").result_rows
    assert source == "replay:line 101" and "refused by Kafka" in reason
    assert (length, sha) == (2_000_000, hashlib.sha256(huge).hexdigest()) and len(raw.encode()) <= 4096
