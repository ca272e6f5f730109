"""The archive flow: every Measurement into ClickHouse ``measurements``.

The worked example of a flow (see the README, "Adding a flow"): one function over the
Measurement stream, registered by name, returning table name → stream of rows.
"""

from __future__ import annotations

import math

import bytewax.operators as op
from bytewax.dataflow import Stream

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


@register("archive")
def archive(ctx: FlowContext, measurements: Stream[Measurement]) -> Results:
    """Archive raw measurements (90-day retention) for drill-down and re-computation."""
    return {"measurements": op.map("archive_rows", measurements, measurement_row)}
