"""``/metrics``, ``/healthz`` and ``/readyz`` of running processes, read over HTTP as Prometheus would.

- The flows' entry point (``python -m bytewax.run "plantstream.flows.main:get_flow()"``) as a
  real process on the embedded Kafka-protocol broker, writing over HTTP to a ClickHouse endpoint
  (chDB behind ClickHouse's HTTP protocol, ``tests/sinks/chdb_http.py``): messages in, rows
  written per table and dead letters by reason go from 0 to what was sent; the consumer lag
  and the epoch durations are there; ``/readyz`` fails while ClickHouse is unreachable and
  recovers when it is back.
- The MQTT connector on a real MQTT broker: messages in, measurements out and a dead letter's
  reason counter move with the traffic; the producer's spool bytes are reported.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from plantstream.connectors.embedded import TansuBroker
from plantstream.connectors.mqtt import MqttConnector
from plantstream.flows.replay import produce_lines
from plantstream.schemas.config import build_config
from tests.mqtt.conftest import wait_until
from tests.sinks.chdb_http import ChdbHttpServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
T0 = 1763791200000
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def scrape(base: str) -> dict[str, float]:
    """``/metrics`` as ``{'name{labels}': value}`` (labels as written by prometheus_client)."""
    code, body = get(base + "/metrics")
    assert code == 200, body[:500]
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m is not None, f"not a Prometheus sample line: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def value(metrics: dict[str, float], name: str, **labels: str) -> float:
    """The sum of the series of ``name`` whose labels include ``labels`` (0 when there is none)."""
    total = 0.0
    for key, v in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{val}"' in rest for k, val in labels.items()):
            total += v
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_flow_process_metrics_move_with_traffic_and_readyz_follows_clickhouse(
        broker: TansuBroker, ch_dsn: str, ch_db: str, tmp_path: Path) -> None:
    server = ChdbHttpServer(ch_dsn).start()
    port = free_port()
    config_path = tmp_path / "plant.yaml"
    config_path.write_text(yaml.safe_dump({
        "site": "plant-a",
        "lines": [{"id": "line-1", "machines": [{"id": "press-01"}, {"id": "press-02"}]}],
        "kafka": {"bootstrap_servers": broker.bootstrap},
        "clickhouse": {"url": server.url, "database": ch_db, "retry_initial_s": 0.2, "retry_max_s": 0.5,
                       "flush_interval_s": 0.2},
    }))
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init = subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert init.returncode == 0, init.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLANTSTREAM", "BYTEWAX_"))}
    env.update({"PLANTSTREAM_CONFIG": str(config_path), "PLANTSTREAM_FLOWS": "archive",
                "PLANTSTREAM_HEALTH_PORT": str(port), "PYTHONUNBUFFERED": "1"})
    err = (tmp_path / "flow.err").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", "-w", "1", "-r", str(recovery),
                             "-s", "1", "-b", "0", "plantstream.flows.main:get_flow()"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"

    def log() -> str:
        return (tmp_path / "flow.err").read_text(errors="replace")[-4000:]

    try:
        assert wait_until(lambda: get(base + "/readyz")[0] == 200 or proc.poll() is not None, 120), log()
        assert proc.poll() is None, log()
        before = scrape(base)
        assert value(before, "plantstream_process_info", component="flows") == 1
        assert value(before, "plantstream_messages_in_total") == 0
        assert value(before, "plantstream_rows_written_total", table="measurements") == 0

        lines = [orjson.dumps({"ts": T0 + i * 1000, "machine": f"press-0{1 + i % 2}",
                               "metric": "temperature_c", "value": 40.0 + i}) for i in range(30)]
        bad = [b"not json at all", b'{"machine": "press-01", "metric": "x"}']
        assert produce_lines({"bootstrap.servers": broker.bootstrap}, lines + bad) == 32

        def landed() -> bool:
            m = scrape(base)
            return value(m, "plantstream_rows_written_total", table="measurements") >= 30 and \
                value(m, "plantstream_deadletters_total", component="flows") >= 2

        assert wait_until(landed, 60, 0.3), (scrape(base), log())
        after = scrape(base)
        assert value(after, "plantstream_messages_in_total", component="flows",
                     source="kafka:plantstream.measurements") == 32
        assert value(after, "plantstream_rows_written_total", table="measurements") == 30
        assert value(after, "plantstream_deadletters_total", component="flows", reason="not_json") == 1
        assert value(after, "plantstream_deadletters_total", component="flows", reason="bad_field") == 1
        assert value(after, "plantstream_rows_written_total", table="deadletter") == 2
        assert value(after, "plantstream_clickhouse_up") == 1
        assert value(after, "plantstream_clickhouse_inserts_total") >= 2
        # Consumer lag of every input partition: read to the end.
        lags = {k: v for k, v in after.items() if k.startswith("plantstream_kafka_consumer_lag_records")}
        assert lags and all(v == 0 for v in lags.values()), lags
        # Epochs of the input (one second each here) are being timed.
        assert wait_until(lambda: value(scrape(base), "plantstream_epoch_duration_seconds_count") >= 2, 30, 0.3)
        epochs = scrape(base)
        mean = (value(epochs, "plantstream_epoch_duration_seconds_sum")
                / value(epochs, "plantstream_epoch_duration_seconds_count"))
        assert 0.5 <= mean <= 5.0, mean

        # ClickHouse unreachable: the next insert fails, /readyz says so; /healthz stays up.
        server.stop()
        assert produce_lines({"bootstrap.servers": broker.bootstrap}, [orjson.dumps(
            {"ts": T0 + 100_000, "machine": "press-01", "metric": "temperature_c", "value": 1.0})]) == 1
        assert wait_until(lambda: get(base + "/readyz")[0] == 503, 60), log()
        assert orjson.loads(get(base + "/readyz")[1])["clickhouse"]["ok"] is False
        assert get(base + "/healthz")[0] == 200
        down = scrape(base)
        assert value(down, "plantstream_clickhouse_up") == 0
        assert value(down, "plantstream_clickhouse_insert_retries_total") >= 1
        # Back on the same port: the held-back row lands and the flow is ready again.
        server.start()
        assert wait_until(lambda: get(base + "/readyz")[0] == 200, 60), log()
        back = scrape(base)
        assert value(back, "plantstream_rows_written_total", table="measurements") == 31
        assert value(back, "plantstream_messages_in_total", component="flows") == 33
        assert get(base + "/nope")[0] == 404
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()
        server.close()


def test_mqtt_connector_metrics_move_with_traffic(any_mqtt: tuple[str, int], kafka_conf: dict[str, Any],
                                                  tmp_path: Path) -> None:
    host, mport = any_mqtt
    config = build_config({
        "tags": {"L1.Press.Good": {"machine": "press-01", "metric": "good_count"}},
        "mqtt": {"host": host, "port": mport, "protocol": "3.1.1", "client_id": "metrics-test",
                 "subscriptions": [{"topic": "iotgateway/#", "format": "kepware"}]},
        "producer": {"spool_dir": str(tmp_path / "spool"), "health_port": 0, "health_host": "127.0.0.1"},
    }, {})
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="metrics-gateway")
    pub.connect(host, mport)
    pub.loop_start()
    try:
        with MqttConnector(config, kafka_conf) as c:
            base = f"http://127.0.0.1:{c.health_port}"
            before = scrape(base)
            assert value(before, "plantstream_process_info", component="mqtt") == 1
            assert value(before, "plantstream_messages_in_total", source="mqtt") == 0
            assert value(before, "plantstream_source_connected", source="mqtt", protocol="mqtt") == 1
            assert value(before, "plantstream_spool_bytes", producer="mqtt") == 0
            for i in range(5):
                pub.publish("iotgateway/l1", orjson.dumps(
                    {"timestamp": T0 + i, "values": [{"id": "L1.Press.Good", "v": i}]}), qos=1).wait_for_publish()
            pub.publish("iotgateway/l1", b"\xff not json", qos=1).wait_for_publish()
            pub.publish("iotgateway/l1", orjson.dumps(
                {"timestamp": T0, "values": [{"id": "L1.Press.Nope", "v": 1}]}), qos=1).wait_for_publish()
            assert wait_until(lambda: value(scrape(base), "plantstream_producer_confirmed_records_total",
                                            producer="mqtt") >= 7, 30)
            after = scrape(base)
            assert value(after, "plantstream_messages_in_total", component="mqtt", source="mqtt") == 7
            assert value(after, "plantstream_measurements_out_total", source="mqtt") == 5
            assert value(after, "plantstream_deadletters_total", component="mqtt", reason="not_json") == 1
            assert value(after, "plantstream_deadletters_total", component="mqtt", reason="unknown_tag") == 1
            assert value(after, "plantstream_producer_pending_records", producer="mqtt") == 0
            assert value(after, "plantstream_producer_last_delivery_timestamp_seconds") > T0 / 1000
            assert get(base + "/readyz")[0] == 200
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_one_registry_serves_several_components_of_one_process(tmp_path: Path) -> None:
    """What a supervisor does: an OPC UA and an MQTT connector watched into one Metrics, served by
    one HealthServer with a combined health; each component's series are there, the flows' too."""
    from plantstream.connectors.clickhouse import SinkStats
    from plantstream.connectors.health import HealthServer, Progress
    from plantstream.connectors.metrics import Metrics
    from plantstream.connectors.opcua import OpcUaConnector
    from plantstream.flows.main import flow_metrics

    config = build_config({
        "opcua": {"endpoint": "opc.tcp://127.0.0.1:4840", "state_file": str(tmp_path / "state.json"),
                  "source": "plc-1"},
        "mqtt": {"source": "bakery"},
        "producer": {"spool_dir": str(tmp_path / "spool")},
    }, {})
    metrics = Metrics("run")
    opcua = OpcUaConnector(config, {"bootstrap.servers": "127.0.0.1:1"}, metrics=metrics)
    mqtt = MqttConnector(config, {"bootstrap.servers": "127.0.0.1:1"}, metrics=metrics)
    stats, progress = SinkStats(), Progress()
    flow_metrics(sink_stats=stats, progress=progress, metrics=metrics)
    opcua.stats.received, mqtt.stats.messages = 4, 9
    mqtt.stats.deadletter_reasons["not_json"] += 2
    stats.record("oee_facts", 3, 0.01)
    progress.snapshot("0")
    progress.snapshot("0")
    with HealthServer(0, lambda: {"live": True, "ready": opcua.stats.connected}, host="127.0.0.1",
                      metrics=metrics) as server:
        base = f"http://127.0.0.1:{server.port}"
        m = scrape(base)
        assert get(base + "/readyz")[0] == 503 and get(base + "/healthz")[0] == 200
    assert value(m, "plantstream_process_info", component="run") == 1
    assert value(m, "plantstream_messages_in_total", source="plc-1") == 4
    assert value(m, "plantstream_messages_in_total", source="bakery") == 9
    assert value(m, "plantstream_deadletters_total", component="run", reason="not_json") == 2
    assert value(m, "plantstream_source_connected", protocol="opcua") == 0
    assert value(m, "plantstream_rows_written_total", table="oee_facts") == 3
    assert value(m, "plantstream_epoch_duration_seconds_count") == 1
    assert value(m, "plantstream_epoch_duration_seconds_bucket", le="0.5") == 1
