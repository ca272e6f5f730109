"""The archive flow: every Measurement into ClickHouse ``measurements``.

Its function form (``archive(ctx, measurements)``, a row per Measurement) is the worked example
of a flow in the README ("Adding a flow"); in the plant's dataflow it runs as a
:class:`~flows.engine.BatchFlow`: one column block per input batch.
"""

from __future__ import annotations

import math

import bytewax.operators as op
from bytewax.dataflow import Stream

from connectors.clickhouse import Block
from flows.engine import BatchFlow
from flows.registry import FlowContext, Results, Row, register
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


def _item(ctx: FlowContext, measurements: Stream[Measurement]) -> Results:
    return {"measurements": op.map("archive_rows", measurements, measurement_row)}


archive = register("archive")(BatchFlow(
    lambda ctx: lambda batch: {"measurements": measurement_block(batch)}, _item,
    doc="Archive raw measurements (90-day retention) for drill-down and re-computation."))
