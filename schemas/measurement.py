"""The Measurement record, the metric vocabulary and the dead-letter record.

Every value that enters plantstream is a :class:`Measurement` on the Kafka topic
``plantstream.measurements`` (key = machine id, value = one JSON object). :func:`decode`
validates the bytes of one message and returns either a :class:`Measurement` or a
:class:`DeadLetter` carrying the original bytes and a reason that names the problem. A decode
failure is data, never an exception: the flow routes it to the dead-letter topic and goes on.

A dead letter leaves plantstream bounded (:meth:`DeadLetter.row`): at most
``kafka.deadletter_raw_bytes`` bytes of text standing for a prefix of the original bytes, plus
the original ``length`` and the ``sha256`` of the whole, so a 300 KB poison message becomes a
record of a few KiB that still identifies it — never a record the broker refuses.

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

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import orjson

MAX_MESSAGE_BYTES: Final = 64 * 1024
"""Largest accepted Measurement message; larger ones are dead-lettered as ``oversized``."""

DEADLETTER_RAW_BYTES: Final = 4096
"""Default bound of a dead letter's ``raw`` text (``kafka.deadletter_raw_bytes``)."""
DEADLETTER_TEXT_CHARS: Final = 1024
"""Bound of a dead letter's ``reason`` and ``source`` (a topic or a reason may quote input)."""

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
REASON_SPLIT: Final = "reason_split"
"""An operator's split of a stop: from ``ts`` (strictly inside the stop) the reason is the value
(docs/oee.md, "Operator reasons, corrections and splits")."""
SCRAP_REASON: Final = "scrap_reason"

STATES: Final = ("running", "idle", "fault", "setup", "planned_stop", "off")
"""Canonical machine states; PLC integers are mapped onto these by the tag dictionary."""

COUNTERS: Final = frozenset({GOOD_COUNT, REJECT_COUNT, TOTAL_COUNT})
"""Cumulative counters: a decrease is a counter reset, never negative production."""
INCREMENTS: Final = frozenset({GOOD_PARTS, REJECT_PARTS})
COUNTED: Final = COUNTERS | INCREMENTS
"""Part counts: their value must be a whole number from 0 to :data:`MAX_COUNT` (a string, a
bool, a negative or fractional number, 2^63 or more is dead-lettered at decode as ``counter out
of range``)."""
MAX_COUNT: Final = 2**63 - 1
"""The largest counter or increment value (a signed 64-bit integer)."""
_FLOAT_COUNT_LIMIT: Final = float(2**63)
CONTEXT_METRICS: Final = frozenset({PART_NUMBER, WORK_ORDER, OPERATOR_ID})
"""String context that applies until it changes."""
EVENT_METRICS: Final = frozenset({MACHINE_STATE, FAULT_CODE, REASON_CODE, REASON_SPLIT, SCRAP_REASON})
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


class Measurement(NamedTuple):
    """One sample of one metric of one machine.

    ``ts`` is epoch milliseconds UTC. ``site`` and ``line`` are filled from the plant config
    when the source did not send them. ``quality == "bad"`` samples are stored but never used
    for KPIs. A named tuple: immutable, and built in a third of the time of a frozen
    dataclass, which counts at hundreds of thousands of samples a second.
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
        return orjson.dumps(self._asdict())

    @property
    def usable(self) -> bool:
        """True when the sample may feed KPIs (its quality is not ``bad``)."""
        return self.quality != "bad"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message plantstream could not use: the original bytes and why.

    ``source`` names where it came from (``kafka:plantstream.measurements/0@17``,
    ``mqtt:kepware/line1/press/Temp``, ``late``); ``ts`` is when it was received, epoch ms.
    ``raw`` is the whole message while it is in memory; what leaves the process is bounded
    (:meth:`row`, :meth:`to_json`).
    """

    raw: bytes
    reason: str
    source: str = ""
    ts: int = 0

    def row(self, limit: int = DEADLETTER_RAW_BYTES) -> dict[str, Any]:
        """The dead-letter record: ts, source, reason, a bounded ``raw``, ``length``, ``sha256``.

        ``raw`` is the longest prefix of the original bytes whose text (UTF-8, undecodable bytes
        as ``\\xNN``) takes at most ``limit`` bytes as a JSON string, so the record never grows
        with the message (binary input keeps fewer original bytes than text does). ``length``
        and ``sha256`` (hex) describe the whole original message.

        >>> r = DeadLetter(b"\\xff" * 300_000, "not JSON", "mqtt:x", 1).row()
        >>> r["length"], len(r["raw"]) <= 4096, r["sha256"][:12]
        (300000, True, '76b0aeaa517d')
        >>> DeadLetter(b'{"bad": 1}', "missing field 'ts'").row()["raw"]
        '{"bad": 1}'
        """
        return {"ts": self.ts, "source": bounded_text(self.source), "reason": bounded_text(self.reason),
                "raw": raw_prefix(self.raw, limit), "length": len(self.raw),
                "sha256": hashlib.sha256(self.raw).hexdigest()}

    def to_json(self, limit: int = DEADLETTER_RAW_BYTES) -> bytes:
        """The bounded record (:meth:`row`) as the JSON value of a dead-letter Kafka record."""
        return orjson.dumps(self.row(limit))


def bound_row(row: dict[str, Any], limit: int = DEADLETTER_RAW_BYTES) -> dict[str, Any]:
    """A dead-letter row built elsewhere (a late sample, a value of the wrong type) made bounded
    like :meth:`DeadLetter.row`; a row that already has its ``length`` passes unchanged.

    >>> r = bound_row({"ts": 1, "source": "late", "reason": "late", "raw": "x" * 10_000}, 100)
    >>> len(r["raw"]), r["length"], len(r["sha256"])
    (100, 10000, 64)
    """
    if "length" in row:
        return row
    raw = row.get("raw")
    data = raw if isinstance(raw, bytes) else str(raw or "").encode("utf-8", "surrogatepass")
    dl = DeadLetter(data, str(row.get("reason", "")), str(row.get("source", "")), 0)
    return {**row, **{k: v for k, v in dl.row(limit).items() if k != "ts"}}


def bounded_text(text: str, limit: int = DEADLETTER_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters (marked with ``…``); lone surrogates replaced.

    >>> bounded_text("x" * 2000)[-3:], len(bounded_text("x" * 2000))
    ('xx…', 1024)
    """
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode()
    return text


def _json_len(text: str) -> int:
    return len(orjson.dumps(text)) - 2


def raw_prefix(raw: bytes, limit: int = DEADLETTER_RAW_BYTES) -> str:
    """Text of the longest prefix of ``raw`` that takes at most ``limit`` bytes as a JSON string.

    Valid UTF-8 stays as it is; other bytes become ``\\xNN``. A multi-byte character cut by the
    bound is left out whole.

    >>> raw_prefix(b"abc\\xffdef", 8), raw_prefix(b"abc\\xffdef", 7)
    ('abc\\\\xff', 'abc')
    >>> raw_prefix("é".encode() * 3, 5)
    'éé'
    """
    head = raw[:limit]
    text = head.decode("utf-8", "backslashreplace")
    if _json_len(text) <= limit and (len(head) == len(raw) or _whole_chars(head)):
        return text
    lo, hi = 0, len(head)  # the longest n with a rendering that fits (monotone in n)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _json_len(_trim(head[:mid]).decode("utf-8", "backslashreplace")) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return _trim(head[:lo]).decode("utf-8", "backslashreplace")


def _trim(b: bytes) -> bytes:
    """``b`` without a multi-byte UTF-8 character cut at its end (a lone invalid byte stays)."""
    for back in range(1, min(4, len(b)) + 1):
        if _whole_chars(b[:len(b) - back + 1]):
            return b[:len(b) - back + 1]
    return b


def _whole_chars(b: bytes) -> bool:
    """False when ``b`` ends inside a multi-byte UTF-8 character that the next bytes complete."""
    for back in range(1, min(4, len(b)) + 1):
        c = b[-back]
        if c < 0x80:
            return True
        if c >= 0xC0:  # a lead byte: is the character complete?
            need = 2 if c < 0xE0 else 3 if c < 0xF0 else 4
            return back >= need or c >= 0xF8
    return True


_REQUIRED: Final = ("ts", "machine", "metric", "value")
_OPTIONAL_STR: Final = ("site", "line", "unit", "source")


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _missing(obj: dict[str, Any]) -> str:
    return next(f"missing field '{name}'" for name in _REQUIRED if name not in obj)


def _optional_str(obj: dict[str, Any], name: str) -> str | None:
    """An optional string field: ``""`` when absent or null, None when it is not a string."""
    v = obj.get(name)
    if v is None:
        return ""
    return v if type(v) is str else None


_INF: Final = math.inf


def validate(obj: Any) -> Measurement | str:
    """Validate a decoded JSON value; return a Measurement or the reason it is not one.

    A well-formed sample passes one combined check; anything else goes through
    :func:`_validate_fields`, which names the first problem (or accepts a null optional field).
    """
    if type(obj) is dict:
        get = obj.get
        value: Any
        ts, machine, metric, value = get("ts"), get("machine"), get("metric"), get("value")
        quality = get("quality", "good")
        site, line, unit, source = get("site", ""), get("line", ""), get("unit", ""), get("source", "")
        vt = type(value)
        if (type(ts) is int and MIN_TS_MS <= ts < MAX_TS_MS and type(machine) is str and machine
                and type(metric) is str and metric
                and (vt is int or vt is str or vt is bool or (vt is float and -_INF < value < _INF))
                and (metric not in COUNTED or count_in_range(value))
                and type(quality) is str and quality in QUALITIES
                and type(site) is str and type(line) is str and type(unit) is str and type(source) is str):
            return _new_tuple(Measurement, (ts, machine, metric, value, site, line, unit, source, quality))
    return _validate_fields(obj)


def count_in_range(value: Any) -> bool:
    """Whether ``value`` may be a counter or an increment: a whole number from 0 to
    :data:`MAX_COUNT` (an integral float such as ``4501.0`` too).

    >>> [count_in_range(v) for v in (0, 4501, 4501.0, -1, 2.5, 2**63, 1.2e29, True)]
    [True, True, True, False, False, False, False, False]
    """
    t = type(value)
    if t is int:
        return 0 <= value <= MAX_COUNT
    return t is float and 0 <= value < _FLOAT_COUNT_LIMIT and value.is_integer()


def count_out_of_range(metric: str, value: Any, limit: str = "2^63 - 1") -> str:
    """The dead-letter reason of a counter value outside its range.

    >>> count_out_of_range("good_count", -3)
    'counter out of range: good_count must be a whole number of parts from 0 to 2^63 - 1, got -3'
    """
    return f"counter out of range: {metric} must be a whole number of parts from 0 to {limit}, got {value!r}"


def _validate_fields(obj: Any) -> Measurement | str:
    if not isinstance(obj, dict):
        return f"not a JSON object (got {_type_name(obj)})"
    try:
        ts, machine, metric, value = obj["ts"], obj["machine"], obj["metric"], obj["value"]
    except KeyError:
        return _missing(obj)
    if type(ts) is not int:
        return f"field 'ts' must be epoch milliseconds as an integer, got {_type_name(ts)}"
    if not MIN_TS_MS <= ts < MAX_TS_MS:
        return f"field 'ts' out of range: {ts} is not epoch milliseconds between 2000 and 2100"
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
    if (vt is str or vt is bool) and metric in COUNTED:
        return f"field 'value' of {metric} must be a number (a count of parts), got {_type_name(value)}"
    if metric in COUNTED and not count_in_range(value):
        return count_out_of_range(metric, value)
    quality = obj.get("quality", "good")
    if type(quality) is not str or quality not in QUALITIES:
        return f"field 'quality' must be one of good|uncertain|bad, got {quality!r}"
    get = obj.get
    site, line, unit, source = get("site", ""), get("line", ""), get("unit", ""), get("source", "")
    if site is None or line is None or unit is None or source is None:  # null means absent
        site, line, unit, source = (_optional_str(obj, "site"), _optional_str(obj, "line"),
                                    _optional_str(obj, "unit"), _optional_str(obj, "source"))
    if type(site) is not str or type(line) is not str or type(unit) is not str or type(source) is not str:
        name = next(n for n in _OPTIONAL_STR if _optional_str(obj, n) is None)
        return f"field '{name}' must be a string, got {_type_name(obj[name])}"
    return _new_tuple(Measurement, (ts, machine, metric, value, site, line, unit, source, quality))


_new_tuple: Final = tuple.__new__
"""Builds a Measurement from its validated fields without the named tuple's Python-level
``__new__`` (a third of the cost of decoding a message)."""


def decode(raw: bytes, source: str = "", received_ms: int = 0) -> Measurement | DeadLetter:
    """Decode one message; bad input becomes a :class:`DeadLetter`, never an exception."""
    if len(raw) > MAX_MESSAGE_BYTES:  # the dead letter keeps the whole; its record is bounded
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
