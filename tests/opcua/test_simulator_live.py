"""Simulators started without ``--start`` play live: history fast up to now, never ahead of the
wall clock (a consumer's ``clock.max_ahead_s`` would dead-letter samples from the future).

The PLC line is served by the real OPC UA simulator server and read back by an asyncua client;
the bakery publishes to the tests' embedded MQTT broker.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from asyncua import Client

from plantstream.cli.common import LIVE_BACKLOG_MS, simulator_start
from plantstream.connectors.embedded import AmqttBroker
from plantstream.simulators.bakery import BakerySim, publish
from plantstream.simulators.opcua_server import PlcOpcUaServer
from plantstream.simulators.plc import PlcLine


def wall_ms() -> int:
    return int(time.time() * 1000)


async def _play_for(live: bool, seconds: float) -> tuple[int, int, int]:
    """(line time, wall time, SourceTimestamp of the last state change read over OPC UA, ms)."""
    line = PlcLine(seed=2, machines=1, start_ms=wall_ms() - 3_600_000)
    async with PlcOpcUaServer(line, speed=3600, live=live) as srv:
        stop = asyncio.Event()
        task = asyncio.create_task(srv.play(stop=stop))
        await asyncio.sleep(seconds)
        async with Client(srv.endpoint) as c:
            dv = await c.get_node(srv.node_id("press-01", "PartCountGood")).read_data_value()
        stop.set()
        await task
        source_ms = int(dv.SourceTimestamp.timestamp() * 1000)
        return line.now, wall_ms(), source_ms


def test_a_live_plc_line_catches_up_and_never_runs_ahead() -> None:
    now, wall, source = asyncio.run(_play_for(live=True, seconds=3.0))
    assert wall - 5_000 <= now <= wall  # the hour of history played, then held at the wall clock
    assert source <= wall
    # without live (an explicit --start), 3600x runs on: three hours in three seconds
    now, wall, _ = asyncio.run(_play_for(live=False, seconds=3.0))
    assert now > wall + 3_600_000


def test_simulator_start_is_live_only_without_start() -> None:
    start, live = simulator_start(None, 60)
    assert live and abs(wall_ms() - LIVE_BACKLOG_MS - (start or 0)) < 60_000
    start, live = simulator_start(None, 1)
    assert live and abs(wall_ms() - (start or 0)) < 60_000  # real time: from now
    assert simulator_start("2025-11-22T06:00:00Z", 60) == (1763791200000, False)


@pytest.mark.paho  # the bakery (paho) publishes from the test process
def test_a_live_bakery_publishes_nothing_from_the_future(mqtt_broker: AmqttBroker) -> None:
    sim = BakerySim(seed=4, start_ms=wall_ms() - 600_000, machines=5)
    ahead: list[int] = []
    stop = threading.Event()

    def seen(ts: int, topic: str, payload: bytes) -> None:
        ahead.append(ts - wall_ms())

    threading.Timer(4.0, stop.set).start()
    sent = publish(sim, mqtt_broker.host, mqtt_broker.port, speed=0, live=True, stop=stop, on_message=seen)
    assert sent == len(ahead) > 100
    assert max(ahead) <= 0  # each message went out once the wall clock had reached its time
    assert max(ahead) > -60_000  # and the ten minutes of history were all sent, up to now
