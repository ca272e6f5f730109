"""ClickHouse: connecting (server or embedded chDB), migrations, and the batched result sink.

The DSN is ``--clickhouse``, else ``PLANTSTREAM_CLICKHOUSE_URL``, else the embedded default
``chdb://.plantstream/clickhouse`` in the working directory. ``http(s)://user:pass@host:8123/db``
reaches a real server through the same client API; ``https`` turns TLS on (``verify``,
``ca_cert``, ``client_cert`` from the ``clickhouse:`` config section).

The sink (:class:`ClickHouseSink`) batches by size and by time, writes one insert per table per
batch with a deterministic ``insert_deduplication_token``, retries with exponential backoff
while ClickHouse is unreachable (holding the flow back, never dropping) and counts what it did
in :class:`SinkStats` (rows, batches, retries, batch latency, seconds held back).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

import clickhouse_connect
import orjson
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from plantstream.connectors.metrics import count_reasons
from plantstream.schemas.errors import ConfigError, ConnectorError
from plantstream.schemas.redact import has_credentials, mask_text, mask_url, warn_once

if TYPE_CHECKING:
    from plantstream.schemas.config import ClickHouseConfig

log = logging.getLogger(__name__)

ENV_URL = "PLANTSTREAM_CLICKHOUSE_URL"
DEFAULT_EMBEDDED_PATH = Path(".plantstream") / "clickhouse"
MIGRATIONS_DIR: Traversable = resources.files("plantstream.schemas").joinpath("clickhouse")
"""The numbered migrations shipped in the package (``plantstream/schemas/clickhouse``)."""

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
    secure: bool | None = None,
    verify: bool = True,
    ca_cert: str | None = None,
    client_cert: str | None = None,
    client_cert_key: str | None = None,
) -> Client:
    """Open a clickhouse-connect client for ``dsn``; creates ``database`` when missing.

    For ``chdb://PATH`` the folder is created. Only one process may open a chDB path at a time;
    threads of that process share it. For a server, ``https://`` (or ``secure=True``) uses TLS:
    ``verify`` checks the server certificate against the system store or ``ca_cert`` (a PEM
    file); ``client_cert``/``client_cert_key`` authenticate with a certificate (mutual TLS).
    """
    dsn = resolve_dsn(dsn)
    try:
        parsed = urlparse(dsn)
    except ValueError as exc:
        msg = f"ClickHouse DSN {_redact(dsn)!r} is not a URL ({exc}); use chdb:///path or http(s)://host:8123"
        raise ConfigError(msg) from None
    if parsed.scheme not in {"chdb", "http", "https"}:
        msg = (
            f"ClickHouse DSN {_redact(dsn)!r} has scheme {parsed.scheme!r}; use chdb:///path for the "
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
    if not is_embedded(dsn):
        kwargs.update(_tls_kwargs(dsn, secure, verify, ca_cert, client_cert, client_cert_key))
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
            if not (settings or {}).get("readonly") and not client.command(f"EXISTS DATABASE {database}"):
                client.command(f"CREATE DATABASE IF NOT EXISTS {database}")  # a reader need not create it
            client.close()
            client = clickhouse_connect.get_client(**kwargs, database=database)
    except ClickHouseError as exc:
        msg = f"cannot open ClickHouse at {_redact(dsn)}: {mask_text(str(exc))}"
        raise ConnectorError(msg) from exc
    if not is_embedded(dsn) and (password or has_credentials(dsn)) and not kwargs.get("secure"):
        warn_once(log, f"ClickHouse: the password of user {username or 'default'!r} is sent in clear over "
                       f"{_redact(dsn)}; use an https:// URL (port 8443) or clickhouse.secure: true")
    return client


Account = Literal["writer", "reader", "migrator"]
"""Which ClickHouse account a client connects as (see
:class:`~plantstream.schemas.config.ClickHouseConfig`)."""


def account_credentials(cfg: ClickHouseConfig, account: Account = "writer") -> tuple[str | None, str | None]:
    """User name and password of ``account``: its own section, else the writer's (``username``).

    >>> from plantstream.schemas.config import ClickHouseConfig
    >>> cfg = ClickHouseConfig.model_validate({"username": "flows", "password": "w",
    ...     "reader": {"username": "grafana", "password": "r"}})
    >>> account_credentials(cfg, "reader"), account_credentials(cfg, "migrator")
    (('grafana', 'r'), ('flows', 'w'))
    """
    own = {"reader": cfg.reader, "migrator": cfg.migrator}.get(account)
    if own is not None:
        return own.username, own.password.get_secret_value() if own.password else None
    return cfg.username, cfg.password.get_secret_value() if cfg.password else None


def readonly_settings(final: bool = False) -> dict[str, int]:
    """Session settings of a read-only client: ClickHouse refuses writes, DDL and raising ``readonly``.

    ``final`` comes first: once ``readonly=1`` applies, no setting may change any more.

    >>> readonly_settings(final=True)
    {'final': 1, 'readonly': 1}
    """
    return {"final": 1, "readonly": 1} if final else {"readonly": 1}


def _tls_kwargs(dsn: str, secure: bool | None, verify: bool, ca_cert: str | None,
                client_cert: str | None, client_cert_key: str | None) -> dict[str, Any]:
    """clickhouse-connect TLS arguments for a server DSN (files are checked up front).

    >>> _tls_kwargs("https://ch:8443", None, True, None, None, None)
    {'secure': True, 'verify': True}
    >>> _tls_kwargs("http://ch:8123", None, True, None, None, None)
    {}
    """
    tls = secure if secure is not None else dsn.startswith("https:")
    if not tls:
        if ca_cert or client_cert:
            msg = (f"ClickHouse TLS files are set (clickhouse.ca_cert/client_cert) but {_redact(dsn)} "
                   "is plain http; use an https:// URL or set clickhouse.secure: true")
            raise ConfigError(msg)
        return {}
    out: dict[str, Any] = {"secure": True, "verify": verify}
    for name, path in (("ca_cert", ca_cert), ("client_cert", client_cert),
                       ("client_cert_key", client_cert_key)):
        if path is None:
            continue
        if not Path(path).is_file():
            msg = f"clickhouse.{name}: file {path!r} does not exist; give the path of a PEM file"
            raise ConfigError(msg)
        out[name] = path
    if client_cert_key and not client_cert:
        msg = "clickhouse.client_cert_key is set without clickhouse.client_cert; set both or neither"
        raise ConfigError(msg)
    return out


def connect_config(cfg: ClickHouseConfig, dsn: str | None = None, *, account: Account = "writer",
                   settings: Mapping[str, Any] | None = None) -> Client:
    """Open a client from the ``clickhouse:`` config section (``dsn`` overrides its ``url``).

    ``account`` picks the credentials (:func:`account_credentials`); ``settings`` are session
    settings sent with every query (e.g. :func:`readonly_settings`).
    """
    username, password = account_credentials(cfg, account)
    return connect(
        dsn or cfg.url, database=cfg.database, username=username, password=password, settings=settings,
        secure=cfg.secure, verify=cfg.verify, ca_cert=cfg.ca_cert, client_cert=cfg.client_cert,
        client_cert_key=cfg.client_cert_key,
    )


@contextmanager
def client_session(cfg: ClickHouseConfig, dsn: str | None = None, *, account: Account = "reader",
                   settings: Mapping[str, Any] | None = None) -> Iterator[Client]:
    """A client from the ``clickhouse:`` config section, closed when the block ends.

    The one way a reader (``plantstream kpi …``, ``query``, ``status``, the daily report) opens
    ClickHouse: ``with client_session(cfg.clickhouse, dsn) as client: …``. ``dsn`` overrides the
    section's ``url``, as in :func:`connect_config`. Readers connect as the ``reader`` account
    (the writer's when none is configured); ``db migrate`` passes ``account="migrator"``.
    """
    client = connect_config(cfg, dsn, account=account, settings=settings)
    try:
        yield client
    finally:
        client.close()


def config_factory(cfg: ClickHouseConfig, dsn: str | None = None) -> ClientFactory:
    """A client factory for :class:`ClickHouseSink` from the ``clickhouse:`` config section.

    The DSN is resolved once, now (argument, ``url``, environment, embedded default).
    """
    resolved = resolve_dsn(dsn or cfg.url)
    return lambda: connect_config(cfg, resolved)


def _redact(dsn: str) -> str:
    return mask_url(dsn)


# -- migrations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def load_migrations(directory: Traversable = MIGRATIONS_DIR) -> list[Migration]:
    """Numbered SQL files ``NNN_name.sql``; statements separated by ``;`` at line end."""
    out = []
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
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


_ACCESS_CONTROL = re.compile(
    r"^\s*(CREATE|ALTER|DROP)\s+(USER|ROLE|SETTINGS\s+PROFILE|PROFILE|QUOTA|ROW\s+POLICY|POLICY)\b"
    r"|^\s*(GRANT|REVOKE|SET\s+DEFAULT\s+ROLE)\b",
    re.IGNORECASE,
)
GRAFANA_PASSWORD_ENV = "PLANTSTREAM_GRAFANA_PASSWORD"


def is_access_control(statement: str) -> bool:
    """True for users, roles, settings profiles, quotas, policies and grants.

    >>> is_access_control("CREATE USER IF NOT EXISTS grafana"), is_access_control("GRANT SELECT ON x.* TO r")
    (True, True)
    >>> is_access_control("CREATE TABLE users (id UInt64) ENGINE = Memory")
    False
    """
    return bool(_ACCESS_CONTROL.match(statement))


def is_embedded_client(client: Client) -> bool:
    """True when ``client`` talks to embedded chDB (which has no users, roles or grants)."""
    return type(client).__name__ == "ChdbClient"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _reader_password(cfg: ClickHouseConfig | None, environ: Mapping[str, str]) -> str | None:
    if cfg is not None and cfg.reader is not None and cfg.reader.password is not None:
        return cfg.reader.password.get_secret_value()
    return environ.get(GRAFANA_PASSWORD_ENV) or None


def _server_statement(statement: str, client: Client, environ: Mapping[str, str],
                      cfg: ClickHouseConfig | None = None) -> str:
    """Fill the placeholders of an access-control statement: ``{database}``, ``{grafana_password}``."""
    if "{database}" in statement:
        statement = statement.replace("{database}", f"`{client.database or 'default'}`")
    if "{grafana_password}" in statement:
        password = _reader_password(cfg, environ)
        if not password:
            msg = (f"migrating a ClickHouse server creates the read-only user 'grafana': set "
                   f"{GRAFANA_PASSWORD_ENV} (or clickhouse.reader.password) to its password before "
                   "`plantstream db migrate`")
            raise ConfigError(msg)
        statement = statement.replace("{grafana_password}", _quote(password))
    return statement


def _ident(name: str) -> str:
    return "`" + name.replace("`", "") + "`"


def user_statements(cfg: ClickHouseConfig | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The statements that create the reader and writer accounts and (re)set their passwords.

    Run by :func:`migrate` on a server after the numbered migrations, every time: ``CREATE USER
    IF NOT EXISTS`` for a first install, ``ALTER USER … IDENTIFIED`` so that a rotated password
    (a changed Secret) takes effect. The reader is ``clickhouse.reader`` (default ``grafana``,
    password from ``clickhouse.reader.password`` or ``PLANTSTREAM_GRAFANA_PASSWORD``); the
    writer is ``clickhouse.username`` when a separate ``clickhouse.migrator`` runs the migration.

    >>> from plantstream.schemas.config import ClickHouseConfig
    >>> cfg = ClickHouseConfig.model_validate({"username": "flows", "password": "w1",
    ...     "migrator": {"username": "admin", "password": "a"}})
    >>> for s in user_statements(cfg, {"PLANTSTREAM_GRAFANA_PASSWORD": "g"}): print(s[:60])
    CREATE USER IF NOT EXISTS `grafana` IDENTIFIED WITH sha256_p
    ALTER USER `grafana` IDENTIFIED WITH sha256_password BY 'g'
    GRANT plantstream_reader TO `grafana`
    CREATE USER IF NOT EXISTS `flows` IDENTIFIED WITH sha256_pas
    ALTER USER `flows` IDENTIFIED WITH sha256_password BY 'w1' D
    GRANT plantstream_writer TO `flows`
    """
    env = os.environ if environ is None else environ
    out: list[str] = []
    accounts: list[tuple[str, str, str, str]] = []
    reader = cfg.reader.username if cfg is not None and cfg.reader is not None else "grafana"
    reader_pw = _reader_password(cfg, env)
    if reader_pw:
        accounts.append((reader, reader_pw, "plantstream_reader", " SETTINGS PROFILE 'plantstream_grafana'"))
    if cfg is not None and cfg.migrator is not None and cfg.username and cfg.password is not None \
            and cfg.username not in (cfg.migrator.username, reader):
        accounts.append((cfg.username, cfg.password.get_secret_value(), "plantstream_writer", ""))
    for name, password, role, profile in accounts:
        auth = f"IDENTIFIED WITH sha256_password BY {_quote(password)}"
        out += [f"CREATE USER IF NOT EXISTS {_ident(name)} {auth}{profile} DEFAULT ROLE {role}",
                f"ALTER USER {_ident(name)} {auth}{profile} DEFAULT ROLE {role}",
                f"GRANT {role} TO {_ident(name)}"]
    return out


def migrate(client: Client, directory: Traversable = MIGRATIONS_DIR,
            environ: Mapping[str, str] | None = None, users: ClickHouseConfig | None = None) -> list[str]:
    """Apply the migrations not applied yet; return their names. Safe to run again.

    Access-control statements (``CREATE USER``, ``CREATE ROLE``, ``CREATE SETTINGS PROFILE``,
    ``GRANT`` …) only make sense on a server: embedded chDB has no user directory and refuses
    them, so there they are skipped with a log line naming each one. On a server their
    placeholders are filled: ``{database}`` (the client's database) and ``{grafana_password}``
    (from ``PLANTSTREAM_GRAFANA_PASSWORD``; migrating a server without it is an error). Then,
    on a server, the accounts of ``users`` (the ``clickhouse:`` section) are created or have
    their passwords reset (:func:`user_statements`), so password rotation is a migration.
    """
    env = os.environ if environ is None else environ
    embedded = is_embedded_client(client)
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
        "applied_at DateTime DEFAULT now()) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {r[0] for r in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for mig in load_migrations(directory):
        if mig.version in done:
            continue
        skipped = []
        for statement in mig.statements:
            if is_access_control(statement):
                if embedded:
                    skipped.append(" ".join(statement.split()[:3]))
                    continue
                statement = _server_statement(statement, client, env, users)
            client.command(statement)
        if skipped:
            log.info("migration %03d_%s: skipped %d access-control statements on embedded "
                        "chDB, which has no users or grants (a server applies them): %s",
                        mig.version, mig.name, len(skipped), "; ".join(skipped))
        client.insert("schema_migrations", [[mig.version, mig.name]], column_names=["version", "name"])
        applied.append(f"{mig.version:03d}_{mig.name}")
    if not embedded:
        for statement in user_statements(users, env):
            client.command(statement)
    return applied


# -- the sink ---------------------------------------------------------------------------------


@dataclass
class SinkStats:
    """What the sink did, for summaries and metrics. Shared by every sink partition.

    ``rows`` counts rows written per table; ``batches`` inserts that succeeded; ``retries``
    failed attempts that were retried; ``batch_seconds`` the total time of successful inserts
    (see :meth:`latency` for percentiles of the recent ones); ``held_back_s`` the time the flow
    spent waiting for ClickHouse to come back; ``last_error`` the newest failure.

    >>> s = SinkStats()
    >>> s.record("measurements", 10, 0.02)
    >>> s.as_dict()["rows_total"], s.as_dict()["batches"]
    (10, 1)
    """

    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    batches: int = 0
    retries: int = 0
    batch_seconds: float = 0.0
    held_back_s: float = 0.0
    last_error: str = ""
    last_success_at: float | None = None
    """Wall time (epoch seconds) of the newest insert that landed (the flows' readiness)."""
    last_failure_at: float | None = None
    """Wall time of the newest failed attempt."""
    deadletter_reasons: Counter[str] = field(default_factory=Counter)
    """Dead-letter rows written, by reason kind (:func:`plantstream.connectors.metrics.reason_kind`)."""
    _latencies: deque[float] = field(default_factory=lambda: deque(maxlen=1024), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, table: str, n: int, seconds: float | None = None) -> None:
        """Count ``n`` rows written to ``table`` (by one insert that took ``seconds``)."""
        with self._lock:
            self.rows[table] += n
            if seconds is not None:
                self.last_success_at = time.time()
                self.batches += 1
                self.batch_seconds += seconds
                self._latencies.append(seconds)

    def record_deadletters(self, rows: Iterable[Row]) -> None:
        """Count dead-letter rows that landed by the kind of their reason (``/metrics``)."""
        kinds: Counter[str] = Counter()
        count_reasons(kinds, (r.get("reason") for r in rows))
        with self._lock:
            self.deadletter_reasons.update(kinds)

    def record_failure(self, error: str, waited_s: float) -> None:
        with self._lock:
            self.retries += 1
            self.held_back_s += waited_s
            self.last_error = error
            self.last_failure_at = time.time()

    @property
    def rows_total(self) -> int:
        return sum(self.rows.values())

    def latency(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the latency of the last 1024 inserts, in seconds."""
        with self._lock:
            data = sorted(self._latencies)
        if not data:
            return 0.0
        return data[min(len(data) - 1, int(q * len(data)))]

    @property
    def failing(self) -> bool:
        """The newest attempt failed (no insert landed since): ClickHouse is away or refusing."""
        with self._lock:
            failed, ok = self.last_failure_at, self.last_success_at
        return failed is not None and (ok is None or failed > ok)

    def as_dict(self) -> dict[str, Any]:
        """The metrics as one JSON-able mapping (for summaries, logs and exporters)."""
        return {
            "rows": dict(sorted(self.rows.items())), "rows_total": self.rows_total,
            "batches": self.batches, "retries": self.retries,
            "batch_seconds": round(self.batch_seconds, 6),
            "batch_latency_p50_s": round(self.latency(0.5), 6),
            "batch_latency_p99_s": round(self.latency(0.99), 6),
            "held_back_s": round(self.held_back_s, 3), "last_error": self.last_error,
        }


ClientFactory = Callable[[], Client]


def dedup_token(table: str, columns: tuple[str, ...], data: list[list[Any]]) -> str:
    """A token that is the same for the same rows: ClickHouse drops a block it has seen.

    A retried insert whose first attempt did land (the answer was lost) is then not written
    twice, on tables with block deduplication (replicated, or
    ``non_replicated_deduplication_window``); elsewhere the ReplacingMergeTree key makes the
    repeat harmless.

    >>> dedup_token("t", ("a",), [[1]]) == dedup_token("t", ("a",), [[1]])
    True
    >>> dedup_token("t", ("a",), [[1]]) == dedup_token("t", ("a",), [[2]])
    False
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(table.encode())
    h.update("\x00".join(columns).encode())
    try:  # orjson is ~10x faster than repr; NaN and None both encode as null, harmlessly here
        blob = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=repr)
    except (TypeError, orjson.JSONEncodeError):
        blob = repr(data).encode()
    h.update(blob)
    return f"{table}-{h.hexdigest()}"


@dataclass(frozen=True, slots=True)
class JsonRows:
    """Rows as JSON objects, one a line (``JSONEachRow``), for ClickHouse to parse itself.

    What the archive hands the sink: mostly the Kafka messages as they came, inserted into
    ``into`` (``measurements_json``, a Null table whose materialized view fills
    ``measurements``) without a Python object per row. The sink counts them under the item's
    table. Should ClickHouse refuse ``data`` (a message plantstream accepted but ClickHouse
    does not, e.g. a key given twice), the sink writes ``clean(data)`` instead.
    """

    into: str
    data: bytes
    rows: int
    clean: Callable[[bytes], bytes] | None = None
    """``data`` re-encoded by plantstream, for when ClickHouse refuses it as sent."""

    def __len__(self) -> int:
        return self.rows


Sleep = Callable[[float], None]
Clock = Callable[[], float]


class _Writer:
    """One background thread that runs the sink's inserts in order, one batch at a time.

    ClickHouse's part of an insert (parsing, sorting, compressing — in chDB, in this process)
    runs without the GIL, so the flow goes on with the next batch meanwhile. :meth:`submit`
    waits while a batch is still being written (the flow is held back, as with a synchronous
    insert); :meth:`wait` returns when everything submitted is written, and both re-raise what
    a write raised.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._reported = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as exc:  # handed to the flow's thread by submit/wait
                self._error = exc
            finally:
                self._jobs.task_done()

    @property
    def failed(self) -> bool:
        """A write raised and the flow has been told (by :meth:`submit` or :meth:`wait`)."""
        return self._reported

    def _raise(self) -> None:
        if self._error is not None:
            self._reported = True
            raise self._error

    def submit(self, job: Callable[[], None]) -> None:
        self._raise()
        self._jobs.put(job)

    def wait(self) -> None:
        self._jobs.join()
        self._raise()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=60)


class _ClickHousePartition(StatefulSinkPartition[tuple[str, Row], None]):
    def __init__(self, factory: ClientFactory, batch_rows: int, stats: SinkStats,
                 retry_initial_s: float, retry_max_s: float, max_attempts: int,
                 flush_interval_s: float, dedup: bool, sleep: Sleep, clock: Clock,
                 background: bool = False) -> None:
        self._factory = factory
        self._client: Client | None = None
        self._batch_rows = batch_rows
        self._stats = stats
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._max_attempts = max_attempts
        self._flush_interval_s = flush_interval_s
        self._dedup = dedup
        self._sleep = sleep
        self._clock = clock
        self._pending: dict[str, list[Row]] = defaultdict(list)
        self._blocks: dict[str, list[JsonRows]] = defaultdict(list)
        self._count = 0
        self._oldest: float | None = None
        self._broken = False
        self._writer = _Writer("clickhouse-writer") if background else None

    def write_batch(self, values: list[tuple[str, Row]]) -> None:
        if not values:
            return
        pending, blocks = self._pending, self._blocks
        for table, row in values:
            if type(row) is JsonRows:
                blocks[table].append(row)
                self._count += len(row)
            else:
                pending[table].append(row)
                self._count += 1
        if self._oldest is None:
            self._oldest = self._clock()
        if (self._count >= self._batch_rows
                or self._clock() - self._oldest >= self._flush_interval_s):
            self.flush()

    def snapshot(self) -> None:
        # Called at the end of every epoch, before its offsets become the resume point:
        # flushing (and waiting for the writer) here means nothing acknowledged upstream is
        # still only in memory.
        self.flush(wait=True)
        return None

    def close(self) -> None:
        # After ClickHouse rejected rows (or a write failed and the flow was told) the flow is
        # stopping with that error: raising it again during Bytewax's teardown aborts the process.
        try:
            if not self._broken and not (self._writer is not None and self._writer.failed):
                self.flush(wait=True)
        finally:
            if self._writer is not None:
                self._writer.stop()
            self._reset_client()

    def flush(self, wait: bool = False) -> None:
        """Write what is pending (in the background writer, if any); ``wait`` for all of it."""
        if self._count:
            pending, blocks = self._pending, self._blocks
            self._pending, self._blocks = defaultdict(list), defaultdict(list)
            self._count = 0
            self._oldest = None
            if self._writer is None:
                self._write(pending, blocks)
            else:
                self._writer.submit(lambda: self._write(pending, blocks))
        if wait and self._writer is not None:
            self._writer.wait()

    def _write(self, pending: dict[str, list[Row]], blocks: dict[str, list[JsonRows]]) -> None:
        for table, rows in pending.items():
            if rows:
                self._insert(table, rows)
                if table == "deadletter":
                    self._stats.record_deadletters(rows)
        for table, parts in blocks.items():
            self._insert_blocks(table, parts)

    def _insert(self, table: str, rows: list[Row]) -> None:
        # Rows of one table may differ in which optional columns they carry: group by shape.
        shapes: dict[tuple[str, ...], list[list[Any]]] = defaultdict(list)
        for row in rows:
            shapes[tuple(row)].append(list(row.values()))
        for columns, data in shapes.items():
            self._insert_block(table, columns, data)

    def _insert_blocks(self, table: str, blocks: list[JsonRows]) -> None:
        by_target: dict[str, list[JsonRows]] = defaultdict(list)
        for block in blocks:
            by_target[block.into].append(block)
        for into, parts in by_target.items():
            self._insert_json(table, into, parts)

    def _insert_block(self, table: str, columns: tuple[str, ...], data: list[list[Any]]) -> None:
        settings = {"insert_deduplication_token": dedup_token(table, columns, data)} if self._dedup else None
        self._attempt(table, len(data), lambda client: client.insert(
            table, data, column_names=list(columns), settings=settings))

    def _insert_json(self, table: str, into: str, parts: list[JsonRows]) -> None:
        blob = b"\n".join(p.data for p in parts if p.rows)
        rows = sum(p.rows for p in parts)

        def settings_for(data: bytes) -> dict[str, str] | None:
            if not self._dedup:
                return None
            digest = hashlib.blake2b(data, digest_size=16).hexdigest()
            return {"insert_deduplication_token": f"{into}-{digest}"}

        def clean() -> bytes:
            return b"\n".join(p.clean(p.data) if p.clean is not None else p.data for p in parts if p.rows)

        self._attempt(table, rows, lambda client: client.raw_insert(
            into, None, blob, settings=settings_for(blob), fmt="JSONEachRow"),
            fallback=lambda client: client.raw_insert(
                into, None, (data := clean()), settings=settings_for(data), fmt="JSONEachRow"))

    def _attempt(self, table: str, rows: int, insert: Callable[[Client], Any],
                 fallback: Callable[[Client], Any] | None = None) -> None:
        """Run one insert until it lands: unreachable → backoff forever; rejected → a few times,
        switching to ``fallback`` (the same rows, encoded by plantstream) after the first."""
        delay = self._retry_initial_s
        rejected = 0
        while True:
            started = self._clock()
            try:
                if self._client is None:
                    self._client = self._factory()
                insert(self._client)
            except (OperationalError, ConnectorError, OSError) as exc:
                # ClickHouse unreachable: hold the flow back and retry, never drop.
                self._failed(table, exc, delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            except ClickHouseError as exc:
                # The server answered with an error: maybe transient (too many parts, a
                # restart), maybe the rows are wrong. Retry a few times, then stop the flow
                # with the error rather than dropping the rows.
                rejected += 1
                if fallback is not None:
                    log.warning("ClickHouse refused the %s rows as sent (%s); writing them re-encoded",
                                table, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
                    insert, fallback = fallback, None
                    continue
                if rejected >= self._max_attempts:
                    msg = (f"ClickHouse rejected {rows} rows for table {table!r} "
                           f"{rejected} times: {exc}")
                    self._broken = True
                    raise ConnectorError(msg) from exc
                self._failed(table, exc, delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            self._stats.record(table, rows, self._clock() - started)
            return

    def _failed(self, table: str, exc: Exception, delay: float) -> None:
        text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        log.warning("ClickHouse insert into %s failed (%s); retrying in %.1fs", table, text, delay)
        self._reset_client()
        self._stats.record_failure(text, delay)
        self._sleep(delay)

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
    A batch is written when it reaches ``batch_rows``, when its oldest row has waited
    ``flush_interval_s`` and at the end of every epoch, so rows are in ClickHouse before the
    epoch's input offsets become the resume point. While ClickHouse is unreachable the sink
    retries with exponential backoff (``retry_initial_s`` doubling up to ``retry_max_s``)
    forever and holds the flow back; an error answered by the server is retried
    ``max_attempts`` times, then stops the flow with it. Nothing is dropped.

    With ``background`` (the default) each partition writes from its own thread, one batch at a
    time and in order, so ClickHouse's work on a batch overlaps the flow's work on the next;
    the epoch-end flush waits for it, so the guarantee above holds. ``background=False`` writes
    in the flow's thread (tests with a controlled clock).

    Partitions are the unit of parallelism (``partitions`` of them, default one). At-least-once;
    duplicates after a retry or a resume are made harmless by every table's ReplacingMergeTree
    natural key, and each insert carries a deterministic ``insert_deduplication_token`` so
    tables with block deduplication drop an identical repeat outright.
    """

    def __init__(self, factory: ClientFactory, *, partitions: int = 1, batch_rows: int = 50_000,
                 stats: SinkStats | None = None, retry_initial_s: float = 0.5,
                 retry_max_s: float = 30.0, max_attempts: int = 5,
                 flush_interval_s: float = 1.0, dedup_tokens: bool = True,
                 sleep: Sleep = time.sleep, clock: Clock = time.monotonic,
                 background: bool = True) -> None:
        if partitions < 1:
            msg = "ClickHouseSink needs at least one partition"
            raise ConfigError(msg)
        if batch_rows < 1 or flush_interval_s <= 0 or retry_initial_s <= 0 or max_attempts < 1:
            msg = ("ClickHouseSink: batch_rows and max_attempts must be >= 1, flush_interval_s "
                   "and retry_initial_s > 0 (clickhouse: section of the plant config)")
            raise ConfigError(msg)
        self._factory = factory
        self._partitions = partitions
        self._batch_rows = batch_rows
        self.stats = stats if stats is not None else SinkStats()
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._max_attempts = max_attempts
        self._flush_interval_s = flush_interval_s
        self._dedup = dedup_tokens
        self._background = background
        self._sleep = sleep
        self._clock = clock

    @classmethod
    def from_config(cls, cfg: ClickHouseConfig, dsn: str | None = None, *,
                    stats: SinkStats | None = None) -> ClickHouseSink:
        """The sink as the ``clickhouse:`` config section describes it (TLS, batching, retry)."""
        return cls(config_factory(cfg, dsn), batch_rows=cfg.batch_rows, stats=stats,
                   retry_initial_s=cfg.retry_initial_s, retry_max_s=cfg.retry_max_s,
                   flush_interval_s=cfg.flush_interval_s)

    def list_parts(self) -> list[str]:
        return [f"clickhouse-{i}" for i in range(self._partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ClickHousePartition:
        return _ClickHousePartition(self._factory, self._batch_rows, self.stats,
                                    self._retry_initial_s, self._retry_max_s, self._max_attempts,
                                    self._flush_interval_s, self._dedup, self._sleep, self._clock,
                                    self._background)


def insert_rows(client: Client, table: str, rows: Iterable[Row]) -> int:
    """Insert rows outside a flow (migrations of reference data, tests); returns the count."""
    rows = list(rows)
    if rows:
        client.insert(table, [list(r.values()) for r in rows], column_names=list(rows[0]))
    return len(rows)
