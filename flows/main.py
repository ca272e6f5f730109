"""The entry point: one Dataflow from one Kafka input and the chosen flows.

Run in production as a Bytewax process or cluster::

    PLANTSTREAM_CONFIG=/etc/plantstream/plant.yaml PLANTSTREAM_FLOWS=all \\
        python -m bytewax.run "flows.main:get_flow()" -r /var/lib/plantstream/recovery

``build_dataflow`` is what ``replay``, ``demo`` and the tests call with their own source.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from connectors import clickhouse as ch
from connectors import eventhubs, kafka
from connectors.kafka import RawMessage
from flows.registry import FlowContext, FlowFn, Row, select
from operators.normalize import enrich
from schemas.config import PlantConfig, load_config
from schemas.measurement import DeadLetter, Measurement, decode


def deadletter_row(d: DeadLetter) -> Row:
    return {"ts": d.ts, "source": d.source, "reason": d.reason,
            "raw": d.raw.decode("utf-8", errors="backslashreplace")}


def _orjson_default(obj: Any) -> Any:
    if isinstance(obj, float):
        return None
    raise TypeError


def row_json(row: Row) -> bytes:
    """A result row as the JSON value of its Kafka record (NaN becomes null)."""
    return orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY, default=_orjson_default)


def decode_stream(ctx: FlowContext, raw: Stream[RawMessage]) -> tuple[Stream[Measurement], Stream[Row]]:
    """Decode and validate; bad messages become dead-letter rows with a reason."""
    config = ctx.config

    def decode_one(msg: RawMessage) -> Measurement | DeadLetter:
        result = decode(msg.value, msg.source, msg.timestamp_ms)
        if isinstance(result, Measurement):
            return enrich(result, config)
        return result

    decoded = op.map("decode", raw, decode_one)
    split = op.branch("valid", decoded, lambda x: isinstance(x, Measurement))
    good: Stream[Measurement] = split.trues  # type: ignore[assignment]
    bad = op.map("deadletter_rows", split.falses, deadletter_row)  # type: ignore[arg-type]
    return good, bad


def _tagger(table: str) -> Callable[[Row], tuple[str, Row]]:
    return lambda row: (table, row)


def build_dataflow(
    config: PlantConfig,
    source: Source[RawMessage],
    clickhouse_sink: Sink[tuple[str, tuple[str, Row]]],
    *,
    flows: Mapping[str, FlowFn] | None = None,
    kafka_sink: Sink[tuple[str, kafka.KafkaRecord]] | None = None,
    eventhubs_sink: eventhubs.EventHubsSink | None = None,
    flow_id: str = "plantstream",
) -> Dataflow:
    """Kafka input → decode → each flow → ClickHouse (and result topics when a Kafka sink is given).

    With ``eventhubs_sink``, the tables of ``config.eventhubs`` also go to the cloud (OEE facts
    rolled up), and the sink's ``meter`` counts bytes sent against raw measurement bytes.
    """
    ctx = FlowContext(config)
    chosen = select(None) if flows is None else flows
    flow = Dataflow(flow_id)
    raw = op.input("kafka_in", flow, source)
    measurements, deadletters = decode_stream(ctx, raw)

    tables: list[Stream[tuple[str, Row]]] = [
        op.map("tag_deadletter", deadletters, lambda r: ("deadletter", r))
    ]
    for name, fn in chosen.items():
        results = fn(ctx, measurements)
        for table, rows in results.items():
            tables.append(op.map(f"tag_{name}_{table}", rows, _tagger(table)))
    merged = op.merge("results", *tables)
    keyed = op.key_on("key_results", merged, lambda tr: str(tr[1].get("machine", "")))
    op.output("clickhouse_out", keyed, clickhouse_sink)

    if kafka_sink is not None:
        topical = op.filter("has_topic", merged, lambda tr: tr[0] in kafka.RESULT_TOPICS)

        def to_record(tr: tuple[str, Row]) -> kafka.KafkaRecord:
            table, row = tr
            key = row.get("machine") or row.get("source") or ""
            if table == "deadletter":
                return kafka.DEADLETTER, str(key).encode(), orjson.dumps(row)
            return kafka.RESULT_TOPICS[table], str(key).encode(), row_json(row)

        records = op.map("to_kafka_records", topical, to_record)
        op.output("kafka_out", op.key_on("key_records", records, lambda r: r[0]), kafka_sink)

    if eventhubs_sink is not None:
        eventhubs.attach(config.eventhubs, raw, merged, eventhubs_sink)
    return flow


def clickhouse_factory(config: PlantConfig, dsn: str | None = None) -> ch.ClientFactory:
    """Clients for the sink from the ``clickhouse:`` config section (credentials, TLS)."""
    return ch.config_factory(config.clickhouse, dsn)


def get_flow() -> Dataflow:
    """Production entry point for ``python -m bytewax.run "flows.main:get_flow()"``.

    Reads the plant config from ``PLANTSTREAM_CONFIG`` (plus ``PLANTSTREAM__…`` overrides)
    and the flows from ``PLANTSTREAM_FLOWS`` (comma-separated, default all).
    ``PLANTSTREAM_STOP=end`` stops at the end of the measurements topic (batch re-runs, tests);
    the default ``never`` tails it.
    """
    config = load_config(os.environ.get("PLANTSTREAM_CONFIG"))
    kconf = config.kafka.client_config()
    if "bootstrap.servers" not in kconf:
        from schemas.errors import ConfigError

        msg = ("the Bytewax entry point needs a Kafka cluster: set kafka.bootstrap_servers in the "
               "plant config or PLANTSTREAM__KAFKA__BOOTSTRAP_SERVERS")
        raise ConfigError(msg)
    stop = os.environ.get("PLANTSTREAM_STOP", "never")
    if stop not in ("end", "never"):
        from schemas.errors import ConfigError

        msg = f"PLANTSTREAM_STOP={stop!r}: use 'end' (stop at the end of the topic) or 'never' (tail)"
        raise ConfigError(msg)
    sink = ch.ClickHouseSink.from_config(config.clickhouse)
    return build_dataflow(config, kafka.KafkaInput(kconf, stop="end" if stop == "end" else "never"), sink,
                          flows=select(os.environ.get("PLANTSTREAM_FLOWS")),
                          kafka_sink=kafka.KafkaOutput(kconf),
                          eventhubs_sink=eventhubs.EventHubsSink.from_config(config.eventhubs))
