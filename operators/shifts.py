"""The shift calendar: cut an interval at window, shift and break boundaries, in plant time.

Shifts and breaks are local wall-clock times in the plant's IANA time zone; a shift whose end
is before its start crosses midnight. Each shift instance is resolved to UTC epoch
milliseconds from its own local date, so a shift across a DST change is as long as the clock
on the wall says (7 or 9 hours for an 8-hour night shift), and every cut is exact. Time outside
any shift, and every shift that starts on a holiday, is not scheduled. With no shifts
configured, all time is scheduled (a 24/7 plant).

Examples
--------
>>> from datetime import date
>>> from plantstream.schemas.config import Shift
>>> cal = ShiftCalendar("UTC", (Shift(name="day", start="06:00", end="14:00",
...     breaks=({"start": "09:00", "minutes": 15},)),), (), window_ms=3_600_000)
>>> t0 = 1_763_791_200_000                     # 2025-11-22T06:00Z
>>> [(s.start - t0) // 60_000 for s in cal.spans(t0 - 1_800_000, t0 + 4 * 3_600_000)]
[-30, 0, 60, 120, 180, 195]
>>> [(s.shift, s.in_break) for s in cal.spans(t0 + 3 * 3_600_000, t0 + 3 * 3_600_000 + 1_200_000)]
[('day', True), ('day', False)]
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from plantstream.schemas.config import PlantConfig, Shift

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class ShiftInstance:
    """One occurrence of a shift: UTC epoch-ms bounds, its breaks, and its local start date."""

    name: str
    start: int
    end: int
    day: date
    breaks: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Span:
    """A piece of an interval that no window, shift or break boundary crosses."""

    start: int
    end: int
    window_start: int
    scheduled: bool
    shift: str
    shift_start: int
    """Start (epoch ms) of the shift instance; 0 outside shifts."""
    day: date
    """Production day: the local date the shift started on (else the local date of ``start``)."""
    in_break: bool


def _local_ms(tz: ZoneInfo, d: date, minute: int) -> int:
    dt = datetime.combine(d, time(minute // 60, minute % 60), tzinfo=tz)
    return int(dt.timestamp() * 1000)


class ShiftCalendar:
    """Shift instances of a plant and the cutting of intervals at their boundaries.

    Pure: the same interval always gives the same spans. Instances are cached per local date.
    """

    def __init__(self, timezone: str, shifts: Iterable[Shift], holidays: Iterable[date],
                 window_ms: int = 60_000) -> None:
        self.tz = ZoneInfo(timezone)
        self.shifts = tuple(shifts)
        self.holidays = frozenset(holidays)
        self.window_ms = window_ms
        self._days: dict[date, tuple[ShiftInstance, ...]] = {}
        self._utc_offset_day: dict[int, date] = {}

    @classmethod
    def from_config(cls, config: PlantConfig) -> ShiftCalendar:
        return cls(config.timezone, config.shifts, config.holidays, config.window_s * 1000)

    def local_date(self, ms: int) -> date:
        """The plant-local calendar date of an instant."""
        return datetime.fromtimestamp(ms / 1000, self.tz).date()

    def instances_on(self, d: date) -> tuple[ShiftInstance, ...]:
        """Shift instances that start on local date ``d`` (none on holidays)."""
        cached = self._days.get(d)
        if cached is not None:
            return cached
        out: list[ShiftInstance] = []
        if d not in self.holidays:
            for s in self.shifts:
                if _WEEKDAYS[d.weekday()] not in s.days:
                    continue
                start_min = s.start_minute
                end_total = start_min + s.length_minutes
                start = _local_ms(self.tz, d, start_min)
                end = _local_ms(self.tz, d + timedelta(days=end_total // 1440), end_total % 1440)
                breaks = []
                for b in s.breaks:
                    off = (b.start_minute - start_min) % 1440
                    total = start_min + off
                    bs = _local_ms(self.tz, d + timedelta(days=total // 1440), total % 1440)
                    breaks.append((bs, bs + round(b.minutes * 60_000)))
                out.append(ShiftInstance(s.name, start, end, d, tuple(sorted(breaks))))
        result = tuple(sorted(out, key=lambda i: i.start))
        if len(self._days) > 4096:
            self._days.clear()
        self._days[d] = result
        return result

    def instances(self, start: int, end: int) -> list[ShiftInstance]:
        """Shift instances overlapping ``[start, end)``, in order."""
        first = self.local_date(start) - timedelta(days=1)
        last = self.local_date(end)
        out: list[ShiftInstance] = []
        d = first
        while d <= last:
            out.extend(i for i in self.instances_on(d) if i.start < end and i.end > start)
            d += timedelta(days=1)
        return out

    # -- segments: maximal intervals with one (scheduled, shift, break, day) ------------------
    def _build(self, start: int, end: int) -> None:
        """Precompute calendar segments covering ``[start, end)`` plus a month of margin."""
        first = self.local_date(start) - timedelta(days=2)
        last = max(self.local_date(end), first + timedelta(days=32)) + timedelta(days=2)
        cuts: set[int] = set()
        insts: list[ShiftInstance] = []
        d = first
        while d <= last:
            cuts.add(_local_ms(self.tz, d, 0))
            if self.shifts:
                for i in self.instances_on(d):
                    insts.append(i)
                    cuts.update((i.start, i.end, *(x for br in i.breaks for x in br)))
            d += timedelta(days=1)
        points = sorted(cuts)
        starts = [i.start for i in insts]
        segs: list[tuple[int, int, bool, str, int, date, bool]] = []
        for a, z in itertools.pairwise(points):
            if not self.shifts:
                segs.append((a, z, True, "", 0, self.local_date(a), False))
                continue
            k = bisect.bisect_right(starts, a) - 1
            inst: ShiftInstance | None = None
            while k >= 0:
                if insts[k].start <= a < insts[k].end:
                    inst = insts[k]
                    break
                k -= 1
            if inst is None:
                segs.append((a, z, False, "", 0, self.local_date(a), False))
            else:
                in_break = any(bs <= a < be for bs, be in inst.breaks)
                segs.append((a, z, True, inst.name, inst.start, inst.day, in_break))
        self._segs = segs
        self._seg_starts = [g[0] for g in segs]

    def spans(self, start: int, end: int) -> list[Span]:
        """Cut ``[start, end)`` at window, shift and break boundaries; spans cover it exactly."""
        if end <= start:
            return []
        segs = getattr(self, "_segs", None)
        if not segs or start < segs[0][0] or end > segs[-1][1]:
            self._build(start, end)
            segs = self._segs
        w = self.window_ms
        i = bisect.bisect_right(self._seg_starts, start) - 1
        out: list[Span] = []
        t = start
        while t < end:
            _, z, scheduled, shift, shift_start, day, in_break = segs[i]
            seg_end = z if z < end else end
            while t < seg_end:
                ws = t - t % w
                e = ws + w
                if e > seg_end:
                    e = seg_end
                out.append(Span(t, e, ws, scheduled, shift, shift_start, day, in_break))
                t = e
            i += 1
        return out
