"""Topic creation from config against the real embedded Tansu broker.

What Tansu does with topic configs (checked below, so a Tansu upgrade that changes it shows):
CreateTopics stores the given topic configs and the partition count; DescribeConfigs returns
exactly the configs a topic was created with (nothing for the rest: no broker defaults);
CreatePartitions is not supported. It does not apply retention or compaction to the in-memory
log while a test runs, so the tests assert what the broker stores and reports, which is what a
Kafka cluster enforces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient, ConfigResource

from plantstream.cli.main import run
from plantstream.connectors import kafka
from plantstream.connectors.embedded import TansuBroker
from plantstream.flows.main import create_topics as flows_create_topics
from plantstream.flows.registry import available, result_topics, topics
from plantstream.schemas.config import KafkaConfig, load_config_text
from plantstream.schemas.errors import ConfigError

pytestmark = pytest.mark.integration


@pytest.fixture
def bare_broker(tmp_path: Path) -> Any:
    """A Tansu broker without any topic (the ``broker`` fixture creates the plant's topics)."""
    b = TansuBroker(tmp_path / "logs").start()
    try:
        yield b
    finally:
        b.stop()


def described(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in names])
    return {res.name: {k: v.value for k, v in fut.result(10).items()} for res, fut in futures.items()}


def partitions_of(bootstrap: str) -> dict[str, int]:
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in meta.topics.items()}


def plant_yaml(tmp_path: Path, bootstrap: str, kafka_section: dict[str, Any]) -> Path:
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump({"site": "plant-a", "kafka": {"bootstrap_servers": bootstrap, **kafka_section}}))
    return path


def test_create_topics_from_config_on_tansu(bare_broker: TansuBroker, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = plant_yaml(tmp_path, bare_broker.bootstrap, {
        "partitions": 3,
        "topics": {kafka.MEASUREMENTS: {"partitions": 6, "retention_ms": 3 * 86_400_000},
                   "plantstream.oee": {"retention_ms": -1, "configs": {"max.message.bytes": 2_097_152}}},
    })
    assert run(["kafka", "create-topics", "--config", str(config), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    every = topics(available().values())
    assert [r["topic"] for r in rows] == list(every)
    assert {r["action"] for r in rows} == {"created"}

    parts = partitions_of(bare_broker.bootstrap)
    assert parts[kafka.MEASUREMENTS] == 6
    assert all(parts[t] == 3 for t in every if t != kafka.MEASUREMENTS)
    # Result topics are the flows' declarations: every declared topic exists on the broker.
    assert set(result_topics(available().values()).values()) <= set(parts)

    cfg = described(bare_broker.bootstrap, list(every))
    assert cfg[kafka.WORKORDERS] == {"cleanup.policy": "compact"}
    assert cfg[kafka.MEASUREMENTS] == {"cleanup.policy": "delete", "retention.ms": str(3 * 86_400_000)}
    assert cfg[kafka.DEADLETTER]["retention.ms"] == str(30 * 86_400_000)
    assert cfg["plantstream.oee"] == {"cleanup.policy": "delete", "retention.ms": "-1", "max.message.bytes": "2097152"}
    other = next(t for t in every if t not in (*kafka.PLANT_TOPICS, "plantstream.oee"))
    assert cfg[other] == {"cleanup.policy": "delete", "retention.ms": str(7 * 86_400_000)}


def test_create_topics_is_idempotent_and_reports_a_partition_mismatch(
        bare_broker: TansuBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = {"bootstrap.servers": bare_broker.bootstrap}
    # Someone created the measurements topic by hand with 2 partitions and another retention.
    kafka.create_topics(conf, [kafka.TopicSpec(kafka.MEASUREMENTS, 2, 1, {"retention.ms": "1000"})])
    config = plant_yaml(tmp_path, bare_broker.bootstrap, {"partitions": 4})
    assert run(["kafka", "create-topics", "--config", str(config), "--format", "json"]) == 0
    first = capsys.readouterr()
    actions = {r["topic"]: (r["action"], r["partitions"]) for r in json.loads(first.out)}
    assert actions[kafka.MEASUREMENTS] == ("differs", 2)
    assert all(a == ("created", 4) for t, a in actions.items() if t != kafka.MEASUREMENTS)
    assert f"topic '{kafka.MEASUREMENTS}' has 2 partitions, the config asks for 4" in first.err
    assert f"has retention.ms=1000, the config asks for {7 * 86_400_000}" in first.err
    assert partitions_of(bare_broker.bootstrap)[kafka.MEASUREMENTS] == 2  # never repartitioned

    # Again: nothing is created, the rest is as configured, the difference is reported again;
    # --strict turns it into exit status 1 (a CI or hook that must not go on).
    assert run(["kafka", "create-topics", "--config", str(config), "--format", "json"]) == 0
    again = {r["topic"]: r["action"] for r in json.loads(capsys.readouterr().out)}
    assert again.pop(kafka.MEASUREMENTS) == "differs" and set(again.values()) == {"exists"}
    assert run(["kafka", "create-topics", "--config", str(config), "--strict"]) == 1


def test_runtime_creation_uses_the_same_settings(bare_broker: TansuBroker) -> None:
    kc = KafkaConfig.model_validate({"bootstrap_servers": bare_broker.bootstrap, "partitions": 2})
    flows = available()
    statuses = flows_create_topics(kc.client_config(), {"oee": flows["oee"]}, kc)
    names = [s.spec.name for s in statuses]
    assert names[:3] == list(kafka.PLANT_TOPICS) and "plantstream.oee" in names
    assert described(bare_broker.bootstrap, [kafka.WORKORDERS])[kafka.WORKORDERS] == {"cleanup.policy": "compact"}
    # The old call form (a partition count) still works and keeps the work orders compacted.
    again = flows_create_topics(kc.client_config(), {"oee": flows["oee"]}, 2)
    assert {s.action for s in again} == {"exists"}


def test_a_topic_setting_for_no_topic_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = plant_yaml(tmp_path, "127.0.0.1:1", {"topics": {"plantstream.oeee": {"partitions": 2}}})
    assert run(["kafka", "create-topics", "--config", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "kafka.topics.plantstream.oeee" in err and "plantstream.oee" in err
    with pytest.raises(ConfigError, match="retention_ms"):
        load_config_text("site: a\nkafka:\n  topics:\n    plantstream.measurements:\n"
                         "      configs: {retention.ms: 5}\n")


def test_dry_run_needs_no_broker_and_no_broker_is_one_line(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "plant.yaml"
    path.write_text("site: a\n")
    assert run(["kafka", "create-topics", "--config", str(path), "--dry-run", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["action"] for r in rows} == {"planned"}
    assert run(["kafka", "create-topics", "--config", str(path)]) == 2
    assert "set kafka.bootstrap_servers" in capsys.readouterr().err
