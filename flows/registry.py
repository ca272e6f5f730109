"""Flows by name. A flow is a function over the stream of Measurements.

A data engineer adds a flow by adding one module to ``flows/`` that defines a function

    def my_flow(ctx: FlowContext, measurements: Stream[Measurement]) -> Results

decorated with ``@register("my_flow")``. It returns ClickHouse table name → stream of rows
(dicts of column → value, timestamps as epoch ms). The entry point wires every result stream
to the ClickHouse sink and, for tables with a result topic, to Kafka. Flows do no I/O.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bytewax.dataflow import Stream

from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import ConfigError
from plantstream.schemas.measurement import Measurement

Row = dict[str, Any]
Results = Mapping[str, Stream[Row]]


@dataclass(frozen=True)
class FlowContext:
    """What every flow may read: the plant config. Nothing here does I/O."""

    config: PlantConfig


FlowFn = Callable[[FlowContext, Stream[Measurement]], Results]


@dataclass(slots=True)
class Decoded:
    """One input batch decoded: its Measurements in order, dead-letter rows, raw size in bytes.

    ``raw[i]`` is the message ``measurements[i]`` was decoded from, or None when plantstream
    filled fields the message lacked (site, line from the config): a message kept as it came
    can be handed to ClickHouse as is.
    """

    measurements: list[Measurement]
    raw: list[bytes | None]
    deadletters: list[Row]
    raw_bytes: int

_REGISTRY: dict[str, FlowFn] = {}
_NOT_FLOWS = frozenset({"cli", "main", "registry", "replay", "demo"})


def register(name: str) -> Callable[[FlowFn], FlowFn]:
    """Register a flow under ``name`` (used by ``--flows`` and ``PLANTSTREAM_FLOWS``)."""

    def deco(fn: FlowFn) -> FlowFn:
        other = _REGISTRY.get(name)
        if other is not None and other is not fn:
            msg = f"two flows are registered as {name!r}: {other.__module__} and {fn.__module__}"
            raise ConfigError(msg)
        _REGISTRY[name] = fn
        return fn

    return deco


def _discover() -> None:
    from plantstream import flows

    for info in pkgutil.iter_modules(flows.__path__):
        if info.name.startswith(("_", "cli")) or info.name in _NOT_FLOWS:
            continue
        importlib.import_module(f"plantstream.flows.{info.name}")


def available() -> dict[str, FlowFn]:
    """Every registered flow, after importing each module in ``flows/``."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def select(names: str | list[str] | None) -> dict[str, FlowFn]:
    """The flows named (comma-separated or a list); all of them when ``None`` or ``"all"``."""
    flows = available()
    if names is None or names == "all" or names == ["all"]:
        return flows
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
    unknown = [n for n in wanted if n not in flows]
    if unknown:
        msg = f"unknown flow(s) {unknown}; choose from {sorted(flows)} (option --flows)"
        raise ConfigError(msg)
    return {n: flows[n] for n in wanted if n}
