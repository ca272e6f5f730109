"""Benchmark of the whole plant flow: throughput, latency, state, recovery and idle cost.

Run: ``make bench`` or ``.venv/bin/python tests/bench/bench_plant.py [--quick] [--only PARTS]
[--sizes 100,1000,10000]`` (parts: ``ceiling,e2e,state,peer,scale_out,latency,recovery,idle``;
default all). Prints a table and writes ``bench-results.json`` at the repository root.
Benchmarks report; no timing is asserted, but a run that did not write exactly the messages it
was given into ``measurements`` (or wrote no OEE facts) fails loudly.

Data: the simulated plant, 80 % PLC machines (``PlcLine``, condition signals every second) and
20 % Contoso bakery machines (``BakerySim`` MQTT payloads turned into Measurements by the MQTT
connector's own ``convert``), merged in event-time order, generated once per machine count into
a temporary file. The plant config is the demo's (every machine on its line with its ideal cycle
time). Kafka is the embedded Tansu broker (memory only), 4 partitions, a fresh one per machine
count and per live part; ClickHouse is a fresh chDB path per flow process. Every flow runs in its
own process (one process per chDB path; peak RSS per run), started by re-invoking this script
with ``--child``; ``ceiling`` and the producers run in this process.

- ``ceiling_events_per_s``: one confluent-kafka consumer with the flow source's settings on all
  partitions and its batch size and timeout, ``consume`` + ``orjson.loads`` and nothing else,
  clock from the first batch returned to the last message (the first batch not counted): the
  practical limit of any Python consumer. The median of 3 runs (``--quick``: 1).
- ``e2e_by_machines`` / ``e2e_events_per_s`` (1,000 machines): ``flows.main.build_dataflow`` with
  every registered flow, the Kafka source (``stop="end"``), the ClickHouse sink and the Kafka
  result sink on one worker (``run_main``, 10 s epochs); messages / seconds around ``run_main``.
  1,000,000 messages (``--quick``: 100,000), 2,000,000 for 10,000 machines; the same mix at every
  size (condition signals every second). The median of 3 runs per size (``--quick``: 1), every
  run's figure in ``details``.
- ``peak_rss_mb``: ``ru_maxrss`` of the 10,000-machine e2e process.
- ``state_bytes_per_machine``: recovery slows the flow, so a separate 10,000-machine run with
  Bytewax recovery on over the first minute of that data; the latest snapshot per step and key
  in the recovery databases (the Kafka input's offsets excluded), summed, / machines.
- ``latency_p50_ms`` / ``latency_p99_ms``: the flow live at 10,000 measurements/s from 1,000
  machines for 60 s (``ts`` = send time, so event time is wall time; produced from this process,
  the flow in a child). Every 100 ms one extra measurement is a probe (metric ``bench_probe``,
  value = its number); latency from its produce call to the first 50 ms poll of ``measurements``
  that returns it (a poller thread in the flow's process), probes of the first 10 s left out.
- ``recovery_s``: the flow live with recovery at the plant's own rate (1,000 machines), kill -9
  after 30 s, 5 minutes' worth of data produced at once as backlog (event time continuing), then
  a restart with ``stop="end"``: seconds from the restart to the end of its ``run_main``.
- ``idle_cpu_pct``: utime + stime of the live flow process (``/proc``) over the last 30 s of 60 s
  at 500 measurements/s from 500 machines (condition signals every 10 s: ~1 message per machine
  and second), as % of one core.
- ``peer_events_per_s``: ``tests.bench.peer.run_peer`` (Quix Streams), when that module exists,
  on the same broker and 1,000-machine data (topic ``bench.peer``).
- ``scale_out``: the 1,000-machine e2e as two Bytewax processes (``cluster_main``, each with its
  own chDB path) against the one-process figure; messages / (last ``cluster_main`` end - first
  start), and from launch to both exits.
"""

# ruff: noqa: E402  (the imports below need ROOT on sys.path)
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import math
import os
import pickle
import platform
import resource
import select
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmark this checkout; ``tests.bench.peer`` importable as a script
    sys.path.insert(0, str(ROOT))

import bytewax.operators  # noqa: F401  (bytewax must import before the flows)
import orjson
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import cluster_main, run_main
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from plantstream.connectors import clickhouse as ch
from plantstream.connectors import kafka
from plantstream.connectors.embedded import free_port, kafka_only
from plantstream.flows.demo import demo_config
from plantstream.flows.main import build_dataflow, create_topics
from plantstream.flows.registry import select as select_flows
from plantstream.schemas.config import EXAMPLE_CONFIG, PlantConfig, load_config

SCRIPT = Path(__file__).resolve()
RESULTS = ROOT / "bench-results.json"
T0 = 1_763_791_200_000  # 2025-11-22T06:00:00Z, the start of a shift
SEED = 7
BAKERY_SHARE = 0.2
PARTITIONS = 4
EPOCH = timedelta(seconds=10)
SIZES = (100, 1000, 10_000)
REFERENCE_SIZE = 1000
PEER_TOPIC = "bench.peer"
PROBE_METRIC = "bench_probe"
MIB = 1 << 20
PARTS = ("ceiling", "e2e", "state", "peer", "scale_out", "latency", "recovery", "idle")
TABLES = ("measurements", "oee_facts", "downtime_events", "machine_status", "scrap_events", "scrap_rate",
          "anomalies", "alerts", "deadletter")
RESULT_PREFIX = "BENCH-RESULT "


class BenchError(RuntimeError):
    """A benchmark run failed or processed the wrong number of messages."""


def progress(text: str) -> None:
    print(f"[bench_plant {time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass(frozen=True)
class Sizing:
    """How much data and time each part uses (``--quick`` divides most of it by ~10)."""

    messages: int = 1_000_000
    """Messages of each e2e run (twice as many for 10,000 machines)."""
    latency_s: float = 60.0
    latency_warmup_s: float = 10.0
    latency_rate: float = 10_000.0
    idle_s: float = 60.0
    idle_measure_s: float = 30.0
    idle_rate: float = 500.0
    idle_machines: int = 500
    recovery_live_s: float = 30.0
    recovery_backlog_s: float = 300.0
    state_span_s: float = 60.0
    repeats: int = 3
    """Runs of the ceiling and of each e2e size; the median is reported."""
    """Event time of the 10,000-machine run with recovery on (recovery slows it: a separate run)."""

    @classmethod
    def quick(cls) -> Sizing:
        return cls(messages=100_000, latency_s=15.0, latency_warmup_s=5.0,
                   idle_s=20.0, idle_measure_s=10.0, recovery_live_s=15.0, recovery_backlog_s=30.0,
                   state_span_s=20.0, repeats=1)


# -- data -----------------------------------------------------------------------------------


def split_machines(machines: int) -> tuple[int, int]:
    """(PLC machines, bakery machines): about 20 % bakery, at least one of each."""
    bakery = max(1, round(machines * BAKERY_SHARE))
    return machines - bakery, bakery


def plant_config(machines: int) -> PlantConfig:
    """The example plant config plus every simulated machine with its line and ideal cycle time."""
    n_plc, n_bak = split_machines(machines)
    cfg = demo_config(load_config(EXAMPLE_CONFIG, {}), machines=n_plc, bakery_machines=n_bak)
    return cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"bootstrap_servers": None})})


@dataclass(frozen=True)
class DataSpec:
    """Simulated plant data: ``machines`` (80 % PLC, 20 % bakery) from T0, in event-time order,
    until it holds at least ``messages`` and spans at least ``min_span_s`` of event time."""

    machines: int
    plc_sample_ms: int = 1000
    messages: int = 0
    min_span_s: float = 0.0

    def done(self, count: int, ts: int) -> bool:
        return count >= self.messages and ts - T0 >= self.min_span_s * 1000


def generate(spec: DataSpec) -> Iterator[tuple[int, bytes, bytes]]:
    """(ts, key, value) of the simulated plant, one minute of event time at a time."""
    from plantstream.connectors.mqtt import MqttConnector
    from plantstream.simulators.bakery import BakerySim, bakery_config
    from plantstream.simulators.plc import PlcLine

    n_plc, n_bak = split_machines(spec.machines)
    plc = PlcLine(SEED, machines=n_plc, start_ms=T0, config=load_config(EXAMPLE_CONFIG, {}),
                  sample_ms=spec.plc_sample_ms)
    bakery = BakerySim(SEED, start_ms=T0, machines=n_bak)
    mqtt = MqttConnector(bakery_config(n_bak), {})
    count = 0
    end = T0
    while True:
        end += 60_000
        chunk = list(plc.run(end))
        chunk += [m for ts, topic, payload in bakery.messages(end) for m in mqtt.convert(topic, payload, ts)[0]]
        chunk.sort(key=lambda m: m.ts)  # stable: each source keeps its own order
        keys = {(m.machine, m.metric, m.ts) for m in chunk}
        if len(keys) != len(chunk):
            msg = (f"the simulators produced {len(chunk) - len(keys)} measurements with the same "
                   "(machine, metric, ts) key; measurements would merge them and the counts not match")
            raise BenchError(msg)
        for m in chunk:
            yield m.ts, m.machine.encode(), m.to_json()
            count += 1
            if spec.done(count, m.ts):
                return


class DataCache:
    """Generated data as files of ``ts<TAB>key<TAB>value`` lines, one per (machines, sample period).

    A file generated for more data serves any smaller request: the simulators are
    deterministic, so a prefix of a long run is the short run.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)

    def _paths(self, spec: DataSpec) -> tuple[Path, Path]:
        stem = f"plant-{spec.machines}m-{spec.plc_sample_ms}ms"
        return self.directory / f"{stem}.tsv", self.directory / f"{stem}.json"

    def ensure(self, spec: DataSpec) -> Path:
        path, meta_path = self._paths(spec)
        if meta_path.exists():
            meta = orjson.loads(meta_path.read_bytes())
            if meta["messages"] >= spec.messages and meta["span_s"] >= spec.min_span_s:
                return path
        progress(f"generating {spec.machines} machines (PLC samples every {spec.plc_sample_ms} ms), "
                 f"at least {spec.messages:,} messages and {spec.min_span_s:g} s of event time")
        meta_path.unlink(missing_ok=True)
        started = time.perf_counter()
        count, last = 0, T0
        with open(path, "wb") as out:
            for ts, key, value in generate(spec):
                out.write(b"%d\t%s\t%s\n" % (ts, key, value))
                count, last = count + 1, ts
        seconds = time.perf_counter() - started
        meta_path.write_bytes(orjson.dumps({"messages": count, "span_s": (last - T0) / 1000}))
        progress(f"  {count:,} messages over {(last - T0) / 1000:,.0f} s of event time in {seconds:.1f} s")
        return path

    def read(self, spec: DataSpec) -> Iterator[tuple[int, bytes, bytes]]:
        """The spec's messages (a prefix of the cached file)."""
        path = self.ensure(spec)
        count = 0
        with open(path, "rb") as f:
            for line in f:
                ts, key, value = line.rstrip(b"\n").split(b"\t", 2)
                count += 1
                yield int(ts), key, value
                if spec.done(count, int(ts)):
                    return
        if count < spec.messages:
            msg = f"{path} holds {count} messages, {spec.messages} wanted"
            raise BenchError(msg)

    def _measure(self, spec: DataSpec) -> tuple[int, float]:
        count, first, last = 0, T0, T0
        for ts, _, _ in self.read(spec):
            first = ts if count == 0 else first
            last = ts
            count += 1
        return count, (last - first) / 1000

    def span(self, spec: DataSpec) -> float:
        """Seconds of event time the spec's data spans."""
        return self._measure(spec)[1]

    def rate(self, spec: DataSpec) -> float:
        """Messages per second of event time of the spec's data (the plant's natural rate)."""
        count, span = self._measure(spec)
        if span <= 0:
            msg = f"no event-time span in {spec}"
            raise BenchError(msg)
        return count / span


# -- Kafka helpers --------------------------------------------------------------------------


def source_consumer_config(conf: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The librdkafka consumer settings of the flow's source, and where they came from."""
    source = kafka.KafkaInput(conf)
    get = getattr(source, "consumer_config", None)
    if callable(get):
        return dict(get("plantstream.kafka_in")), "kafka.KafkaInput.consumer_config"
    # Replicates KafkaInput.build_part, with the larger fetch sizes being added there.
    return {
        **conf,
        "group.id": "plantstream-plantstream.kafka_in",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,
        "max.partition.fetch.bytes": 16 * MIB,
        "fetch.max.bytes": 64 * MIB,
    }, "replicated from kafka.KafkaInput.build_part (+16/64 MiB fetch sizes)"


def source_batch_size() -> int:
    """``KafkaInput``'s default ``batch_size`` (messages per ``consume`` call)."""
    import inspect

    return int(inspect.signature(kafka.KafkaInput).parameters["batch_size"].default)


class DeliveryErrors:
    """A global delivery callback that only keeps failures."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def check(self) -> None:
        if self.errors:
            msg = f"Kafka refused {len(self.errors)} records, first: {self.errors[0]}"
            raise BenchError(msg)


def flush(producer: Producer, errors: DeliveryErrors) -> None:
    while producer.flush(1.0):
        pass
    errors.check()


def produce_data(conf: dict[str, Any], topic: str, rows: Iterable[tuple[int, bytes, bytes]]) -> int:
    """Produce every row as fast as the producer goes; flushed before returning the count."""
    errors = DeliveryErrors()
    producer = Producer(kafka.producer_config(conf, **{"linger.ms": 50, "on_delivery": errors,
                                                       "log.connection.close": False}))
    n = 0
    for _, key, value in rows:
        kafka.produce_waiting(producer, topic, value, key)
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    flush(producer, errors)
    return n


CONSUME_TIMEOUT_S = 0.01
"""The source's ``consume`` timeout: librdkafka waits for a full batch up to it."""


def measure_ceiling(conf: dict[str, Any], topic: str, expected: int) -> dict[str, Any]:
    """consume + orjson.loads of ``expected`` messages on one thread, in the source's batches.

    The clock starts when the first batch is returned and stops after the last message is
    decoded; the rate counts the messages returned after the first batch.
    """
    cfg, origin = source_consumer_config(conf)
    batch = source_batch_size()
    consumer = Consumer(cfg)
    try:
        parts = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(parts)])
        n = 0
        first: float | None = None
        first_batch = 0
        deadline = time.monotonic() + 600
        while n < expected:
            msgs = consumer.consume(batch, CONSUME_TIMEOUT_S)
            if first is None and msgs:
                first = time.perf_counter()
                first_batch = sum(1 for m in msgs if m.error() is None)
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                orjson.loads(m.value())  # type: ignore[arg-type]
                n += 1
            if time.monotonic() > deadline:
                msg = f"ceiling: read {n} of {expected} messages in 600 s"
                raise BenchError(msg)
        seconds = time.perf_counter() - (first or 0.0)
    finally:
        consumer.close()
    return {"messages": n, "seconds": round(seconds, 3), "events_per_s": round((n - first_batch) / seconds),
            "consume_batch": batch, "consumer_config": origin,
            "fetch": {k: cfg.get(k) for k in ("max.partition.fetch.bytes", "fetch.max.bytes",
                                               "fetch.wait.max.ms")}}


# -- the flow processes (``--child``) --------------------------------------------------------


def chdb_dsn(workdir: Path) -> str:
    return f"chdb://{workdir}/ch"


def migrate(dsn: str) -> None:
    client = ch.connect(dsn)
    try:
        ch.migrate(client)
    finally:
        client.close()


def table_counts(dsn: str, *, final: bool = False) -> dict[str, int]:
    """Rows per result table (``FINAL``: after replacing, i.e. distinct natural keys)."""
    client = ch.connect(dsn)
    try:
        suffix = " FINAL" if final else ""
        return {t: int(client.query(f"SELECT count() FROM {t}{suffix}").result_rows[0][0]) for t in TABLES}
    finally:
        client.close()


def plant_flow(config: PlantConfig, conf: dict[str, Any], dsn: str, stop: kafka.StopWhen) -> Dataflow:
    """The production dataflow: every flow, Kafka in, ClickHouse and Kafka results out."""
    sink = ch.ClickHouseSink(ch.config_factory(config.clickhouse, dsn), batch_rows=config.clickhouse.batch_rows)
    flows = select_flows(None)
    create_topics(conf, flows, PARTITIONS)  # the result topics the flows declare, as before the run
    return build_dataflow(config, kafka.KafkaInput(conf, stop=stop), sink, flows=flows,
                          kafka_sink=kafka.KafkaOutput(conf))


def recovery_config(directory: str | None) -> RecoveryConfig | None:
    if not directory:
        return None
    path = Path(directory)
    if not list(path.glob("part-*.sqlite3")):
        path.mkdir(parents=True, exist_ok=True)
        init_db_dir(path, 1)
    return RecoveryConfig(path)


def max_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def emit(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def replay_flow(args: argparse.Namespace) -> tuple[Dataflow, str]:
    """The plant flow of a child reading the topic to its end, and its (migrated) chDB DSN."""
    dsn = chdb_dsn(Path(args.workdir))
    migrate(dsn)
    return plant_flow(plant_config(args.machines), {"bootstrap.servers": args.bootstrap}, dsn, "end"), dsn


def child_e2e(args: argparse.Namespace) -> None:
    """Run the flow to the end of the topic; report seconds around ``run_main`` and row counts."""
    flow, dsn = replay_flow(args)
    recovery = recovery_config(args.recovery)
    started = time.perf_counter()
    run_main(flow, epoch_interval=EPOCH, recovery_config=recovery)
    seconds = time.perf_counter() - started
    emit({"seconds": seconds, "ended": time.time(), "rows": table_counts(dsn),
          "rows_final": table_counts(dsn, final=True), "maxrss_mb": max_rss_mb()})


def child_cluster(args: argparse.Namespace) -> None:
    """One process of a Bytewax cluster, with its own chDB path."""
    flow, dsn = replay_flow(args)
    addresses = args.addresses.split(",")
    started = time.time()
    cluster_main(flow, addresses, args.proc_id, epoch_interval=EPOCH)
    ended = time.time()
    emit({"started": started, "ended": ended, "rows": table_counts(dsn), "maxrss_mb": max_rss_mb()})


class ProbePoller(threading.Thread):
    """Every ``interval_s``, which probes are queryable in ``measurements`` and since when."""

    def __init__(self, dsn: str, interval_s: float = 0.05) -> None:
        super().__init__(name="probe-poller", daemon=True)
        self.dsn = dsn
        self.interval_s = interval_s
        self.seen: dict[int, float] = {}
        self.polls = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        sql = f"SELECT DISTINCT toUInt32(value) FROM measurements WHERE metric = '{PROBE_METRIC}'"
        try:
            client = ch.connect(self.dsn)
            try:
                while not self._halt.is_set():
                    asked = time.time()  # a row returned by this query was visible when it started
                    for (pid,) in client.query(sql).result_rows:
                        self.seen.setdefault(int(pid), asked)
                    self.polls += 1
                    self._halt.wait(max(0.0, self.interval_s - (time.time() - asked)))
            finally:
                client.close()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self, expected: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.seen) < expected and time.monotonic() < deadline and self.is_alive():
            time.sleep(self.interval_s)
        self._halt.set()
        self.join()
        if self.error is not None:
            msg = f"probe poller failed: {self.error!r}"
            raise BenchError(msg) from self.error


def child_live(args: argparse.Namespace) -> None:
    """Tail the topic until the parent writes ``STOP <probes>`` on stdin, then drain and report.

    With ``--probes`` a poller thread in this process (threads may share the chDB path) records
    when each probe first shows in ``measurements``.
    """
    config = plant_config(args.machines)
    conf = {"bootstrap.servers": args.bootstrap}
    dsn = chdb_dsn(Path(args.workdir))
    migrate(dsn)
    stop = threading.Event()
    expected: list[int] = []

    def commands() -> None:
        for line in sys.stdin:
            if line.startswith("STOP"):
                words = line.split()
                expected.append(int(words[1]) if len(words) > 1 else 0)
                break
        stop.set()

    threading.Thread(target=commands, name="commands", daemon=True).start()
    poller = ProbePoller(dsn) if args.probes else None
    if poller is not None:
        poller.start()
    flow = plant_flow(config, conf, dsn, stop)
    recovery = recovery_config(args.recovery)
    print("READY", flush=True)
    started = time.perf_counter()
    profile_to = os.environ.get("PLANTSTREAM_BENCH_PROFILE")  # a developer's look at a live run
    if profile_to:
        import cProfile

        cProfile.runctx("run_main(flow, epoch_interval=EPOCH, recovery_config=recovery)", globals(),
                        {"flow": flow, "recovery": recovery}, profile_to)
    else:
        run_main(flow, epoch_interval=EPOCH, recovery_config=recovery)
    seconds = time.perf_counter() - started
    probes: dict[int, float] = {}
    polls = 0
    if poller is not None:
        poller.finish(expected[0] if expected else 0, timeout_s=30.0)
        probes, polls = poller.seen, poller.polls
    emit({"seconds": seconds, "probes_seen": probes, "polls": polls,
          "rows_final": table_counts(dsn, final=True), "maxrss_mb": max_rss_mb()})


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=("e2e", "cluster", "live"), required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--machines", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--recovery")
    parser.add_argument("--addresses")
    parser.add_argument("--proc-id", type=int, default=0)
    parser.add_argument("--probes", action="store_true")
    args = parser.parse_args(argv)
    {"e2e": child_e2e, "cluster": child_cluster, "live": child_live}[args.child](args)


# -- running the flow processes --------------------------------------------------------------


def child_command(kind: str, bootstrap: str, machines: int, workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--child", kind, "--bootstrap", bootstrap,
            "--machines", str(machines), "--workdir", str(workdir), *extra]


def parse_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX):])
            return result
    return None


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def run_child(cmd: list[str], log: Path, timeout_s: float = 3600) -> tuple[dict[str, Any], float]:
    """Run a flow process to its end; its result and the wall seconds from start to exit."""
    started = time.perf_counter()
    with open(log, "wb") as err:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, cwd=ROOT, timeout=timeout_s,
                              text=True, check=False)
    wall = time.perf_counter() - started
    result = parse_result(done.stdout)
    if done.returncode != 0 or result is None:
        msg = f"flow process {' '.join(cmd[2:])} exited {done.returncode} without a result; {log}:\n{tail(log)}"
        raise BenchError(msg)
    return result, wall


class LiveChild:
    """A ``--child live`` flow process, steered through its stdin."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.log = log
        self._err: IO[bytes] = open(log, "wb")  # noqa: SIM115 (closed in finish/kill)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                     cwd=ROOT, text=True)

    def wait_ready(self, timeout_s: float = 120) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith("READY"):
                    return
                if not line:
                    break
        self.kill()
        msg = f"the flow process did not start; {self.log}:\n{tail(self.log)}"
        raise BenchError(msg)

    def check(self, elapsed: float = 0.0) -> None:
        """Raise if the flow process has exited (a crash would otherwise show only at the end)."""
        if self.proc.poll() is not None:
            msg = f"the flow process exited {self.proc.returncode} while live; {self.log}:\n{tail(self.log)}"
            raise BenchError(msg)

    def cpu_s(self) -> float:
        """utime + stime of the process so far (/proc, all its threads)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def finish(self, probes: int = 0, timeout_s: float = 600) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"STOP {probes}\n")
        self.proc.stdin.flush()
        try:
            out, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            self._err.close()
        result = parse_result(out)
        if self.proc.returncode != 0 or result is None:
            msg = f"the live flow exited {self.proc.returncode} without a result; {self.log}:\n{tail(self.log)}"
            raise BenchError(msg)
        return result

    def kill(self) -> None:
        """kill -9, as a crash."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._err.close()


@dataclass
class Pacer:
    """Produces measurements at a steady rate with ``ts`` rewritten to the send time (event time =
    wall time), optionally with probes; remembers every (machine, metric, ts) it sent."""

    conf: dict[str, Any]
    data: Iterator[tuple[int, bytes, bytes]]
    topic: str = kafka.MEASUREMENTS
    linger_ms: int = 5
    sent: int = 0
    keys: set[int] = field(default_factory=set)
    probes: dict[int, float] = field(default_factory=dict)
    """probe id → time.time() at its produce call."""
    acked: dict[int, float] = field(default_factory=dict)
    """probe id → time.time() when its delivery report arrived."""

    def __post_init__(self) -> None:
        self._errors = DeliveryErrors()
        self._producer = Producer(kafka.producer_config(
            self.conf, **{"linger.ms": self.linger_ms, "on_delivery": self._errors, "log.connection.close": False}))
        self._last_key = b""

    def _send(self, ts_ms: int) -> None:
        try:
            _, key, value = next(self.data)
        except StopIteration:
            msg = f"ran out of generated data after {self.sent} messages"
            raise BenchError(msg) from None
        obj = orjson.loads(value)
        obj["ts"] = ts_ms
        self.keys.add(hash((key, obj["metric"], ts_ms)))
        kafka.produce_waiting(self._producer, self.topic, orjson.dumps(obj), key)
        self._last_key = key
        self.sent += 1

    def _probe(self, ts_ms: int) -> None:
        pid = len(self.probes)
        machine = self._last_key
        value = orjson.dumps({"ts": ts_ms, "machine": machine.decode(), "metric": PROBE_METRIC,
                              "value": float(pid), "unit": "", "source": "bench", "quality": "good"})
        self.keys.add(hash((machine, PROBE_METRIC, ts_ms)))

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            self._errors(err, msg)
            self.acked[pid] = time.time()

        self.probes[pid] = time.time()
        kafka.produce_waiting(self._producer, self.topic, value, machine, on_delivery=on_delivery)
        self.sent += 1

    def run(self, rate: float, seconds: float, *, probe_every_s: float | None = None,
            on_second: Callable[[float], None] | None = None) -> None:
        """``rate`` messages per second for ``seconds``; ``on_second(elapsed)`` about once a second."""
        started = time.perf_counter()
        data_sent = 0
        next_probe = probe_every_s if probe_every_s else math.inf
        next_tick = 1.0
        while (elapsed := time.perf_counter() - started) < seconds:
            now_ms = int(time.time() * 1000)
            due = int(elapsed * rate)
            while data_sent < due:
                self._send(now_ms)
                data_sent += 1
            if elapsed >= next_probe and self._last_key:
                self._probe(now_ms)
                next_probe += probe_every_s or math.inf
            self._producer.poll(0)
            if on_second is not None and elapsed >= next_tick:
                on_second(elapsed)
                next_tick += 1.0
            time.sleep(0.001)

    def burst(self, count: int, rate: float, start_ms: int) -> None:
        """``count`` messages as fast as possible, event time continuing at ``rate`` from ``start_ms``."""
        for i in range(count):
            self._send(start_ms + int(i * 1000 / rate))
            if i % 10_000 == 0:
                self._producer.poll(0)

    def close(self) -> None:
        """Wait for every delivery, then let the producer go (before its broker stops)."""
        flush(self._producer, self._errors)
        del self._producer


def check_rows(what: str, rows: dict[str, int], expected: int) -> None:
    """Fail loudly unless ``measurements`` holds ``expected`` rows and OEE facts were written."""
    if rows["measurements"] != expected:
        msg = f"{what}: measurements holds {rows['measurements']:,} rows, {expected:,} messages were produced"
        raise BenchError(msg)
    if rows["oee_facts"] <= 0:
        msg = f"{what}: no oee_facts rows; the flow did not compute OEE ({rows})"
        raise BenchError(msg)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# -- recovery databases ------------------------------------------------------------------------


def latest_snapshots(recovery_dir: Path) -> list[tuple[str, str, bytes | None]]:
    """(step_id, state_key, ser_change) of the latest snapshot of every step and key."""
    out: list[tuple[str, str, bytes | None]] = []
    for db in sorted(recovery_dir.glob("part-*.sqlite3")):
        with closing(sqlite3.connect(db)) as con:
            out += con.execute(
                "SELECT s.step_id, s.state_key, s.ser_change FROM snaps s JOIN "
                "(SELECT step_id, state_key, max(snap_epoch) AS e FROM snaps GROUP BY step_id, state_key) l "
                "ON s.step_id = l.step_id AND s.state_key = l.state_key AND s.snap_epoch = l.e"
            ).fetchall()
    return out


def state_size(recovery_dir: Path) -> dict[str, Any]:
    """Bytes of the latest snapshots per step, the Kafka input's offsets excluded."""
    by_step: dict[str, dict[str, int]] = {}
    for step, _, ser in latest_snapshots(recovery_dir):
        if step.endswith("kafka_in"):
            continue
        entry = by_step.setdefault(step, {"keys": 0, "bytes": 0, "discarded": 0})
        entry["keys"] += 1
        entry["bytes"] += len(ser) if ser is not None else 0
        entry["discarded"] += ser is None
    total = sum(e["bytes"] for e in by_step.values())
    return {"bytes": total, "by_step": dict(sorted(by_step.items(), key=lambda kv: -kv[1]["bytes"]))}


def resume_offsets(recovery_dir: Path) -> dict[str, int]:
    """The Kafka input's snapshots: partition → next offset to read."""
    out: dict[str, int] = {}
    for step, key, ser in latest_snapshots(recovery_dir):
        if step.endswith("kafka_in") and ser is not None:
            out[key] = int(pickle.loads(ser))
    return out


# -- the parts ---------------------------------------------------------------------------------


@dataclass
class Bench:
    sizing: Sizing
    parts: set[str]
    sizes: tuple[int, ...]
    tmp: Path
    data: DataCache
    results: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def e2e_spec(self, machines: int) -> DataSpec:
        # The same mix at every size (condition signals every second), so the figures compare
        # the cost of more machines, not of another mix; 10,000 machines get twice the
        # messages (about 200 a machine).
        if machines >= 10_000:
            return DataSpec(machines, 1000, 2 * self.sizing.messages)
        return DataSpec(machines, 1000, self.sizing.messages)

    def state_spec(self) -> DataSpec:
        # Condition signals every 10 s: a minute of event time in a run of reasonable length.
        return DataSpec(10_000, 10_000, 0, self.sizing.state_span_s)

    def latency_spec(self) -> DataSpec:
        sz = self.sizing
        return DataSpec(REFERENCE_SIZE, 1000, int(sz.latency_rate * sz.latency_s * 1.05) + 1000)

    def idle_spec(self) -> DataSpec:
        # Condition signals every 10 s: about one message per machine and second, as sent.
        sz = self.sizing
        return DataSpec(sz.idle_machines, 10_000, int(sz.idle_rate * sz.idle_s * 1.05) + 1000)

    def recovery_spec(self) -> DataSpec:
        # Live and backlog at the plant's own rate: as much data as their event time spans.
        return DataSpec(REFERENCE_SIZE, 1000, 0, (self.sizing.recovery_live_s + self.sizing.recovery_backlog_s) * 1.05)

    def prepare_data(self) -> None:
        """Generate each data set once, as large as the largest part that reads it needs."""
        specs = [self.e2e_spec(n) for n in self.e2e_sizes()]
        for part, spec in (("state", self.state_spec), ("latency", self.latency_spec),
                           ("idle", self.idle_spec), ("recovery", self.recovery_spec)):
            if part in self.parts:
                specs.append(spec())
        merged: dict[tuple[int, int], DataSpec] = {}
        for sp in specs:
            key = (sp.machines, sp.plc_sample_ms)
            old = merged.get(key, sp)
            merged[key] = DataSpec(sp.machines, sp.plc_sample_ms, max(old.messages, sp.messages),
                                   max(old.min_span_s, sp.min_span_s))
        for sp in merged.values():
            self.data.ensure(sp)

    def e2e_sizes(self) -> list[int]:
        """Machine counts that get a broker with the e2e data (the reference size serves several parts)."""
        return sorted({*(self.sizes if "e2e" in self.parts else ()),
                       *((REFERENCE_SIZE,) if self.parts & {"ceiling", "peer", "scale_out"} else ())})

    def workdir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # e2e, ceiling, peer, scale_out, state: one broker per machine count
    def run_sizes(self) -> None:
        for n in self.e2e_sizes():
            spec = self.e2e_spec(n)
            with kafka_only(partitions=PARTITIONS, workdir=self.workdir(f"kafka-{n}")) as broker:
                conf = {"bootstrap.servers": broker.bootstrap}
                started = time.perf_counter()
                produced = produce_data(conf, kafka.MEASUREMENTS, self.data.read(spec))
                progress(f"{n:,} machines: produced {produced:,} messages in {time.perf_counter() - started:.1f} s")
                if n == REFERENCE_SIZE and "ceiling" in self.parts:
                    self.ceiling(conf, produced)
                if (("e2e" in self.parts and n in self.sizes)
                        or (n == REFERENCE_SIZE and "scale_out" in self.parts)):  # its 1-process figure
                    self.e2e(broker.bootstrap, n, produced, spec)
                if n == REFERENCE_SIZE and "scale_out" in self.parts:
                    self.scale_out(broker.bootstrap, n, produced)
                if n == REFERENCE_SIZE and "peer" in self.parts:
                    self.peer(conf, spec)

    def ceiling(self, conf: dict[str, Any], produced: int) -> None:
        runs = [measure_ceiling(conf, kafka.MEASUREMENTS, produced) for _ in range(self.sizing.repeats)]
        res = sorted(runs, key=lambda r: r["events_per_s"])[len(runs) // 2]  # the median run
        self.results["ceiling_events_per_s"] = res["events_per_s"]
        self.details["ceiling"] = {**res, "runs_events_per_s": [r["events_per_s"] for r in runs]}
        progress(f"ceiling: {res['events_per_s']:,} msg/s, median of {[r['events_per_s'] for r in runs]} "
                 f"({res['consumer_config']})")

    def e2e(self, bootstrap: str, machines: int, produced: int, spec: DataSpec) -> None:
        runs: list[tuple[dict[str, Any], float]] = []
        for k in range(self.sizing.repeats):  # this machine's figures vary by several %: a median
            work = self.workdir(f"e2e-{machines}-{k}")
            res, wall = run_child(child_command("e2e", bootstrap, machines, work), work / "flow.log")
            check_rows(f"e2e {machines} machines", res["rows"], produced)
            runs.append((res, wall))
            progress(f"  e2e {machines:,} machines, run {k + 1}: {produced / res['seconds']:,.0f} msg/s")
        res, wall = sorted(runs, key=lambda rw: rw[0]["seconds"])[len(runs) // 2]
        rate = produced / res["seconds"]
        self.results.setdefault("e2e_by_machines", {})[str(machines)] = round(rate)
        if machines == REFERENCE_SIZE:
            self.results["e2e_events_per_s"] = round(rate)
        if machines == 10_000:
            self.results["peak_rss_mb"] = res["maxrss_mb"]
        self.details.setdefault("e2e", {})[str(machines)] = {
            "messages": produced, "plc_sample_ms": spec.plc_sample_ms, "event_span_s": self.data.span(spec),
            "seconds": round(res["seconds"], 2), "process_wall_s": round(wall, 2),
            "events_per_s": round(rate), "peak_rss_mb": res["maxrss_mb"], "rows": res["rows"],
            "runs_events_per_s": [round(produced / r["seconds"]) for r, _ in runs]}
        progress(f"e2e {machines:,} machines: {rate:,.0f} msg/s ({produced:,} in {res['seconds']:.1f} s, "
                 f"peak RSS {res['maxrss_mb']:,.0f} MB)")

    def state(self) -> None:
        """The 10,000-machine plant with recovery on, over the first ``state_span_s`` of its data."""
        spec = self.state_spec()
        machines = spec.machines
        work = self.workdir(f"state-{machines}")
        rec = work / "recovery"
        with kafka_only(partitions=PARTITIONS, workdir=work) as broker:
            produced = produce_data({"bootstrap.servers": broker.bootstrap}, kafka.MEASUREMENTS, self.data.read(spec))
            progress(f"state: {produced:,} messages ({self.sizing.state_span_s:g} s of event time), recovery on")
            res, _ = run_child(child_command("e2e", broker.bootstrap, machines, work, "--recovery", str(rec)),
                               work / "flow.log")
        check_rows(f"state run {machines} machines", res["rows"], produced)
        size = state_size(rec)
        self.results["state_bytes_per_machine"] = round(size["bytes"] / machines)
        rate = produced / res["seconds"]
        self.details["state"] = {"machines": machines, "messages": produced, "span_s": self.sizing.state_span_s,
                                 "plc_sample_ms": spec.plc_sample_ms, "seconds": round(res["seconds"], 2),
                                 "events_per_s_with_recovery": round(rate), "peak_rss_mb": res["maxrss_mb"],
                                 **size}
        without = self.results.get("e2e_by_machines", {}).get(str(machines))
        self.notes.append(
            f"state_bytes_per_machine: a separate run with recovery on over the first {spec.min_span_s:g} s of "
            f"the {machines:,}-machine data ({rate:,.0f} msg/s with recovery"
            + (f", {without:,} msg/s without" if without else "") + "); e2e figures and peak_rss_mb are "
            "from runs without recovery. Rolling windows longer than that span (1-hour scrap rate) are not full.")
        if "peak_rss_mb" not in self.results:
            self.results["peak_rss_mb"] = res["maxrss_mb"]
            self.notes.append("peak_rss_mb is from the state run (recovery on): the e2e part did not run")
        progress(f"state {machines:,} machines: {size['bytes'] / machines:,.0f} B/machine "
                 f"(run with recovery: {rate:,.0f} msg/s)")

    def scale_out(self, bootstrap: str, machines: int, produced: int) -> None:
        ports = [free_port(), free_port()]
        addresses = ",".join(f"127.0.0.1:{p}" for p in ports)
        procs: list[tuple[subprocess.Popen[str], Path, IO[bytes]]] = []
        started = time.perf_counter()
        try:
            for i in range(2):
                work = self.workdir(f"scale-{i}")
                log = open(work / "flow.log", "wb")  # noqa: SIM115 (closed below)
                cmd = child_command("cluster", bootstrap, machines, work, "--addresses", addresses,
                                    "--proc-id", str(i))
                procs.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, cwd=ROOT, text=True),
                              work / "flow.log", log))
            deadline = time.monotonic() + 3600
            while any(p.poll() is None for p, _, _ in procs):
                failed = [(p, path) for p, path, _ in procs if p.returncode not in (None, 0)]
                if failed or time.monotonic() > deadline:  # the other process would wait for its peer
                    p, path = failed[0] if failed else procs[0][:2]
                    msg = f"cluster process exited {p.returncode} or timed out; {path}:\n{tail(path)}"
                    raise BenchError(msg)
                time.sleep(0.1)
            outs = [p.communicate()[0] for p, _, _ in procs]
        finally:
            for p, _, errf in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                errf.close()
        wall = time.perf_counter() - started
        results = []
        for (p, log_path, _), out in zip(procs, outs, strict=True):
            res = parse_result(out)
            if p.returncode != 0 or res is None:
                msg = f"cluster process exited {p.returncode} without a result; {log_path}:\n{tail(log_path)}"
                raise BenchError(msg)
            results.append(res)
        rows = {t: sum(r["rows"][t] for r in results) for t in TABLES}
        check_rows("scale-out", rows, produced)
        seconds = max(r["ended"] for r in results) - min(r["started"] for r in results)
        two = produced / seconds
        one = self.results.get("e2e_by_machines", {}).get(str(machines))
        self.results["scale_out"] = {
            "partitions": PARTITIONS, "one_process_events_per_s": one, "two_processes_events_per_s": round(two),
            "speedup": round(two / one, 2) if one else None,
            "two_processes_launch_to_exit_events_per_s": round(produced / wall)}
        self.details["scale_out"] = {"messages": produced, "seconds": round(seconds, 2),
                                     "launch_to_exit_s": round(wall, 2), "rows": rows,
                                     "peak_rss_mb": [r["maxrss_mb"] for r in results]}
        progress(f"scale-out {machines:,} machines, 2 processes: {two:,.0f} msg/s (1 process: {one or '-'})")

    def peer(self, conf: dict[str, Any], spec: DataSpec) -> None:
        try:
            peer = importlib.import_module("tests.bench.peer")
        except ModuleNotFoundError as exc:
            if exc.name not in ("tests.bench.peer", "tests.bench", "tests"):
                raise
            self.notes.append("peer: tests/bench/peer.py is absent, not measured")
            progress("peer: tests/bench/peer.py is absent; skipped")
            return
        kafka.create_topics(conf, {PEER_TOPIC: PARTITIONS})
        produced = produce_data(conf, PEER_TOPIC, self.data.read(spec))
        res: dict[str, Any] = peer.run_peer(conf["bootstrap.servers"], PEER_TOPIC, produced)
        self.results["peer_events_per_s"] = res["peer_events_per_s"]
        self.details["peer"] = res
        progress(f"peer: {res['peer_events_per_s']:,} msg/s")

    # live parts: one broker each

    def latency(self) -> None:
        sz = self.sizing
        spec = self.latency_spec()
        machines = spec.machines
        work = self.workdir("latency")
        with kafka_only(partitions=PARTITIONS, workdir=work) as broker:
            conf = {"bootstrap.servers": broker.bootstrap}
            child = LiveChild(child_command("live", broker.bootstrap, machines, work, "--probes"),
                              work / "flow.log")
            try:
                child.wait_ready()
                pacer = Pacer(conf, self.data.read(spec))
                progress(f"latency: {sz.latency_rate:,.0f} msg/s for {sz.latency_s:g} s, a probe every 100 ms")
                t0 = time.time()
                pacer.run(sz.latency_rate, sz.latency_s, probe_every_s=0.1, on_second=child.check)
                pacer.close()
                res = child.finish(len(pacer.probes))
            except BaseException:
                child.kill()
                raise
        check_rows("latency (distinct rows)", res["rows_final"], len(pacer.keys))
        seen = {int(k): v for k, v in res["probes_seen"].items()}
        warm = [pid for pid, t in pacer.probes.items() if t - t0 >= sz.latency_warmup_s]
        missing = [pid for pid in warm if pid not in seen]
        if missing:
            msg = f"latency: {len(missing)} probes never showed in measurements"
            raise BenchError(msg)
        lat = [(seen[pid] - pacer.probes[pid]) * 1000 for pid in warm]
        half = len(lat) // 2
        from_ack = [(seen[pid] - pacer.acked[pid]) * 1000 for pid in warm if pid in pacer.acked]
        self.results["latency_p50_ms"] = round(percentile(lat, 50), 1)
        self.results["latency_p99_ms"] = round(percentile(lat, 99), 1)
        self.details["latency"] = {
            "rate": sz.latency_rate, "seconds": sz.latency_s, "warmup_s": sz.latency_warmup_s,
            "machines": machines, "messages": pacer.sent, "probes": len(warm), "polls": res["polls"],
            "max_ms": round(max(lat), 1), "mean_ms": round(statistics.fmean(lat), 1),
            "p50_first_half_ms": round(percentile(lat[:half] or lat, 50), 1),
            "p50_second_half_ms": round(percentile(lat[half:], 50), 1),
            "from_ack_p50_ms": round(percentile(from_ack, 50), 1) if from_ack else None,
            "from_ack_p99_ms": round(percentile(from_ack, 99), 1) if from_ack else None,
            "producer_linger_ms": pacer.linger_ms}
        progress(f"latency: p50 {self.results['latency_p50_ms']:,} ms, p99 {self.results['latency_p99_ms']:,} ms "
                 f"over {len(warm)} probes")

    def idle(self) -> None:
        sz = self.sizing
        spec = self.idle_spec()
        machines = spec.machines
        work = self.workdir("idle")
        samples: dict[str, float] = {}
        with kafka_only(partitions=PARTITIONS, workdir=work) as broker:
            conf = {"bootstrap.servers": broker.bootstrap}
            child = LiveChild(child_command("live", broker.bootstrap, machines, work), work / "flow.log")
            try:
                child.wait_ready()
                pacer = Pacer(conf, self.data.read(spec))
                begin = sz.idle_s - sz.idle_measure_s

                def sample(elapsed: float) -> None:
                    child.check()
                    if "start" not in samples and elapsed >= begin:
                        samples["start"], samples["start_t"] = child.cpu_s(), time.perf_counter()

                progress(f"idle: {sz.idle_rate:,.0f} msg/s from {machines} machines for {sz.idle_s:g} s")
                pacer.run(sz.idle_rate, sz.idle_s, on_second=sample)
                cpu = child.cpu_s() - samples["start"]
                seconds = time.perf_counter() - samples["start_t"]
                pacer.close()
                res = child.finish()
            except BaseException:
                child.kill()
                raise
        check_rows("idle (distinct rows)", res["rows_final"], len(pacer.keys))
        pct = 100 * cpu / seconds
        self.results["idle_cpu_pct"] = round(pct, 1)
        self.details["idle"] = {"rate": sz.idle_rate, "machines": machines, "seconds": sz.idle_s,
                                "measured_s": round(seconds, 1), "cpu_s": round(cpu, 2), "messages": pacer.sent}
        progress(f"idle: {pct:.1f} % of a core over the last {seconds:.0f} s")

    def recovery(self) -> None:
        sz = self.sizing
        spec = self.recovery_spec()
        machines = spec.machines
        rate = self.data.rate(spec)  # the plant's own message rate
        work = self.workdir("recovery")
        rec = work / "recovery"
        with kafka_only(partitions=PARTITIONS, workdir=work) as broker:
            conf = {"bootstrap.servers": broker.bootstrap}
            cmd = child_command("live", broker.bootstrap, machines, work, "--recovery", str(rec))
            child = LiveChild(cmd, work / "flow-1.log")
            try:
                child.wait_ready()
                pacer = Pacer(conf, self.data.read(spec), linger_ms=50)
                progress(f"recovery: live at {rate:,.0f} msg/s (the plant's rate) for {sz.recovery_live_s:g} s, "
                         "then kill -9")
                pacer.run(rate, sz.recovery_live_s, on_second=child.check)
            finally:
                child.kill()
            live = pacer.sent
            kill_ms = int(time.time() * 1000)
            backlog = int(rate * sz.recovery_backlog_s)
            pacer.burst(backlog, rate, kill_ms)
            pacer.close()
            resume = resume_offsets(rec)
            progress(f"recovery: {backlog:,} messages of backlog ({sz.recovery_backlog_s:g} s); restarting")
            restarted = time.time()
            res, wall = run_child(child_command("e2e", broker.bootstrap, machines, work, "--recovery", str(rec)),
                                  work / "flow-2.log")
        check_rows("recovery (distinct rows after the restart)", res["rows_final"], len(pacer.keys))
        replayed = pacer.sent - sum(resume.values())
        if not resume:
            self.notes.append("recovery: no epoch was committed before the kill, so the restart read the "
                              "topic from the beginning (live phase shorter than the first epoch)")
        caught_up = res["ended"] - restarted
        self.results["recovery_s"] = round(caught_up, 2)
        self.results["recovery_backlog_messages"] = backlog
        self.details["recovery"] = {
            "rate": round(rate), "live_s": sz.recovery_live_s, "live_messages": live, "backlog_s": sz.recovery_backlog_s,
            "backlog_messages": backlog, "read_after_restart": replayed, "resume_offsets": resume,
            "restart_to_caught_up_s": round(caught_up, 2), "run_main_s": round(res["seconds"], 2),
            "restart_to_exit_s": round(wall, 2)}
        progress(f"recovery: caught up {replayed:,} messages in {caught_up:.1f} s from the restart")

    # summary

    def summarize(self) -> dict[str, Any]:
        r = self.results
        by = r.get("e2e_by_machines", {})

        def ratio(a: float | None, b: float | None) -> float | None:
            return round(a / b, 3) if a is not None and b else None

        e2e, ceiling, peer = r.get("e2e_events_per_s"), r.get("ceiling_events_per_s"), r.get("peer_events_per_s")
        ratios = {"e2e_1000_over_ceiling": ratio(e2e, ceiling),
                  "e2e_10000_over_e2e_1000": ratio(by.get("10000"), by.get("1000")),
                  "e2e_over_peer": ratio(e2e, peer)}

        def at_least(value: float | None, bound: float) -> bool | None:
            return None if value is None else value >= bound

        def below(key: str, bound: float, inclusive: bool = False) -> bool | None:
            v = r.get(key)
            return None if v is None else (v <= bound if inclusive else v < bound)

        targets = {
            "e2e_1000_ge_0.4_ceiling": at_least(ratios["e2e_1000_over_ceiling"], 0.4),
            "e2e_10000_ge_0.5_e2e_1000": at_least(ratios["e2e_10000_over_e2e_1000"], 0.5),
            "e2e_ge_2_peer": at_least(ratios["e2e_over_peer"], 2.0),
            "latency_p99_lt_2000_ms": below("latency_p99_ms", 2000),
            "state_lt_256_KiB_per_machine": below("state_bytes_per_machine", 256 * 1024),
            "idle_cpu_le_10_pct": below("idle_cpu_pct", 10, inclusive=True),
        }
        keys = ("ceiling_events_per_s", "e2e_by_machines", "e2e_events_per_s", "latency_p50_ms", "latency_p99_ms",
                "peak_rss_mb", "state_bytes_per_machine", "recovery_s", "recovery_backlog_messages",
                "idle_cpu_pct", "peer_events_per_s", "scale_out")
        if self.sizing != Sizing() and "ceiling" in self.parts:
            self.notes.append("--quick: over 100,000 messages the ceiling mostly times decoding messages "
                              "librdkafka had already prefetched; only the full run's ceiling is a fetch rate")
        return {**{k: r.get(k) for k in keys}, "ratios": ratios, "targets": targets, "machine": machine_info(),
                "code": code_info(),
                "quick": self.sizing != Sizing(), "parts": sorted(self.parts, key=PARTS.index),
                "notes": self.notes, "details": self.details}


def code_info() -> dict[str, Any]:
    """The commit benchmarked and whether the working tree had changes."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    return {"commit": commit or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))
            if commit else None}


def machine_info() -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version(), "bytewax": version("bytewax"),
            "confluent_kafka": version("confluent-kafka"), "chdb": version("chdb"),
            "orjson": version("orjson")}


def print_table(report: dict[str, Any]) -> None:
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    rows: list[tuple[str, str]] = [("ceiling_events_per_s", fmt(report["ceiling_events_per_s"]))]
    for n, v in (report["e2e_by_machines"] or {}).items():
        rows.append((f"e2e_events_per_s ({int(n):,} machines)", fmt(v)))
    for key in ("latency_p50_ms", "latency_p99_ms", "peak_rss_mb", "state_bytes_per_machine", "recovery_s",
                "recovery_backlog_messages", "idle_cpu_pct", "peer_events_per_s"):
        rows.append((key, fmt(report[key])))
    for key, v in (report["scale_out"] or {}).items():
        rows.append((f"scale_out.{key}", fmt(v)))
    rows += [(f"ratio {k}", fmt(v)) for k, v in report["ratios"].items()]
    rows += [(f"target {k}", fmt(v)) for k, v in report["targets"].items()]
    width = max(len(k) for k, _ in rows)
    print(f"{'figure':<{width}}  value")
    for k, v in rows:
        print(f"{k:<{width}}  {v:>12}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        child_main(argv)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="about 10x less data and shorter live runs")
    parser.add_argument("--only", default="", help=f"comma-separated parts of {','.join(PARTS)}")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="machine counts of the e2e part (default %(default)s)")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.only.split(",") if p.strip()} or set(PARTS)
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    sizing = Sizing.quick() if args.quick else Sizing()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-plant-") as tmp:
        sizes = tuple(int(n) for n in args.sizes.split(","))
        bench = Bench(sizing, parts, sizes, Path(tmp), DataCache(Path(tmp) / "data"))
        bench.prepare_data()
        bench.run_sizes()
        for part in ("state", "latency", "idle", "recovery"):
            if part in parts:
                getattr(bench, part)()
        report = bench.summarize()
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    progress(f"wrote {RESULTS} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
