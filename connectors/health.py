"""Liveness and readiness of a connector process over HTTP: ``/healthz`` and ``/readyz``.

A small standard-library server on its own daemon thread (``producer.health_port``; off when
unset). Each request calls the connector's ``health()`` and answers 200 with its JSON when the
flag holds, 503 otherwise:

``/healthz`` (liveness)  ``live``: the producer thread runs. A dead producer thread would
                         otherwise leave the process up while nothing reaches Kafka; the
                         liveness probe restarts the pod, and the spool goes first at the
                         next start.
``/readyz`` (readiness)  ``ready``: live, the source is connected and Kafka confirms records
                         (none waiting for longer than the stall bound).

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
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from plantstream.schemas.errors import ConnectorError

log = logging.getLogger(__name__)

HealthFn = Callable[[], dict[str, Any]]
"""Returns at least ``live`` and ``ready`` (bools); the rest is reported as is."""

_PATHS = {"/healthz": "live", "/livez": "live", "/readyz": "ready"}


class HealthServer:
    """Serve ``/healthz`` and ``/readyz`` from ``health()`` on ``host:port`` (0: a free port)."""

    def __init__(self, port: int, health: HealthFn, *, host: str = "0.0.0.0") -> None:
        self._health = health
        self._host = host
        self._want = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self._want

    def start(self) -> HealthServer:
        health = self._health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                flag = _PATHS.get(self.path.split("?", 1)[0])
                if flag is None:
                    self._reply(404, {"error": f"unknown path {self.path!r}; use /healthz or /readyz"})
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
        log.info("health endpoint on http://%s:%d/healthz and /readyz", self._host, self.port)
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
