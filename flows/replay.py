"""Replay a file of Measurements through the flows, in event time, to completion.

The file holds one JSON object a line; ``ts`` may be epoch ms or an RFC 3339 string (converted
here, at the edge). Lines go to the embedded broker's ``plantstream.measurements`` topic as they
are — malformed ones included, so they are dead-lettered by the flow exactly as live input
would be — and the flow reads the topic to its end. The end of the file closes every open
window.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main
from confluent_kafka import KafkaError, KafkaException, Producer

from plantstream.connectors import clickhouse as ch
from plantstream.connectors import kafka
from plantstream.connectors.embedded import EmbeddedRuntime
from plantstream.connectors.outbox import workers_from_config
from plantstream.flows.main import build_dataflow, check_start, clickhouse_factory, create_topics
from plantstream.flows.registry import Flow, FlowFn
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import ConnectorError
from plantstream.schemas.measurement import DeadLetter, now_ms, parse_ts


def edge_convert(line: bytes) -> tuple[bytes | None, bytes]:
    """Key and value for one input line: RFC 3339 ``ts`` becomes epoch ms; bad lines pass as is.

    >>> edge_convert(b'{"ts": "2025-11-22T06:00:00Z", "machine": "m", "metric": "x", "value": 1}')
    (b'm', b'{"ts":1763791200000,"machine":"m","metric":"x","value":1}')
    >>> edge_convert(b'not json')
    (None, b'not json')
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, line
    if not isinstance(obj, dict):
        return None, line
    machine = obj.get("machine")
    key = machine.encode() if isinstance(machine, str) and machine else None
    ts = obj.get("ts")
    if isinstance(ts, str | float):
        converted = parse_ts(ts)
        if converted is not None:
            obj["ts"] = converted
            return key, orjson.dumps(obj)
    return key, line


def produce_lines(conf: Mapping[str, Any], lines: Iterable[bytes],
                  topic: str = kafka.MEASUREMENTS, refused: list[DeadLetter] | None = None) -> int:
    """Produce lines (blank ones skipped) to ``topic``, keyed by machine; returns the count.

    A line Kafka refuses (larger than the broker takes) becomes a :class:`DeadLetter` appended
    to ``refused`` (the replay writes it to the ``deadletter`` table and goes on); without a
    ``refused`` list it is a :class:`ConnectorError`.
    """
    producer = Producer(kafka.producer_config(conf, **{"linger.ms": 50}))
    dead: list[DeadLetter] = []

    def refuse(value: bytes, error: str, line_no: int) -> None:
        dead.append(DeadLetter(value, f"refused by Kafka for {topic}: {error}", f"replay:line {line_no}",
                               now_ms()))

    def on_delivery(line_no: int, value: bytes, err: Any, msg: Any) -> None:
        if err is not None:
            refuse(value, err.str(), line_no)

    n = 0
    for line_no, line in enumerate(lines, 1):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        key, value = edge_convert(line)
        try:
            kafka.produce_waiting(producer, topic, value, key,
                                  on_delivery=functools.partial(on_delivery, line_no, value))
        except KafkaException as exc:  # refused before it left (message.max.bytes)
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            refuse(value, err.str() if err is not None else str(exc), line_no)
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    producer.flush()
    if dead and refused is None:
        msg = f"Kafka refused {len(dead)} replayed lines, first: {dead[0].reason}"
        raise ConnectorError(msg)
    if refused is not None:
        refused.extend(dead)
    return n


@dataclass
class ReplaySummary:
    records_in: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def deadlettered(self) -> int:
        return self.rows.get("deadletter", 0)

    def as_dict(self) -> dict[str, Any]:
        return {"records_in": self.records_in, "deadlettered": self.deadlettered,
                "rows": dict(sorted(self.rows.items())), "seconds": round(self.seconds, 3)}


def run_flow_to_end(config: PlantConfig, kafka_conf: Mapping[str, Any], *, dsn: str | None,
                    flows: Mapping[str, Flow | FlowFn] | None = None,
                    recovery_dir: Path | None = None,
                    epoch_interval: timedelta = timedelta(seconds=5),
                    results_to_kafka: bool = True) -> ch.SinkStats:
    """Run the flows over ``plantstream.measurements`` until the end offsets seen at start.

    The target ClickHouse database is migrated first (idempotent); then every table a flow
    writes must exist (a :class:`ConfigError` naming the migration to add stops it before any
    input is read), and the flows' result topics are created.
    """
    migrate_target = clickhouse_factory(config, dsn)()
    try:
        ch.migrate(migrate_target)
        chosen = check_start(config, flows, migrate_target)
    finally:
        migrate_target.close()
    if results_to_kafka:
        create_topics(kafka_conf, chosen, config.kafka.partitions)
    sink = ch.ClickHouseSink(clickhouse_factory(config, dsn), batch_rows=config.clickhouse.batch_rows,
                             retry_initial_s=config.clickhouse.retry_initial_s,
                             retry_max_s=config.clickhouse.retry_max_s)
    dataflow = build_dataflow(
        config, kafka.KafkaInput(kafka_conf, stop="end"), sink, flows=chosen,
        kafka_sink=(kafka.KafkaOutput(kafka_conf, deadletter_raw_bytes=config.kafka.deadletter_raw_bytes)
                    if results_to_kafka else None),
    )
    recovery = None
    if recovery_dir is not None:
        if not any(recovery_dir.glob("part-*.sqlite3")):
            recovery_dir.mkdir(parents=True, exist_ok=True)
            init_db_dir(recovery_dir, 1)
        recovery = RecoveryConfig(str(recovery_dir))
    run_main(dataflow, epoch_interval=epoch_interval, recovery_config=recovery)
    return sink.stats


def replay(path: str | Path, config: PlantConfig, *, dsn: str | None = None,
           flows: Mapping[str, Flow | FlowFn] | None = None, workdir: str | Path = ".plantstream",
           database: str | None = None) -> ReplaySummary:
    """Replay a JSONL file through the flows via the embedded broker; returns the summary.

    The flows are checked before a line is sent (config sections, tables: see
    :func:`~plantstream.flows.main.check_start`). With ``alerts.webhook.url`` set, the webhook
    outbox worker posts the alerts of the replay beside the flow (``outbox.drain_s`` at the end);
    a replay sends nothing to the cloud."""
    started = time.perf_counter()
    src = Path(path)
    if not src.is_file():
        msg = f"replay file {str(src)!r} does not exist"
        raise ConnectorError(msg)
    # A replay always uses its own embedded broker: it must not write into a live plant's topics.
    local = config.model_copy(update={"kafka": config.kafka.model_copy(update={"bootstrap_servers": None})})
    if database:
        local = local.model_copy(update={
            "clickhouse": local.clickhouse.model_copy(update={"database": database})})
    with EmbeddedRuntime(local, dsn=dsn, workdir=workdir) as rt, src.open("rb") as fh:
        client = rt.clickhouse()  # migrated by the runtime
        try:
            flows = check_start(local, flows, client)
        finally:
            client.close()
        refused: list[DeadLetter] = []
        n = produce_lines(rt.kafka_conf, fh, refused=refused)
        if refused:  # lines too large for the broker: their bounded dead letters, written here
            client = rt.clickhouse()
            try:
                ch.insert_rows(client, "deadletter",
                               [d.row(local.kafka.deadletter_raw_bytes) for d in refused])
            finally:
                client.close()
        workers = [w.start() for w in workers_from_config(local, rt.kafka_conf, webhook="alerts" in flows)]
        try:
            stats = run_flow_to_end(local, rt.kafka_conf, dsn=rt.dsn, flows=flows)
        finally:
            for w in workers:  # the alert webhook: what the replay raised, within outbox.drain_s
                w.stop(drain_s=local.outbox.drain_s)
    rows = dict(stats.rows)
    if refused:
        rows["deadletter"] = rows.get("deadletter", 0) + len(refused)
    return ReplaySummary(n, rows, time.perf_counter() - started)
