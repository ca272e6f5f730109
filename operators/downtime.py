"""Downtime events: every stop of a machine as one event, open while it lasts.

A stop is a contiguous interval in one machine state whose loss bucket is an availability or
performance loss (``unplanned_stop``, ``setup``, ``small_stop``): ``off`` and planned stops
excluded from planned production time (``planned_stop``, breaks) are not downtime. A new fault
code while a fault is open starts a new stop. The event carries its start, its end (``None`` while
open), its duration, the state, its fault code, the reason and
category from the fault-code map (or from the state, e.g. ``setup`` → changeover), and whether
it was planned (``setup`` and ``excluded`` buckets). An operator ``reason_code`` applies to the
open stop, or to the most recent one when none is open, and restates that event — the same
natural key ``(machine, start)`` with a higher ``version``, never a second event.

Operator entries (docs/oee.md, "Operator reasons, corrections and splits"): a ``reason_code``
names the reason of the stop's first part (the whole stop while it is not split). A
``reason_split`` at a time strictly inside the open stop splits it there: from that point to the
next split point (or the end) the reason is the entry's; one less than :data:`SPLIT_WINDOW_MS`
after an existing split point replaces that part's reason instead (an empty value removes the
split point). A split stop is still one event: its ``segments`` list every part as
``{"from", "reason", "category"}`` (absent from the row of an unsplit stop, ``[]`` in the
table); its durations never change.

:class:`DowntimeTracker` is pure state driven by the OEE accounting operator
(:mod:`operators.oee`), which owns the per-machine event-time order; it returns event rows.

Examples
--------
>>> from plantstream.schemas.oee_config import LossConfig
>>> losses = LossConfig.model_validate({"fault_codes": {"E7": {"reason": "jam", "category": "material"}}})
>>> t = DowntimeTracker()
>>> _ = t.on_state(0, "fault", "", losses)
>>> [(r["reason"], r["category"]) for r in t.on_fault_code(1_000, "E7", losses)]
[('jam', 'material')]
>>> row = t.on_state(90_000, "running", "", losses)[0]
>>> row["end"], row["duration_s"], row["planned"]
(90000, 90.0, 0)
>>> t.on_reason(600_000, "hopper empty", losses)[0]["reason"]
'hopper empty'

A stop split at 25 s, the second part corrected 2 ms later:

>>> _ = t.on_state(700_000, "fault", "", losses)
>>> rows, refused = t.on_split(725_000, "jam", losses)
>>> [(s["from"], s["reason"]) for s in rows[0]["segments"]], refused
([(700000, 'unassigned'), (725000, 'jam')], None)
>>> rows, _ = t.on_split(725_002, "hopper empty", losses)
>>> [(s["from"], s["reason"], s["category"]) for s in rows[0]["segments"]]
[(700000, 'unassigned', 'unassigned'), (725000, 'hopper empty', 'unassigned')]
>>> t.on_split(700_000, "jam", losses)   # at the start: not strictly inside
([], 'reason_split outside a stop')
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from plantstream.schemas.oee_config import LossConfig

NO_FAULT = frozenset({"", "0", "none", "None", "0.0", "false", "False"})

SPLIT_WINDOW_MS = 1_000
"""A ``reason_split`` less than this after an existing split point of the same stop replaces
that split's reason (a correction is sent at ``split point + n`` ms) instead of adding one."""
MAX_PARTS = 64
"""The most parts a stop keeps (its state stays small); a split beyond is dead-lettered."""
OUTSIDE = "reason_split outside a stop"
"""The dead-letter reason of a ``reason_split`` whose time is not strictly inside a stop."""

Split = tuple[int, str, str]
"""A split point of a stop: (from epoch ms, reason, category)."""


def fault_text(value: object) -> str:
    """A ``fault_code`` value as text; ``0``, empty, ``None`` and ``False`` mean no fault.

    >>> fault_text(0), fault_text(17), fault_text(17.0), fault_text("E42")
    ('', '17', '17', 'E42')
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return "" if text in NO_FAULT else text


@dataclass
class Stop:
    """One downtime event being tracked (picklable)."""

    start: int
    state: str
    planned: int
    fault_code: str = ""
    reason: str = "unassigned"
    category: str = "unassigned"
    operator_reason: bool = False
    end: int | None = None
    small_stop: int = 0
    context: dict[str, Any] = field(default_factory=dict)
    splits: list[Split] = field(default_factory=list)
    """Split points after the start, in time order: the first part is ``reason``/``category``
    from ``start``, each split names the reason from its time to the next one (or the end)."""

    def segments(self) -> list[dict[str, Any]]:
        """Every part of a split stop as ``{"from", "reason", "category"}`` (``[]`` when unsplit)."""
        if not self.splits:
            return []
        return [{"from": self.start, "reason": self.reason, "category": self.category},
                *({"from": t, "reason": r, "category": c} for t, r, c in self.splits)]

    def row(self, now: int) -> dict[str, Any]:
        """The event row as of ``now``; ``segments`` only when the stop is split (a record
        without it is unsplit: the table's column defaults to ``[]``)."""
        end = self.end
        dur = ((end if end is not None else max(now, self.start)) - self.start) / 1000
        row = {
            "start": self.start, "end": end, "duration_s": dur, "state": self.state,
            "fault_code": self.fault_code, "reason": self.reason, "category": self.category,
            "planned": self.planned, "small_stop": self.small_stop,
            "is_open": 1 if end is None else 0, **self.context,
        }
        if self.splits:
            row["segments"] = self.segments()
        return row


@dataclass
class DowntimeTracker:
    """The open stop and the most recent closed one of one machine."""

    current: Stop | None = None
    last: Stop | None = None

    def _apply_fault(self, stop: Stop, code: str, losses: LossConfig) -> None:
        stop.fault_code = code
        if not stop.operator_reason:
            stop.reason, stop.category = losses.reason_for(code)

    def on_state(self, ts: int, state: str, active_fault: str, losses: LossConfig,
                 context: dict[str, Any] | None = None, small_stop: bool = False) -> list[dict[str, Any]]:
        """The machine enters ``state`` at ``ts``: close the open stop, maybe open a new one."""
        rows: list[dict[str, Any]] = []
        cur = self.current
        if cur is not None:
            if cur.state == state:
                return rows
            cur.end = ts
            cur.small_stop = int(small_stop)
            rows.append(cur.row(ts))
            self.last, self.current = cur, None
        bucket = losses.bucket(state)
        if bucket in ("run", "not_scheduled", "excluded"):
            return rows
        stop = Stop(ts, state, int(bucket in ("setup", "excluded")), context=dict(context or {}))
        stop.category = losses.state_category(state)
        if stop.category != "unassigned":
            stop.reason = stop.category
        if active_fault and bucket == "unplanned_stop":
            self._apply_fault(stop, active_fault, losses)
        self.current = stop
        rows.append(stop.row(ts))
        return rows

    def on_fault_code(self, ts: int, code: str, losses: LossConfig) -> list[dict[str, Any]]:
        """A fault code while a stop is open and has none yet names that stop's fault."""
        cur = self.current
        if cur is None or not code or cur.fault_code == code:
            return []
        if cur.fault_code:  # another fault without a state change: a new stop
            cur.end = ts
            self.last, self.current = cur, None
            return [cur.row(ts), *self.on_state(ts, cur.state, code, losses, cur.context)]
        self._apply_fault(cur, code, losses)
        return [cur.row(ts)]

    def on_reason(self, ts: int, code: str, losses: LossConfig) -> list[dict[str, Any]]:
        """An operator reason code restates the open stop, else the most recent one (for a
        split stop: the reason of its first part)."""
        target = self.current or self.last
        code = str(code).strip()
        if target is None or not code:
            return []
        target.reason, target.category = _reason_of(code, target.category, losses)
        target.operator_reason = True
        return [target.row(ts)]

    def on_split(self, ts: int, code: object, losses: LossConfig) -> tuple[list[dict[str, Any]], str | None]:
        """An operator ``reason_split`` at ``ts``: ``(rows, None)``, or ``([], reason)`` when
        it is refused (a dead letter: ``ts`` not strictly inside the open stop, or the stop
        has :data:`MAX_PARTS` parts already).

        From ``ts`` to the next split point (or the end) the reason is ``code``; at less than
        :data:`SPLIT_WINDOW_MS` after an existing split point it replaces that split's reason
        instead, and an empty ``code`` removes that split point (with no split point there,
        nothing changes). A code not in ``losses.reason_codes`` is the reason as typed and
        keeps the category of the part it falls in.
        """
        stop = self.current
        if stop is None or ts <= stop.start or (stop.end is not None and ts >= stop.end):
            return [], OUTSIDE
        text = str(code).strip()
        splits = stop.splits
        i = bisect.bisect_right(splits, ts, key=_split_ts) - 1  # the last split point at or before ts
        if i >= 0 and ts - splits[i][0] < SPLIT_WINDOW_MS:
            if text:
                splits[i] = (splits[i][0], *_reason_of(text, splits[i][2], losses))
            else:
                del splits[i]
            return [stop.row(ts)], None
        if not text:
            return [], None
        if len(splits) + 1 >= MAX_PARTS:
            return [], f"reason_split: the stop has {MAX_PARTS} parts already (the most a stop keeps)"
        category = splits[i][2] if i >= 0 else stop.category
        splits.insert(i + 1, (ts, *_reason_of(text, category, losses)))
        return [stop.row(ts)], None

    def tick(self, ts: int) -> list[dict[str, Any]]:
        """The open stop as of ``ts`` (visible while it lasts)."""
        return [] if self.current is None else [self.current.row(ts)]


def _split_ts(split: Split) -> int:
    return split[0]


def _reason_of(code: str, category: str, losses: LossConfig) -> tuple[str, str]:
    """Reason and category of an operator code: the ``reason_codes`` map, else the code as the
    reason with ``category`` kept."""
    mapped = losses.reason_codes.get(code)
    if mapped is None:
        return code, category
    return mapped.reason, mapped.category
