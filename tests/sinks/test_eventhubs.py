"""The cloud sink: Event Hubs settings from a connection string, rollups, delivery, bytes saved."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow, Stream
from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka import Consumer, KafkaError, TopicPartition
from pydantic import SecretStr

from plantstream.connectors import clickhouse as chc
from plantstream.connectors import eventhubs as eh
from plantstream.connectors import kafka
from plantstream.connectors.outbox import CloudDelivery, OutboxWorker
from plantstream.flows.archive import archive
from plantstream.flows.main import build_dataflow, create_topics
from plantstream.flows.registry import FlowContext, Results, resolve
from plantstream.flows.replay import produce_lines
from plantstream.flows.status import status
from plantstream.operators.rollup import coalesce, rollup
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.schemas.errors import ConfigError
from plantstream.schemas.measurement import Measurement
from plantstream.schemas.sinks_config import EventHubsConfig

# A connection string in the exact format the Azure portal shows (the key is made up).
CS = ("Endpoint=sb://contoso-plants.servicebus.windows.net/;SharedAccessKeyName=plantstream-send;"
      "SharedAccessKey=q1W2e3R4t5Y6u7I8o9P0aSdFgHjKlZxCvBnM1234567=;EntityPath=plant-kpis")


def test_connection_string_gives_exactly_the_documented_librdkafka_settings() -> None:
    assert eh.eventhubs_client_config(CS) == {
        "bootstrap.servers": "contoso-plants.servicebus.windows.net:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "$ConnectionString",
        "sasl.password": CS,
    }
    cs = eh.parse_connection_string(CS)
    assert (cs.namespace_host, cs.key_name, cs.entity_path) == (
        "contoso-plants.servicebus.windows.net", "plantstream-send", "plant-kpis")
    assert cs.key.endswith("=")  # base64 padding survives the Name=value split
    assert "q1W2e3" not in repr(cs)


def test_config_section_and_environment_build_the_target() -> None:
    cfg = build_config({"eventhubs": {"connection_string": CS, "extra": {"linger.ms": 100}}}, {})
    target = eh.target_from_config(cfg.eventhubs, {})
    assert target is not None and target.eventhubs and target.topic == "plant-kpis"
    for k, v in eh.eventhubs_client_config(CS).items():
        assert target.conf[k] == v
    assert target.conf["linger.ms"] == 100
    assert CS not in repr(target) and "***" in repr(target)
    # The connection string from the environment when the section does not name one.
    env_target = eh.target_from_config(EventHubsConfig(), {"PLANTSTREAM_EVENTHUBS_CONNECTION_STRING": CS})
    assert env_target is not None and env_target.conf["sasl.password"] == CS
    assert eh.target_from_config(EventHubsConfig(), {}) is None
    # Any Kafka cluster.
    other = eh.target_from_config(EventHubsConfig(bootstrap_servers="k:9092", topic="kpis"), {})
    assert other is not None and other.conf == {"bootstrap.servers": "k:9092"} and not other.eventhubs


@pytest.mark.parametrize(("text", "names"), [
    ("SharedAccessKeyName=a;SharedAccessKey=b;EntityPath=c", "Endpoint"),
    ("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=b;EntityPath=c", "SharedAccessKeyName"),
    ("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=a;EntityPath=c", "SharedAccessKey"),
    ("Endpoint=https://ns.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b", "Endpoint"),
    ("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey", "SharedAccessKey"),
])
def test_malformed_connection_strings_name_the_part(text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        eh.eventhubs_client_config(text)


def test_config_errors_name_the_field_and_the_fix() -> None:
    no_entity = CS.rsplit(";EntityPath", 1)[0]
    with pytest.raises(ConfigError, match="EntityPath"):
        eh.target_from_config(EventHubsConfig(connection_string=SecretStr(no_entity)), {})
    ok = eh.target_from_config(EventHubsConfig(connection_string=SecretStr(no_entity), topic="kpis"), {})
    assert ok is not None and ok.topic == "kpis"
    with pytest.raises(ConfigError, match=r"eventhubs.tables.*never raw measurements"):
        build_config({"eventhubs": {"tables": ["oee_facts", "measurements"]}}, {})
    with pytest.raises(ConfigError, match=r"eventhubs\.oee_rollup_s"):
        build_config({"eventhubs": {"oee_rollup_s": 7}}, {})
    with pytest.raises(ConfigError, match="topic"):
        build_config({"eventhubs": {"bootstrap_servers": "k:9092"}}, {})


T0 = 1_763_791_200_000  # 2025-11-22T06:00:00Z, on the hour
MIN = 60_000


def fact(machine: str, minute: int, run_s: float, good: int, version: int = 1) -> dict[str, Any]:
    return {"site": "plant-a", "line": "line-1", "machine": machine, "window_start": T0 + minute * MIN,
            "run_s": run_s, "good": good, "version": version}


def test_rollup_sums_per_hour_and_resends_a_restated_hour() -> None:
    facts = [fact("m1", i, 50.0, 10) for i in range(0, 125)]   # 06:00 … 08:04
    facts.insert(70, fact("m1", 5, 60.0, 12, version=2))         # 06:05 restated after 07:00 began
    facts.append(fact("m1", 3, 0.0, 0, version=0))               # an older version: ignored
    flow = Dataflow("rollup_test")
    keyed = op.key_on("k", op.input("in", flow, TestingSource(facts)), lambda r: r["machine"])
    out: list[tuple[str, dict[str, Any]]] = []
    op.output("out", rollup("r", keyed, period_s=3600, restate_buckets=2), TestingSink(out))
    run_main(flow)
    rows = [r for _, r in out]
    got = [(r["window_start"], r["version"], r["windows"], r["run_s"], r["good"]) for r in rows]
    # 06:00 sent when 07:00 begins (60 windows of 50 s / 10 good), again with version 2 when
    # its 06:05 window is restated (+10 s, +2 good); 07:00 when 08:00 begins; 08:00 at the end.
    assert got == [
        (T0, 1, 60, 3000.0, 600),
        (T0, 2, 60, 3010.0, 602),
        (T0 + 60 * MIN, 1, 60, 3000.0, 600),
        (T0 + 120 * MIN, 1, 5, 250.0, 50),
    ]
    assert all(r["window_end"] - r["window_start"] == 3_600_000 for r in rows)


def _harness(ctx: FlowContext, measurements: Stream[Measurement]) -> Results:
    """Additive facts derived from ``good_parts`` samples: a stand-in for a KPI flow's output."""

    def to_fact(m: Measurement) -> dict[str, Any] | None:
        if m.metric != "good_parts":
            return None
        return {"site": m.site, "line": m.line, "machine": m.machine,
                "window_start": m.ts - m.ts % MIN, "run_s": 60.0, "good": int(m.value), "version": 1}

    return {"cloud_test_facts": op.filter_map("harness_facts", measurements, to_fact)}


def _run_with_cloud(config: PlantConfig, kafka_conf: dict[str, Any], ch_sink: chc.ClickHouseSink,
                    flows: dict[str, Any]) -> eh.BandwidthMeter:
    """The flows to the end, their cloud records through the outbox topic and the cloud worker."""
    target = eh.target_from_config(config.eventhubs, {})
    assert target is not None
    meter = eh.BandwidthMeter()
    create_topics(kafka_conf, resolve(flows), 1)
    kafka.create_topics(kafka_conf, {kafka.CLOUD_OUTBOX: 1})
    worker = OutboxWorker(kafka_conf, [kafka.CLOUD_OUTBOX], CloudDelivery(target, meter)).start()
    try:
        flow = build_dataflow(config, kafka.KafkaInput(kafka_conf, stop="end"), ch_sink, flows=flows,
                              kafka_sink=kafka.KafkaOutput(kafka_conf), cloud_meter=meter)
        run_main(flow, epoch_interval=timedelta(seconds=1))
    finally:
        assert worker.stop(drain_s=30), worker.status()
    return meter


def _consume(conf: dict[str, Any], topic: str) -> list[tuple[bytes, dict[str, Any], dict[str, Any]]]:
    consumer = Consumer({**conf, "group.id": f"t-{uuid.uuid4().hex[:6]}", "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out = []
    try:
        while True:
            msg = consumer.poll(10.0)
            assert msg is not None, "no end of partition within 10 s"
            err = msg.error()
            if err is not None and err.code() == KafkaError._PARTITION_EOF:
                break
            assert err is None, err
            out.append((msg.key() or b"", orjson.loads(msg.value() or b"null"), dict(msg.headers() or [])))
    finally:
        consumer.close()
    return out


@pytest.mark.integration
def test_flow_delivers_rollups_to_a_kafka_topic_and_counts_bytes_saved(
        kafka_conf: dict[str, Any], ch_dsn: str, ch_db: str, ch: Any) -> None:
    ch.command("CREATE TABLE cloud_test_facts (site String, line String, machine String, "
               "window_start DateTime64(3, 'UTC'), run_s Float64, good UInt64, version UInt64) "
               "ENGINE = ReplacingMergeTree(version) ORDER BY (machine, window_start)")
    topic = "cloud.kpis"
    kafka.create_topics(kafka_conf, {topic: 1})
    machines = ("press-01", "cnc-01")
    lines: list[bytes] = []
    expected: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for minute in range(150):  # 06:00 … 08:29
        for k, machine in enumerate(machines):
            good = (minute * 7 + k * 3) % 50
            ts = T0 + minute * MIN
            lines.append(orjson.dumps({"ts": ts, "machine": machine, "metric": "good_parts", "value": good}))
            hour = T0 + (minute // 60) * 60 * MIN
            expected[(machine, hour)][0] += good
            expected[(machine, hour)][1] += 1
            for s in range(0, 60, 10):  # raw condition telemetry that must stay in the plant
                lines.append(orjson.dumps({"ts": ts + s * 1000, "machine": machine,
                                           "metric": "temperature_c", "value": 40.0 + s / 10,
                                           "unit": "degC", "source": "opcua"}))
    raw_bytes = sum(len(x) for x in lines)
    assert produce_lines(kafka_conf, lines) == len(lines)

    config = PlantConfig.model_validate({
        "site": "plant-a",
        "lines": [{"id": "line-1", "machines": [{"id": m} for m in machines]}],
        "eventhubs": {"bootstrap_servers": kafka_conf["bootstrap.servers"], "topic": topic,
                      "tables": ["cloud_test_facts"], "rollup_tables": ["cloud_test_facts"]},
    })
    ch_sink = chc.ClickHouseSink(lambda: chc.connect(ch_dsn, database=ch_db))
    meter = _run_with_cloud(config, kafka_conf, ch_sink,
                            {"archive": archive, "status": status, "harness": _harness})

    records = _consume(kafka_conf, topic)
    assert {v["type"] for _, v, _ in records} == {"cloud_test_facts"}
    assert all(h == {eh.TABLE_HEADER: b"cloud_test_facts"} for _, _, h in records)
    assert all(k == f"plant-a/{v['machine']}".encode() for k, v, _ in records)
    got = {(v["machine"], v["window_start"]): [v["good"], v["windows"]] for _, v, _ in records}
    assert got == dict(expected)  # 2 machines × 3 hours, sums from the input itself
    assert len(records) == 6
    # ClickHouse still has every minute fact and the raw measurements; the cloud got 6 records.
    assert ch.query("SELECT count() FROM cloud_test_facts FINAL").result_rows == [(300,)]
    assert ch.query("SELECT count() FROM measurements FINAL").result_rows == [(len(lines),)]
    assert ch.query("SELECT count() FROM machine_status FINAL").result_rows == [(2,)]

    assert meter.raw_bytes == raw_bytes and meter.raw_records == len(lines)
    assert meter.sent_records == 6
    assert meter.sent_bytes == sum(len(k) + len(eh.record_value("cloud_test_facts", v)) for k, v, _ in records)
    assert meter.ratio > 100
    print(meter.summary())


def test_rollup_restated_window_replaces_all_its_rows_like_oee_facts_latest() -> None:
    # Window 06:01 first splits 30 s / 30 s between parts A and B (version 4); restated with
    # version 9 it is all part B. The hour must then hold 60 s of B for that window, no A.
    def f(minute: int, part: str, run_s: float, version: int) -> dict[str, Any]:
        return {**fact("m1", minute, run_s, 0, version), "part_number": part,
                "shift_start": T0, "shift": "day"}

    facts = [f(0, "B", 60.0, 1), f(1, "A", 30.0, 4), f(1, "B", 30.0, 4), f(1, "A", 0.0, 2),
             f(1, "B", 60.0, 9), f(61, "B", 60.0, 10)]
    flow = Dataflow("rollup_restate")
    keyed = op.key_on("k", op.input("in", flow, TestingSource(facts)), lambda r: r["machine"])
    out: list[tuple[str, dict[str, Any]]] = []
    op.output("out", rollup("r", keyed, period_s=3600), TestingSink(out))
    run_main(flow)
    first_hour = [r for _, r in out if r["window_start"] == T0]
    assert [(r["part_number"], r["run_s"], r["windows"], r["shift_start"]) for r in first_hour] == [
        ("B", 120.0, 2, T0)]


@pytest.mark.integration
def test_real_oee_flow_facts_reach_the_cloud_as_hourly_rollups(
        kafka_conf: dict[str, Any], ch_dsn: str, ch_db: str, ch: Any) -> None:
    from plantstream.flows.oee import oee

    topic = "cloud.oee"
    kafka.create_topics(kafka_conf, {topic: 1})
    lines: list[bytes] = []
    for machine in ("press-01", "cnc-01"):
        lines.append(orjson.dumps({"ts": T0, "machine": machine, "metric": "machine_state", "value": "running"}))
        for step in range(0, 150 * 60, 2):  # a part every 2 s for 2.5 hours
            lines.append(orjson.dumps({"ts": T0 + step * 1000, "machine": machine,
                                       "metric": "good_count", "value": step // 2}))
    # cnc-01 faults from 06:20 to 06:30.
    lines.append(orjson.dumps({"ts": T0 + 20 * MIN, "machine": "cnc-01", "metric": "machine_state", "value": "fault"}))
    lines.append(orjson.dumps({"ts": T0 + 30 * MIN, "machine": "cnc-01", "metric": "machine_state", "value": "running"}))
    produce_lines(kafka_conf, lines)
    config = PlantConfig.model_validate({
        "site": "plant-a",
        "lines": [{"id": "line-1", "machines": [{"id": "press-01", "ideal_cycle_time_ms": 2000},
                                                {"id": "cnc-01", "ideal_cycle_time_ms": 2000}]}],
        "eventhubs": {"bootstrap_servers": kafka_conf["bootstrap.servers"], "topic": topic},
    })
    meter = _run_with_cloud(config, kafka_conf, chc.ClickHouseSink(lambda: chc.connect(ch_dsn, database=ch_db)),
                            {"oee": oee, "status": status})

    records = [v for _, v, _ in _consume(kafka_conf, topic)]
    assert {r["type"] for r in records} == {"oee_facts", "downtime_events"}
    hourly: dict[tuple[str, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    latest: dict[tuple[str, int], int] = {}
    for r in records:
        if r["type"] == "oee_facts":
            key = (r["machine"], r["window_start"])
            if r["version"] > latest.get(key, 0):  # a consumer keeps the highest rollup version
                latest[key] = r["version"]
                hourly[key] = defaultdict(float)
            if r["version"] == latest[key]:
                for col in ("run_s", "unplanned_stop_s", "planned_s", "good"):
                    hourly[key][col] += r[col]
    assert sorted(hourly) == [(m, T0 + h * 60 * MIN) for m in ("cnc-01", "press-01") for h in range(3)]
    # Ground truth for the full hours: press-01 ran all 3600 s; cnc-01 lost 600 s to the fault.
    assert hourly[("press-01", T0)]["run_s"] == pytest.approx(3600.0)
    assert hourly[("press-01", T0 + 60 * MIN)]["run_s"] == pytest.approx(3600.0)
    assert hourly[("cnc-01", T0)]["run_s"] == pytest.approx(3000.0)
    assert hourly[("cnc-01", T0)]["unplanned_stop_s"] == pytest.approx(600.0)
    assert hourly[("press-01", T0 + 60 * MIN)]["good"] == 1800
    # And the cloud's hourly sums equal what ClickHouse holds minute by minute.
    stored = ch.query(
        "SELECT machine, toUnixTimestamp(toStartOfHour(window_start)) * 1000, sum(run_s), "
        "sum(unplanned_stop_s), sum(planned_s), sum(good) FROM oee_facts_latest "
        "GROUP BY 1, 2 ORDER BY 1, 2").result_rows
    for machine, hour, run_s, stop_s, planned_s, good in stored:
        got = hourly[(machine, hour)]
        assert (got["run_s"], got["unplanned_stop_s"], got["planned_s"], got["good"]) == pytest.approx(
            (run_s, stop_s, planned_s, good))
    # The stop, updated every minute while open, leaves once, as it ended (06:20 → 06:30).
    downtime = [r for r in records if r["type"] == "downtime_events"]
    assert [(r["machine"], r["start"], r["end"], r["duration_s"], r["is_open"]) for r in downtime] == [
        ("cnc-01", T0 + 20 * MIN, T0 + 30 * MIN, 600.0, 0)]
    print(meter.summary())


def test_coalesce_sends_the_latest_version_of_each_event_once() -> None:
    updates: list[dict[str, Any]] = [{"machine": "m1", "start": T0, "duration_s": float(d), "version": v}
               for v, d in enumerate((0, 60, 120, 180), start=1)]
    updates.insert(2, {"machine": "m1", "start": T0 + 10 * MIN, "duration_s": 5.0, "version": 9})
    updates.append({"machine": "m1", "start": T0, "duration_s": 999.0, "version": 2})  # stale
    flow = Dataflow("coalesce_test")
    keyed = op.key_on("k", op.input("in", flow, TestingSource(updates)), lambda r: r["machine"])
    out: list[tuple[str, dict[str, Any]]] = []
    op.output("out", coalesce("c", keyed, every_s=3600), TestingSink(out))
    run_main(flow)
    assert sorted((r["start"], r["duration_s"], r["version"]) for _, r in out) == [
        (T0, 180.0, 4), (T0 + 10 * MIN, 5.0, 9)]
