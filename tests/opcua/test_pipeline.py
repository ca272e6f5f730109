"""PLC simulator → OPC UA server → connector → Kafka, checked against the simulator's ground truth.

Real asyncua server and client, real Tansu broker; nothing mocked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from plantstream.connectors.embedded import TansuBroker
from plantstream.connectors.opcua import OpcUaConnector
from plantstream.schemas.config import build_config
from plantstream.simulators.opcua_server import PlcOpcUaServer
from plantstream.simulators.plc import PlcLine
from tests.opcua.helpers import (
    START,
    H,
    counter_totals,
    measurements,
    per_machine_states,
    plant_config,
    quiet,
    truth_states,
    until,
)

pytestmark = pytest.mark.integration


def _check_against_truth(ms: list, line: PlcLine) -> None:
    truth = line.ground_truth()
    got = per_machine_states(ms)
    want = truth_states(truth)
    assert set(got) == set(want) == set(line.machine_ids)
    for machine in want:
        assert got[machine] == want[machine], machine
        for metric, key in (("good_count", "good"), ("reject_count", "reject")):
            total, last = counter_totals(ms, machine, metric)
            assert last == truth.final[machine][metric]
            assert total == truth.counts[machine][key]
    # per machine, Kafka holds the records in event-time order
    for machine in want:
        ts = [m.ts for m in ms if m.machine == machine]
        assert ts == sorted(ts)


def test_every_state_change_and_final_counters_reach_kafka(tmp_path: Path, kafka_conf: dict[str, Any]) -> None:
    async def scenario() -> tuple[list, PlcLine, Any]:
        line = PlcLine(seed=3, machines=2, start_ms=START)
        srv = PlcOpcUaServer(line, speed=0)
        async with srv:
            cfg = plant_config(tmp_path, srv.endpoint)
            conn = OpcUaConnector(cfg, kafka_conf)
            stop = asyncio.Event()
            task = asyncio.create_task(conn.run(stop))
            await until(lambda: conn.stats.produced > 0, what="initial values")
            await srv.play(until_ms=START + 2 * H)
            await quiet(lambda: conn.stats.received)
            stop.set()
            stats = await task
        return measurements(kafka_conf), line, stats

    ms, line, stats = asyncio.run(scenario())
    assert stats.nodes == 2 * 15 and stats.deadlettered == 0  # all tags but the ignored ToolID
    _check_against_truth(ms, line)
    assert {m.source for m in ms} == {"opcua"} and {m.line for m in ms} == {"line-1"}
    # the condition signals come through too, with their source timestamps
    assert any(m.metric == "vibration_rms_mms" and m.ts == START + 600_000 for m in ms)


def test_broker_outage_and_connector_restart_lose_nothing(tmp_path: Path, broker: TansuBroker,
                                                          kafka_conf: dict[str, Any]) -> None:
    async def scenario() -> tuple[list, PlcLine, Any]:
        # slower cycles keep the write rate modest on a shared CI machine
        line = PlcLine(seed=5, machines=2, start_ms=START, config=build_config({"lines": [{"id": "line-1",
                       "machines": [{"id": "press-01", "ideal_cycle_time_ms": 5000},
                                    {"id": "cnc-01", "ideal_cycle_time_ms": 6000}]}]}, {}))
        srv = PlcOpcUaServer(line, speed=300)  # five minutes of production per second
        async with srv:
            cfg = plant_config(tmp_path, srv.endpoint)
            conn = OpcUaConnector(cfg, kafka_conf)
            stop = asyncio.Event()
            task = asyncio.create_task(conn.run(stop))
            await until(lambda: conn.stats.produced > 0, what="initial values")
            end = asyncio.Event()
            player = asyncio.create_task(srv.play(stop=end))
            await until(lambda: line.now > START + H // 6, what="10 min of production")
            broker.pause()  # Kafka unreachable for 10 s while the line keeps producing
            await asyncio.sleep(10)
            broker.resume()
            outage_end = line.now
            await until(lambda: line.now > outage_end + H // 4, timeout=120, what="production after the outage")
            stop.set()  # connector restart: the line goes on while it is down
            await task
            down_from = line.now
            await until(lambda: line.now > down_from + H // 4, timeout=120, what="15 min without connector")
            conn2 = OpcUaConnector(cfg, kafka_conf)
            stop2 = asyncio.Event()
            task2 = asyncio.create_task(conn2.run(stop2))
            restart = line.now
            await until(lambda: line.now > restart + H // 4, timeout=120, what="production after the restart")
            end.set()
            await player
            await until(lambda: conn2.stats.connects > 0, what="reconnect")
            await quiet(lambda: conn2.stats.received)
            stop2.set()
            await task2
        return measurements(kafka_conf), line, (conn.stats, conn2.stats, conn.producer)

    ms, line, (_, s2, _) = asyncio.run(scenario())
    assert s2.backfilled > 0  # what happened while the connector was down came from history
    _check_against_truth(ms, line)


def test_server_restart_reconnects_and_resubscribes(tmp_path: Path, kafka_conf: dict[str, Any]) -> None:
    async def scenario() -> tuple[list, PlcLine, Any]:
        line = PlcLine(seed=14, machines=1, start_ms=START)
        srv = PlcOpcUaServer(line, speed=0)
        await srv.start()
        cfg = plant_config(tmp_path, srv.endpoint)
        conn = OpcUaConnector(cfg, kafka_conf)
        stop = asyncio.Event()
        task = asyncio.create_task(conn.run(stop))
        try:
            await until(lambda: conn.stats.produced > 0, what="initial values")
            await srv.play(until_ms=START + H // 2)
            await quiet(lambda: conn.stats.received)
            await srv.stop()  # the PLC's OPC UA server goes away …
            await until(lambda: conn.stats.reconnects > 0, what="the connector noticing")
            srv = PlcOpcUaServer(line, port=srv.port, speed=0)  # … and comes back on the same port
            await srv.start()
            await until(lambda: conn.stats.connects > 1, timeout=60, what="re-subscription")
            await srv.play(until_ms=START + H)
            await quiet(lambda: conn.stats.received)
        finally:
            stop.set()
            stats = await task
            await srv.stop()
        return measurements(kafka_conf), line, stats

    ms, line, stats = asyncio.run(scenario())
    assert stats.connects >= 2 and stats.reconnects >= 1
    _check_against_truth(ms, line)
