"""A read-only ClickHouse HTTP interface over the embedded chDB of this process.

Only one process may open a chDB path: in embedded mode that is the flows process of
``plantstream run``. So that Grafana, ``plantstream kpi … --clickhouse http://127.0.0.1:8123``,
the operator station or ``curl`` can read the live results while the run writes them, that
process serves its chDB over the ClickHouse HTTP interface (:class:`ChServe`, started by
:func:`serve_from_config` from ``plantstream.flows.main.get_flow``). Every request gets its own
``chdb.connect()`` handle on the process's one engine (chDB allows any number; session state is
per handle), so readers never disturb the sink's own handle.

What it answers, the way ClickHouse's HTTP interface does:

- ``GET /ping`` (and ``GET /`` without a query): ``Ok.``
- ``GET|POST /?query=…`` and ``POST /`` with the SQL in the body (both: the parameter, a new
  line, then the body), also as ``multipart/form-data`` fields; ``database`` (or the
  ``X-ClickHouse-Database`` header), ``default_format`` (or ``X-ClickHouse-Format``), query
  parameters ``param_<name>`` for ``{name:Type}``, and any other URL parameter as a setting of
  that request. Transport parameters (``session_id``, ``query_id``, ``wait_end_of_query``,
  ``send_progress_in_http_headers``, ``client_protocol_version`` …) are understood or ignored.
- The output format is the query's ``FORMAT`` clause, else ``default_format``, else
  ``TabSeparated``. ``Native`` for a ``client_protocol_version`` > 0 (clickhouse-go, Grafana's
  plugin; clickhouse-connect after its probe) carries block info and, from revision 54454, the
  per-column serialization flag (:func:`native_for_revision`).
- Request bodies with ``Content-Encoding: gzip``/``deflate``; responses gzip/deflate-compressed
  when ``enable_http_compression=1`` and ``Accept-Encoding`` allows (ClickHouse's rule).
- Headers: ``X-ClickHouse-Format``, ``-Timezone``, ``-Query-Id``, ``-Summary``,
  ``-Server-Display-Name``; on an error ``X-ClickHouse-Exception-Code`` with the text
  ``Code: N. DB::Exception: … (NAME) (version …)`` and ClickHouse's status code for it.

Read-only, twice over: a statement must be one ``SELECT``, ``WITH``, ``SHOW``, ``DESCRIBE``,
``EXISTS`` or ``EXPLAIN`` without ``INTO OUTFILE`` (else 403, ``READONLY``; several statements:
400, ``SYNTAX_ERROR``), and it runs in a session with ``readonly = 1``, which the engine itself
enforces (no writes, DDL, table functions, or settings changes from the SQL). A request's URL
settings are applied before the session is made read-only (like ``CHANGEABLE_IN_READONLY`` in a
server's profile), then the bounds (:class:`ServeLimits`) are applied over them: the execution
time, the result bytes, the threads, and at most ``max_concurrent`` queries at once (503,
``TOO_MANY_SIMULTANEOUS_QUERIES``, beyond). No authentication: it listens on loopback by
default; a production plant reads a real ClickHouse server (``docs/deploy.md``).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from plantstream.schemas.errors import ConfigError, ConnectorError

if TYPE_CHECKING:
    from plantstream.schemas.config import ClickHouseConfig

log = logging.getLogger(__name__)

DEFAULT_PORT = 8123
"""ClickHouse's own HTTP port: what ``plantstream run`` serves its embedded chDB on by default."""

ALLOWED = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN")
"""The statements a reader may send (the first keyword, after comments and parentheses)."""

WRITES = frozenset({
    "INSERT", "CREATE", "DROP", "ALTER", "TRUNCATE", "RENAME", "OPTIMIZE", "SYSTEM", "KILL", "SET", "USE",
    "GRANT", "REVOKE", "ATTACH", "DETACH", "DELETE", "UPDATE", "EXCHANGE", "UNDROP", "BACKUP", "RESTORE",
    "CHECK", "WATCH", "MOVE", "REPLACE", "BEGIN", "COMMIT", "ROLLBACK", "UNDO",
})
"""Statements a reader may not send (refused as ``READONLY``; any other word is a syntax error)."""

TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "query_id", "session_id",
    "session_timeout", "session_check", "compress", "decompress", "buffer_size", "wait_end_of_query",
    "client_protocol_version", "role", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "enable_http_compression", "http_zlib_compression_level", "cancel_http_readonly_queries_on_client_close",
    "http_response_buffer_size", "http_wait_end_of_query", "add_http_cors_header", "stacktrace",
    "http_native_compression_disable_checksumming_on_decompress", "output_format_parallel_formatting",
})
"""URL parameters that shape the HTTP exchange, never sent to the engine as settings."""

_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CODE = re.compile(r"Code:\s*(\d+)")
_STREAMLESS_FORMATS = frozenset({"dataframe", "datastore", "arrowtable", "debug"})

# ClickHouse's HTTP status for an exception code (HTTPHandler's exceptionCodeToHTTPStatus, the
# codes a reader meets), plus READONLY → 403: this endpoint refuses every change as forbidden.
_STATUS = {
    6: 400, 26: 400, 27: 400, 36: 400, 38: 400, 41: 400, 42: 400, 43: 400, 44: 400, 53: 400, 62: 400,
    69: 400, 72: 400, 46: 404, 47: 404, 50: 404, 60: 404, 73: 404, 81: 404, 115: 404, 48: 501,
    159: 408, 202: 503, 164: 403, 497: 403,
}
_NAMES = {36: "BAD_ARGUMENTS", 62: "SYNTAX_ERROR", 164: "READONLY", 202: "TOO_MANY_SIMULTANEOUS_QUERIES",
          48: "NOT_IMPLEMENTED", 81: "UNKNOWN_DATABASE", 396: "TOO_MANY_ROWS_OR_BYTES",
          73: "UNKNOWN_FORMAT", 1000: "POCO_EXCEPTION"}

CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values", "TSV": "text/tab-separated-values",
    "CSV": "text/csv", "CSVWithNames": "text/csv", "JSON": "application/json",
    "JSONCompact": "application/json", "JSONEachRow": "application/x-ndjson",
    "JSONCompactEachRow": "application/x-ndjson", "Native": "application/octet-stream",
    "RowBinary": "application/octet-stream", "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "Parquet": "application/octet-stream", "Arrow": "application/octet-stream",
    "ArrowStream": "application/octet-stream", "Pretty": "text/plain", "Values": "text/plain",
}


@dataclass(frozen=True)
class ServeLimits:
    """Bounds on what one reader may take from the process that also runs the flows.

    ``max_execution_s`` and ``max_result_bytes`` become the request's ``max_execution_time`` and
    ``max_result_bytes`` (``result_overflow_mode = 'throw'``): a request may lower them, never
    raise them. ``max_threads`` caps the threads of one query; ``max_concurrent`` queries run at
    once, a further one waits up to ``queue_s`` and is then refused (503). ``max_request_bytes``
    bounds the SQL a request may send (413 beyond).
    """

    max_execution_s: float = 30.0
    max_result_bytes: int = 256 * 1024 * 1024
    max_threads: int = 2
    max_concurrent: int = 4
    queue_s: float = 10.0
    max_request_bytes: int = 4 * 1024 * 1024


class ServeError(ConnectorError):
    """A request the endpoint refuses, with the ClickHouse exception code it answers."""

    def __init__(self, code: int, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status if status is not None else _STATUS.get(code, 500)


# -- reading SQL -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # "word", "sym", "str", "ident", "num", "param"
    text: str
    start: int
    end: int


def tokens(sql: str) -> Iterator[Token]:
    """The significant tokens of ClickHouse SQL: comments (``--``, ``#``, nested ``/* */``) are
    skipped; string literals (``'…'``, ``$tag$…$tag$``) and quoted identifiers (`` `…` ``,
    ``"…"``) are single tokens, so a ``;`` or keyword inside them is not seen.

    >>> [t.text for t in tokens("SELECT 'a;b' -- c\\n, `x;` /* ; */ FROM t;")]
    ['SELECT', "'a;b'", ',', '`x;`', 'FROM', 't', ';']
    """
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            i = j
        elif c in "'`\"":
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # '' inside a literal
                        j += 2
                        continue
                    break
                j += 1
            yield Token("str" if c == "'" else "ident", sql[i:j + 1], i, min(j + 1, n))
            i = j + 1
        elif c == "$" and (m := re.match(r"\$([A-Za-z0-9_]*)\$", sql[i:])):
            tag = m.group(0)
            j = sql.find(tag, i + len(tag))
            end = n if j < 0 else j + len(tag)
            yield Token("str", sql[i:end], i, end)
            i = end
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] == "_"):
                j += 1
            yield Token("word", sql[i:j], i, j)
            i = j
        elif c.isdigit():
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "._"):
                j += 1
            yield Token("num", sql[i:j], i, j)
            i = j
        else:
            yield Token("sym", c, i, i + 1)
            i += 1


@dataclass(frozen=True)
class Statement:
    """What the endpoint needs to know of a request's SQL."""

    sql: str
    """The one statement, without a trailing ``;``."""
    keyword: str
    """Its first keyword, upper case (``SELECT``, ``SHOW`` …); empty for no statement."""
    format: str | None
    """The name of its top-level ``FORMAT`` clause, if any."""


def read_statement(sql: str) -> Statement:
    """Check that ``sql`` is one statement a reader may run; its keyword and ``FORMAT``.

    >>> read_statement("/* q */ (SELECT 1) FORMAT JSON;")
    Statement(sql='/* q */ (SELECT 1) FORMAT JSON', keyword='SELECT', format='JSON')
    >>> read_statement("DROP TABLE t")
    Traceback (most recent call last):
    ...
    plantstream.connectors.chserve.ServeError: ...only SELECT, WITH, SHOW, DESCRIBE, EXISTS and EXPLAIN...
    """
    toks = list(tokens(sql))
    while toks and toks[-1].kind == "sym" and toks[-1].text == ";":
        toks.pop()
    if not toks:
        msg = "Empty query. (SYNTAX_ERROR)"
        raise ServeError(62, msg)
    if any(t.kind == "sym" and t.text == ";" for t in toks):
        msg = ("Syntax error: Multi-statements are not allowed: send one statement per request. "
               "(SYNTAX_ERROR)")
        raise ServeError(62, msg)
    words = [t for t in toks if t.kind == "word"]
    first = next((t for t in toks if not (t.kind == "sym" and t.text == "(")), toks[0])
    keyword = first.text.upper() if first.kind == "word" else ""
    if keyword not in ALLOWED and keyword not in WRITES:
        msg = (f"Syntax error: unknown statement {first.text[:40]!r}. Expected one of: {', '.join(ALLOWED)}. "
               "(SYNTAX_ERROR)")
        raise ServeError(62, msg)
    if keyword not in ALLOWED:
        msg = (f"plantstream serves the embedded ClickHouse read-only: only SELECT, WITH, SHOW, DESCRIBE, "
               f"EXISTS and EXPLAIN statements are allowed, not {keyword or first.text!r}; write through "
               f"the flows, or stop `plantstream run` and open the chDB path. (READONLY)")
        raise ServeError(164, msg)
    for a, b in itertools.pairwise(words):
        if a.text.upper() == "INTO" and b.text.upper() == "OUTFILE":
            msg = "INTO OUTFILE is not allowed over HTTP: the result comes back in the response. (READONLY)"
            raise ServeError(164, msg)
    fmt = None
    depth = 0
    for i, t in enumerate(toks):
        if t.kind == "sym" and t.text in "([{":
            depth += 1
        elif t.kind == "sym" and t.text in ")]}":
            depth -= 1
        elif (depth == 0 and t.kind == "word" and t.text.upper() == "FORMAT" and i + 1 < len(toks)
              and toks[i + 1].kind == "word" and i > 0 and toks[i - 1].text not in (",", ".", "(")
              and (i + 2 == len(toks) or toks[i + 2].text.upper() == "SETTINGS")):
            fmt = toks[i + 1].text
    return Statement(sql[:toks[-1].end], keyword, fmt)


# -- answering ---------------------------------------------------------------------------


@dataclass
class Request:
    """One HTTP request, as the endpoint reads it."""

    method: str = "POST"
    path: str = "/"
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def exception_code(message: str) -> int:
    """The ClickHouse exception code of an engine error text (1000: none found)."""
    m = _CODE.search(message)
    return int(m.group(1)) if m else 1000


def _engine_message(message: str) -> str:
    idx = message.find("Code: ")
    return (message[idx:] if idx > 0 else message).strip()


PROBE = re.compile(r"^\s*SELECT\s+name\s*,\s*value\s*,\s*readonly\s+FROM\s+system\.settings"
                   r"\s+LIMIT\s+\d+\s*$", re.IGNORECASE)
"""clickhouse-connect's settings probe (what a client may change). This endpoint applies a
request's URL settings before the session becomes read-only, so it answers with every setting
changeable except ``readonly`` itself."""


class ChServe:
    """The endpoint: ``ChServe(dsn).start()`` serves ``dsn``'s chDB until :meth:`stop`.

    ``dsn`` is the sink's ``chdb://PATH``; the path is opened as clickhouse-connect opens it
    (its real path), so both share this process's one engine. ``port`` 0 takes a free one
    (:attr:`port` tells which). :meth:`answer` is the whole protocol without the socket.

    One thread per connection (``ThreadingHTTPServer``); at most ``limits.max_concurrent``
    queries run in the engine at once. chDB releases the GIL while a query runs, so a long
    read does not stop the dataflow.
    """

    def __init__(self, dsn: str, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 database: str | None = None, limits: ServeLimits | None = None) -> None:
        if not dsn.startswith("chdb:"):
            msg = f"ChServe serves an embedded chDB (chdb://PATH), not {dsn.split('@')[-1]!r}"
            raise ConfigError(msg)
        path = dsn[len("chdb://"):] if dsn.startswith("chdb://") else dsn[len("chdb:"):]
        self.path = os.path.realpath(path) if path not in ("", ":memory:", "memory") else ":memory:"
        self.host = host
        self.port = port
        self.database = database
        self.limits = limits or ServeLimits()
        self._slots = threading.BoundedSemaphore(self.limits.max_concurrent)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._anchor: Any = None
        self.version = ""
        self.timezone = "UTC"
        self.display_name = f"plantstream-chdb@{socket.gethostname()}"
        self.requests = 0
        self.refused = 0

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ChServe:
        """Open the engine (a handle kept while serving) and start listening."""
        import chdb

        if self._server is not None:
            return self
        self._anchor = chdb.connect(self.path)
        info = self._anchor.query("SELECT version(), timezone()", "TabSeparated").bytes().decode().split("\t")
        self.version, self.timezone = info[0].strip(), info[1].strip()
        handler = type("Handler", (_Handler,), {"serve": self})
        try:
            server = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            self._anchor.close()
            self._anchor = None
            msg = (f"cannot serve ClickHouse HTTP on {self.host}:{self.port} ({exc}); choose another port "
                   "(clickhouse.serve_port, plantstream run --clickhouse-port; 0 takes a free one)")
            raise ConnectorError(msg) from exc
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="plantstream-chserve", daemon=True)
        self._thread.start()
        log.info("ClickHouse HTTP (read-only) of %s on %s", self.path, self.url)
        return self

    def stop(self) -> None:
        """Stop listening and release the engine handle (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        anchor, self._anchor = self._anchor, None
        if anchor is not None:
            with contextlib.suppress(Exception):
                anchor.close()

    def __enter__(self) -> ChServe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the protocol --------------------------------------------------------------------

    def answer(self, req: Request) -> Response:
        """The response to one request (never raises)."""
        query_id = dict(req.params).get("query_id") or str(uuid.uuid4())
        try:
            path = req.path.rstrip("/") or "/"
            params = dict(req.params)
            if path in ("/ping", "/replicas_status") or (path == "/" and req.method in ("GET", "HEAD")
                                                         and "query" not in params):
                return Response(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            if path != "/":
                msg = (f"There is no handle {req.path}. Use / for queries, /ping for a health check. "
                       "(UNKNOWN_HANDLER)")
                raise ServeError(1000, msg, status=404)
            if req.method not in ("GET", "POST"):
                msg = f"HTTP method {req.method} is not allowed; use GET or POST."
                raise ServeError(1000, msg, status=405)
            resp = self._query(req, params, query_id)
        except ServeError as exc:
            self.refused += exc.code == 164
            resp = self._error(exc.code, str(exc), exc.status)
        except Exception as exc:  # an engine error: answer it as ClickHouse would
            text = _engine_message(str(exc))
            code = exception_code(text)
            resp = self._error(code, text, _STATUS.get(code, 500))
        resp.headers.setdefault("X-ClickHouse-Query-Id", query_id)
        resp.headers.setdefault("X-ClickHouse-Server-Display-Name", self.display_name)
        resp.headers.setdefault("X-ClickHouse-Timezone", self.timezone)
        return resp

    def _error(self, code: int, text: str, status: int) -> Response:
        if not text.startswith("Code:"):
            text = f"Code: {code}. DB::Exception: {text}"
        if not re.search(r"\([A-Z][A-Z0-9_]+\)", text) and code in _NAMES:
            text += f" ({_NAMES[code]})"
        body = f"{text} (version {self.version} (plantstream chDB, read-only))\n".encode()
        return Response(status, body, {"Content-Type": "text/plain; charset=UTF-8",
                                       "X-ClickHouse-Exception-Code": str(code)})

    def _sql_and_params(self, req: Request, params: dict[str, str]) -> tuple[str, dict[str, str]]:
        body = _decode_body(req.body, req.headers.get("Content-Encoding", ""), self.limits.max_request_bytes)
        ctype = req.headers.get("Content-Type", "")
        form: dict[str, str] = {}
        if ctype.startswith("multipart/form-data"):
            form = _form_fields(ctype, body)
            body = b""
        every = {**params, **form}
        text = every.get("query", "")
        if body:
            text = f"{text}\n{body.decode('utf-8', errors='replace')}" if text else body.decode(
                "utf-8", errors="replace")
        return text, every

    def _query(self, req: Request, params: dict[str, str], query_id: str) -> Response:
        if params.get("compress") == "1":
            msg = ("compress=1 (ClickHouse block compression) is not supported by this endpoint; use "
                   "enable_http_compression=1 with Accept-Encoding: gzip")
            raise ServeError(48, msg)
        sql, every = self._sql_and_params(req, params)
        stmt = read_statement(sql)
        fmt = (stmt.format or every.get("default_format") or req.headers.get("X-ClickHouse-Format")
               or "TabSeparated")
        if fmt.lower() in _STREAMLESS_FORMATS:
            raise ServeError(73, f"Unknown output format {fmt}. (UNKNOWN_FORMAT)")
        binds = {k[len("param_"):]: v for k, v in every.items() if k.startswith("param_")}
        settings = {k: v for k, v in every.items()
                    if k not in TRANSPORT_PARAMS and not k.startswith("param_")
                    and not k.endswith(("_structure", "_format", "_types"))}
        for name, value in settings.items():
            if not _SETTING_NAME.fullmatch(name):
                raise ServeError(36, f"Invalid setting name {name!r}. (BAD_ARGUMENTS)")
            if name == "readonly" and value.strip() not in ("1", ""):
                raise ServeError(164, "Cannot modify 'readonly' setting in readonly mode: this endpoint is "
                                      "read-only. (READONLY)")
        database = every.get("database") or req.headers.get("X-ClickHouse-Database") or self.database
        sql_run = stmt.sql
        if PROBE.match(re.sub(r"\s+FORMAT\s+\w+\s*$", "", stmt.sql, flags=re.IGNORECASE)):
            sql_run = ("SELECT name, value, toUInt8(name = 'readonly') AS readonly FROM system.settings "
                       "LIMIT 10000" + (f" FORMAT {stmt.format}" if stmt.format else ""))
        started = time.perf_counter()
        body, stats = self._run(sql_run, fmt, binds, settings, database)
        revision = _int(every.get("client_protocol_version"))
        out_fmt = stmt.format or fmt
        if out_fmt == "Native" and revision > 0:
            body = native_for_revision(body, revision)
        headers = {
            "Content-Type": CONTENT_TYPES.get(out_fmt, "text/plain") + (
                "; charset=UTF-8" if CONTENT_TYPES.get(out_fmt, "text/").startswith("text/")
                or CONTENT_TYPES.get(out_fmt, "").startswith("application/json") else ""),
            "X-ClickHouse-Format": out_fmt,
            "X-ClickHouse-Summary": json.dumps({
                "read_rows": str(stats[0]), "read_bytes": str(stats[1]), "written_rows": "0",
                "written_bytes": "0", "total_rows_to_read": str(stats[0]), "result_rows": "0",
                "result_bytes": str(len(body)),
                "elapsed_ns": str(int((time.perf_counter() - started) * 1e9))}, separators=(",", ":")),
        }
        body, encoding = _compress(body, every, req.headers.get("Accept-Encoding", ""))
        if encoding:
            headers["Content-Encoding"] = encoding
        self.requests += 1
        return Response(200, body, headers)

    def _run(self, sql: str, fmt: str, binds: dict[str, str], settings: dict[str, str],
             database: str | None) -> tuple[bytes, tuple[int, int]]:
        import chdb

        lim = self.limits
        if not self._slots.acquire(timeout=lim.queue_s):
            msg = (f"Too many simultaneous queries: {lim.max_concurrent} run already. Try again shortly. "
                   "(TOO_MANY_SIMULTANEOUS_QUERIES)")
            raise ServeError(202, msg)
        try:
            conn = chdb.connect(self.path)
            try:
                if database:
                    if not _SETTING_NAME.fullmatch(database):
                        msg = f"Database {database!r} is not an identifier. (UNKNOWN_DATABASE)"
                        raise ServeError(81, msg)
                    conn.query(f"USE `{database}`", "TabSeparated")
                for name, value in settings.items():
                    if name != "readonly":
                        conn.query(f"SET {name} = {_quote(value)}", "TabSeparated")
                own_time = _float(settings.get("max_execution_time"))
                time_cap = min(own_time, lim.max_execution_s) if own_time > 0 else lim.max_execution_s
                own_bytes = _int(settings.get("max_result_bytes"))
                bytes_cap = min(own_bytes, lim.max_result_bytes) if own_bytes > 0 else lim.max_result_bytes
                own_threads = _int(settings.get("max_threads"))
                threads = min(own_threads, lim.max_threads) if own_threads > 0 else lim.max_threads
                for stmt in (f"SET max_execution_time = {time_cap:g}", "SET timeout_overflow_mode = 'throw'",
                             f"SET max_result_bytes = {bytes_cap}", "SET result_overflow_mode = 'throw'",
                             f"SET max_threads = {threads}", "SET readonly = 1"):
                    conn.query(stmt, "TabSeparated")
                result = conn.query(sql, fmt, params=binds or None)
                data = result.bytes() or b""
                if len(data) > lim.max_result_bytes:
                    msg = (f"Limit for result exceeded, max bytes: {lim.max_result_bytes}, current bytes: "
                           f"{len(data)}. (TOO_MANY_ROWS_OR_BYTES)")
                    raise ServeError(396, msg)
                try:
                    stats = (int(result.rows_read()), int(result.bytes_read()))
                except Exception:
                    stats = (0, 0)
                return data, stats
            finally:
                conn.close()
        finally:
            self._slots.release()


def _quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _int(text: str | None) -> int:
    try:
        return int(text) if text else 0
    except ValueError:
        return 0


def _float(text: str | None) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


def _decode_body(body: bytes, encoding: str, limit: int) -> bytes:
    enc = encoding.strip().lower()
    if not enc or enc == "identity" or not body:
        return body
    try:
        if enc == "gzip":
            out = gzip.GzipFile(fileobj=io.BytesIO(body)).read(limit + 1)
        elif enc == "deflate":
            out = zlib.decompressobj().decompress(body, limit + 1)
        else:
            raise ServeError(48, f"Content-Encoding {encoding!r} is not supported; use gzip or deflate.")
    except (OSError, zlib.error, EOFError) as exc:
        raise ServeError(1000, f"Cannot decompress the request body ({exc}).", status=400) from None
    if len(out) > limit:
        raise ServeError(1000, f"The request body is larger than {limit} bytes.", status=413)
    return out


def _form_fields(ctype: str, body: bytes) -> dict[str, str]:
    """The plain fields of a ``multipart/form-data`` body (``query``, ``param_…``); a file field
    (external data) is refused."""
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
    out: dict[str, str] = {}
    for part in msg.iter_parts() if msg.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename() is not None:
            raise ServeError(48, "External data (file fields) is not supported by this endpoint.")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            out[name] = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""
    return out


def _compress(body: bytes, params: Mapping[str, str], accept: str) -> tuple[bytes, str | None]:
    if params.get("enable_http_compression") not in ("1", "true") or not body:
        return body, None
    offered = [a.split(";")[0].strip().lower() for a in accept.split(",")]
    level = min(9, max(1, _int(params.get("http_zlib_compression_level")) or 3))
    for enc in offered:
        if enc == "gzip":
            return gzip.compress(body, compresslevel=level), "gzip"
        if enc == "deflate":
            return zlib.compress(body, level), "deflate"
    return body, None


# -- Native for a client protocol revision ------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated Native data")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    def string(self) -> bytes:
        return self.take(self.varint())

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "little")


_FIXED = {"UInt8": 1, "Int8": 1, "Bool": 1, "Enum8": 1, "UInt16": 2, "Int16": 2, "Date": 2, "Enum16": 2,
          "BFloat16": 2, "UInt32": 4, "Int32": 4, "Float32": 4, "Date32": 4, "DateTime": 4, "IPv4": 4,
          "Decimal32": 4, "UInt64": 8, "Int64": 8, "Float64": 8, "DateTime64": 8, "Decimal64": 8,
          "Time": 4, "Time64": 8, "UInt128": 16, "Int128": 16, "UUID": 16, "IPv6": 16, "Decimal128": 16,
          "UInt256": 32, "Int256": 32, "Decimal256": 32}


def _split_type(t: str) -> tuple[str, list[str]]:
    """``Name(arg, arg)`` → (``Name``, args split at top-level commas)."""
    t = t.strip()
    i = t.find("(")
    if i < 0:
        return t, []
    name, inner = t[:i], t[i + 1:-1]
    args, depth, start, quote = [], 0, 0, False
    for j, c in enumerate(inner):
        if c == "'" and (j == 0 or inner[j - 1] != "\\"):
            quote = not quote
        elif not quote and c == "(":
            depth += 1
        elif not quote and c == ")":
            depth -= 1
        elif not quote and c == "," and depth == 0:
            args.append(inner[start:j].strip())
            start = j + 1
    args.append(inner[start:].strip())
    return name, args


def _decimal_size(args: list[str]) -> int:
    p = int(args[0])
    return 4 if p <= 9 else 8 if p <= 18 else 16 if p <= 38 else 32


def _skip_prefix(r: _Reader, t: str) -> None:
    """The per-column state prefix (LowCardinality's key version) of type ``t``, nested."""
    name, args = _split_type(t)
    if name == "LowCardinality":
        r.take(8)
    elif name in ("Array", "Nullable"):
        _skip_prefix(r, args[0])
    elif name == "Map":
        _skip_prefix(r, args[0])
        _skip_prefix(r, args[1])
    elif name == "Tuple":
        for a in args:
            _skip_prefix(r, _element_type(a))


_ELEMENT = re.compile(r"(?:`(?:[^`\\]|\\.)*`|[A-Za-z_][A-Za-z0-9_]*)\s+(.+)", re.DOTALL)


def _element_type(arg: str) -> str:
    """The type of a tuple element: ``reason String`` and ```from` DateTime64(3)`` are named."""
    m = _ELEMENT.fullmatch(arg.strip())
    return m.group(1) if m else arg


def _skip_data(r: _Reader, t: str, rows: int) -> None:
    """Skip the data of ``rows`` values of type ``t`` (Native, revision 0)."""
    name, args = _split_type(t)
    if name in _FIXED:
        r.take(_FIXED[name] * rows)
    elif name.startswith("Decimal") and name not in _FIXED:
        r.take(_decimal_size(args) * rows)
    elif name == "String":
        for _ in range(rows):
            r.take(r.varint())
    elif name == "FixedString":
        r.take(int(args[0]) * rows)
    elif name == "Nullable":
        r.take(rows)
        _skip_data(r, args[0], rows)
    elif name == "Array":
        last = 0
        for _ in range(rows):
            last = r.u64()
        _skip_data(r, args[0], last)
    elif name == "Map":
        last = 0
        for _ in range(rows):
            last = r.u64()
        _skip_data(r, args[0], last)
        _skip_data(r, args[1], last)
    elif name == "Tuple":
        for a in args:
            _skip_data(r, _element_type(a), rows)
    elif name == "LowCardinality":
        if rows == 0:
            return
        flags = r.u64()
        keys = r.u64()
        inner = args[0]
        inner_name, inner_args = _split_type(inner)
        _skip_data(r, inner_args[0] if inner_name == "Nullable" else inner, keys)
        count = r.u64()
        r.take(count * (1, 2, 4, 8)[flags & 0xFF])
    elif name == "Nothing":
        r.take(rows)
    else:
        msg = (f"Native with client_protocol_version cannot carry a column of type {t} from this endpoint; "
               "cast it (toString(…)) or ask for another format")
        raise ServeError(48, msg)


def native_for_revision(data: bytes, revision: int) -> bytes:
    """Native blocks of revision 0 (what chDB writes) as a client of protocol ``revision``
    reads them: block info first (``is_overflows`` 0, ``bucket_num`` -1) and, from revision
    54454, a ``0`` (no custom serialization) after each column's type.

    >>> native_for_revision(bytes.fromhex("0101") + b"\\x05check\\x05UInt8\\x01", 54405)[8:16]
    b'\\x01\\x01\\x05check'
    """
    if revision <= 0:
        return data
    custom = revision >= 54454
    r, out = _Reader(data), bytearray()
    while r.pos < len(data):
        out += b"\x01\x00\x02\xff\xff\xff\xff\x00"
        start = r.pos
        cols, rows = r.varint(), r.varint()
        out += data[start:r.pos]
        for _ in range(cols):
            head = r.pos
            r.string()
            type_name = r.string().decode()
            out += data[head:r.pos]
            if custom:
                out += b"\x00"
            begin = r.pos
            if rows:
                _skip_prefix(r, type_name)
                _skip_data(r, type_name, rows)
            out += data[begin:r.pos]
    return bytes(out)


# -- HTTP ------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    serve: ChServe
    protocol_version = "HTTP/1.1"
    server_version = "plantstream-chdb"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("chserve %s " + format, self.client_address[0], *args)

    def _body(self) -> bytes:
        limit = self.serve.limits.max_request_bytes
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > limit:
                    raise ServeError(1000, f"The request body is larger than {limit} bytes.", status=413)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = _int(self.headers.get("Content-Length"))
        if length > limit:
            raise ServeError(1000, f"The request body is larger than {limit} bytes.", status=413)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        try:
            body = self._body() if self.command == "POST" else b""
        except ServeError as exc:
            resp = self.serve._error(exc.code, str(exc), exc.status)
            self.close_connection = True
        else:
            req = Request(self.command, parts.path or "/", parse_qsl(parts.query, keep_blank_values=True),
                          {k: v for k, v in self.headers.items()}, body)
            resp = self.serve.answer(req)
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Keep-Alive", "timeout=10")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()


# -- where it runs ---------------------------------------------------------------------------


def serve_from_config(cfg: ClickHouseConfig, dsn: str,
                      environ: Mapping[str, str] | None = None) -> ChServe | None:
    """Start the endpoint in the process that owns ``dsn``'s chDB, when configured.

    Serves when ``dsn`` is embedded (``chdb://``), ``clickhouse.serve_port`` is set and this
    is Bytewax process 0 (the one that opens chDB). A port that cannot be bound is logged and
    the flows run on without it (readers then get "connection refused", never a second owner
    of the chDB path).
    """
    env = os.environ if environ is None else environ
    port = cfg.serve_port
    if port is None or not dsn.startswith("chdb:"):
        return None
    if env.get("BYTEWAX_PROCESS_ID", "0") != "0":
        return None
    pod, sts = env.get("BYTEWAX_POD_NAME"), env.get("BYTEWAX_STATEFULSET_NAME")
    if pod and sts and pod.removeprefix(sts + "-") != "0":
        return None
    if cfg.serve_host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("clickhouse.serve_host %s: the read-only ClickHouse HTTP endpoint has no authentication; "
                    "anyone who reaches %s:%s reads every table", cfg.serve_host, cfg.serve_host, port)
    limits = ServeLimits(max_execution_s=cfg.serve_max_execution_s,
                         max_result_bytes=cfg.serve_max_result_mb * 1024 * 1024)
    try:
        return ChServe(dsn, host=cfg.serve_host, port=port, database=cfg.database, limits=limits).start()
    except ConnectorError as exc:
        log.error("%s", exc)
        return None
