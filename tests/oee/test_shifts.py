"""The shift calendar: night shifts across midnight and DST changes, holidays, exact cuts."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

from plantstream.operators.shifts import ShiftCalendar
from plantstream.schemas.config import Break, Shift

NIGHT = Shift(name="night", start="22:00", end="06:00", breaks=(Break(start="02:00", minutes=30),))
DAY = Shift(name="day", start="06:00", end="14:00")


def ms(y: int, mo: int, d: int, h: int, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp() * 1000)


def test_night_shift_across_the_autumn_dst_change_is_nine_hours_of_wall_clock() -> None:
    cal = ShiftCalendar("Europe/Berlin", (NIGHT,), ())
    # 2026-10-25 03:00 CEST -> 02:00 CET: the night of the 24th lasts 9 hours
    [inst] = cal.instances_on(date(2026, 10, 24))
    assert inst.start == ms(2026, 10, 24, 20) and inst.end == ms(2026, 10, 25, 5)
    assert (inst.end - inst.start) == 9 * 3_600_000
    # the 02:00 break is the first 02:00 (CEST, 00:00 UTC)
    assert inst.breaks == ((ms(2026, 10, 25, 0), ms(2026, 10, 25, 0, 30)),)
    spans = cal.spans(ms(2026, 10, 24, 19), ms(2026, 10, 25, 6))
    assert spans[0].start == ms(2026, 10, 24, 19) and spans[-1].end == ms(2026, 10, 25, 6)
    assert all(a.end == b.start for a, b in itertools.pairwise(spans))
    night = sum(s.end - s.start for s in spans if s.shift == "night")
    breaks = sum(s.end - s.start for s in spans if s.in_break)
    assert (night, breaks) == (9 * 3_600_000, 1_800_000)
    assert {s.day for s in spans if s.shift == "night"} == {date(2026, 10, 24)}


def test_spring_dst_change_shortens_the_night_and_holidays_are_not_scheduled() -> None:
    cal = ShiftCalendar("Europe/Berlin", (NIGHT, DAY), (date(2026, 3, 29),))
    [inst] = [i for i in cal.instances_on(date(2026, 3, 28)) if i.name == "night"]
    assert inst.end - inst.start == 7 * 3_600_000
    assert cal.instances_on(date(2026, 3, 29)) == ()  # holiday: neither shift starts
    spans = cal.spans(ms(2026, 3, 29, 4), ms(2026, 3, 29, 6))  # 06:00-08:00 CEST on the holiday
    assert {s.scheduled for s in spans} == {False}


def test_weekday_filter_and_window_cuts_inside_a_shift() -> None:
    weekdays = Shift(name="day", start="06:00", end="14:00", days=("mon", "tue", "wed", "thu", "fri"))
    cal = ShiftCalendar("UTC", (weekdays,), (), window_ms=900_000)
    assert cal.instances_on(date(2026, 11, 22)) == ()  # a Sunday
    spans = cal.spans(ms(2026, 11, 23, 5, 50), ms(2026, 11, 23, 6, 20))
    assert [(s.start - ms(2026, 11, 23, 5, 50)) // 60_000 for s in spans] == [0, 10, 25]
    assert [s.shift for s in spans] == ["", "day", "day"]
    assert [s.window_start for s in spans] == [ms(2026, 11, 23, 5, 45), ms(2026, 11, 23, 6),
                                               ms(2026, 11, 23, 6, 15)]
