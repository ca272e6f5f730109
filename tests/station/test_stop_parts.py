"""A split stop's parts as the stop page offers them for correction.

The OEE fold writes a split stop's ``segments`` with its first part too (from the stop's start);
that part is the stop's own reason, corrected with ``reason_code``. Only the parts after a split
point may be corrected with ``reason_split`` (a ``reason_split`` at ``start + n`` would add a new
split point instead of correcting the first part).
"""

from __future__ import annotations

from plantstream.station.data import StationData


def _row(segs: list[tuple[int, str, str]]) -> dict[str, object]:
    return {"machine": "press-01", "start_ms": 36_000_000, "end_ms": 38_400_000, "duration_s": 2400.0,
            "state": "fault", "fault_code": "", "reason": "jam", "category": "mechanical",
            "small_stop": 0, "version": 7, "segs": segs}


def test_the_first_part_of_a_split_stop_is_not_a_split_point() -> None:
    stop = StationData._stop(_row([(36_000_000, "jam", "mechanical"),
                                   (37_500_000, "no_operator", "operator")]))
    assert stop.segments == ((37_500_000, "no_operator", "operator"),)
    assert (stop.reason, stop.category) == ("jam", "mechanical")


def test_an_unsplit_stop_has_no_parts_to_correct() -> None:
    assert StationData._stop(_row([])).segments == ()
