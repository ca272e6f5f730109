"""Shared pieces of the OPC UA tests: plant config, Kafka read-back, waiting without sleeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from plantstream.connectors.kafka import DEADLETTER, MEASUREMENTS
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.schemas.measurement import Measurement, decode
from plantstream.simulators.opcua_server import plc_tag_dictionary

START = 1763791200000  # 2025-11-22 06:00Z
H = 3_600_000
SHIFTS = [{"name": "day", "start": "06:00", "end": "14:00",
           "breaks": [{"start": "06:30", "minutes": 15}]}]


def plant_config(tmp: Path, endpoint: str, *, extra_tags: dict[str, Any] | None = None,
                 **opcua: Any) -> PlantConfig:
    oc = {"endpoint": endpoint, "browse": ["0:Objects/2:Channel1"], "ignore": ["*.ToolID"], "queue_size": 100_000,
          "publishing_interval_ms": 50, "state_file": str(tmp / "opcua-state.json"),
          "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0, "watchdog_s": 0.5, **opcua}
    return build_config({"site": "plant-a", "shifts": SHIFTS, "microstop_threshold_s": 120,
                         "tags": {**plc_tag_dictionary(line="line-1"), **(extra_tags or {})}, "opcua": oc,
                         "producer": {"spool_dir": str(tmp / "spool"), "linger_ms": 1}}, {})


def read_topic(kafka_conf: dict[str, Any], topic: str, partitions: int = 4) -> list[tuple[bytes | None, bytes]]:
    """Every record of ``topic`` (all partitions, from the start to the end), per partition in order."""
    c = Consumer({**kafka_conf, "group.id": f"t-{time.time_ns()}", "enable.partition.eof": True,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[tuple[bytes | None, bytes]] = []
    eof: set[int] = set()
    deadline = time.monotonic() + 60
    while len(eof) < partitions and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                eof.add(msg.partition())
            continue
        eof.discard(msg.partition())
        out.append((msg.key(), msg.value()))
    c.close()
    return out


def measurements(kafka_conf: dict[str, Any]) -> list[Measurement]:
    out = []
    for _, v in read_topic(kafka_conf, MEASUREMENTS):
        m = decode(v)
        assert isinstance(m, Measurement), m
        out.append(m)
    return out


def deadletters(kafka_conf: dict[str, Any]) -> list[dict[str, Any]]:
    import orjson
    return [orjson.loads(v) for _, v in read_topic(kafka_conf, DEADLETTER)]


async def until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def quiet(counter: Callable[[], int], quiet_s: float = 1.0, timeout: float = 60.0) -> None:
    """Wait until ``counter()`` stops changing for ``quiet_s``."""
    deadline = time.monotonic() + timeout
    last, since = counter(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        await asyncio.sleep(0.05)
        now = counter()
        if now != last:
            last, since = now, time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError("never went quiet")


def per_machine_states(ms: list[Measurement]) -> dict[str, list[tuple[int, str]]]:
    """(ts, state) per machine with repeats of the same state at the same ts removed."""
    out: dict[str, list[tuple[int, str]]] = {}
    for m in ms:
        if m.metric == "machine_state":
            seq = out.setdefault(m.machine, [])
            if not seq or seq[-1] != (m.ts, m.value):
                seq.append((m.ts, str(m.value)))
    return out


def truth_states(truth: Any) -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for s in truth.states:
        seq = out.setdefault(s.machine, [])
        if not seq or seq[-1][1] != s.state:
            seq.append((s.start_ms, s.state))
    return out


def counter_totals(ms: list[Measurement], machine: str, metric: str) -> tuple[int, int]:
    """(production from the counter with resets, last value) — what a flow would compute."""
    total, last, seen = 0, 0, False
    for m in ms:
        if m.machine == machine and m.metric == metric:
            v = int(m.value)
            if seen:
                total += v - last if v >= last else v
            else:
                total += v
                seen = True
            last = v
    return total, last
