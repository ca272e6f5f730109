"""The webhook (through its outbox worker) against a real HTTP server that fails the first
attempts of every record.

The server answers 503 to the first two attempts of each alert record, and for one record
stores it and then answers 500 (the response is lost, the sink must retry). It keeps the
``Idempotency-Key`` of what it stored: nothing may be missing and nothing stored twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from plantstream.connectors import kafka
from plantstream.connectors.outbox import ALERTS_TOPIC, workers_from_config
from plantstream.connectors.webhook import WebhookSink
from plantstream.flows.alerts import alerts
from plantstream.flows.main import row_json
from plantstream.flows.registry import FlowContext
from plantstream.schemas.config import build_config
from plantstream.schemas.errors import ConnectorError
from plantstream.schemas.measurement import Measurement

T0 = 1_763_791_200_000
MIN = 60_000


class _Receiver:
    def __init__(self, fail_first: int, lose_response_of: int | None = None, status: int = 503) -> None:
        self.fail_first = fail_first
        self.lose_response_of = lose_response_of  # the n-th distinct key: stored, then HTTP 500
        self.status = status
        self.attempts: dict[str, int] = {}
        self.stored: list[tuple[str, dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def handle(self, key: str, body: bytes, headers: dict[str, str]) -> int:
        with self.lock:
            self.headers.append(headers)
            n = self.attempts[key] = self.attempts.get(key, 0) + 1
            if n <= self.fail_first:
                return self.status
            if any(k == key for k, _ in self.stored):
                return 200  # a duplicate: acknowledged, not stored again
            self.stored.append((key, orjson.loads(body)))
            if self.lose_response_of is not None and len(self.attempts) == self.lose_response_of \
                    and n == self.fail_first + 1:
                return 500
            return 200


@pytest.fixture
def receiver() -> Iterator[tuple[str, _Receiver]]:
    rec = _Receiver(fail_first=2, lose_response_of=2)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            code = rec.handle(self.headers.get("Idempotency-Key", ""), body, dict(self.headers))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", rec
    finally:
        server.shutdown()
        server.server_close()


def _measurements() -> list[Measurement]:
    ms = [Measurement(T0, "press-01", "machine_state", "fault"),
          Measurement(T0, "cnc-01", "machine_state", "running")]
    ms += [Measurement(T0 + k * 10_000, "cnc-01", "vibration_rms_mms", v)
           for k, v in enumerate([3.0, 7.5, 8.0, 19.0, 6.0, 3.0])]
    ms += [Measurement(T0 + 20 * MIN, "press-01", "machine_state", "running")]
    return ms


@pytest.mark.integration
def test_webhook_retries_through_failures_and_nothing_is_lost_or_duplicated(
        receiver: tuple[str, _Receiver], kafka_conf: dict[str, Any]) -> None:
    url, rec = receiver
    config = build_config({"alerts": {"silence": {"enabled": False}, "webhook": {
        "url": url, "token": "s3cret", "backoff_initial_s": 0.01, "backoff_max_s": 0.05,
        "headers": {"X-Plant": "plant-a"}}}}, {})
    flow = Dataflow("alerts_webhook")
    inp = op.input("ms", flow, TestingSource(_measurements()))
    records: list[dict[str, Any]] = []
    op.output("records", alerts(FlowContext(config), inp)["alerts"], TestingSink(records))
    run_main(flow)
    # The alert records in their topic, as the flows' Kafka sink writes them; the webhook outbox
    # worker posts them from there.
    kafka.create_topics(kafka_conf, {ALERTS_TOPIC: 2})
    out = kafka.KafkaOutput(kafka_conf).build_part("kafka_out", "kafka-out", None)
    out.write_batch([(ALERTS_TOPIC, r["machine"].encode(), row_json(r)) for r in records])
    out.close()
    [worker] = workers_from_config(config, kafka_conf)
    worker.start()
    assert worker.stop(drain_s=60), worker.status()

    # raised + escalated + cleared vibration on cnc-01, raised + cleared machine down on press-01
    assert sorted((r["machine"], r["rule"], r["status"], r["severity"]) for r in records) == [
        ("cnc-01", "vibration", "cleared", "critical"), ("cnc-01", "vibration", "raised", "critical"),
        ("cnc-01", "vibration", "raised", "warning"), ("press-01", "machine_down", "cleared", "critical"),
        ("press-01", "machine_down", "raised", "critical")]
    keys = [k for k, _ in rec.stored]
    assert len(keys) == len(set(keys)), "an alert event was stored twice"
    assert set(keys) == {r["event_id"] for r in records}, "an alert event was lost"
    assert all(n >= 3 for n in rec.attempts.values())  # every record went through 2 failures
    assert max(rec.attempts.values()) == 4  # the lost response was retried, and deduplicated
    for key, body in rec.stored:
        assert body["event_id"] == key and body["status"] in ("raised", "cleared")
    assert all(h["Authorization"] == "Bearer s3cret" and h["X-Plant"] == "plant-a" for h in rec.headers)


def test_webhook_gives_up_with_a_clear_error_and_drops_permanent_rejections(
        receiver: tuple[str, _Receiver]) -> None:
    url, rec = receiver
    rec.fail_first = 100
    sleeps: list[float] = []
    sink = WebhookSink(url, max_attempts=4, backoff_initial_s=0.5, backoff_max_s=1.0, sleep=sleeps.append)
    with pytest.raises(ConnectorError, match=r"not delivered after 4 attempts \(HTTP 503\)"):
        sink.post({"event_id": "a:raised:warning"})
    assert sleeps == [0.5, 1.0, 1.0]  # capped exponential backoff
    rec.status = 422
    assert sink.post({"event_id": "b:raised:warning"}) is False
    assert (sink.stats.rejected, rec.attempts["b:raised:warning"]) == (1, 1)
