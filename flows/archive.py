"""The archive flow: every Measurement into ClickHouse ``measurements``.

Called as a function (``archive(ctx, measurements)``) it maps each Measurement to a row, for
callers that compose flows themselves; in the plant's dataflow it runs as a
:class:`~flows.engine.BatchFlow`: per input batch, one block of JSON objects (mostly the
messages as they came) that ClickHouse parses into ``measurements``.
"""

from __future__ import annotations

import math
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Stream

from plantstream.connectors.clickhouse import JsonRows
from plantstream.flows.engine import BatchFlow
from plantstream.flows.registry import Decoded, Flow, FlowContext, Results, Row
from plantstream.schemas.measurement import Measurement, validate


def measurement_row(m: Measurement) -> Row:
    """The ``measurements`` row of one sample: numbers in ``value``, strings in ``value_str``.

    >>> measurement_row(Measurement(1763791200000, "press-01", "part_number", "P-100"))["value_str"]
    'P-100'
    """
    v = m.value
    if isinstance(v, str):
        num, text = math.nan, v
    else:
        num, text = float(v), ""
    return {
        "ts": m.ts, "site": m.site, "line": m.line, "machine": m.machine, "metric": m.metric,
        "value": num, "value_str": text, "unit": m.unit, "source": m.source, "quality": m.quality,
    }


JSON_TABLE = "measurements_json"
"""The Null table whose materialized view parses JSON measurements into ``measurements``."""
TEXT_FIELD = "_plantstream_text"
"""Its column for text values (a name no producer's extra field will take)."""


def measurement_json(m: Measurement) -> bytes:
    """A sample as the JSON object ``measurements_json`` takes (text values in their own field).

    >>> obj = orjson.loads(measurement_json(Measurement(1763791200000, "m", "part_number", "P-1")))
    >>> obj["_plantstream_text"], "value" in obj
    ('P-1', False)
    """
    obj: dict[str, Any] = {"ts": m.ts, "machine": m.machine, "metric": m.metric, "site": m.site,
                           "line": m.line, "unit": m.unit, "source": m.source, "quality": m.quality}
    if type(m.value) is str:
        obj[TEXT_FIELD] = m.value
    else:
        obj["value"] = m.value
    return orjson.dumps(obj)


def archive_blocks(decoded: Decoded) -> list[tuple[str, JsonRows]]:
    """A batch for the sink as JSON objects that ClickHouse parses into ``measurements``
    (through ``measurements_json``): numbers as their Kafka message, unchanged; text values and
    samples whose site or line came from the config re-encoded (:func:`measurement_json`). Should
    ClickHouse refuse a message that plantstream accepted (a key given twice), the sink
    re-encodes the batch from its Measurements and writes it again.

    >>> from plantstream.flows.registry import Decoded
    >>> raw = b'{"ts":1763791200000,"machine":"m1","metric":"x","value":61.5,"site":"s","line":"l"}'
    >>> ms = [Measurement(1763791200000, "m1", "x", 61.5, "s", "l"),
    ...       Measurement(1763791200000, "m1", "part_number", "P-100", "s", "l")]
    >>> [(t, len(b), b.data.count(b"\\n")) for t, b in archive_blocks(Decoded(ms, [raw, b"..."], [], 0))]
    [('measurements', 2, 1)]
    """
    ms = decoded.measurements
    lines = [raw if raw is not None and type(m.value) is not str else measurement_json(m)
             for m, raw in zip(ms, decoded.raw, strict=True)]
    # A module function, not a closure: the block may be pickled to the sink partition of
    # another process in a Bytewax cluster.
    return [("measurements", JsonRows(JSON_TABLE, b"\n".join(lines), len(lines), reencode))]


def reencode(data: bytes) -> bytes:
    """Lines of a block re-encoded by plantstream (what the sink writes if ClickHouse refuses
    them as sent): each line was a valid Measurement, decoded again the same way (a key given
    twice: the last one wins, as when it was first decoded).

    >>> reencode(b'{"ts":1763791200000,"machine":"m","metric":"x","value":1,"value":2}')[-10:]
    b'"value":2}'
    >>> reencode(measurement_json(Measurement(1763791200000, "m", "part_number", "P-1")))[-12:]
    b'text":"P-1"}'
    """
    out = []
    for line in data.split(b"\n"):
        obj = orjson.loads(line)
        if TEXT_FIELD in obj:  # a line this module wrote: its text value back in place
            obj["value"] = obj.pop(TEXT_FIELD)
        m = validate(obj)
        if not isinstance(m, Measurement):  # it was one when the block was made
            msg = f"a measurement of the block no longer validates: {m}"
            raise ValueError(msg)
        out.append(measurement_json(m))
    return b"\n".join(out)


def _item(ctx: FlowContext, measurements: Stream[Measurement]) -> Results:
    return {"measurements": op.map("archive_rows", measurements, measurement_row)}


archive = BatchFlow(
    lambda ctx: archive_blocks, _item,
    doc="Archive raw measurements (90-day retention) for drill-down and re-computation.")

FLOW = Flow(
    name="archive", build=archive, doc=archive.doc,
    tables={"measurements": "001_measurements.sql", JSON_TABLE: "002_measurements_json.sql"},
)
"""Raw measurements stay in the plant: no result topic, nothing to the cloud."""
