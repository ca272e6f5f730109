"""The archive flow: every Measurement into ClickHouse ``measurements``.

Its function form (``archive(ctx, measurements)``, a row per Measurement) is the worked example
of a flow in the README ("Adding a flow"); in the plant's dataflow it runs as a
:class:`~flows.engine.BatchFlow`: per input batch, the messages as they came (JSON that
ClickHouse parses) and a column block of the rest.
"""

from __future__ import annotations

import math

import bytewax.operators as op
from bytewax.dataflow import Stream

from connectors.clickhouse import Block, JsonRows
from flows.engine import BatchFlow
from flows.registry import Decoded, FlowContext, Results, Row, register
from schemas.measurement import Measurement


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


COLUMNS = ("ts", "site", "line", "machine", "metric", "value", "value_str", "unit", "source", "quality")


def measurement_block(measurements: list[Measurement]) -> Block:
    """The ``measurements`` rows of a batch, column by column (one transpose, no dict per row).

    >>> b = measurement_block([Measurement(1763791200000, "press-01", "part_number", "P-100"),
    ...                        Measurement(1763791200001, "press-01", "temperature_c", 61)])
    >>> b.data[b.columns.index("value_str")], b.data[b.columns.index("value")][1]
    (['P-100', ''], 61.0)
    """
    if not measurements:
        return Block(COLUMNS, [[] for _ in COLUMNS])
    ts, machine, metric, value, site, line, unit, source, quality = zip(*measurements, strict=True)
    nan = math.nan
    numbers = [nan if type(v) is str else float(v) for v in value]
    texts = [v if type(v) is str else "" for v in value]
    return Block(COLUMNS, [ts, site, line, machine, metric, numbers, texts, unit, source, quality])


def archive_blocks(decoded: Decoded) -> list[tuple[str, Block | JsonRows]]:
    """A batch for the sink: numbers sent as they came go to ClickHouse as their JSON (it parses
    them into ``measurements`` through ``measurements_json``); the rest (strings, samples whose
    site or line came from the config) as a column block.

    >>> from flows.registry import Decoded
    >>> raw = b'{"ts":1763791200000,"machine":"m1","metric":"x","value":61.5,"site":"s","line":"l"}'
    >>> ms = [Measurement(1763791200000, "m1", "x", 61.5, "s", "l"),
    ...       Measurement(1763791200000, "m1", "part_number", "P-100", "s", "l")]
    >>> [(t, len(b)) for t, b in archive_blocks(Decoded(ms, [raw, b"..."], [], 0))]
    [('measurements', 1), ('measurements', 1)]
    """
    plain: list[bytes] = []
    other: list[Measurement] = []
    for m, raw in zip(decoded.measurements, decoded.raw, strict=True):
        if raw is not None and type(m.value) is not str:
            plain.append(raw)
        else:
            other.append(m)
    return [("measurements", JsonRows(JSON_TABLE, b"\n".join(plain), len(plain))),
            ("measurements", measurement_block(other))]


JSON_TABLE = "measurements_json"
"""The Null table whose materialized view parses JSON measurements into ``measurements``."""


def _item(ctx: FlowContext, measurements: Stream[Measurement]) -> Results:
    return {"measurements": op.map("archive_rows", measurements, measurement_row)}


archive = register("archive")(BatchFlow(
    lambda ctx: archive_blocks, _item,
    doc="Archive raw measurements (90-day retention) for drill-down and re-computation."))
