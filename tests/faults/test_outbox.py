"""Cloud export and webhooks never hold back local results (issue 14, item 3).

Real services only: the embedded Tansu broker (the plant's Kafka, and a second one standing in
for Event Hubs), chDB, and a real HTTP server for the webhook.

Before: the cloud sink was a step of the dataflow whose epoch-end flush waited forever for an
unreachable Event Hubs, so nothing reached ClickHouse; the webhook sink stopped the flow after
``max_attempts`` failures. Now both are outbox workers reading Kafka topics at their own pace.

Outage lengths (CI cost: each test runs for its outage plus about half a minute):

- ``PLANTSTREAM_TEST_CLOUD_OUTAGE_S`` (default 60): Event Hubs unreachable during ``plantstream demo``.
- ``PLANTSTREAM_TEST_WEBHOOK_OUTAGE_S`` (default 600): the webhook refusing connections while the
  alerts flow runs. Develop with ~30.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.testing import run_main
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from plantstream.connectors import clickhouse as chc
from plantstream.connectors import kafka
from plantstream.connectors.embedded import EmbeddedRuntime, TansuBroker
from plantstream.connectors.outbox import (
    ALERTS_TOPIC,
    CloudDelivery,
    OutboxRecord,
    OutboxWorker,
    WebhookDelivery,
    workers_from_config,
)
from plantstream.connectors.webhook import WebhookSink
from plantstream.flows.alerts import FLOW as ALERTS
from plantstream.flows.archive import FLOW as ARCHIVE
from plantstream.flows.demo import run_demo
from plantstream.flows.main import build_dataflow, create_topics
from plantstream.schemas.config import EXAMPLE_CONFIG, PlantConfig, build_config, load_config

pytestmark = pytest.mark.integration

CLOUD_OUTAGE_S = float(os.environ.get("PLANTSTREAM_TEST_CLOUD_OUTAGE_S", "60"))
WEBHOOK_OUTAGE_S = float(os.environ.get("PLANTSTREAM_TEST_WEBHOOK_OUTAGE_S", "600"))
CLOUD_TOPIC = "plant-kpis"


def read_topic(conf: dict[str, Any], topic: str, timeout_s: float = 20.0) -> list[tuple[bytes, bytes]]:
    """Every record of ``topic`` (all partitions) as (key, value), to the end."""
    consumer = Consumer({**conf, "group.id": f"t-{uuid.uuid4().hex[:8]}", "enable.partition.eof": True,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[tuple[bytes, bytes]] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(at_end) < len(parts):
            assert time.monotonic() < deadline, f"{topic}: no end of every partition within {timeout_s}s"
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                at_end.add(msg.partition())
                continue
            at_end.discard(msg.partition())
            out.append((msg.key() or b"", msg.value() or b""))
    finally:
        consumer.close()
    return out


class Recorder(threading.Thread):
    """Reads a topic of the demo's own broker as it is written (the broker goes with the demo)."""

    def __init__(self, conf: dict[str, Any], topic: str) -> None:
        super().__init__(daemon=True)
        self.conf, self.topic = conf, topic
        self.values: list[bytes] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        consumer = Consumer({**self.conf, "group.id": f"rec-{uuid.uuid4().hex[:8]}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "fetch.wait.max.ms": 50})
        parts = consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        consumer.assign([TopicPartition(self.topic, p, 0) for p in parts])
        try:
            while not self.stop_event.is_set():
                for msg in consumer.consume(1000, 0.1):
                    if msg.error() is None:
                        self.values.append(msg.value() or b"")
        finally:
            consumer.close()


@pytest.mark.paho  # the demo's bakery connector (paho) runs in this process
@pytest.mark.timeout(CLOUD_OUTAGE_S + 300)
def test_event_hubs_unreachable_under_demo_load_holds_back_nothing_and_loses_nothing(
        tmp_path: Path, ch_dsn: str, ch_db: str, ch: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="plantstream.connectors.outbox")
    cloud = TansuBroker(tmp_path / "cloud-logs").start()
    cloud_conf = {"bootstrap.servers": cloud.bootstrap}
    try:
        kafka.create_topics(cloud_conf, {CLOUD_TOPIC: 2})
        base = load_config(EXAMPLE_CONFIG).model_dump(mode="json")
        base["clickhouse"] = {**base.get("clickhouse", {}), "database": ch_db}
        base["eventhubs"] = {"bootstrap_servers": cloud.bootstrap, "topic": CLOUD_TOPIC}
        base["outbox"] = {"drain_s": 120, "log_every_s": 5}
        config = PlantConfig.model_validate(base)
        warmup_s, after_s = 20.0, 25.0
        seen: dict[str, Any] = {}
        recorders: list[Recorder] = []

        def outage() -> None:
            time.sleep(warmup_s)
            seen["before"] = ch.query("SELECT count() FROM measurements").result_rows[0][0]
            cloud.pause()  # Event Hubs unreachable: connections hang, nothing is answered
            paused = time.monotonic()
            try:
                time.sleep(5)
                seen["early"] = ch.query("SELECT count() FROM measurements").result_rows[0][0]
                time.sleep(max(0.0, CLOUD_OUTAGE_S - (time.monotonic() - paused) - 2))
                seen["late"] = ch.query("SELECT count() FROM measurements").result_rows[0][0]
                seen["facts_late"] = ch.query("SELECT count() FROM oee_facts").result_rows[0][0]
            finally:
                time.sleep(max(0.0, CLOUD_OUTAGE_S - (time.monotonic() - paused)))
                cloud.resume()
                seen["outage_s"] = time.monotonic() - paused

        def on_start(rt: EmbeddedRuntime) -> None:
            rec = Recorder(rt.kafka_conf, kafka.CLOUD_OUTBOX)
            rec.start()
            recorders.append(rec)
            threading.Thread(target=outage, daemon=True).start()

        summary = run_demo(config, duration=warmup_s + CLOUD_OUTAGE_S + after_s, dsn=ch_dsn,
                           workdir=tmp_path / "demo", on_start=on_start)
        recorders[0].stop_event.set()
        recorders[0].join(10)
        assert seen["outage_s"] >= CLOUD_OUTAGE_S
        # Results kept reaching ClickHouse while Event Hubs was unreachable.
        assert seen["early"] > seen["before"] and seen["late"] > seen["early"], seen
        assert seen["facts_late"] > 0
        # The cloud worker was behind during the outage and said so.
        lag_lines = [r.getMessage() for r in caplog.records
                     if "records behind, oldest undelivered" in r.getMessage() and r.levelname == "WARNING"]
        assert lag_lines, "no lag reported while the cloud was unreachable"
        # Every cloud record the flows wrote reached the cloud topic, each exactly once.
        written = recorders[0].values
        [cloud_status] = [s for s in summary.outbox if s["name"] == "cloud"]
        assert written and cloud_status["behind"] == 0 and cloud_status["delivered"] == len(written), cloud_status
        got = [v for _, v in read_topic(cloud_conf, CLOUD_TOPIC)]
        assert Counter(got) == Counter(written)
        # a record version: its table, time, version and text fields (site, machine, and the group
        # of a rollup row — shift, part number, work order — or an event's ids)
        keys = Counter((r["type"], r.get("window_start", r.get("start")), r.get("version"),
                        tuple(sorted((k, v) for k, v in r.items() if isinstance(v, str))))
                       for r in map(orjson.loads, got))
        assert max(keys.values()) == 1, "a record version reached the cloud twice"
        assert {r["type"] for r in map(orjson.loads, got)} >= {"oee_facts", "alerts"}
        print(f"cloud outage {seen['outage_s']:.0f}s: {len(got)} cloud records, measurements in ClickHouse "
              f"{seen['before']} → {seen['early']} → {seen['late']} during the outage; {summary.cloud}")
    finally:
        cloud.stop()


# -- the webhook ------------------------------------------------------------------------------------


class Receiver:
    """A real HTTP webhook receiver that can go down (stop listening) and come back on its port."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted: Counter[str] = Counter()
        self.status = 200
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers.get("Idempotency-Key", "")
                code = receiver.status
                if code == 200:
                    assert orjson.loads(body)["event_id"] == key
                    with receiver.lock:
                        receiver.accepted[key] += 1
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


T0 = 1_763_791_200_000
MACHINES = [f"press-{i:02d}" for i in range(1, 7)]


def vibration_feed(conf: dict[str, Any], stop: threading.Event, sent: list[int]) -> None:
    """Demo-like input: per machine a vibration sample every (event) 10 s, each machine going into
    ISO zone D and back every 40 samples (alerts raised and cleared), 4 simulated minutes a second."""
    producer = Producer(kafka.producer_config(conf))
    step = 0
    while not stop.is_set():
        for _ in range(24):
            for k, m in enumerate(MACHINES):
                high = ((step + k * 7) // 20) % 2 == 1
                value = 19.0 if high else 2.5
                producer.produce(kafka.MEASUREMENTS, orjson.dumps(
                    {"ts": T0 + step * 10_000, "machine": m, "metric": "vibration_rms_mms", "value": value}),
                    m.encode())
                sent[0] += 1
            step += 1
        producer.poll(0)
        stop.wait(1.0)
    producer.flush(30)


@pytest.mark.timeout(WEBHOOK_OUTAGE_S + 300)
def test_webhook_down_for_minutes_the_flow_runs_on_and_every_alert_is_delivered_once(
        broker: TansuBroker, kafka_conf: dict[str, Any], ch_dsn: str, ch_db: str, ch: Any,
        receiver: Receiver) -> None:
    config = build_config({
        "site": "plant-a", "lines": [{"id": "line-1", "machines": [{"id": m} for m in MACHINES]}],
        "alerts": {"silence": {"enabled": False}, "webhook": {
            "url": receiver.url, "backoff_initial_s": 0.2, "backoff_max_s": 5.0}},
        "outbox": {"log_every_s": 5}}, {})
    flows = {"archive": ARCHIVE, "alerts": ALERTS}
    create_topics(kafka_conf, flows, 4)
    stop_input, stop_reading = threading.Event(), threading.Event()
    sent = [0]
    feeder = threading.Thread(target=vibration_feed, args=(kafka_conf, stop_input, sent), daemon=True)
    [worker] = workers_from_config(config, kafka_conf)
    sink = chc.ClickHouseSink(lambda: chc.connect(ch_dsn, database=ch_db))
    flow = build_dataflow(config, kafka.KafkaInput(kafka_conf, stop=stop_reading), sink, flows=flows,
                          kafka_sink=kafka.KafkaOutput(kafka_conf))
    runner = threading.Thread(target=run_main, args=(flow,), kwargs={"epoch_interval": timedelta(seconds=1)},
                              daemon=True)
    seen: dict[str, Any] = {}

    def alerts_in_clickhouse() -> int:
        return int(ch.query("SELECT count() FROM alerts FINAL").result_rows[0][0])

    feeder.start()
    runner.start()
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while not receiver.accepted and time.monotonic() < deadline:
            time.sleep(0.5)
        assert receiver.accepted, "no alert reached the webhook before the outage"
        receiver.stop()  # the webhook is down: connections refused
        down = time.monotonic()
        seen["alerts_at_down"] = alerts_in_clickhouse()
        seen["accepted_at_down"] = sum(receiver.accepted.values())
        time.sleep(max(0.0, WEBHOOK_OUTAGE_S - 3))
        seen["alerts_late"] = alerts_in_clickhouse()
        seen["status_late"] = worker.status()
        time.sleep(max(0.0, WEBHOOK_OUTAGE_S - (time.monotonic() - down)))
        receiver.start()  # back on the same port
        seen["down_s"] = time.monotonic() - down
        time.sleep(3)
    finally:
        stop_input.set()
        feeder.join(60)
        stop_reading.set()
        runner.join(120)
    assert not runner.is_alive(), "the flow did not stop"
    assert worker.stop(drain_s=120), worker.status()

    assert seen["down_s"] >= WEBHOOK_OUTAGE_S
    # The flow ran on while the webhook was down: alerts kept reaching ClickHouse.
    assert seen["alerts_late"] > seen["alerts_at_down"], seen
    late = seen["status_late"]
    assert late["running"] and late["behind"] > 0 and late["oldest_age_s"] >= WEBHOOK_OUTAGE_S - 10, late
    # Every alert event the flow wrote (its topic holds them all; the ClickHouse table keeps
    # the latest per alert) was accepted by the webhook exactly once.
    events = {orjson.loads(v)["event_id"] for _, v in read_topic(kafka_conf, ALERTS_TOPIC)}
    assert len(events) > seen["accepted_at_down"]
    assert set(receiver.accepted) == events
    assert max(receiver.accepted.values()) == 1, "an alert was posted twice"
    status = worker.status()
    assert status["delivered"] == len(events) and status["deadlettered"] == 0
    print(f"webhook down {seen['down_s']:.0f}s: {len(events)} alerts, {seen['accepted_at_down']} before, "
          f"{len(events) - seen['accepted_at_down']} delivered after; {sent[0]} measurements in")


# -- refusals and resumption ---------------------------------------------------------------------------


def test_refused_records_go_to_the_dead_letter_and_the_rest_is_delivered_after_a_restart(
        broker: TansuBroker, kafka_conf: dict[str, Any], receiver: Receiver, tmp_path: Path) -> None:
    kafka.create_topics(kafka_conf, {ALERTS_TOPIC: 2})
    producer = Producer(kafka.producer_config(kafka_conf))
    rows = [{"alert_id": f"a{i}", "event_id": f"a{i}:raised:warning", "machine": f"m{i % 3}"} for i in range(30)]
    for r in rows:
        producer.produce(ALERTS_TOPIC, orjson.dumps(r), r["machine"].encode())
    producer.flush(10)

    class Picky(WebhookSink):
        """The real sink, to a receiver that refuses a11 for good (422)."""

        def attempt(self, row: Any) -> Any:
            if row["event_id"] == "a11:raised:warning":
                receiver.status = 422
                try:
                    return super().attempt(row)
                finally:
                    receiver.status = 200
            return super().attempt(row)

    def worker() -> OutboxWorker:
        return OutboxWorker(kafka_conf, [ALERTS_TOPIC], WebhookDelivery(Picky(receiver.url)), batch_size=7)

    first = worker().start()
    deadline = time.monotonic() + 30
    while sum(receiver.accepted.values()) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.stop()  # mid-way: committed offsets say where the next worker starts
    done_first = sum(receiver.accepted.values())
    second = worker().start()
    assert second.stop(drain_s=30), second.status()
    want = {r["event_id"] for r in rows} - {"a11:raised:warning"}
    assert set(receiver.accepted) == want
    # A batch interrupted by the stop is posted again from its committed offset: duplicates
    # carry the same Idempotency-Key; records of committed batches never come twice.
    assert sum(receiver.accepted.values()) - len(want) <= 7 and done_first >= 10
    [dl] = [orjson.loads(v) for _, v in read_topic(kafka_conf, kafka.DEADLETTER)]
    assert "HTTP 422" in dl["reason"] and dl["source"].startswith(f"outbox:kafka:{ALERTS_TOPIC}/")
    assert orjson.loads(dl["raw"])["event_id"] == "a11:raised:warning"


def test_a_record_too_large_for_the_cloud_is_dead_lettered_and_the_rest_is_sent(
        broker: TansuBroker, kafka_conf: dict[str, Any], tmp_path: Path) -> None:
    from plantstream.connectors.eventhubs import Target

    cloud = TansuBroker(tmp_path / "cloud").start()
    try:
        cloud_conf = {"bootstrap.servers": cloud.bootstrap}
        kafka.create_topics(cloud_conf, {CLOUD_TOPIC: 1})
        kafka.create_topics(kafka_conf, {kafka.CLOUD_OUTBOX: 1})
        producer = Producer(kafka.producer_config(kafka_conf))
        values = [orjson.dumps({"type": "alerts", "machine": "m", "n": i, "pad": "x" * (300_000 if i == 2 else 10)})
                  for i in range(5)]
        for v in values:
            producer.produce(kafka.CLOUD_OUTBOX, v, b"s/m")
        producer.flush(10)
        target = Target({**cloud_conf, "message.max.bytes": 100_000}, CLOUD_TOPIC, eventhubs=False)
        w = OutboxWorker(kafka_conf, [kafka.CLOUD_OUTBOX], CloudDelivery(target)).start()
        assert w.stop(drain_s=30), w.status()
        got = [v for _, v in read_topic(cloud_conf, CLOUD_TOPIC)]
        assert got == [v for i, v in enumerate(values) if i != 2]
        [dl] = [orjson.loads(v) for _, v in read_topic(kafka_conf, kafka.DEADLETTER)]
        assert "MSG_SIZE_TOO_LARGE" in dl["reason"] or "too large" in dl["reason"].lower()
        assert dl["length"] == len(values[2]) and w.status()["deadlettered"] == 1
    finally:
        cloud.stop()


def test_webhook_delivery_of_a_record_that_is_not_json_is_refused_without_a_post() -> None:
    d = WebhookDelivery(WebhookSink("http://127.0.0.1:9/hook"))
    assert d.deliver([OutboxRecord("t", 0, 0, None, b"[1]", 0)], lambda s: True) == [
        ("refused", "not an alert record (JSON object expected)")]


# -- the flows' health ---------------------------------------------------------------------------------


def test_flow_health_reflects_kafka_clickhouse_the_outbox_lag_and_a_stuck_dataflow(
        broker: TansuBroker, kafka_conf: dict[str, Any]) -> None:
    import urllib.error
    import urllib.request

    from plantstream.connectors.health import FlowHealth, HealthServer, Progress

    def get(url: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read())

    kafka.create_topics(kafka_conf, {ALERTS_TOPIC: 1})
    now = [1000.0]
    progress = Progress(clock=lambda: now[0])
    stats = chc.SinkStats()
    # A webhook nobody listens on: its worker retries, the record waits in the topic.
    worker = OutboxWorker(kafka_conf, [ALERTS_TOPIC], WebhookDelivery(
        WebhookSink("http://127.0.0.1:9/hook", backoff_initial_s=0.2, backoff_max_s=0.5))).start()
    health = FlowHealth(kafka_conf, sink_stats=stats, workers=[worker], progress=progress, stall_s=60,
                        ready_max_age_s=2.0, kafka_check_s=0.0)
    try:
        with HealthServer(0, health, host="127.0.0.1") as server:
            base = f"http://127.0.0.1:{server.port}"
            progress.beat("0")
            deadline = time.monotonic() + 10
            while get(base + "/readyz")[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert get(base + "/readyz")[0] == 200 and get(base + "/healthz")[0] == 200
            # ClickHouse failing: not ready; an insert lands: ready again.
            stats.record_failure("Connection refused", 0.5)
            code, body = get(base + "/readyz")
            assert code == 503 and body["clickhouse"]["ok"] is False
            stats.record("alerts", 1, 0.01)
            assert get(base + "/readyz")[0] == 200
            # An alert the webhook cannot take: behind, and not ready once it waited 2 s.
            producer = Producer(kafka.producer_config(kafka_conf))
            producer.produce(ALERTS_TOPIC, orjson.dumps({"event_id": "a:raised:warning"}), b"m")
            producer.flush(10)
            deadline = time.monotonic() + 15
            while get(base + "/readyz")[0] == 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            code, body = get(base + "/readyz")
            assert code == 503 and body["outbox"][0]["behind"] == 1 and body["outbox"][0]["oldest_age_s"] > 2
            assert get(base + "/healthz")[0] == 200  # a late webhook is no reason to restart
            # The dataflow stops turning with Kafka and ClickHouse up: not live.
            now[0] += 61
            code, body = get(base + "/healthz")
            assert code == 503 and body["dataflow"]["stuck"] is True
            # Kafka unreachable: the wait is explained (live), not ready.
            broker.pause()
            try:
                code, body = get(base + "/healthz")
                assert code == 200 and body["kafka"]["ok"] is False
                assert get(base + "/readyz")[0] == 503
            finally:
                broker.resume()
    finally:
        worker.stop()
