"""The entry point: one Dataflow from one Kafka input and the chosen flows.

Run in production as a Bytewax process or cluster::

    PLANTSTREAM_CONFIG=/etc/plantstream/plant.yaml PLANTSTREAM_FLOWS=all \\
        python -m bytewax.run "plantstream.flows.main:get_flow()" -r /var/lib/plantstream/recovery

``build_dataflow`` is what ``replay``, ``demo`` and the tests call with their own source.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from plantstream.connectors import chserve, eventhubs, kafka
from plantstream.connectors import clickhouse as ch
from plantstream.connectors.kafka import RawMessage
from plantstream.connectors.metrics import FlowInputStats, Metrics
from plantstream.flows import cloud
from plantstream.flows.engine import (
    ENGINE,
    NOTICES,
    BatchFlow,
    MachineFlow,
    Spec,
    StateLimits,
    Tagged,
    by_shard,
    engine_step,
)
from plantstream.flows.registry import (
    Decoded,
    Flow,
    FlowFn,
    Results,
    Row,
    available,
    check_config,
    check_results,
    check_tables_of,
    reader,
    resolve,
    result_topics,
    select,
    topics,
)
from plantstream.operators.normalize import enrich
from plantstream.schemas.config import KafkaConfig, PlantConfig, cleartext_credentials, load_config
from plantstream.schemas.counters_config import width_reason
from plantstream.schemas.measurement import COUNTERS, DeadLetter, Measurement, bound_row, decode
from plantstream.schemas.redact import warn_once

log = logging.getLogger(__name__)


def _orjson_default(obj: Any) -> Any:
    if isinstance(obj, float):
        return None
    raise TypeError


def row_json(row: Row) -> bytes:
    """A result row as the JSON value of its Kafka record (NaN becomes null)."""
    return orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY, default=_orjson_default)


def batch_decoder(config: PlantConfig,
                  counts: FlowInputStats | None = None) -> Callable[[kafka.Batch], Decoded]:
    """Decode and validate a batch; bad messages become dead-letter rows with a reason.

    With ``counts`` each batch's size is added to it (the ``/metrics`` messages in)."""

    limit = config.kafka.deadletter_raw_bytes
    plant_mod = config.counters.modulus
    moduli = {m.id: config.counters_for(m.id).modulus for line in config.lines for m in line.machines}
    widths = plant_mod is not None or any(v is not None for v in moduli.values())

    def beyond_width(m: Measurement) -> str | None:
        """A counter at or above its machine's configured rollover (``counters:``)."""
        mod, v = moduli.get(m.machine, plant_mod), m.value
        return None if mod is None or not isinstance(v, int | float) else width_reason(m.metric, v, mod)

    def decode_batch(batch: kafka.Batch) -> Decoded:
        good: list[Measurement] = []
        raws: list[bytes | None] = []
        bad: list[Row] = []
        size = 0
        if counts is not None:
            counts.add(len(batch))
        for i, raw in enumerate(batch.values()):
            size += len(raw)
            result = decode(raw)
            if type(result) is Measurement and widths and result.metric in COUNTERS:
                reason = beyond_width(result)
                if reason is not None:
                    result = DeadLetter(raw, reason)
            if type(result) is Measurement:
                if result.site and result.line:
                    good.append(result)
                    raws.append(raw)
                else:
                    good.append(enrich(result, config))
                    raws.append(None)
            else:
                assert isinstance(result, DeadLetter)
                msg = batch.raw(i)  # where it came from, only for the rare bad message
                bad.append(DeadLetter(raw, result.reason, msg.source, msg.timestamp_ms).row(limit))
        return Decoded(good, raws, bad, size)

    return decode_batch


def as_batches(items: list[Any]) -> list[kafka.Batch]:
    """Source items as batches: Kafka batches pass; loose RawMessages are grouped by partition."""
    out: list[kafka.Batch] = []
    loose: dict[int, list[RawMessage]] = {}
    for item in items:
        if isinstance(item, RawMessage):
            loose.setdefault(item.partition, []).append(item)
        else:
            out.append(item)
    out.extend(kafka.RawBatch(msgs) for msgs in loose.values())
    return out


def _tagger(table: str) -> Callable[[Row], tuple[str, Row]]:
    return lambda row: (table, row)


def _is_measurement(item: Measurement | Row) -> TypeGuard[Measurement]:
    return not isinstance(item, dict)


def _deadletter_of(limit: int) -> Callable[[Measurement | Row], tuple[str, Any]]:
    return lambda item: ("deadletter", bound_row(item, limit) if isinstance(item, dict) else item)


def _deadletter_tagger(limit: int) -> Callable[[Row], tuple[str, Row]]:
    """Dead-letter rows of a flow (late samples …), bounded like the decoder's own."""
    return lambda row: ("deadletter", bound_row(row, limit))


def _flow_rows(name: str) -> Callable[[Tagged], tuple[str, Row] | None]:
    return lambda t: (t[1], t[2]) if t[0] == name else None


def _engine_notices(limit: int) -> Callable[[Tagged], tuple[str, Row] | None]:
    """The machine engine's own rows (an unconfigured machine seen, a shard's cap reached) for
    ``machine_notices``, the sample they keep bounded like a dead letter's bytes."""
    return lambda t: (t[1], t[2] | {"sample": t[2]["sample"][:limit]}) if t[0] == ENGINE else None


def _json_objects(limit: int) -> Callable[[kafka.Batch], list[tuple[str, Row]]]:
    """A batch of a flow's own topic → ``("row", object)`` per JSON object, ``("bad", dead
    letter row)`` for anything else."""

    def decode(batch: kafka.Batch) -> list[tuple[str, Row]]:
        out: list[tuple[str, Row]] = []
        for i, raw in enumerate(batch.values()):
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                out.append(("row", obj))
                continue
            msg = batch.raw(i)
            out.append(("bad", DeadLetter(raw, f"not a JSON object on {msg.topic}", msg.source,
                                          msg.timestamp_ms).row(limit)))
        return out

    return decode


GC_THRESHOLD = (50_000, 20, 100)


def tune_gc() -> None:
    """Fewer, cheaper garbage collections in a process that runs the plant flow.

    A flow allocates and frees hundreds of thousands of small objects a second (decoded
    samples, rows), nearly all without reference cycles. With CPython's default thresholds
    (700, 10, 10) the cyclic collector runs every few hundred of them and regularly walks every
    live object, which measured a fifth of the flow's time. Objects alive at start-up (modules,
    config) are frozen out of collection; young objects are collected every 50,000
    allocations. Reference counting frees everything else as before.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def build_dataflow(
    config: PlantConfig,
    source: Source[Any],
    clickhouse_sink: Sink[tuple[str, tuple[str, Any]]],
    *,
    flows: Mapping[str, Flow | FlowFn] | None = None,
    kafka_sink: Sink[tuple[str, kafka.KafkaRecord]] | None = None,
    cloud_meter: eventhubs.BandwidthMeter | None = None,
    flow_id: str = "plantstream",
    input_stats: FlowInputStats | None = None,
    inputs: Mapping[str, Source[Any]] | None = None,
) -> Dataflow:
    """Kafka input → decode → each flow → ClickHouse (and result topics when a Kafka sink is given).

    ``flows`` maps names to declarations (:class:`~plantstream.flows.registry.Flow`, as
    :func:`~plantstream.flows.registry.select` gives them) or to bare flow functions; None is
    every declared flow. Each flow is built with its own validated config section (a bad one
    stops here with a :class:`ConfigError` naming the field), and may write only the tables it
    declares.

    The source may emit :class:`connectors.kafka.KafkaBatch` items (the Kafka input) or single
    :class:`connectors.kafka.RawMessage` items (tests); either way the flow works on batches.
    Per-machine flows (:class:`flows.engine.MachineFlow`) run together in the machine engine,
    batch flows (:class:`flows.engine.BatchFlow`, the archive) write column blocks, and any
    other flow function gets a ``Stream[Measurement]``: the samples it declares it reads
    (``reads=``), a value of another type dead-lettered in its name, or every sample.

    Rows of tables with a declared result topic also go to that topic. With ``cloud_meter``
    (the cloud export on), the flows' cloud policy picks what goes to the cloud
    (:mod:`plantstream.flows.cloud`) and those records go through ``kafka_sink`` to the local
    topic ``plantstream.outbox.cloud``, which the cloud outbox worker sends on
    (:mod:`plantstream.connectors.outbox`): nothing in the dataflow waits for the cloud or for a
    webhook. ``cloud_meter`` counts the raw measurement bytes (the worker counts what it sends).
    Building it tunes the process's garbage collector for the flow (:func:`tune_gc`).
    ``input_stats`` counts the input records read (``/metrics``; :mod:`plantstream.connectors.metrics`).
    ``inputs`` maps the topic of a flow that reads its own topic (``input_topic=``, the operator
    station's audit records) to its source; such a flow without a source here is left out.
    """
    if cloud_meter is not None and kafka_sink is None:
        from plantstream.schemas.errors import ConfigError

        msg = ("the cloud export writes to the local topic plantstream.outbox.cloud: give build_dataflow a "
               "kafka_sink with cloud_meter")
        raise ConfigError(msg)
    tune_gc()
    chosen = resolve(flows)
    contexts = check_config(config, chosen)
    limit = config.kafka.deadletter_raw_bytes
    flow = Dataflow(flow_id)
    raw = op.input("kafka_in", flow, source)
    batches = op.flat_map_batch("kafka_batches", raw, as_batches)
    decoded = op.map("decode", batches, batch_decoder(config, input_stats))

    tables: list[Stream[tuple[str, Any]]] = [
        op.flat_map("tag_deadletter", decoded, lambda d: [("deadletter", r) for r in d.deadletters])
    ]
    steps: list[tuple[str, MachineFlow, Spec]] = []
    plain: list[Flow] = []
    results: list[tuple[Flow, Results]] = []
    for name, declared in chosen.items():
        fn = declared.build
        if declared.input_topic is not None:
            own = (inputs or {}).get(declared.input_topic)
            if own is None:
                log.debug("flow %s reads %s, which this runner does not give it: left out",
                          name, declared.input_topic)
                continue
            own_batches = op.flat_map_batch(f"{name}_batches", op.input(f"{name}_in", flow, own), as_batches)
            objects = op.flat_map(f"{name}_decode", own_batches, _json_objects(limit))
            own_rows = op.branch(f"{name}_objects", objects, lambda o: o[0] == "row")
            tables.append(op.map(f"{name}_bad_records", own_rows.falses, lambda o: ("deadletter", o[1])))
            rows = op.map(f"{name}_rows", own_rows.trues, lambda o: o[1])
            results.append((declared, declared.build(contexts[name], rows)))  # type: ignore[arg-type]
            continue
        if isinstance(fn, MachineFlow):
            step = fn.step(contexts[name])
            if step is not None:
                steps.append((name, fn, step))
        elif isinstance(fn, BatchFlow):
            tables.append(op.flat_map(f"{name}_blocks", decoded, fn.blocks_of(contexts[name])))
        else:
            plain.append(declared)
    if steps:
        shards = op.flat_map("machine_shards", decoded, lambda d: by_shard(d.measurements))
        tagged = engine_step("machines", shards, [s for _, _, s in steps], StateLimits.from_config(config))
        tables.append(op.filter_map("engine_notices", tagged, _engine_notices(limit)))
        for name, fn, _ in steps:
            outputs = op.filter_map(f"{name}_out", tagged, _flow_rows(name))
            results.append((chosen[name], fn.post(contexts[name], outputs)))
    if plain:
        measurements = None
        for declared in plain:
            if declared.reads is None:
                if measurements is None:
                    measurements = op.flat_map("measurements", decoded, lambda d: d.measurements)
                results.append((declared, declared.build(contexts[declared.name], measurements)))
                continue
            name = declared.name
            picked = op.flat_map(f"{name}_reads", decoded, reader(declared))
            typed = op.branch(f"{name}_typed", picked, _is_measurement)
            tables.append(op.map(f"{name}_wrong_type", typed.falses, _deadletter_of(limit)))
            results.append((declared, declared.build(contexts[name], typed.trues)))
    for declared, streams in results:
        check_results(declared, streams)
        for table, rows in streams.items():
            tag = _deadletter_tagger(limit) if table == "deadletter" else _tagger(table)
            tables.append(op.map(f"tag_{declared.name}_{table}", rows, tag))
    merged = op.merge("results", *tables)
    keyed = op.key_on("key_results", merged, lambda tr: tr[0])
    op.output("clickhouse_out", keyed, clickhouse_sink)

    if kafka_sink is not None:
        table_topics = result_topics(chosen.values())
        topical = op.filter("has_topic", merged, lambda tr: tr[0] in table_topics)

        def to_record(tr: tuple[str, Row]) -> kafka.KafkaRecord:
            table, row = tr
            key = row.get("machine") or row.get("source") or ""
            if table == "deadletter":
                return kafka.DEADLETTER, str(key).encode(), orjson.dumps(row)
            return table_topics[table], str(key).encode(), row_json(row)

        records = op.map("to_kafka_records", topical, to_record)
        if cloud_meter is not None:
            sizes = op.map("raw_sizes", decoded,
                           lambda d: (d.raw_bytes, len(d.measurements) + len(d.deadletters)))
            _, cloud_records = cloud.attach(config.eventhubs, chosen.values(), sizes, merged, cloud_meter)
            records = op.merge("kafka_and_cloud_records", records, cloud_records)
        op.output("kafka_out", op.key_on("key_records", records, lambda r: r[0]), kafka_sink)
    return flow


def check_start(config: PlantConfig, flows: Mapping[str, Flow | FlowFn] | None,
                client: Any) -> dict[str, Flow]:
    """What a runner checks before it starts the flows: each flow's config section, and that
    every table a flow writes exists in ClickHouse (else ONE line naming the migration to add).
    Returns the flows' declarations."""
    chosen = resolve(flows)
    check_config(config, chosen)
    checked = dict(chosen)
    if any(isinstance(f.build, MachineFlow) for f in chosen.values()):  # the engine's own table
        checked[ENGINE] = Flow(name="machine_engine", build=lambda ctx, ms: {},
                               tables={NOTICES: "056_machine_notices.sql"})
    check_tables_of(checked, client)
    return chosen


def create_topics(kafka_conf: Mapping[str, Any], flows: Mapping[str, Flow],
                  partitions: int | KafkaConfig) -> list[kafka.TopicStatus]:
    """Create the plant's topics and the result topics the flows declare (existing ones stay).

    With the plant's ``kafka`` section, each topic gets its partitions, retention and cleanup
    policy from ``kafka.topics`` (:func:`plantstream.connectors.kafka.topic_specs`); with a bare
    partition count, the work orders are compacted and the rest take the broker's defaults.
    """
    names = topics(flows.values())
    if isinstance(partitions, KafkaConfig):
        every = topics(available().values())
        return kafka.create_topics(kafka_conf, kafka.topic_specs(partitions, names, every).values())
    return kafka.create_topics(kafka_conf, dict.fromkeys(names, partitions))


def clickhouse_factory(config: PlantConfig, dsn: str | None = None) -> ch.ClientFactory:
    """Clients for the sink from the ``clickhouse:`` config section (credentials, TLS)."""
    return ch.config_factory(config.clickhouse, dsn)


def _outbox_here(environ: Mapping[str, str]) -> bool:
    """Whether this process runs the outbox workers: ``PLANTSTREAM_OUTBOX`` ``on``, ``off`` or
    ``auto`` (default: Bytewax process 0 only, so a cluster delivers each record once)."""
    mode = environ.get("PLANTSTREAM_OUTBOX", "auto")
    if mode not in ("auto", "on", "off"):
        from plantstream.schemas.errors import ConfigError

        msg = f"PLANTSTREAM_OUTBOX={mode!r}: use auto (Bytewax process 0 runs the outbox), on or off"
        raise ConfigError(msg)
    if mode != "auto":
        return mode == "on"
    pod, sts = environ.get("BYTEWAX_POD_NAME"), environ.get("BYTEWAX_STATEFULSET_NAME")
    if pod and sts:
        return pod.removeprefix(sts + "-") == "0"
    return environ.get("BYTEWAX_PROCESS_ID", "0") == "0"


def _stall_s(environ: Mapping[str, str]) -> float:
    text = environ.get("PLANTSTREAM_STALL_S", "300")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        from plantstream.schemas.errors import ConfigError

        msg = (f"PLANTSTREAM_STALL_S={text!r}: give the seconds without progress after which the flows "
               "are not live, e.g. 300")
        raise ConfigError(msg)
    return value


def _stop_when(stop: str) -> kafka.StopWhen:
    """The Kafka input's end for ``PLANTSTREAM_STOP``: ``signal`` is the event SIGTERM/SIGINT set
    (:func:`~plantstream.connectors.kafka.signal_stop`)."""
    if stop == "signal":
        return kafka.signal_stop()
    return "end" if stop == "end" else "never"


def get_flow() -> Dataflow:
    """Production entry point for ``python -m bytewax.run "plantstream.flows.main:get_flow()"``.

    Reads the plant config from ``PLANTSTREAM_CONFIG`` (plus ``PLANTSTREAM__…`` overrides)
    and the flows from ``PLANTSTREAM_FLOWS`` (comma-separated, default all).
    ``PLANTSTREAM_STOP=end`` stops at the end of the measurements topic (batch re-runs, tests);
    the default ``never`` tails it; ``signal`` tails it until SIGTERM or SIGINT, then reads what
    the topic holds at that moment and ends the input, so the last epoch closes (open windows
    out provisionally, snapshot taken) and the process exits 0 (``plantstream run``).
    Before it starts, each flow's config section is validated,
    every table a flow writes must exist in ClickHouse (:func:`check_start`), and the plant's
    and the flows' result topics are created where missing.

    The outbox workers (the cloud export to Event Hubs, the alert webhook;
    :mod:`plantstream.connectors.outbox`) run as threads of this process when
    ``PLANTSTREAM_OUTBOX`` is ``on``, or ``auto`` (the default) and this is Bytewax process 0.

    ``PLANTSTREAM_HEALTH_PORT`` serves ``/healthz`` and ``/readyz`` there (the chart's probes),
    from :class:`~plantstream.connectors.health.FlowHealth`: ready while Kafka answers, the
    ClickHouse sink's newest insert landed and no outbox record has waited longer than
    ``outbox.ready_max_age_s``; live unless the dataflow has not turned for
    ``PLANTSTREAM_STALL_S`` seconds (default 300) while Kafka and ClickHouse are up, or an
    outbox worker died. The same port serves Prometheus ``/metrics`` (:func:`flow_metrics`).

    With embedded chDB and ``clickhouse.serve_port`` set (``plantstream run`` sets it), Bytewax
    process 0 serves its chDB read-only over ClickHouse's HTTP interface on that port
    (:func:`plantstream.connectors.chserve.serve_from_config`).
    """
    from plantstream.connectors.health import FlowHealth, HealthServer, Progress, WatchedSource
    from plantstream.connectors.outbox import workers_from_config

    config = load_config(os.environ.get("PLANTSTREAM_CONFIG"))
    for warning in cleartext_credentials(config, ("kafka",)):
        warn_once(log, warning)
    kconf = config.kafka.client_config()
    if "bootstrap.servers" not in kconf:
        from plantstream.schemas.errors import ConfigError

        msg = ("the Bytewax entry point needs a Kafka cluster: set kafka.bootstrap_servers in the "
               "plant config or PLANTSTREAM__KAFKA__BOOTSTRAP_SERVERS")
        raise ConfigError(msg)
    stop = os.environ.get("PLANTSTREAM_STOP", "never")
    if stop not in ("end", "never", "signal"):
        from plantstream.schemas.errors import ConfigError

        msg = (f"PLANTSTREAM_STOP={stop!r}: use 'end' (stop at the end of the topic), 'never' (tail) or "
               "'signal' (tail until SIGTERM or SIGINT, then drain and close the epoch)")
        raise ConfigError(msg)
    stall_s = _stall_s(os.environ)
    outbox_here = _outbox_here(os.environ)
    chosen = select(os.environ.get("PLANTSTREAM_FLOWS"))
    client = clickhouse_factory(config)()  # the sink's client: same URL, credentials and TLS
    try:
        check_start(config, chosen, client)
    finally:
        client.close()
    create_topics(kconf, chosen, config.kafka)
    sink = ch.ClickHouseSink.from_config(config.clickhouse)
    served = chserve.serve_from_config(config.clickhouse, ch.resolve_dsn(config.clickhouse.url))
    if served is not None:  # readers (Grafana, kpi) read the live chDB through it; see connectors/chserve.py
        atexit.register(served.stop)
    target = eventhubs.target_from_config(config.eventhubs)
    meter = eventhubs.BandwidthMeter()
    progress = Progress()
    kafka_in = kafka.KafkaInput(kconf, stop=_stop_when(stop))
    source = WatchedSource(kafka_in, progress)
    input_stats = FlowInputStats()
    own_inputs: dict[str, Source[Any]] = {
        f.input_topic: kafka.KafkaInput(kconf, f.input_topic, stop=_stop_when(stop))
        for f in chosen.values() if f.input_topic
    }
    flow = build_dataflow(config, source, sink, flows=chosen, inputs=own_inputs,
                          kafka_sink=kafka.KafkaOutput(
                              kconf, deadletter_raw_bytes=config.kafka.deadletter_raw_bytes),
                          cloud_meter=meter if target is not None else None, input_stats=input_stats)
    workers = []
    if outbox_here:
        workers = [w.start() for w in workers_from_config(config, kconf, cloud=target, meter=meter,
                                                          webhook="alerts" in chosen)]
    port = os.environ.get("PLANTSTREAM_HEALTH_PORT")
    if port:
        metrics = flow_metrics(sink_stats=sink.stats, kafka_input=kafka_in, input_stats=input_stats,
                               progress=progress, workers=workers)
        HealthServer(int(port), FlowHealth(kconf, sink_stats=sink.stats, workers=workers, progress=progress,
                                           stall_s=stall_s, ready_max_age_s=config.outbox.ready_max_age_s,
                                           flows=sorted(chosen)), metrics=metrics).start()
    return flow


def flow_metrics(*, sink_stats: Any = None, kafka_input: kafka.KafkaInput | None = None,
                 input_stats: FlowInputStats | None = None, progress: Any = None,
                 workers: Any = (), metrics: Metrics | None = None) -> Metrics:
    """The flows' Prometheus metrics (docs/metrics.md): input records and consumer lag, rows
    written per table, dead letters by reason, ClickHouse inserts, epoch durations, the outbox
    backlog. Adds to ``metrics`` when given (one registry per process), else makes one."""
    m = metrics if metrics is not None else Metrics("flows")
    if sink_stats is not None:
        m.watch_sink(sink_stats)
    if kafka_input is not None and input_stats is not None:
        m.watch_input(kafka_input, input_stats)
    if progress is not None:
        m.watch_progress(progress)
    if workers:
        m.watch_outbox(workers)
    return m
