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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plantstream.schemas.oee_config import LossConfig

NO_FAULT = frozenset({"", "0", "none", "None", "0.0", "false", "False"})


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

    def row(self, now: int) -> dict[str, Any]:
        end = self.end
        dur = ((end if end is not None else max(now, self.start)) - self.start) / 1000
        return {
            "start": self.start, "end": end, "duration_s": dur, "state": self.state,
            "fault_code": self.fault_code, "reason": self.reason, "category": self.category,
            "planned": self.planned, "small_stop": self.small_stop,
            "is_open": 1 if end is None else 0, **self.context,
        }


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
        """An operator reason code restates the open stop, else the most recent one."""
        target = self.current or self.last
        code = str(code).strip()
        if target is None or not code:
            return []
        mapped = losses.reason_codes.get(code)
        target.reason = mapped.reason if mapped else code
        if mapped is not None:
            target.category = mapped.category
        target.operator_reason = True
        return [target.row(ts)]

    def tick(self, ts: int) -> list[dict[str, Any]]:
        """The open stop as of ``ts`` (visible while it lasts)."""
        return [] if self.current is None else [self.current.row(ts)]
