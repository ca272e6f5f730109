"""``plantstream run``: the whole edge node from one plant config, in one command.

Kafka is the configured cluster (``kafka.bootstrap_servers``), else the embedded Tansu broker;
ClickHouse the configured server (``clickhouse.url`` / ``PLANTSTREAM_CLICKHOUSE_URL``), else
embedded chDB under the state directory. The supervisor (:mod:`plantstream.cli.supervisor`)
creates the topics, migrates ClickHouse, starts the flows (one Bytewax process with its recovery
store under the state directory, so a restart resumes) and one connector process per source,
restarts what crashes, and stops everything on Ctrl-C, SIGTERM or ``--duration``.

While it runs it shows what the plant does (:class:`Telemetry`): per source messages per
second and the newest value time, the flows' Kafka lag, rows per result table, dead letters by
reason and open alerts — read from the children's health endpoints, from Kafka and from the
flows' recovery store, never by opening chDB a second time. On a terminal that is a live
``rich`` view; otherwise (a service, a pipe) one plain log line every ``--log-every`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter, deque
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from plantstream.cli.common import stderr
from plantstream.cli.supervisor import Child, RunError, StateLock, Supervisor, child_env, python_argv
from plantstream.connectors.metrics import Metrics, Sample, reason_kind
from plantstream.schemas.config import PlantConfig, load_config

log = logging.getLogger("plantstream.run")

FLOWS_READY_S = 180.0
"""How long the start waits for the flows' ``/readyz`` before it starts the connectors anyway."""


def _ms_text(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


class Telemetry:
    """What the status view shows, gathered without touching chDB.

    A background thread reads the measurements topic from its end (messages per source per
    second, the newest value time per source) and the dead-letter and alert topics from their
    start (dead letters by reason, alerts raised and not cleared). The flows' lag is the high
    watermark of each measurements partition minus the next offset in the flows' newest
    recovery snapshot; rows per table are the records on each result topic.
    """

    def __init__(self, kafka_conf: dict[str, Any], recovery_dir: Path, table_topics: dict[str, str]) -> None:
        self.kafka_conf = dict(kafka_conf)
        self.recovery_dir = recovery_dir
        self.table_topics = table_topics
        self.per_source: dict[str, deque[float]] = {}
        self.last_ts: dict[str, int] = {}
        self.totals: Counter[str] = Counter()
        self.deadletters: Counter[str] = Counter()
        self.deadletter_kinds: Counter[str] = Counter()
        """Dead letters by :func:`~plantstream.connectors.metrics.reason_kind` (``/metrics``)."""
        self.alerts: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._meta_lock = threading.Lock()  # the view and a /metrics scrape share the metadata client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._meta: Any = None

    def start(self) -> Telemetry:
        self._thread = threading.Thread(target=self._run, name="plantstream-run-telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
        with self._meta_lock:
            if self._meta is not None:
                with contextlib.suppress(Exception):
                    self._meta.close()
                self._meta = None

    def _assign(self) -> Any:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

        from plantstream.connectors import kafka

        consumer = Consumer(
            {
                **self.kafka_conf,
                "group.id": "plantstream-run-status",
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
            }
        )
        meta = consumer.list_topics(timeout=10)
        parts = []
        for topic, start in (
            (kafka.MEASUREMENTS, OFFSET_END),
            (kafka.DEADLETTER, OFFSET_BEGINNING),
            ("plantstream.alerts", OFFSET_BEGINNING),
        ):
            tmeta = meta.topics.get(topic)
            if tmeta is not None and tmeta.error is None:
                parts += [TopicPartition(topic, p, start) for p in tmeta.partitions]
        consumer.assign(parts)
        return consumer

    def _run(self) -> None:
        from plantstream.connectors import kafka

        try:
            consumer = self._consumer = self._assign()
        except Exception as exc:  # the view is optional: the plant runs without it
            log.warning("status view: cannot read Kafka (%s)", exc)
            return
        try:
            while not self._stop.is_set():
                msgs = consumer.consume(2000, 0.5)
                now = time.monotonic()
                with self._lock:
                    for m in msgs:
                        if m.error() is not None:
                            continue
                        topic = m.topic()
                        try:
                            rec = orjson.loads(m.value() or b"null")
                        except orjson.JSONDecodeError:
                            rec = None
                        if not isinstance(rec, dict):
                            continue
                        if topic == kafka.MEASUREMENTS:
                            src = str(rec.get("source") or "?")
                            self.per_source.setdefault(src, deque(maxlen=100_000)).append(now)
                            self.totals[src] += 1
                            ts = rec.get("ts")
                            if isinstance(ts, int) and ts > self.last_ts.get(src, 0):
                                self.last_ts[src] = ts
                        elif topic == kafka.DEADLETTER:
                            self.deadletters[str(rec.get("reason") or "?").split(":")[0][:60]] += 1
                            self.deadletter_kinds[reason_kind(rec.get("reason"))] += 1
                        else:
                            key = str(rec.get("alert_id") or "")
                            old = self.alerts.get(key)
                            if old is None or int(rec.get("version") or 0) >= int(old.get("version") or 0):
                                self.alerts[key] = rec
        finally:
            with contextlib.suppress(Exception):
                consumer.close()

    def rates(self, window_s: float = 10.0) -> dict[str, float]:
        """Messages per second per source over the last ``window_s``."""
        now = time.monotonic()
        with self._lock:
            out = {}
            for src, stamps in self.per_source.items():
                while stamps and stamps[0] < now - 60:
                    stamps.popleft()
                out[src] = sum(1 for t in stamps if t >= now - window_s) / window_s
            return out

    def counts(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Copies of the measurements per source, newest value time per source (ms) and dead
        letters by reason kind, taken together."""
        with self._lock:
            return dict(self.totals), dict(self.last_ts), dict(self.deadletter_kinds)

    def open_alerts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [a for a in self.alerts.values() if a.get("status") == "raised"]

    def snapshot_offsets(self) -> dict[int, int]:
        """Partition → next offset to read, from the flows' newest recovery snapshot."""
        out: dict[int, int] = {}
        for db in sorted(self.recovery_dir.glob("part-*.sqlite3")):
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
                try:
                    rows = con.execute(
                        "SELECT state_key, ser_change FROM snaps s "
                        "WHERE step_id LIKE '%kafka_in%' AND snap_epoch = "
                        "(SELECT max(snap_epoch) FROM snaps t WHERE t.step_id = s.step_id "
                        "AND t.state_key = s.state_key)"
                    ).fetchall()
                finally:
                    con.close()
            except sqlite3.Error:
                continue
            for key, blob in rows:
                with contextlib.suppress(Exception):
                    value = pickle.loads(blob) if blob is not None else None  # our own recovery store
                    if isinstance(value, int):
                        out[int(key)] = value
        return out

    def high_watermarks(self, topic: str) -> dict[int, int]:
        with self._meta_lock:
            return self._high_watermarks(topic)

    def _high_watermarks(self, topic: str) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        if self._meta is None:  # its own client: a consumer is not shared between threads
            from confluent_kafka import Consumer

            self._meta = Consumer(
                {**self.kafka_conf, "group.id": "plantstream-run-status-meta", "enable.auto.commit": False}
            )
        consumer = self._meta
        out = {}
        with contextlib.suppress(Exception):
            meta = consumer.list_topics(topic, timeout=2)
            for p in meta.topics[topic].partitions:
                out[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=2, cached=False)[1]
        return out

    def lag(self) -> int | None:
        from plantstream.connectors import kafka

        high = self.high_watermarks(kafka.MEASUREMENTS)
        if not high:
            return None
        done = self.snapshot_offsets()
        return sum(max(0, h - min(done.get(p, 0), h)) for p, h in high.items())

    def rows(self) -> dict[str, int]:
        return {
            table: sum(self.high_watermarks(topic).values()) for table, topic in self.table_topics.items()
        }


def _health_cell(child: Child) -> str:
    if not child.running():
        return f"down ({child.last_exit or 'starting'})"
    if child.health is None:
        return "starting"
    return "ready" if child.ready else "not ready"


def status_view(
    sup: Supervisor, tel: Telemetry | None, started: float, clickhouse_url: str | None = None
) -> Group:
    """The live view: children, sources, tables, dead letters, alerts (and where to read results)."""
    reads = f" — results: {clickhouse_url} (read-only)" if clickhouse_url else ""
    procs = Table(title=f"plantstream run — {time.monotonic() - started:.0f}s{reads}", title_justify="left")
    for col in ("process", "pid", "health", "restarts", "last exit"):
        procs.add_column(col)
    for c in sup.children:
        if c.role != "task":
            procs.add_row(c.name, str(c.pid or "-"), _health_cell(c), str(c.restarts), c.last_exit or "-")
    parts: list[Any] = [procs]
    if tel is not None:
        rates = tel.rates()
        src = Table(title="sources", title_justify="left")
        for col in ("source", "msg/s", "messages", "last value (UTC)", "spool bytes"):
            src.add_column(col)
        spool = {
            c.name.removeprefix("source "): (c.health or {}).get("spool_bytes", 0)
            for c in sup.by_role("source")
        }
        for name in sorted(set(rates) | set(spool)):
            src.add_row(
                name,
                f"{rates.get(name, 0.0):.1f}",
                str(tel.totals.get(name, 0)),
                _ms_text(tel.last_ts.get(name)),
                str(spool.get(name, "-")),
            )
        parts.append(src)
        lag = tel.lag()
        tables = Table(title=f"flows: Kafka lag {'-' if lag is None else lag} records", title_justify="left")
        tables.add_column("table")
        tables.add_column("rows (result topic)")
        for table, n in sorted(tel.rows().items()):
            tables.add_row(table, str(n))
        parts.append(tables)
        dead = Table(title="dead letters by reason", title_justify="left")
        dead.add_column("reason")
        dead.add_column("count")
        for reason, n in tel.deadletters.most_common(8):
            dead.add_row(reason, str(n))
        parts.append(dead)
        alerts = tel.open_alerts()
        al = Table(title=f"open alerts: {len(alerts)}", title_justify="left")
        for col in ("machine", "rule", "severity", "since"):
            al.add_column(col)
        for a in alerts[:10]:
            al.add_row(
                str(a.get("machine", "")),
                str(a.get("rule", "")),
                str(a.get("severity", "")),
                str(a.get("raised_at") or a.get("ts") or ""),
            )
        parts.append(al)
    return Group(*parts)


def status_line(sup: Supervisor, tel: Telemetry | None) -> str:
    """The plain status log line (not a terminal)."""
    procs = ", ".join(f"{c.name} {_health_cell(c)}" for c in sup.children if c.role != "task")
    if tel is None:
        return procs
    rates = ", ".join(f"{s} {r:.1f}/s" for s, r in sorted(tel.rates().items())) or "no messages yet"
    rows = ", ".join(f"{t} {n}" for t, n in sorted(tel.rows().items()) if n)
    dead = sum(tel.deadletters.values())
    return (
        f"{procs} | sources: {rates} | lag {tel.lag()} | rows: {rows or 'none yet'} | "
        f"dead letters {dead} | open alerts {len(tel.open_alerts())}"
    )


class RunEndpoint:
    """What the ``run`` process itself serves with ``--health-port``: ``/healthz``, ``/readyz``
    and ``/metrics`` (:class:`~plantstream.connectors.health.HealthServer`).

    ``/healthz``: the supervisor runs (always true while it answers). ``/readyz``: the start-up
    is over and every long-running child (the flows, each connector) runs and its own last
    ``/readyz`` (polled every second) said ready — so it fails while, say, the flows cannot
    reach ClickHouse, and recovers with them. The body lists each child's state and endpoint.

    ``/metrics`` (:class:`~plantstream.connectors.metrics.Metrics`, component ``run``): per
    child ``plantstream_child_up``, ``plantstream_child_ready``,
    ``plantstream_child_restarts_total`` and ``plantstream_child_endpoint_info`` (its
    ``/metrics`` URL); and what the status view reads (:class:`Telemetry`):
    ``plantstream_run_measurements_total`` and ``plantstream_run_messages_per_second`` and
    ``plantstream_run_last_value_timestamp_seconds`` per source,
    ``plantstream_run_result_records`` per table, ``plantstream_run_deadletters_total`` by reason
    kind, ``plantstream_run_kafka_lag_records`` and ``plantstream_run_open_alerts``.
    """

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.telemetry: Telemetry | None = None
        self.started = False
        """Set once every child has been started (not ready before)."""
        self.metrics = Metrics("run")
        self.metrics.add(self._children)
        self.metrics.add(self._telemetry)

    def _long_running(self) -> list[Child]:
        return [c for c in self.sup.children if c.role != "task"]

    def health(self) -> dict[str, Any]:
        children = {
            c.name: {
                "role": c.role,
                "pid": c.pid,
                "running": c.running(),
                "ready": c.running() and c.ready,
                "restarts": c.restarts,
                "last_exit": c.last_exit,
                "endpoint": c.url(""),
            }
            for c in self._long_running()
        }
        not_ready = [name for name, c in children.items() if not c["ready"]]
        return {
            "live": True,
            "ready": self.started and not self.sup.stopping and bool(children) and not not_ready,
            "starting": not self.started,
            "not_ready": not_ready,
            "children": children,
        }

    def _children(self) -> list[Sample]:
        out = []
        for c in self._long_running():
            lab = {"child": c.name, "role": c.role}
            out += [
                Sample(
                    "gauge",
                    "plantstream_child_up",
                    "1 while the child process runs.",
                    lab,
                    1 if c.running() else 0,
                ),
                Sample(
                    "gauge",
                    "plantstream_child_ready",
                    "1 while the child's own /readyz says ready.",
                    lab,
                    1 if c.running() and c.ready else 0,
                ),
                Sample(
                    "counter",
                    "plantstream_child_restarts",
                    "Times the supervisor restarted the child after it exited.",
                    lab,
                    c.restarts,
                ),
            ]
            if c.health_port is not None:
                out.append(
                    Sample(
                        "gauge",
                        "plantstream_child_endpoint_info",
                        "The child's own health and metrics endpoint (always 1).",
                        {**lab, "url": c.url("/metrics") or ""},
                        1,
                    )
                )
        return out

    def _telemetry(self) -> list[Sample]:
        tel = self.telemetry
        if tel is None:
            return []
        totals, last_ts, kinds = tel.counts()
        rates = tel.rates()
        out = []
        for src in sorted(set(totals) | set(rates)):
            lab = {"source": src}
            out += [
                Sample(
                    "counter",
                    "plantstream_run_measurements",
                    "Measurements of the source on the measurements topic since the run started.",
                    lab,
                    totals.get(src, 0),
                ),
                Sample(
                    "gauge",
                    "plantstream_run_messages_per_second",
                    "Measurements per second of the source over the last 10 s.",
                    lab,
                    rates.get(src, 0.0),
                ),
                Sample(
                    "gauge",
                    "plantstream_run_last_value_timestamp_seconds",
                    "Time of the source's newest measurement, epoch seconds.",
                    lab,
                    last_ts.get(src, 0) / 1000,
                ),
            ]
        for table, n in sorted(tel.rows().items()):
            out.append(
                Sample(
                    "gauge",
                    "plantstream_run_result_records",
                    "Records on the table's result topic (rows on their way to ClickHouse).",
                    {"table": table},
                    n,
                )
            )
        for kind, n in sorted(kinds.items()):
            out.append(
                Sample(
                    "counter",
                    "plantstream_run_deadletters",
                    "Dead letters on the dead-letter topic by reason kind.",
                    {"reason": kind},
                    n,
                )
            )
        lag = tel.lag()
        if lag is not None:
            out.append(
                Sample(
                    "gauge",
                    "plantstream_run_kafka_lag_records",
                    "Measurements not yet in the flows' newest recovery snapshot.",
                    {},
                    lag,
                )
            )
        out.append(
            Sample(
                "gauge",
                "plantstream_run_open_alerts",
                "Alerts raised and not cleared.",
                {},
                len(tel.open_alerts()),
            )
        )
        return out


def _dsn(cfg: PlantConfig, state_dir: Path) -> str:
    return (
        cfg.clickhouse.url
        or os.environ.get("PLANTSTREAM_CLICKHOUSE_URL")
        or f"chdb://{(state_dir / 'clickhouse').resolve()}"
    )


def _station_host(cfg: PlantConfig) -> str:
    """The address of this run's station on this box (``0.0.0.0`` / ``::`` listen on loopback too)."""
    host = cfg.station.host
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _station_url(cfg: PlantConfig, port: int) -> str:
    """Where the station of this run answers."""
    host = _station_host(cfg)
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if cfg.station.tls_certfile else 'http'}://{host}:{port}"


def _station_child(cfg: PlantConfig, cfg_path: str, bootstrap: str, clickhouse_url: str,
                   env: dict[str, str], logs: Path, port: int) -> Child:
    """The operator station (``station.enabled``): ``plantstream station`` with the run's Kafka
    and ClickHouse (docs/station.md); ``/readyz`` on the station's own port (``station.port``,
    0: a free one, chosen by the caller)."""
    return Child(
        "station",
        python_argv("-m", "plantstream", "station", "--config", cfg_path, "--bootstrap", bootstrap,
                    "--clickhouse", clickhouse_url, "--port", str(port)),
        env, logs / "station.log", role="station", health_port=port,
        health_tls=cfg.station.tls_certfile is not None, health_host=_station_host(cfg),
    )


def run(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Plant config YAML (plantstream init writes one).")
    ],
    flows: Annotated[str, typer.Option("--flows", help="Comma-separated flow names, or all.")] = "all",
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            help="Seconds to run once started, then stop cleanly (default: until Ctrl-C or SIGTERM).",
        ),
    ] = None,
    state_dir: Annotated[
        Path,
        typer.Option("--state-dir", help="Recovery store, spools, embedded ClickHouse, logs and the lock."),
    ] = Path(".plantstream/run"),
    snapshot_s: Annotated[
        float,
        typer.Option(
            "--snapshot-interval", help="Seconds between the flows' recovery snapshots (epochs).", min=0.5
        ),
    ] = 5.0,
    log_every: Annotated[
        float,
        typer.Option(
            "--log-every", help="Seconds between plain status lines when not on a terminal.", min=1.0
        ),
    ] = 30.0,
    live: Annotated[
        bool | None,
        typer.Option(
            "--live/--no-live", help="The live status view (default: when standard output is a terminal)."
        ),
    ] = None,
    health_port: Annotated[
        int | None,
        typer.Option(
            "--health-port",
            help="Serve /healthz, /readyz and /metrics of the run on this port (0: a free one; "
            "default: producer.health_port of the config; unset: off).",
            min=0,
            max=65535,
        ),
    ] = None,
    clickhouse_port: Annotated[
        int | None,
        typer.Option(
            "--clickhouse-port",
            help="Serve the embedded ClickHouse read-only over HTTP on this port, for Grafana and "
            "plantstream kpi while the run runs (0: a free one; default: clickhouse.serve_port, else 8123).",
            min=0,
            max=65535,
        ),
    ] = None,
    clickhouse_http: Annotated[
        bool,
        typer.Option(
            "--clickhouse-http/--no-clickhouse-http", help="The read-only ClickHouse HTTP endpoint."
        ),
    ] = True,
) -> None:
    """Run the plant: Kafka, ClickHouse, every flow and a connector per source, supervised."""
    from bytewax.recovery import init_db_dir

    from plantstream.cli.endpoints import (
        choose_serve_port,
        public_url,
        remove_endpoints,
        wait_http,
        write_endpoints,
    )
    from plantstream.connectors.embedded import TansuBroker, free_port
    from plantstream.connectors.health import HealthServer
    from plantstream.flows.main import create_topics
    from plantstream.flows.registry import result_topics, select

    cfg = load_config(config)
    chosen = select(flows)
    sources = cfg.source_list()
    state_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = str(config.resolve())
    err = stderr()
    use_live = sys.stdout.isatty() if live is None else live
    console = Console()

    def event(text: str) -> None:
        line = f"{datetime.now(UTC).strftime('%H:%M:%S')} {text}"
        if view is not None:
            view.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            err.print(line, soft_wrap=True)

    view: Live | None = None

    lock = StateLock(state_dir)
    lock.acquire()
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    sup = Supervisor(on_event=event)
    broker: TansuBroker | None = None
    tel: Telemetry | None = None
    endpoint = RunEndpoint(sup)
    server: HealthServer | None = None
    started = time.monotonic()
    try:
        run_port = health_port if health_port is not None else cfg.producer.health_port
        if run_port is not None:
            server = HealthServer(
                run_port, endpoint.health, host=cfg.producer.health_host, metrics=endpoint.metrics
            ).start()
            event(
                f"health and metrics of the run on http://{cfg.producer.health_host}:{server.port}"
                "/healthz, /readyz and /metrics"
            )
        kconf = cfg.kafka.client_config()
        if not cfg.kafka.bootstrap_servers:
            broker = TansuBroker(state_dir / "logs").start()
            kconf["bootstrap.servers"] = broker.bootstrap
            event(
                f"embedded Kafka broker on {broker.bootstrap} (pid {broker.proc.pid if broker.proc else '?'})"
            )
        create_topics(kconf, chosen, cfg.kafka)
        dsn = _dsn(cfg, state_dir)
        ch_url, serve = public_url(dsn), dict[str, str]()
        if dsn.startswith("chdb:") and clickhouse_http:  # the flows process serves its chDB read-only
            ch_port, why = choose_serve_port(
                clickhouse_port, cfg.clickhouse.serve_port, cfg.clickhouse.serve_host
            )
            if why:
                event(why)
            ch_url = f"http://{cfg.clickhouse.serve_host}:{ch_port}"
            serve = {"PLANTSTREAM__CLICKHOUSE__SERVE_PORT": str(ch_port)}
        base = child_env(
            os.environ,
            {
                "PLANTSTREAM__KAFKA__BOOTSTRAP_SERVERS": kconf["bootstrap.servers"],
                "PLANTSTREAM__CLICKHOUSE__URL": dsn,
            },
        )
        station_port = None
        if cfg.station.enabled and not (dsn.startswith("chdb:") and not serve):
            station_port = cfg.station.port or free_port()
        write_endpoints(
            state_dir,
            station=_station_url(cfg, station_port) if station_port else None,
            kafka_bootstrap=kconf["bootstrap.servers"],
            kafka_embedded=broker is not None,
            clickhouse_url=ch_url if serve or not dsn.startswith("chdb:") else None,
            clickhouse_embedded=dsn.startswith("chdb:"),
            chdb_path=state_dir / "clickhouse" if dsn.startswith("chdb:") else None,
            health=f"http://{cfg.producer.health_host}:{server.port}" if server else None,
        )
        logs = state_dir / "logs"
        sup.run_task(
            Child(
                "migrate",
                python_argv("-m", "plantstream", "db", "migrate", "--config", cfg_path),
                base,
                logs / "migrate.log",
            )
        )
        event(f"ClickHouse migrated ({dsn.split('@')[-1]})")
        recovery = state_dir / "recovery"
        if not any(recovery.glob("part-*.sqlite3")):
            recovery.mkdir(parents=True, exist_ok=True)
            init_db_dir(recovery, 1)
        flows_port = free_port()
        flows_child = sup.add(
            Child(
                "flows",
                python_argv(
                    "-m",
                    "bytewax.run",
                    "plantstream.flows.main:get_flow()",
                    "-w",
                    "1",
                    "-r",
                    str(recovery),
                    "-s",
                    f"{snapshot_s:g}",
                    "-b",
                    "0",
                ),
                {
                    **base,
                    "PLANTSTREAM_CONFIG": cfg_path,
                    "PLANTSTREAM_FLOWS": ",".join(chosen),
                    "PLANTSTREAM_STOP": "signal",
                    "PLANTSTREAM_HEALTH_PORT": str(flows_port),
                    **serve,
                },
                logs / "flows.log",
                role="flows",
                health_port=flows_port,
            )
        )
        if not sup.start(flows_child, wait_ready_s=FLOWS_READY_S) and not stop.is_set():
            event(f"the flows are not ready yet; starting the connectors anyway (see {flows_child.log_path})")
        if serve:
            ok = wait_http(ch_url, 10.0)
            event(f"ClickHouse HTTP (read-only) for Grafana and plantstream kpi: {ch_url}" if ok else
                  f"the ClickHouse HTTP endpoint {ch_url} does not answer (see {flows_child.log_path})")
        for src in sources:
            port = free_port()
            child = sup.add(
                Child(
                    f"source {src.name}",
                    python_argv(
                        "-m",
                        "plantstream",
                        "connect",
                        src.kind,
                        "--config",
                        cfg_path,
                        "--source",
                        src.name,
                        "--state-dir",
                        str(state_dir / "sources" / src.name),
                        "--health-port",
                        str(port),
                        "--bootstrap",
                        kconf["bootstrap.servers"],
                    ),
                    base,
                    logs / f"source-{src.name}.log",
                    role="source",
                    health_port=port,
                )
            )
            sup.start(child)
        if not sources:
            event("no sources in the config (sources:, opcua:, mqtt:): only the flows run")
        if cfg.station.enabled:
            if station_port is None:
                event("station.enabled: the station reads ClickHouse over HTTP; drop --no-clickhouse-http")
            else:
                boot = kconf["bootstrap.servers"]
                sup.start(sup.add(_station_child(cfg, cfg_path, boot, ch_url, base, logs, station_port)))
                event(f"operator station on {_station_url(cfg, station_port)}")
        tel = Telemetry(kconf, recovery, result_topics(chosen.values())).start()
        endpoint.telemetry = tel
        endpoint.started = True
        deadline = None if duration is None else time.monotonic() + duration  # after start-up
        last_line = time.monotonic()
        view = (
            Live(status_view(sup, tel, started, ch_url if serve else None), console=console,
                 refresh_per_second=1, transient=False)
            if use_live
            else None
        )
        with view if view is not None else contextlib.nullcontext():
            while not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                sup.check()
                sup.poll_health()
                if view is not None:
                    view.update(status_view(sup, tel, started, ch_url if serve else None))
                elif time.monotonic() - last_line >= log_every:
                    last_line = time.monotonic()
                    event(status_line(sup, tel))
                stop.wait(1.0)
        t_stop = time.monotonic()
        event("stopping: connectors (spool to Kafka), then the flows (last epoch), then the broker")
        ended = sup.stop()
        for name, how in ended.items():
            event(f"{name}: {how}")
        event(f"stopped in {time.monotonic() - t_stop:.1f}s")
    except BaseException:
        sup.stop()
        raise
    finally:
        if server is not None:
            server.stop()
        if tel is not None:
            tel.stop()
        if broker is not None:
            broker.stop()
        remove_endpoints(state_dir)
        lock.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    err.print(f"plantstream run: state in {state_dir}, logs in {state_dir / 'logs'}")


__all__ = ["RunError", "run"]
