"""The Measurement record, the metric vocabulary and the dead-letter record.

Every value that enters plantstream is a :class:`Measurement` on the Kafka topic
``plantstream.measurements`` (key = machine id, value = one JSON object). :func:`decode`
validates the bytes of one message and returns either a :class:`Measurement` or a
:class:`DeadLetter` carrying the original bytes and a reason that names the problem. A decode
failure is data, never an exception: the flow routes it to the dead-letter topic and goes on.

Examples
--------
>>> m = decode(b'{"ts": 1763791200000, "machine": "press-01", "metric": "good_count", "value": 4501}')
>>> (m.machine, m.metric, m.value, m.quality)
('press-01', 'good_count', 4501, 'good')
>>> decode(b'{"machine": "press-01", "metric": "good_count", "value": 1}').reason
"missing field 'ts'"
>>> decode(b'not json').reason.startswith('not JSON')
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

MAX_MESSAGE_BYTES: Final = 64 * 1024
"""Largest accepted Measurement message; larger ones are dead-lettered as ``oversized``."""

MIN_TS_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_TS_MS: Final = 4_102_444_800_000  # 2100-01-01T00:00:00Z

QUALITIES: Final = frozenset({"good", "uncertain", "bad"})

# -- metric vocabulary (ARCHITECTURE.md, "Canonical metrics") ------------------------------
MACHINE_STATE: Final = "machine_state"
GOOD_COUNT: Final = "good_count"
REJECT_COUNT: Final = "reject_count"
TOTAL_COUNT: Final = "total_count"
GOOD_PARTS: Final = "good_parts"
REJECT_PARTS: Final = "reject_parts"
CYCLE_TIME_MS: Final = "cycle_time_ms"
IDEAL_CYCLE_TIME_MS: Final = "ideal_cycle_time_ms"
PART_NUMBER: Final = "part_number"
WORK_ORDER: Final = "work_order"
OPERATOR_ID: Final = "operator_id"
FAULT_CODE: Final = "fault_code"
REASON_CODE: Final = "reason_code"
SCRAP_REASON: Final = "scrap_reason"

STATES: Final = ("running", "idle", "fault", "setup", "planned_stop", "off")
"""Canonical machine states; PLC integers are mapped onto these by the tag dictionary."""

COUNTERS: Final = frozenset({GOOD_COUNT, REJECT_COUNT, TOTAL_COUNT})
"""Cumulative counters: a decrease is a counter reset, never negative production."""
INCREMENTS: Final = frozenset({GOOD_PARTS, REJECT_PARTS})
CONTEXT_METRICS: Final = frozenset({PART_NUMBER, WORK_ORDER, OPERATOR_ID})
"""String context that applies until it changes."""
EVENT_METRICS: Final = frozenset({MACHINE_STATE, FAULT_CODE, REASON_CODE, SCRAP_REASON})
PRODUCTION_METRICS: Final = (
    COUNTERS | INCREMENTS | CONTEXT_METRICS | EVENT_METRICS | {CYCLE_TIME_MS, IDEAL_CYCLE_TIME_MS}
)
"""Every metric with a meaning of its own; anything else numeric is a condition signal."""


def is_condition_metric(metric: str) -> bool:
    """Tell whether ``metric`` is a condition signal (temperature, vibration, pressure …).

    >>> is_condition_metric("vibration_rms_mms"), is_condition_metric("good_count")
    (True, False)
    """
    return metric not in PRODUCTION_METRICS


Value = float | int | str | bool


@dataclass(frozen=True, slots=True)
class Measurement:
    """One sample of one metric of one machine.

    ``ts`` is epoch milliseconds UTC. ``site`` and ``line`` are filled from the plant config
    when the source did not send them. ``quality == "bad"`` samples are stored but never used
    for KPIs.
    """

    ts: int
    machine: str
    metric: str
    value: Value
    site: str = ""
    line: str = ""
    unit: str = ""
    source: str = ""
    quality: str = "good"

    def to_json(self) -> bytes:
        """Encode as the wire JSON object (the inverse of :func:`decode`)."""
        return orjson.dumps(asdict(self))

    @property
    def usable(self) -> bool:
        """True when the sample may feed KPIs (its quality is not ``bad``)."""
        return self.quality != "bad"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message plantstream could not use: the original bytes and why.

    ``source`` names where it came from (``kafka:plantstream.measurements/0@17``,
    ``mqtt:kepware/line1/press/Temp``, ``late``); ``ts`` is when it was received, epoch ms.
    """

    raw: bytes
    reason: str
    source: str = ""
    ts: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "ts": self.ts,
                "source": self.source,
                "reason": self.reason,
                "raw": self.raw.decode("utf-8", errors="backslashreplace"),
            }
        )


_REQUIRED: Final = ("ts", "machine", "metric", "value")
_OPTIONAL_STR: Final = ("site", "line", "unit", "source")


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def validate(obj: Any) -> Measurement | str:
    """Validate a decoded JSON value; return a Measurement or the reason it is not one."""
    if not isinstance(obj, dict):
        return f"not a JSON object (got {_type_name(obj)})"
    for name in _REQUIRED:
        if name not in obj:
            return f"missing field '{name}'"
    ts = obj["ts"]
    if type(ts) is not int:
        return f"field 'ts' must be epoch milliseconds as an integer, got {_type_name(ts)}"
    if not MIN_TS_MS <= ts < MAX_TS_MS:
        return f"field 'ts' out of range: {ts} is not epoch milliseconds between 2000 and 2100"
    machine, metric, value = obj["machine"], obj["metric"], obj["value"]
    if type(machine) is not str or not machine:
        return f"field 'machine' must be a non-empty string, got {_type_name(machine)}"
    if type(metric) is not str or not metric:
        return f"field 'metric' must be a non-empty string, got {_type_name(metric)}"
    vt = type(value)
    if vt is float:
        if not math.isfinite(value):
            return f"field 'value' must be finite, got {value}"
    elif vt is not int and vt is not str and vt is not bool:
        return f"field 'value' must be a number, string or bool, got {_type_name(value)}"
    quality = obj.get("quality", "good")
    if quality not in QUALITIES:
        return f"field 'quality' must be one of good|uncertain|bad, got {quality!r}"
    extras = []
    for name in _OPTIONAL_STR:
        v = obj.get(name, "")
        if v is None:
            v = ""
        elif type(v) is not str:
            return f"field '{name}' must be a string, got {_type_name(v)}"
        extras.append(v)
    return Measurement(ts, machine, metric, value, extras[0], extras[1], extras[2], extras[3], quality)


def decode(raw: bytes, source: str = "", received_ms: int = 0) -> Measurement | DeadLetter:
    """Decode one message; bad input becomes a :class:`DeadLetter`, never an exception."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return DeadLetter(
            raw, f"oversized: {len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit",
            source, received_ms,
        )
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return DeadLetter(raw, f"not JSON: {exc}", source, received_ms)
    result = validate(obj)
    if isinstance(result, str):
        return DeadLetter(raw, result, source, received_ms)
    return result


def parse_ts(value: Any) -> int | None:
    """Turn epoch milliseconds or an RFC 3339 string into epoch ms; None when neither.

    Used at the edge (``replay``, connectors), never inside flows.

    >>> parse_ts("2025-11-22T06:00:00Z"), parse_ts(1763791200000), parse_ts("yesterday")
    (1763791200000, 1763791200000, None)
    """
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return None
        if dt.tzinfo is None:  # an RFC 3339 timestamp always carries an offset
            return None
        return round(dt.astimezone(UTC).timestamp() * 1000)
    return None


def now_ms() -> int:
    """Wall-clock time as epoch milliseconds UTC."""
    return int(datetime.now(UTC).timestamp() * 1000)
