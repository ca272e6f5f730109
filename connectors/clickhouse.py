"""ClickHouse: connecting (server or embedded chDB), migrations, and the batched result sink.

The DSN is ``--clickhouse``, else ``PLANTSTREAM_CLICKHOUSE_URL``, else the embedded default
``chdb://.plantstream/clickhouse`` in the working directory. ``http(s)://user:pass@host:8123/db``
reaches a real server through the same client API.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from schemas.errors import ConfigError, ConnectorError

log = logging.getLogger(__name__)

ENV_URL = "PLANTSTREAM_CLICKHOUSE_URL"
DEFAULT_EMBEDDED_PATH = Path(".plantstream") / "clickhouse"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "schemas" / "clickhouse"

Row = dict[str, Any]
"""One result row: column name → value; timestamps as epoch milliseconds (int)."""


def resolve_dsn(dsn: str | None = None) -> str:
    """The ClickHouse DSN to use: the argument, the environment, or embedded chDB."""
    if dsn:
        return dsn
    env = os.environ.get(ENV_URL)
    if env:
        return env
    return f"chdb://{DEFAULT_EMBEDDED_PATH.resolve()}"


def is_embedded(dsn: str) -> bool:
    return dsn.startswith("chdb:")


_chdb_lock = threading.Lock()


def connect(
    dsn: str | None = None,
    *,
    database: str | None = None,
    username: str | None = None,
    password: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Client:
    """Open a clickhouse-connect client for ``dsn``; creates ``database`` when missing.

    For ``chdb://PATH`` the folder is created. Only one process may open a chDB path at a time;
    threads of that process share it.
    """
    dsn = resolve_dsn(dsn)
    parsed = urlparse(dsn)
    if parsed.scheme not in {"chdb", "http", "https"}:
        msg = (
            f"ClickHouse DSN {dsn!r} has scheme {parsed.scheme!r}; use chdb:///path for the "
            "embedded engine or http(s)://host:8123 for a server"
        )
        raise ConfigError(msg)
    kwargs: dict[str, Any] = {"dsn": dsn}
    if username is not None:
        kwargs["username"] = username
    if password is not None:
        kwargs["password"] = password
    if settings:
        kwargs["settings"] = dict(settings)
    try:
        if is_embedded(dsn):
            path = dsn[len("chdb://"):]
            if path:
                Path(path).mkdir(parents=True, exist_ok=True)
            with _chdb_lock:
                client = clickhouse_connect.get_client(**kwargs)
        else:
            client = clickhouse_connect.get_client(**kwargs)
        if database:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
                msg = f"ClickHouse database name {database!r} must be an identifier"
                raise ConfigError(msg)
            client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
            client.close()
            client = clickhouse_connect.get_client(**kwargs, database=database)
    except ClickHouseError as exc:
        msg = f"cannot open ClickHouse at {_redact(dsn)}: {exc}"
        raise ConnectorError(msg) from exc
    return client


def _redact(dsn: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", dsn)


# -- migrations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Numbered SQL files ``NNN_name.sql``; statements separated by ``;`` at line end."""
    out = []
    for path in sorted(directory.glob("*.sql")):
        m = re.match(r"^(\d+)_(.+)\.sql$", path.name)
        if not m:
            continue
        text = "\n".join(
            line for line in path.read_text(encoding="utf-8").splitlines()
            if not line.lstrip().startswith("--")
        )
        statements = tuple(s.strip() for s in re.split(r";\s*(?:\n|$)", text) if s.strip())
        out.append(Migration(int(m.group(1)), m.group(2), statements))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        msg = f"two ClickHouse migrations share a number in {directory}: {versions}"
        raise ConfigError(msg)
    return out


def migrate(client: Client, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not applied yet; return their names. Safe to run again."""
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
        "applied_at DateTime DEFAULT now()) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {r[0] for r in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for mig in load_migrations(directory):
        if mig.version in done:
            continue
        for statement in mig.statements:
            client.command(statement)
        client.insert("schema_migrations", [[mig.version, mig.name]], column_names=["version", "name"])
        applied.append(f"{mig.version:03d}_{mig.name}")
    return applied


# -- the sink ---------------------------------------------------------------------------------


@dataclass
class SinkStats:
    """What the sink did, for summaries and metrics. Shared by every sink partition."""

    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    batches: int = 0
    retries: int = 0
    batch_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, table: str, n: int) -> None:
        with self._lock:
            self.rows[table] += n


ClientFactory = Callable[[], Client]


class _ClickHousePartition(StatefulSinkPartition[tuple[str, Row], None]):
    def __init__(self, factory: ClientFactory, batch_rows: int, stats: SinkStats,
                 retry_initial_s: float, retry_max_s: float, max_attempts: int) -> None:
        self._factory = factory
        self._client: Client | None = None
        self._batch_rows = batch_rows
        self._stats = stats
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._max_attempts = max_attempts
        self._pending: dict[str, list[Row]] = defaultdict(list)
        self._count = 0

    def write_batch(self, values: list[tuple[str, Row]]) -> None:
        pending = self._pending
        for table, row in values:
            pending[table].append(row)
        self._count += len(values)
        if self._count >= self._batch_rows:
            self.flush()

    def snapshot(self) -> None:
        # Called at the end of every epoch, before its offsets become the resume point:
        # flushing here means nothing acknowledged upstream is still only in memory.
        self.flush()
        return None

    def close(self) -> None:
        self.flush()
        if self._client is not None:
            self._client.close()
            self._client = None

    def flush(self) -> None:
        if not self._count:
            return
        for table, rows in list(self._pending.items()):
            if rows:
                self._insert(table, rows)
            del self._pending[table]
        self._count = 0

    def _insert(self, table: str, rows: list[Row]) -> None:
        # Rows of one table may differ in which optional columns they carry: group by shape.
        shapes: dict[tuple[str, ...], list[list[Any]]] = defaultdict(list)
        for row in rows:
            shapes[tuple(row)].append(list(row.values()))
        delay = self._retry_initial_s
        attempt = 0
        for columns, data in shapes.items():
            while True:
                attempt += 1
                started = time.perf_counter()
                try:
                    if self._client is None:
                        self._client = self._factory()
                    self._client.insert(table, data, column_names=list(columns))
                except (OperationalError, ConnectorError, OSError) as exc:
                    # ClickHouse unreachable: hold the flow back and retry, never drop.
                    self._stats.retries += 1
                    log.warning("ClickHouse insert into %s failed (%s); retrying in %.1fs",
                                table, exc, delay)
                    self._reset_client()
                    time.sleep(delay)
                    delay = min(delay * 2, self._retry_max_s)
                    continue
                except ClickHouseError as exc:
                    self._stats.retries += 1
                    if attempt >= self._max_attempts:
                        msg = f"ClickHouse rejected {len(data)} rows for table {table!r}: {exc}"
                        raise ConnectorError(msg) from exc
                    log.warning("ClickHouse insert into %s failed (%s); retrying", table, exc)
                    self._reset_client()
                    time.sleep(delay)
                    delay = min(delay * 2, self._retry_max_s)
                    continue
                self._stats.batch_seconds += time.perf_counter() - started
                self._stats.batches += 1
                self._stats.record(table, len(data))
                break

    def _reset_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing a broken client must not mask the retry
                log.debug("closing a failed ClickHouse client", exc_info=True)
        self._client = None


class ClickHouseSink(FixedPartitionedSink[tuple[str, Row], None]):
    """Write ``(table, row)`` items to ClickHouse, one insert per table per batch.

    Items arrive keyed (any string key, e.g. the machine id); the key picks the sink partition.
    A batch is written when it reaches ``batch_rows`` and at the end of every epoch, so rows
    are in ClickHouse before the epoch's input offsets become the resume point. While
    ClickHouse is unreachable the sink retries with exponential backoff and holds the flow back.

    Partitions are the unit of parallelism (``partitions`` of them, default one). At-least-once;
    duplicates after resume are made harmless by every table's ReplacingMergeTree natural key.
    """

    def __init__(self, factory: ClientFactory, *, partitions: int = 1, batch_rows: int = 50_000,
                 stats: SinkStats | None = None, retry_initial_s: float = 0.5,
                 retry_max_s: float = 30.0, max_attempts: int = 5) -> None:
        if partitions < 1:
            msg = "ClickHouseSink needs at least one partition"
            raise ConfigError(msg)
        self._factory = factory
        self._partitions = partitions
        self._batch_rows = batch_rows
        self.stats = stats if stats is not None else SinkStats()
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._max_attempts = max_attempts

    def list_parts(self) -> list[str]:
        return [f"clickhouse-{i}" for i in range(self._partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ClickHousePartition:
        return _ClickHousePartition(self._factory, self._batch_rows, self.stats,
                                    self._retry_initial_s, self._retry_max_s, self._max_attempts)


def insert_rows(client: Client, table: str, rows: Iterable[Row]) -> int:
    """Insert rows outside a flow (migrations of reference data, tests); returns the count."""
    rows = list(rows)
    if rows:
        client.insert(table, [list(r.values()) for r in rows], column_names=list(rows[0]))
    return len(rows)
