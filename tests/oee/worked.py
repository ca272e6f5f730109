"""The oee.com worked example as a Measurement stream (one 480-minute shift).

Shift 06:00–14:00 local (Europe/Berlin), breaks 08:00 15 min, 10:00 30 min (meal), 12:15
15 min, during which the machine reports ``planned_stop``; 47 minutes of faults (20 min from
07:00, 27 min from 12:40); ideal cycle 1.0 s; 19,271 parts of which 423 rejects, counted
evenly over the 373 minutes of run time with cumulative counters sampled every minute.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson

TZ = ZoneInfo("Europe/Berlin")
DAY = datetime(2026, 11, 23, tzinfo=TZ)  # a Monday
TOTAL, REJECTS = 19_271, 423


def local_ms(hh: int, mm: int) -> int:
    return int(DAY.replace(hour=hh, minute=mm).astimezone(UTC).timestamp() * 1000)


SHIFT_START, SHIFT_END = local_ms(6, 0), local_ms(14, 0)
BREAKS = [(local_ms(8, 0), 15), (local_ms(10, 0), 30), (local_ms(12, 15), 15)]
FAULTS = [(local_ms(7, 0), 20, "E-HYD"), (local_ms(12, 40), 27, "E-ELEC")]

CONFIG = {
    "site": "plant-a",
    "timezone": "Europe/Berlin",
    "shifts": [{"name": "early", "start": "06:00", "end": "14:00", "breaks": [
        {"start": "08:00", "minutes": 15}, {"start": "10:00", "minutes": 30},
        {"start": "12:15", "minutes": 15}]}],
    "lines": [{"id": "line-1", "machines": [{"id": "press-01", "ideal_cycle_time_ms": 1000}]}],
    "lateness": {"allowed_lateness_s": 30},
    "losses": {"fault_codes": {"E-HYD": {"reason": "hydraulic leak", "category": "mechanical"},
                               "E-ELEC": {"reason": "drive trip", "category": "electrical"}}},
}


def state_changes() -> list[tuple[int, str]]:
    changes = [(SHIFT_START, "running")]
    for start, minutes in BREAKS:
        changes += [(start, "planned_stop"), (start + minutes * 60_000, "running")]
    for start, minutes, _ in FAULTS:
        changes += [(start, "fault"), (start + minutes * 60_000, "running")]
    changes.append((SHIFT_END, "off"))
    return sorted(changes)


def measurements(machine: str = "press-01") -> list[dict[str, object]]:
    """The shift as Measurement dicts, in time order."""
    changes = state_changes()
    running_minutes = []
    for (t, state), (t2, _) in itertools.pairwise(changes):
        if state == "running":
            running_minutes += list(range(t, t2, 60_000))
    assert len(running_minutes) == 373
    out: list[dict[str, object]] = [
        {"ts": SHIFT_START, "machine": machine, "metric": "good_count", "value": 5_000},
        {"ts": SHIFT_START, "machine": machine, "metric": "reject_count", "value": 100},
    ]
    faults = {start: code for start, _, code in FAULTS}
    for t, state in changes:
        out.append({"ts": t, "machine": machine, "metric": "machine_state", "value": state})
        if t in faults:
            out.append({"ts": t + 500, "machine": machine, "metric": "fault_code", "value": faults[t]})
    n = len(running_minutes)
    for i, t in enumerate(running_minutes, start=1):
        total = TOTAL * i // n
        rejects = REJECTS * i // n
        ts = t + 59_999  # the counter read at the end of each running minute
        out.append({"ts": ts, "machine": machine, "metric": "good_count", "value": 5_000 + total - rejects})
        out.append({"ts": ts, "machine": machine, "metric": "reject_count", "value": 100 + rejects})
    out.sort(key=lambda m: int(m["ts"]))  # type: ignore[call-overload]
    return out


def jsonl(rows: list[dict[str, object]]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"
