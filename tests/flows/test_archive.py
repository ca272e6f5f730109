"""The worked example of a flow test: TestingSource → flow → TestingSink, no services needed."""

from __future__ import annotations

import math

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.archive import archive
from flows.registry import FlowContext, available
from schemas.config import PlantConfig
from schemas.measurement import Measurement


def run_flow(measurements: list[Measurement]) -> dict[str, list[dict]]:
    flow = Dataflow("test_archive")
    stream = op.input("in", flow, TestingSource(measurements))
    results = archive(FlowContext(PlantConfig()), stream)
    out: dict[str, list[dict]] = {}
    for table, rows in results.items():
        out[table] = []
        op.output(f"out_{table}", rows, TestingSink(out[table]))
    run_main(flow)
    return out


def test_archive_turns_each_measurement_into_one_row() -> None:
    ms = [
        Measurement(1763791200000, "press-01", "temperature_c", 61.5, "a", "l1", "C", "opcua"),
        Measurement(1763791201000, "press-01", "part_number", "P-100", "a", "l1"),
        Measurement(1763791202000, "press-01", "machine_state", True, quality="bad"),
    ]
    rows = run_flow(ms)["measurements"]
    assert [r["ts"] for r in rows] == [1763791200000, 1763791201000, 1763791202000]
    assert rows[0]["value"] == 61.5 and rows[0]["value_str"] == ""
    assert math.isnan(rows[1]["value"]) and rows[1]["value_str"] == "P-100"
    assert rows[2]["value"] == 1.0 and rows[2]["quality"] == "bad"


def test_archive_is_registered_by_name() -> None:
    assert available()["archive"] is archive
