"""What an operator entry is, and the Measurements it becomes (no I/O).

The operator-entry contract (docs/station.md): a stop is ``(machine, start)``; every entry is
one or a few Measurements on ``plantstream.measurements``, each with its own ``ts`` and
``source: "station"``, plus one audit record on ``plantstream.operator_entries``.

- A stop's reason (first part of a split stop): while the stop is open, ``reason_code`` at
  ``ts = max(start + duration_s·1000, previous station entry on the stop + 1)`` — the machine's
  latest event time as the open stop row shows it, never the wall clock (which runs ahead of a
  replayed or simulated line and would move the machine's event time); else at ``end + n`` ms,
  ``n`` = 1 + the station entries already made on the stop (each correction later in event time
  than what it corrects); refused when ``end + n`` reaches the next stop's start.
- A split: ``reason_split`` at a point strictly inside the stop; correcting a later part:
  ``reason_split`` at ``split point + n`` ms (``n`` < 1000).
- Scrap: ``scrap_reason`` at ``now``, ``reject_parts`` at ``now + 1``, then the machine's previous
  scrap reason again at ``now + 2`` (so the reason explains these rejects, not the machine's next).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import PlantStreamError
from plantstream.schemas.measurement import Measurement

SOURCE = "station"
MAX_SCRAP = 100_000


class EntryRefused(PlantStreamError):
    """An entry the station does not accept: the message says why and what to do (shown as is)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ReasonChoice:
    """One reason an operator can pick: the code sent, its text and category."""

    code: str
    reason: str
    category: str
    uses: int = 0


def reason_tree(
    config: PlantConfig, uses: Mapping[str, int] | None = None
) -> list[tuple[str, list[ReasonChoice]]]:
    """The plant's operator reasons (``losses.reason_codes``) by category, most used first.

    Categories are ordered by the uses of their reasons, then by name; ``uses`` counts stops
    per reason text (``downtime_events``).

    >>> cfg = PlantConfig.model_validate({"losses": {"reason_codes": {
    ...     "wm": {"reason": "waiting_material", "category": "material"},
    ...     "jam": {"reason": "jam", "category": "mechanical"},
    ...     "no_op": {"reason": "no_operator", "category": "operator"}}}})
    >>> [(c, [r.code for r in rs]) for c, rs in reason_tree(cfg, {"jam": 4, "no_operator": 1})]
    [('mechanical', ['jam']), ('operator', ['no_op']), ('material', ['wm'])]
    """
    uses = uses or {}
    by_cat: dict[str, list[ReasonChoice]] = {}
    for code, r in config.losses.reason_codes.items():
        by_cat.setdefault(r.category, []).append(
            ReasonChoice(code, r.reason, r.category, uses.get(r.reason, 0))
        )
    out = []
    for cat, choices in by_cat.items():
        choices.sort(key=lambda c: (-c.uses, c.reason))
        out.append((cat, choices))
    out.sort(key=lambda t: (-sum(c.uses for c in t[1]), t[0]))
    return out


def reason_of(config: PlantConfig, code: str) -> ReasonChoice:
    """The reason of a code the operator sent; an unknown code is refused (nothing sent)."""
    r = config.losses.reason_codes.get(code)
    if r is None:
        msg = f"unknown reason {code!r}: pick one of the plant's reasons (losses.reason_codes of the config)"
        raise EntryRefused(msg)
    return ReasonChoice(code, r.reason, r.category)


@dataclass(frozen=True)
class Stop:
    """A stop as the station reads it from ``downtime_events`` (times in epoch ms)."""

    machine: str
    start: int
    end: int | None
    duration_s: float
    state: str
    fault_code: str
    reason: str
    category: str
    small_stop: bool
    version: int
    segments: tuple[tuple[int, str, str], ...] = ()
    """(from ms, reason, category) of the parts after each split point."""

    @property
    def is_open(self) -> bool:
        return self.end is None

    @property
    def explained(self) -> bool:
        return self.reason not in ("", "unassigned")


@dataclass
class Entry:
    """One accepted entry: its Measurements and its audit record."""

    action: str
    machine: str
    line: str
    site: str
    operator_id: str
    operator_name: str
    role: str
    now_ms: int
    stop_start: int | None = None
    split_at: int | None = None
    before: str = ""
    after: str = ""
    quantity: float | None = None
    work_order: str = ""
    client: str = ""
    measurements: list[Measurement] = field(default_factory=list)
    entry_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def audit(self) -> dict[str, Any]:
        """The audit record (``plantstream.operator_entries``; table ``operator_entries``)."""
        return {
            "entry_id": self.entry_id,
            "ts": self.now_ms,
            "operator_id": self.operator_id,
            "operator_name": self.operator_name,
            "role": self.role,
            "action": self.action,
            "site": self.site,
            "line": self.line,
            "machine": self.machine,
            "stop_start": self.stop_start,
            "split_at": self.split_at,
            "before": self.before,
            "after": self.after,
            "quantity": self.quantity,
            "work_order": self.work_order,
            "client": self.client,
            "sent": [{"metric": m.metric, "ts": m.ts, "value": m.value} for m in self.measurements],
        }

    def audit_json(self) -> bytes:
        return orjson.dumps(self.audit())


def _measurement(entry: Entry, ts: int, metric: str, value: str | float) -> Measurement:
    return Measurement(ts, entry.machine, metric, value, site=entry.site, line=entry.line, source=SOURCE)


def reason_ts(
    stop: Stop, earlier_entries: int, next_start: int | None, previous_ts: int | None = None
) -> int:
    """When a stop's (first part's) ``reason_code`` is sent.

    ``previous_ts``: the latest ``ts`` of the Measurements the station already sent on this stop
    (None: none). While the stop is open the entry goes at the machine's latest event time as
    the open stop row shows it (``start + duration_s``), or just after the previous entry when
    that is later, so two entries never share a ``ts`` and event-time order is entry order; the
    wall clock is never used.

    >>> s = Stop("m", 1_000, 5_000, 4.0, "fault", "", "unassigned", "unassigned", False, 1)
    >>> reason_ts(s, 0, None), reason_ts(s, 2, 6_000, 3_500)
    (5001, 5003)
    >>> open_stop = Stop("m", 1_000, None, 4.0, "fault", "", "", "", False, 1)
    >>> [reason_ts(open_stop, 1, None, prev) for prev in (None, 5_000, 4_000)]
    [5000, 5001, 5000]
    """
    if stop.end is None:
        latest = stop.start + round(stop.duration_s * 1000)
        return latest if previous_ts is None else max(latest, previous_ts + 1)
    ts = stop.end + earlier_entries + 1
    if previous_ts is not None:
        ts = max(ts, previous_ts + 1)
    if next_start is not None and ts >= next_start:
        msg = (
            "this stop was corrected so often that the next correction would fall into the next "
            "stop; ask a supervisor to correct it with plantstream's tools"
        )
        raise EntryRefused(msg, 409)
    return ts


def last_sent_ts(entries: Iterable[Mapping[str, Any]]) -> int | None:
    """The latest ``ts`` of the Measurements the given station entries sent (``sent``: JSON text
    as ``operator_entries`` stores it, or a list as the audit record carries it).

    >>> last_sent_ts([{"sent": '[{"metric": "reason_split", "ts": 7}]'}, {"sent": [{"ts": 9}]}, {}])
    9
    >>> last_sent_ts([]) is None
    True
    """
    out: int | None = None
    for e in entries:
        sent = e.get("sent") or []
        if isinstance(sent, str | bytes):
            try:
                sent = orjson.loads(sent)
            except orjson.JSONDecodeError:
                continue
        for m in sent if isinstance(sent, list) else []:
            ts = m.get("ts") if isinstance(m, dict) else None
            if isinstance(ts, int) and not isinstance(ts, bool):
                out = ts if out is None else max(out, ts)
    return out


def reason_entry(
    entry: Entry,
    stop: Stop,
    choice: ReasonChoice,
    earlier: int,
    next_start: int | None,
    previous_ts: int | None = None,
) -> Entry:
    """The ``reason_code`` for a stop (or the first part of a split stop); see :func:`reason_ts`."""
    entry.stop_start, entry.before, entry.after = stop.start, stop.reason, choice.code
    ts = reason_ts(stop, earlier, next_start, previous_ts)
    entry.measurements = [_measurement(entry, ts, "reason_code", choice.code)]
    return entry


def split_entry(entry: Entry, stop: Stop, at_ms: int, choice: ReasonChoice, horizon_ms: int) -> Entry:
    """A new split point inside the stop: the part after ``at_ms`` gets ``choice``.

    ``horizon_ms``: the stop's end, or for an open stop the newest time the station knows of it.
    """
    end = stop.end if stop.end is not None else horizon_ms
    if not stop.start < at_ms < end:
        msg = "the split time must be inside the stop (after its start and before its end); pick another time"
        raise EntryRefused(msg)
    for point, _, _ in stop.segments:
        if abs(point - at_ms) < 1000:
            msg = "the stop is already split within a second of that time; correct that part instead"
            raise EntryRefused(msg, 409)
    entry.stop_start, entry.split_at = stop.start, at_ms
    entry.before = next((r for p, r, _ in reversed(stop.segments) if p < at_ms), stop.reason)
    entry.after = choice.code
    entry.measurements = [_measurement(entry, at_ms, "reason_split", choice.code)]
    return entry


def split_correction(entry: Entry, stop: Stop, point: int, choice: ReasonChoice, earlier: int) -> Entry:
    """A new reason for the part that starts at the split point ``point``."""
    current = next((r for p, r, _ in stop.segments if p == point), None)
    if current is None:
        msg = "that split point does not exist (any more); reload the stop"
        raise EntryRefused(msg, 409)
    n = earlier + 1
    if n >= 1000:
        msg = "that part of the stop was corrected too often (1000 times); ask a supervisor"
        raise EntryRefused(msg, 409)
    entry.stop_start, entry.split_at, entry.before, entry.after = stop.start, point, current, choice.code
    entry.measurements = [_measurement(entry, point + n, "reason_split", choice.code)]
    return entry


def parse_quantity(text: str) -> int:
    """A reject quantity typed by the operator: a whole number from 1 to 100,000.

    >>> parse_quantity(" 12 ")
    12
    >>> parse_quantity("-3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    plantstream.station.model.EntryRefused: the quantity must be a whole number of parts from 1 to ...
    """
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value != int(value) or not 1 <= value <= MAX_SCRAP:
        msg = f"the quantity must be a whole number of parts from 1 to {MAX_SCRAP}, got {text.strip()!r}"
        raise EntryRefused(msg)
    return int(value)


def scrap_ts(last_seen: int | None, previous_sent: int | None, now_ms: int) -> int:
    """When a scrap entry's Measurements go: the machine's latest event time (``machine_status``
    ``last_seen``; the wall clock only when the machine was never seen), and after the previous
    station scrap entry on the machine, so two equal entries are never one redelivery.

    >>> scrap_ts(1_000, None, 9_999), scrap_ts(1_000, 1_002, 9_999), scrap_ts(None, None, 9_999)
    (1000, 1003, 9999)
    """
    at = last_seen if last_seen else now_ms
    return at if previous_sent is None else max(at, previous_sent + 1)


def scrap_entry(
    entry: Entry, at: int, quantity: int, reason: str, previous_reason: str, known: Iterable[str]
) -> Entry:
    """``scrap_reason``, then ``reject_parts``, then the previous scrap reason again, from ``at``
    (:func:`scrap_ts`)."""
    choices = set(known)
    if reason not in choices:
        msg = (f"unknown scrap reason {reason!r}: pick one of the plant's scrap reasons "
               "(scrap.reasons of the config)")
        raise EntryRefused(msg)
    now = at
    entry.before, entry.after, entry.quantity = previous_reason, reason, float(quantity)
    entry.measurements = [
        _measurement(entry, now, "scrap_reason", reason),
        _measurement(entry, now + 1, "reject_parts", quantity),
        _measurement(entry, now + 2, "scrap_reason", previous_reason or "unassigned"),
    ]
    return entry
