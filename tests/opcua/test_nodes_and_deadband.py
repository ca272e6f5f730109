"""Nodes by NodeId and by browse path (no browsing), and an absolute deadband on Double nodes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from plantstream.connectors.opcua import OpcUaConnector
from plantstream.simulators.opcua_server import PlcOpcUaServer
from plantstream.simulators.plc import PlcLine
from tests.opcua.helpers import START, H, measurements, plant_config, quiet, until

pytestmark = pytest.mark.integration


def test_configured_nodes_and_deadband(tmp_path: Path, kafka_conf: dict[str, Any]) -> None:
    async def scenario() -> tuple[list, PlcLine]:
        line = PlcLine(seed=12, machines=1, start_ms=START)
        srv = PlcOpcUaServer(line, speed=0)
        async with srv:
            nodes = [
                {"node_id": f"ns={srv.ns};s=Channel1.press-01.MachineState"},
                {"browse_path": f"0:Objects/{srv.ns}:Channel1/{srv.ns}:press-01/{srv.ns}:PartCountGood",
                 "tag": "Channel1.press-01.PartCountGood"},
                {"node_id": f"ns={srv.ns};s=Channel1.press-01.Temperature_C"},
            ]
            cfg = plant_config(tmp_path, srv.endpoint, browse=[], nodes=nodes, deadband=0.5)
            conn = OpcUaConnector(cfg, kafka_conf)
            stop = asyncio.Event()
            task = asyncio.create_task(conn.run(stop))
            await until(lambda: conn.stats.produced >= 3, what="initial values")
            await srv.play(until_ms=START + H)
            await quiet(lambda: conn.stats.received)
            stop.set()
            stats = await task
            assert stats.nodes == 3
        return measurements(kafka_conf), line

    ms, line = asyncio.run(scenario())
    truth = line.ground_truth()
    assert {m.metric for m in ms} == {"machine_state", "good_count", "temperature_c"}
    # counters and states are never deadbanded
    assert [m.value for m in ms if m.metric == "good_count"][-1] == truth.final["press-01"]["good_count"]
    states = [(m.ts, m.value) for m in ms if m.metric == "machine_state"]
    assert states == [(s.start_ms, s.state) for s in truth.states]
    # the temperature only comes when it moved more than 0.5 °C (asyncua's server compares
    # with the previous sample): the warm-up ramp comes through, the ±0.1 °C noise does not
    temps = [float(m.value) for m in ms if m.metric == "temperature_c"]
    samples = H // line.sample_ms
    assert 2 < len(temps) < samples / 4
