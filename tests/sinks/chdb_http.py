"""A ClickHouse server for tests: ClickHouse's HTTP interface in front of the process's chDB.

clickhouse-connect's HTTP client talks to it exactly as to a ClickHouse server (version and
settings probes, ``DESCRIBE``, ``INSERT … FORMAT Native`` bodies, queries answered in the
format they ask for); the SQL runs in the embedded chDB of the test process. The server can be
taken down (the port refuses connections) and brought back on the same port, and it can drop
the answer of one insert after applying it — the case where a retry would write a batch twice.
"""

from __future__ import annotations

import http.server
import os
import re
import tempfile
import threading
import urllib.parse
from typing import Any

from plantstream.connectors import clickhouse as chc

_PASS_SETTINGS = frozenset({"insert_deduplication_token"})
_INSERT = re.compile(r"(?is)^\s*INSERT\s+INTO\s+(\S+)\s*(\([^)]*\))?\s*FORMAT\s+(\w+)\s*$")
_HAS_FORMAT = re.compile(r"(?is)\bFORMAT\s+\w+\s*$")


class ChdbHttpServer:
    """Serve ClickHouse's HTTP protocol on ``127.0.0.1:port`` backed by chDB at ``dsn``."""

    def __init__(self, dsn: str, *, tls: tuple[str, str] | None = None) -> None:
        self._dsn = dsn
        self._tls = tls
        """(certificate PEM, key PEM): serve HTTPS."""
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.port = 0
        self.inserts = 0
        self.insert_attempts = 0
        self.drop_answer_of_insert: int | None = None
        """Apply the insert with this attempt number, then close the connection unanswered."""
        self.on_dropped: Any = None
        self.down = False
        self._tmp = tempfile.mkdtemp(prefix="chdb-http-")

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def _client(self, database: str | None) -> Any:
        key = database or ""
        if key not in self._clients:
            self._clients[key] = chc.connect(self._dsn, database=database or None)
        return self._clients[key]

    def start(self) -> ChdbHttpServer:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    body = b"".join(parts)
                else:
                    n = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(n) if n else b""
                encoding = self.headers.get("Content-Encoding", "").lower()
                if encoding == "lz4":
                    import lz4.frame

                    body = lz4.frame.decompress(body)
                elif encoding == "zstd":
                    import zstandard

                    body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
                return body

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("X-ClickHouse-Format", "Native")
                self.end_headers()
                self.wfile.write(payload)

            def _handle(self) -> None:
                body = self._body()
                if outer.down:  # a connection kept alive across stop(): the server is gone
                    self.close_connection = True
                    return
                params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                query = params.get("query")
                if query is None and body[:6].upper() == b"INSERT":
                    head, _, body = body.partition(b"\n")
                    query = head.decode()
                database = params.get("database")
                settings = {k: v for k, v in params.items() if k in _PASS_SETTINGS}
                try:
                    with outer._lock:
                        client = outer._client(database)
                        m = _INSERT.match(query or "")
                        if m:
                            outer.insert_attempts += 1
                            attempt = outer.insert_attempts
                            path = os.path.join(outer._tmp, f"{attempt}.bin")
                            with open(path, "wb") as fh:
                                fh.write(body)
                            client.command(f"INSERT INTO {m.group(1)} {m.group(2) or ''} "
                                           f"SELECT * FROM file('{path}', {m.group(3)})",
                                           settings=settings or None)
                            os.unlink(path)
                            outer.inserts += 1
                            if attempt == outer.drop_answer_of_insert:
                                # Applied, but the answer never reaches the client.
                                self.close_connection = True
                                if outer.on_dropped is not None:
                                    threading.Thread(target=outer.on_dropped, daemon=True).start()
                                return
                            payload = b""
                        else:
                            text = (query or "") + ("\n" if query and body else "") + body.decode()
                            fmt = None if _HAS_FORMAT.search(text) else params.get(
                                "default_format", "TabSeparated")
                            payload = client.raw_query(text, fmt=fmt, settings=settings or None)
                except Exception as exc:  # the server's answer to a failing statement
                    self._answer(500, f"Code: 1. DB::Exception: {exc}".encode())
                    return
                self._answer(200, payload)

        self.down = False
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self._tls is not None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self._tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, name="chdb-http", daemon=True).start()
        return self

    def stop(self) -> None:
        """Take the server down: the port refuses connections until :meth:`start`."""
        server, self._server = self._server, None
        self.down = True
        if server is not None:
            server.shutdown()
            server.server_close()

    def close(self) -> None:
        self.stop()
        for client in self._clients.values():
            client.close()
        self._clients.clear()
