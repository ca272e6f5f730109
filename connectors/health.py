"""Liveness, readiness and metrics of a connector or flows process over HTTP: ``/healthz``,
``/readyz`` and ``/metrics``.

A small standard-library server on its own daemon thread (``producer.health_port``; off when
unset), one port per process. Each health request calls the connector's ``health()`` and
answers 200 with its JSON when the flag holds, 503 otherwise:

``/healthz`` (liveness)  ``live``: the producer thread runs. A dead producer thread would
                         otherwise leave the process up while nothing reaches Kafka; the
                         liveness probe restarts the pod, and the spool goes first at the
                         next start.
``/readyz`` (readiness)  ``ready``: live, the source is connected and Kafka confirms records
                         (none waiting for longer than the stall bound).

``/metrics`` (Prometheus) the process's :class:`~plantstream.connectors.metrics.Metrics`, when
                         given (text exposition format 0.0.4; docs/metrics.md).

The flows' entry point serves :class:`FlowHealth` the same way: ready while Kafka answers,
ClickHouse takes inserts and the outbox workers keep up; live while the dataflow turns
(:class:`Progress`, stamped by a :class:`WatchedSource`).

Examples
--------
>>> import urllib.request
>>> state = {"live": True, "ready": False}
>>> with HealthServer(0, lambda: state, host="127.0.0.1") as server:
...     url = f"http://127.0.0.1:{server.port}"
...     urllib.request.urlopen(url + "/healthz").status
...     try:
...         urllib.request.urlopen(url + "/readyz")
...     except urllib.error.HTTPError as exc:
...         exc.code
200
503
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from plantstream.connectors.metrics import Buckets, Metrics
from plantstream.schemas.errors import ConnectorError

log = logging.getLogger(__name__)

HealthFn = Callable[[], dict[str, Any]]
"""Returns at least ``live`` and ``ready`` (bools); the rest is reported as is."""

_PATHS = {"/healthz": "live", "/livez": "live", "/readyz": "ready"}


class HealthServer:
    """Serve ``/healthz`` and ``/readyz`` from ``health()`` on ``host:port`` (0: a free port),
    and ``/metrics`` from ``metrics`` when given.

    This is the one HTTP endpoint of a plantstream process: a supervisor that runs several
    components in one process builds one :class:`~plantstream.connectors.metrics.Metrics`,
    ``watch_*``-es each component into it and serves it here with a ``health()`` that combines
    theirs.
    """

    def __init__(self, port: int, health: HealthFn, *, host: str = "0.0.0.0",
                 metrics: Metrics | None = None) -> None:
        self._health = health
        self.metrics = metrics
        self._host = host
        self._want = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self._want

    def start(self) -> HealthServer:
        health = self._health
        metrics = self.metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics" and metrics is not None:
                    try:
                        data, ctype = metrics.render()
                    except Exception as exc:  # a broken collector must not kill the endpoint
                        log.exception("rendering /metrics failed")
                        self._reply(500, {"error": repr(exc)})
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                flag = _PATHS.get(path)
                if flag is None:
                    paths = "/healthz, /readyz or /metrics" if metrics is not None else "/healthz or /readyz"
                    self._reply(404, {"error": f"unknown path {self.path!r}; use {paths}"})
                    return
                try:
                    state = health()
                except Exception as exc:  # a failing check is an unhealthy process
                    state = {"live": False, "ready": False, "error": repr(exc)}
                self._reply(200 if state.get(flag) else 503, state)

            def _reply(self, code: int, body: dict[str, Any]) -> None:
                data = orjson.dumps(body, default=str)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        try:
            self._server = ThreadingHTTPServer((self._host, self._want), Handler)
        except OSError as exc:
            msg = (f"cannot serve /healthz on {self._host}:{self._want}: {exc}; set "
                   "producer.health_port to a free port (or leave it unset)")
            raise ConnectorError(msg) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="plantstream-health",
                                        daemon=True)
        self._thread.start()
        log.info("health endpoint on http://%s:%d/healthz and /readyz%s", self._host, self.port,
                 " (metrics on /metrics)" if self.metrics is not None else "")
        return self

    def stop(self) -> None:
        """Stop serving. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the flows' health -----------------------------------------------------------------------------


class Progress:
    """When each source partition of a dataflow last turned (``next_batch`` was called).

    Bytewax calls a Kafka partition's ``next_batch`` at least every 50 ms while its worker loop
    turns, with or without input; a worker blocked in a step or a sink stops calling it. So the
    oldest stamp tells how long the dataflow has been stuck.

    >>> p = Progress(); p.beat("0"); p.stalled_s() < 1.0
    True
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._snap: dict[str, float] = {}
        self._lock = threading.Lock()
        self.epochs = Buckets()
        """Wall time between two snapshots of a partition: the epochs' durations (``/metrics``)."""

    def snapshot(self, part: str) -> None:
        """The partition was snapshotted: an epoch of it ended."""
        now = self._clock()
        with self._lock:
            last = self._snap.get(part)
            self._snap[part] = now
        if last is not None:
            self.epochs.observe(now - last)

    def beat(self, part: str) -> None:
        with self._lock:
            self._last[part] = self._clock()

    def done(self, part: str) -> None:
        """The partition ended (end of input): it no longer counts."""
        with self._lock:
            self._last.pop(part, None)
            self._snap.pop(part, None)

    def stalled_s(self) -> float:
        """Seconds since the partition that turned least recently last turned (0: none yet)."""
        with self._lock:
            oldest = min(self._last.values(), default=None)
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest)


class _WatchedPartition(StatefulSourcePartition[Any, Any]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any], progress: Progress, part: str) -> None:
        self._inner = inner
        self._progress = progress
        self._part = part

    def next_batch(self) -> list[Any]:
        self._progress.beat(self._part)
        try:
            return list(self._inner.next_batch())
        except StopIteration:
            self._progress.done(self._part)
            raise

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> Any:
        self._progress.snapshot(self._part)
        return self._inner.snapshot()

    def close(self) -> None:
        self._progress.done(self._part)
        self._inner.close()


class WatchedSource(FixedPartitionedSource[Any, Any]):
    """``inner`` (a partitioned source), each partition stamping :class:`Progress` as it turns."""

    def __init__(self, inner: FixedPartitionedSource[Any, Any], progress: Progress) -> None:
        self.inner = inner
        self.progress = progress

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _WatchedPartition:
        inner = self.inner.build_part(step_id, for_part, resume_state)
        return _WatchedPartition(inner, self.progress, for_part)


class FlowHealth:
    """The flows' ``health()`` for :class:`HealthServer`: liveness and readiness that mean something.

    ready
        Kafka answers a metadata request (checked at most every ``kafka_check_s``, 2 s timeout),
        the ClickHouse sink's newest attempt succeeded (:attr:`SinkStats.failing` is false), and
        every outbox worker runs with no record waiting longer than ``ready_max_age_s``.
    live
        The dataflow turns: no source partition has gone ``stall_s`` without being polled, unless
        Kafka or ClickHouse is down (then the flow waits for them, by design, and a restart
        would not help: readiness reports it); and no outbox worker died on an error.
    """

    def __init__(self, kafka_conf: Mapping[str, Any], *, sink_stats: Any = None, workers: Sequence[Any] = (),
                 progress: Progress | None = None, stall_s: float = 300.0, ready_max_age_s: float = 300.0,
                 kafka_check_s: float = 5.0, flows: Sequence[str] = ()) -> None:
        self._kafka_conf = dict(kafka_conf)
        self.sink_stats = sink_stats
        self.workers = list(workers)
        self.progress = progress
        self.stall_s = stall_s
        self.ready_max_age_s = ready_max_age_s
        self.kafka_check_s = kafka_check_s
        self.flows = list(flows)
        self._kafka: tuple[float, bool, str] | None = None
        self._admin: Any = None
        self._lock = threading.Lock()

    def kafka(self) -> tuple[bool, str]:
        """Whether Kafka answers (cached for ``kafka_check_s``), and the error when not."""
        with self._lock:
            now = time.monotonic()
            if self._kafka is not None and now - self._kafka[0] < self.kafka_check_s:
                return self._kafka[1], self._kafka[2]
            from confluent_kafka import KafkaException
            from confluent_kafka.admin import AdminClient

            try:
                if self._admin is None:
                    self._admin = AdminClient(self._kafka_conf)
                self._admin.list_topics(timeout=2.0)
                ok, error = True, ""
            except KafkaException as exc:
                ok, error = False, str(exc)
            self._kafka = (time.monotonic(), ok, error)
            return ok, error

    def __call__(self) -> dict[str, Any]:
        kafka_ok, kafka_error = self.kafka()
        stats = self.sink_stats
        ch_ok = stats is None or not stats.failing
        outbox = [w.status() for w in self.workers]
        failed = [w for w in self.workers if getattr(w, "failure", None) is not None]
        lag_ok = all(s["running"] and s["oldest_age_s"] <= self.ready_max_age_s for s in outbox)
        stalled = self.progress.stalled_s() if self.progress is not None else 0.0
        stuck = stalled > self.stall_s and kafka_ok and ch_ok
        live = not stuck and not failed
        return {
            "live": live,
            "ready": live and kafka_ok and ch_ok and lag_ok,
            "flows": self.flows,
            "kafka": {"ok": kafka_ok, "error": kafka_error},
            "clickhouse": {"ok": ch_ok, "last_error": getattr(stats, "last_error", "") if not ch_ok else "",
                           "last_success_at": getattr(stats, "last_success_at", None)},
            "dataflow": {"stalled_s": round(stalled, 3), "stall_s": self.stall_s, "stuck": stuck},
            "outbox": outbox,
        }
