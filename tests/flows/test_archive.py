"""The worked example of a flow test: TestingSource → flow → TestingSink, no services needed."""

from __future__ import annotations

import math
import pickle
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from plantstream.connectors import clickhouse as chc
from plantstream.connectors.kafka import RawMessage
from plantstream.flows.archive import archive, archive_blocks
from plantstream.flows.main import build_dataflow
from plantstream.flows.registry import Decoded, FlowContext, available
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import Measurement


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


def test_archive_is_declared_by_its_module() -> None:
    from plantstream.flows import archive as module

    flow = available()["archive"]
    assert flow is module.FLOW and flow.build is archive
    assert dict(flow.tables) == {"measurements": "001_measurements.sql",
                                 "measurements_json": "002_measurements_json.sql"}
    assert not flow.topics and not flow.cloud  # raw measurements stay in the plant


def test_the_plant_dataflow_archives_every_kind_of_sample_through_clickhouse_json(ch_dsn: str, ch_db: str,
                                                                                  ch: Any) -> None:
    """In the plant's dataflow the archive hands ClickHouse JSON (mostly the messages as they
    came) through ``measurements_json``: numbers, bools, text, samples completed from the config,
    unknown extra fields — and a message ClickHouse itself refuses (a key given twice, which the
    decoder accepts, last value winning) is written re-encoded, not lost."""
    config = PlantConfig.model_validate({"site": "plant-a", "lines": [{"id": "l1", "machines": [{"id": "m2"}]}]})
    values = [
        b'{"ts":1763791200000,"machine":"m1","metric":"temperature_c","value":61.5,"site":"s","line":"l",'
        b'"unit":"C","source":"opcua","vendor_field":[1,2]}',
        b'{"ts":1763791201000,"machine":"m1","metric":"good_count","value":4501,"site":"s","line":"l"}',
        b'{"ts":1763791202000,"machine":"m1","metric":"door_open","value":true,"site":"s","line":"l"}',
        b'{"ts":1763791203000,"machine":"m1","metric":"part_number","value":"P-100","site":"s","line":"l"}',
        b'{"ts":1763791204000,"machine":"m2","metric":"temperature_c","value":70.25,"quality":"uncertain"}',
        b'{"ts":1763791205000,"machine":"m1","metric":"vibration_rms_mms","value":1,"value":2.5,"site":"s","line":"l"}',
    ]
    raw = [RawMessage(b"m1", v, "plantstream.measurements", 0, i, 1763791300000) for i, v in enumerate(values)]
    chc.migrate(ch)
    flow = build_dataflow(config, TestingSource(raw), chc.ClickHouseSink(lambda: chc.connect(ch_dsn, database=ch_db)),
                          flows={"archive": archive})
    run_main(flow)
    got = ch.query("SELECT toUnixTimestamp64Milli(ts), site, line, machine, metric, value, value_str, unit, "
                   "source, toString(quality) FROM measurements FINAL ORDER BY ts").result_rows
    assert [r[:5] for r in got] == [
        (1763791200000, "s", "l", "m1", "temperature_c"), (1763791201000, "s", "l", "m1", "good_count"),
        (1763791202000, "s", "l", "m1", "door_open"), (1763791203000, "s", "l", "m1", "part_number"),
        (1763791204000, "plant-a", "l1", "m2", "temperature_c"),
        (1763791205000, "s", "l", "m1", "vibration_rms_mms")]
    assert [r[5] for r in got if not math.isnan(r[5])] == [61.5, 4501.0, 1.0, 70.25, 2.5]
    assert math.isnan(got[3][5]) and got[3][6] == "P-100" and [r[6] for r in got].count("") == 5
    assert (got[0][7], got[0][8], got[4][9]) == ("C", "opcua", "uncertain")


def test_archive_blocks_survive_pickling_to_another_process() -> None:
    """In a Bytewax cluster a block may go to the sink partition of another process."""
    raw = b'{"ts":1763791200000,"machine":"m1","metric":"x","value":1,"value":2,"site":"s","line":"l"}'
    decoded = Decoded([Measurement(1763791200000, "m1", "x", 2, "s", "l")], [raw], [], len(raw))
    [(table, block)] = archive_blocks(decoded)
    copy = pickle.loads(pickle.dumps(block))
    assert (table, copy.into, copy.data, copy.rows) == ("measurements", "measurements_json", raw, 1)
    assert copy.clean is not None and orjson.loads(copy.clean(copy.data))["value"] == 2
