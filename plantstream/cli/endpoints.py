"""What a running ``plantstream run`` serves, and how other commands find it.

``run`` writes ``STATE_DIR/endpoints.json`` when it starts and removes it when it stops::

    {"pid": 4711, "started": "2026-12-03T11:32:56Z", "state_dir": "/plant/.plantstream/run",
     "kafka": {"bootstrap": "127.0.0.1:39092", "embedded": true},
     "clickhouse": {"url": "http://127.0.0.1:8123", "embedded": true, "read_only": true,
                    "path": "/plant/.plantstream/run/clickhouse"},
     "health": "http://127.0.0.1:9100", "station": "http://127.0.0.1:8080"}

``station`` is the operator station's URL when ``station.enabled`` (docs/station.md), else null.

With embedded chDB, ``clickhouse.url`` is the read-only HTTP endpoint the flows process serves
(:mod:`plantstream.connectors.chserve`); with a server, the server's URL without credentials.

The reading commands (``kpi …``, ``query``, ``status``) pick their ClickHouse with
:func:`reader_dsn`: ``--clickhouse`` first; then ``--state-dir`` (the live run's URL, else the
stopped run's chDB); then the config's ``clickhouse.url`` / ``PLANTSTREAM_CLICKHOUSE_URL``; then a
live run in the default state directory ``.plantstream/run``; then, when the embedded default
``.plantstream/clickhouse`` does not exist, a stopped run's chDB there (so ``plantstream kpi oee``
after ``plantstream run --duration …`` in the same folder reads that run); else the embedded default. A
``chdb://`` DSN that names the chDB of a live run is read through the run's URL instead (with a
note on standard error): a second process never opens a running run's chDB.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from plantstream.cli.supervisor import StateLock, pid_alive
from plantstream.connectors.clickhouse import DEFAULT_EMBEDDED_PATH
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import ConfigError

DEFAULT_STATE_DIR = Path(".plantstream/run")
ENDPOINTS = "endpoints.json"


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and it can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_serve_port(asked: int | None, configured: int | None,
                      host: str = "127.0.0.1") -> tuple[int, str | None]:
    """The port ``run`` serves embedded chDB on, and a note when it is not the one expected.

    ``asked`` (``--clickhouse-port``) or ``configured`` (``clickhouse.serve_port``) must be free
    (0 picks a free one); without either, 8123, or a free port when 8123 is taken (a local
    ClickHouse server, another run).
    """
    from plantstream.connectors.chserve import DEFAULT_PORT
    from plantstream.connectors.embedded import free_port

    wanted = asked if asked is not None else configured
    if wanted == 0:
        return free_port(), None
    if wanted is not None:
        if not port_free(wanted, host):
            what = "--clickhouse-port" if asked is not None else "clickhouse.serve_port"
            msg = (f"{what} {wanted}: the port is in use on {host}; choose another one, 0 for a free one, "
                   "or --no-clickhouse-http")
            raise ConfigError(msg)
        return wanted, None
    if port_free(DEFAULT_PORT, host):
        return DEFAULT_PORT, None
    port = free_port()
    return port, (f"port {DEFAULT_PORT} is in use (a ClickHouse server, another run?): "
                  f"serving ClickHouse HTTP on {port} instead")


def public_url(dsn: str) -> str:
    """``dsn`` without user and password (a reader brings its own credentials).

    >>> public_url("https://flows:secret@ch.plant:8443/plantstream?secure=1")
    'https://ch.plant:8443/plantstream'
    """
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme in ("http", "https") else dsn


def write_endpoints(state_dir: Path, *, kafka_bootstrap: str, kafka_embedded: bool,
                    clickhouse_url: str | None, clickhouse_embedded: bool, chdb_path: Path | None,
                    health: str | None, station: str | None = None) -> Path:
    """Write ``STATE_DIR/endpoints.json`` (atomically) for the run of this process."""
    data = {
        "pid": os.getpid(),
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "state_dir": str(state_dir.resolve()),
        "kafka": {"bootstrap": kafka_bootstrap, "embedded": kafka_embedded},
        "clickhouse": {"url": clickhouse_url, "embedded": clickhouse_embedded,
                       "read_only": clickhouse_embedded,
                       "path": str(chdb_path.resolve()) if chdb_path is not None else None},
        "health": health,
        "station": station,
    }
    path = state_dir / ENDPOINTS
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def remove_endpoints(state_dir: Path) -> None:
    """Remove the endpoints file of this process's run (a file another run wrote stays)."""
    path = state_dir / ENDPOINTS
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def live_endpoints(state_dir: Path) -> dict[str, Any] | None:
    """The endpoints of the run that holds ``state_dir`` now, or None (no run, or it is gone)."""
    try:
        data = json.loads((state_dir / ENDPOINTS).read_text())
    except (OSError, ValueError):
        return None
    pid = StateLock(state_dir).holder()
    if not isinstance(data, dict) or pid is None or data.get("pid") != pid or not pid_alive(pid):
        return None
    return data


def _live_url(state_dir: Path) -> str | None:
    live = live_endpoints(state_dir)
    if live is None:
        return None
    url = (live.get("clickhouse") or {}).get("url")
    return url if isinstance(url, str) and url else None


def reader_dsn(dsn: str | None, state_dir: Path | None, config: PlantConfig | None = None,
               note: Any = None) -> str | None:
    """The ClickHouse DSN a reading command uses (None: the config's or the environment's).

    ``note`` (a callable) is told when a chDB path of a live run is read through its URL.
    """
    cfg = config or PlantConfig()
    chosen = dsn
    if chosen is None and state_dir is not None:
        url = _live_url(state_dir)
        if url is not None:
            return url
        chdb_dir = state_dir / "clickhouse"
        if not chdb_dir.is_dir():
            msg = (f"--state-dir {state_dir}: no run is live there and it holds no embedded ClickHouse "
                   f"({chdb_dir} is missing); give the state directory of a `plantstream run`")
            raise ConfigError(msg)
        return f"chdb://{chdb_dir.resolve()}"
    if chosen is None:
        chosen = cfg.clickhouse.url or os.environ.get("PLANTSTREAM_CLICKHOUSE_URL")
    if chosen is None:
        live = _live_url(DEFAULT_STATE_DIR)
        if live is not None:
            return live
        stopped = DEFAULT_STATE_DIR / "clickhouse"
        if stopped.is_dir() and not DEFAULT_EMBEDDED_PATH.exists():
            if note is not None:
                note(f"reading the ClickHouse of the stopped `plantstream run` in {DEFAULT_STATE_DIR}")
            return f"chdb://{stopped.resolve()}"
        return None
    if chosen.startswith("chdb:"):
        path = Path(chosen.removeprefix("chdb://").removeprefix("chdb:"))
        url = _live_url(path.parent) if path.name else None
        if url is not None and url.startswith("http"):
            if note is not None:
                note(f"{chosen} belongs to the running `plantstream run` of {path.parent}; "
                     f"reading it through {url}")
            return url
    return dsn


def wait_http(url: str, timeout_s: float) -> bool:
    """True once ``url``/ping answers ``Ok.`` (within ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
            if resp.status == 200:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.3)
