"""Shared fixtures: real embedded services, a throwaway database and topics per test.

- ``broker``: a fresh Tansu Kafka-protocol broker with the plantstream topics (function scope;
  it starts in milliseconds and keeps data in memory only).
- ``ch_dsn`` / ``ch_db`` / ``ch``: one chDB path for the whole pytest process (chDB allows one
  path per process) and a fresh, migrated database per test.
- ``mqtt_broker``: an in-process amqtt broker on a free loopback port.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from plantstream.connectors import clickhouse as chc
from plantstream.connectors import kafka
from plantstream.connectors.embedded import AmqttBroker, TansuBroker

# CI replays the same examples every run (a failure there is reproducible, never a coin toss);
# a developer's run explores new ones and keeps failures in .hypothesis/.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def ch_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def ch_db(ch_dsn: str) -> Iterator[str]:
    """A fresh, migrated database name in the session's chDB; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    client = chc.connect(ch_dsn, database=name)
    chc.migrate(client)
    client.close()
    yield name
    admin = chc.connect(ch_dsn)
    admin.command(f"DROP DATABASE IF EXISTS {name} SYNC")
    admin.close()


@pytest.fixture
def ch(ch_dsn: str, ch_db: str) -> Iterator[Any]:
    client = chc.connect(ch_dsn, database=ch_db)
    yield client
    client.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TansuBroker]:
    b = TansuBroker(tmp_path / "logs").start()
    try:
        kafka.create_topics({"bootstrap.servers": b.bootstrap}, {t: 4 for t in kafka.ALL_TOPICS})
        yield b
    finally:
        b.stop()


@pytest.fixture
def kafka_conf(broker: TansuBroker) -> dict[str, Any]:
    return {"bootstrap.servers": broker.bootstrap}


@pytest.fixture
def mqtt_broker() -> Iterator[AmqttBroker]:
    b = AmqttBroker().start()
    try:
        yield b
    finally:
        b.stop()


PAHO_FIXTURES = frozenset({"mqtt_broker", "any_mqtt", "mosquitto_factory"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests whose MQTT connector (paho-mqtt) lives in this process first.

    paho-mqtt 2.2 waits on its socket with ``select()``, which cannot watch a descriptor
    numbered 1024 or above (it then reconnects forever and never sees a CONNACK). chDB keeps
    three descriptors open per thread of its pool (``/proc/self/task/*/{stat,schedstat,io}``)
    and the pool grows with every migrated test database, so after a few hundred chDB tests in
    one process every descriptor below 1024 is taken. The order of the rest is unchanged.
    """

    def in_process_mqtt(item: pytest.Item) -> bool:
        names = set(getattr(item, "fixturenames", ()))
        return (item.nodeid.startswith("tests/mqtt/") or bool(PAHO_FIXTURES & names)
                or item.get_closest_marker("paho") is not None)

    items[:] = sorted(items, key=lambda item: not in_process_mqtt(item))
