"""The supervisor reads its children's ``/readyz``, over HTTPS too (a station with TLS).

A child here is a real process (``sleep``); its health endpoint is a real HTTP(S) server in this
test, with a self-signed certificate the supervisor was never given: the supervisor polls its own
child on this box, where the certificate names the plant's host name, not the address polled.
"""

from __future__ import annotations

import http.server
import ssl
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from plantstream.cli.supervisor import Child
from tests.station.test_station_tls import self_signed


class _Ready(http.server.BaseHTTPRequestHandler):
    ready = True

    def do_GET(self) -> None:
        body = orjson.dumps({"live": True, "ready": self.ready})
        self.send_response(200 if self.ready else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def health_server(tls: ssl.SSLContext | None, ready: bool) -> Iterator[int]:
    handler = type("Handler", (_Ready,), {"ready": ready})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def child(tmp: Path, port: int, tls: bool) -> Child:
    c = Child("station", [sys.executable, "-c", "import time; time.sleep(30)"], {}, tmp / "child.log",
              role="station", health_port=port, health_tls=tls)
    c.start()
    return c


def test_an_https_child_is_polled_ready_and_not_ready(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    for ready in (True, False):
        with health_server(tls, ready) as port:
            c = child(tmp_path, port, tls=True)
            try:
                assert c.url("/readyz") == f"https://127.0.0.1:{port}/readyz"
                c.poll_health()
                assert c.health == {"live": True, "ready": ready}
                assert c.ready is ready
            finally:
                c.kill()
                assert c.proc is not None
                c.proc.wait(timeout=10)


def test_plain_http_polling_of_an_https_child_gets_no_health(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with health_server(tls, True) as port:
        c = child(tmp_path, port, tls=False)  # what run did before: never ready, whatever the station said
        try:
            c.poll_health()
            assert c.health is None and c.ready is False
        finally:
            c.kill()
            assert c.proc is not None
            c.proc.wait(timeout=10)
