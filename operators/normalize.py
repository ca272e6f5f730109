"""Normalization of decoded Measurements before any KPI logic sees them."""

from __future__ import annotations

from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import Measurement


def enrich(m: Measurement, config: PlantConfig) -> Measurement:
    """Fill ``site`` and ``line`` from the plant config when the source did not send them.

    >>> from plantstream.schemas.config import PlantConfig
    >>> cfg = PlantConfig.model_validate({"site": "s", "lines": [{"id": "l1", "machines": [{"id": "m"}]}]})
    >>> enrich(Measurement(1763791200000, "m", "good_count", 1), cfg).line
    'l1'
    """
    if m.site and m.line:
        return m
    info = config.machine(m.machine)
    return Measurement(m.ts, m.machine, m.metric, m.value, m.site or info.site,
                       m.line or info.line, m.unit, m.source, m.quality)
