"""The tag dictionary at work: a source tag and its raw value → one canonical Measurement.

Both OT connectors (OPC UA and MQTT) name every value they receive by a *source tag* and hand
it to :meth:`TagMapper.map` together with the raw value, its timestamp and its quality. The
mapper looks the tag up in the plant config's ``tags:`` dictionary (exact keys first, then
``{placeholder}`` patterns in file order) and returns:

- a :class:`~schemas.measurement.Measurement` (machine, canonical metric, converted value,
  unit, site/line from the mapping or the plant config, ``source``, ``quality``);
- a :class:`~schemas.measurement.DeadLetter` with a reason when the value cannot be used
  (wrong type, NaN/inf, a state code missing from the state map) or when a tag is unknown the
  *first* time it is seen (it is also logged once);
- ``None`` for later values of an already reported unknown tag: dropped, counted in
  :attr:`TagMapper.unknown_dropped`, never a crash.

Tag naming by the connectors (the keys you write under ``tags:``):

=================================================  ==========================================
source                                             source tag
=================================================  ==========================================
OPC UA node                                        the node's browse path or ``ns=2;s=…`` id
KEPServerEX IoT Gateway JSON (MQTT)                each value's ``id``: ``Channel.Device.Tag``
MQTT ``kepware/{channel}/{device}/{tag}`` scalar   ``channel.device.tag`` (same as the id)
MQTT other one-value topic                         the topic
MQTT flat JSON object                              ``topic#field``
=================================================  ==========================================

Value conversion by metric:

- ``machine_state``: a canonical state string passes through; anything else (int, bool,
  integral float, string) is looked up as a string in the tag's ``states`` map (default
  ``0 off, 1 running, 2 idle, 3 fault, 4 setup``);
- string metrics (``part_number``, ``work_order``, ``operator_id``, ``fault_code``,
  ``reason_code``, ``reason_split``, ``scrap_reason``): strings stay, numbers become strings
  (``7`` → ``"7"``);
- every other metric is numeric: int/float/bool → ``value * scale + offset`` (integral results
  of unscaled integers stay ints); strings, null, NaN and inf are dead-lettered.

API (used by ``connectors.opcua`` and ``connectors.mqtt``)
-----------------------------------------------------------
``TagMapper(config_or_tags, source="mqtt")`` — build once per connector.
``mapper.map(tag, value, ts_ms, quality="good", raw=b"") -> Measurement | DeadLetter | None``.
``mapper.lookup(tag) -> ResolvedTag | None`` — the mapping with placeholders filled.
``mapper.unknown_tags`` (set) and ``mapper.unknown_dropped`` (int) — for stats.

Examples
--------
>>> from plantstream.schemas.tags_config import TagMapping
>>> mapper = TagMapper({
...     "Line1.Press01.State": TagMapping(machine="press-01", metric="machine_state"),
...     "bakery/{site}/{machine}#oil_temp_f": TagMapping(
...         machine="{machine}", metric="oil_temperature_c", unit="degC", site="{site}",
...         scale=5 / 9, offset=-160 / 9),
... })
>>> m = mapper.map("Line1.Press01.State", 3, 1763791200000)
>>> (m.machine, m.metric, m.value)
('press-01', 'machine_state', 'fault')
>>> m = mapper.map("bakery/seattle/fryer-01#oil_temp_f", 375, 1763791200000)
>>> (m.machine, m.site, m.metric, round(m.value, 2), m.unit)
('fryer-01', 'seattle', 'oil_temperature_c', 190.56, 'degC')
>>> mapper.map("Line1.Press01.Nope", 1, 1763791200000).reason[:59]
"unknown tag 'Line1.Press01.Nope': not in the tag dictionary"
>>> mapper.map("Line1.Press01.Nope", 1, 1763791200000) is None, mapper.unknown_dropped
(True, 1)
>>> print(mapper.map("Line1.Press01.State", 9, 1763791200000).reason)  # doctest: +ELLIPSIS
tag 'Line1.Press01.State': state code '9' is not in its state map (known: 0, 1, 2, 3, 4); ...
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from plantstream.schemas.measurement import (
    CONTEXT_METRICS,
    FAULT_CODE,
    MACHINE_STATE,
    REASON_CODE,
    REASON_SPLIT,
    SCRAP_REASON,
    STATES,
    DeadLetter,
    Measurement,
    Value,
)
from plantstream.schemas.tags_config import TagMapping

if TYPE_CHECKING:
    from plantstream.schemas.config import PlantConfig

log = logging.getLogger(__name__)

STRING_METRICS: Final = CONTEXT_METRICS | {FAULT_CODE, REASON_CODE, REASON_SPLIT, SCRAP_REASON}
"""Metrics whose values are strings (numbers from the source are turned into strings)."""

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CANONICAL_STATES: Final = frozenset(STATES)


@dataclass(frozen=True, slots=True)
class ResolvedTag:
    """A tag's mapping with the placeholders of its pattern filled in."""

    tag: str
    machine: str
    metric: str
    mapping: TagMapping
    site: str = ""
    line: str = ""


def _compile(pattern: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>[^/#.]+)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out) + r"\Z")


def _fill(template: str, groups: Mapping[str, str]) -> str:
    if "{" not in template:
        return template
    return _PLACEHOLDER.sub(lambda m: groups.get(m.group(1), m.group(0)), template)


def _type_name(v: object) -> str:
    return "null" if v is None else type(v).__name__


class TagMapper:
    """Map (source tag, raw value) to canonical Measurements with the plant's tag dictionary.

    Not thread-safe; one per connector thread. Resolved pattern lookups are cached.
    """

    def __init__(self, tags: PlantConfig | Mapping[str, TagMapping], source: str = "",
                 *, cache_size: int = 100_000) -> None:
        config = None if isinstance(tags, Mapping) else tags
        table: Mapping[str, TagMapping] = tags if isinstance(tags, Mapping) else tags.tags
        self._config = config
        self._source = source
        self._exact: dict[str, TagMapping] = {}
        self._patterns: list[tuple[re.Pattern[str], TagMapping]] = []
        for key, mapping in table.items():
            if _PLACEHOLDER.search(key):
                self._patterns.append((_compile(key), mapping))
            else:
                self._exact[key] = mapping
        self._cache: dict[str, ResolvedTag | None] = {}
        self._cache_size = cache_size
        self.unknown_tags: set[str] = set()
        self.unknown_dropped = 0

    def __len__(self) -> int:
        return len(self._exact) + len(self._patterns)

    def lookup(self, tag: str) -> ResolvedTag | None:
        """The mapping of ``tag`` with placeholders filled, or None when the tag is unknown."""
        try:
            return self._cache[tag]
        except KeyError:
            pass
        resolved: ResolvedTag | None = None
        mapping = self._exact.get(tag)
        if mapping is not None:
            resolved = ResolvedTag(tag, mapping.machine, mapping.metric, mapping, mapping.site, mapping.line)
        else:
            for pattern, mapping in self._patterns:
                m = pattern.match(tag)
                if m is not None:
                    g = m.groupdict()
                    resolved = ResolvedTag(tag, _fill(mapping.machine, g), _fill(mapping.metric, g), mapping,
                                           _fill(mapping.site, g), _fill(mapping.line, g))
                    break
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[tag] = resolved
        return resolved

    def map(self, tag: str, value: object, ts_ms: int, quality: str = "good",
            raw: bytes = b"") -> Measurement | DeadLetter | None:
        """Turn one raw value of one source tag into a Measurement (see the module docstring).

        ``raw`` is what goes into a dead letter (default: a rendering of tag and value).
        """
        resolved = self.lookup(tag)
        if resolved is None:
            if tag in self.unknown_tags:
                self.unknown_dropped += 1
                return None
            self.unknown_tags.add(tag)
            log.warning("unknown tag %r from %s: not in the tag dictionary; its values are dropped",
                        tag, self._source or "source")
            reason = (f"unknown tag {tag!r}: not in the tag dictionary (add it under tags: in the plant "
                      "config); further values of it are dropped")
            return self._dead(tag, value, ts_ms, reason, raw)
        converted = self._convert(resolved, value)
        if isinstance(converted, str) and converted.startswith("\0"):
            return self._dead(tag, value, ts_ms, converted[1:], raw)
        site, line = resolved.site, resolved.line
        if self._config is not None and (not site or not line):
            info = self._config.machine(resolved.machine)
            site = site or info.site
            line = line or info.line
        return Measurement(ts_ms, resolved.machine, resolved.metric, converted, site, line,
                           resolved.mapping.unit, self._source, quality)

    def _dead(self, tag: str, value: object, ts_ms: int, reason: str, raw: bytes) -> DeadLetter:
        if not raw:
            raw = f"{tag}={value!r}".encode("utf-8", errors="backslashreplace")
        src = f"{self._source}:{tag}" if self._source else tag
        return DeadLetter(raw, reason, src, ts_ms)

    def _convert(self, r: ResolvedTag, value: object) -> Value:
        """The converted value, or a reason prefixed with NUL when there is none."""
        metric, mapping = r.metric, r.mapping
        if metric == MACHINE_STATE:
            if isinstance(value, str) and value in _CANONICAL_STATES and mapping.states is None:
                return value
            if isinstance(value, bool):
                key = str(int(value))
            elif isinstance(value, float):
                if not value.is_integer():
                    return f"\0tag {r.tag!r}: state code must be an integer, got {value}"
                key = str(int(value))
            elif isinstance(value, int | str):
                key = str(value).strip()
            else:
                return f"\0tag {r.tag!r}: state must be an integer or string, got {_type_name(value)}"
            states = mapping.state_map()
            state = states.get(key)
            if state is None:
                if isinstance(value, str) and value in _CANONICAL_STATES:
                    return value
                known = ", ".join(states)
                return (f"\0tag {r.tag!r}: state code {key!r} is not in its state map (known: {known}); "
                        f"add it under tags.{r.tag!r}.states")
            return state
        if metric in STRING_METRICS:
            if isinstance(value, str):
                return value
            if isinstance(value, bool) or value is None:
                return f"\0tag {r.tag!r}: metric {metric!r} needs a string, got {_type_name(value)}"
            if isinstance(value, int):
                return str(value)
            if isinstance(value, float) and math.isfinite(value):
                return str(int(value)) if value.is_integer() else repr(value)
            return f"\0tag {r.tag!r}: metric {metric!r} needs a string, got {value!r}"
        # numeric metric
        if isinstance(value, bool):
            num: int | float = int(value)
        elif isinstance(value, int | float):
            num = value
        else:
            return f"\0tag {r.tag!r}: metric {metric!r} needs a number, got {_type_name(value)}"
        if isinstance(num, float) and not math.isfinite(num):
            return f"\0tag {r.tag!r}: metric {metric!r} must be finite, got {num}"
        if mapping.scaled:
            out = mapping.apply_scale(float(num))
            if not math.isfinite(out):
                return f"\0tag {r.tag!r}: {num} * scale + offset is not finite"
            return out
        return num
