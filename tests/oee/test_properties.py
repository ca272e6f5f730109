"""Property tests of the OEE accounting (hypothesis), against an independent reference.

The reference computes the whole shift at once from the state intervals with plain interval
arithmetic (no windows, no calendar code); the accounting must agree with it when its 1-minute
facts are summed, must not lose or double-count a millisecond at any boundary, and must give
the same facts whatever the arrival order within the allowed lateness.
"""

from __future__ import annotations

import random
from collections import Counter as Tally
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantstream.operators.oee import TIME_COLUMNS, OeeAccounting, ratios
from plantstream.schemas.config import PlantConfig

H = 3_600_000
DAY0 = 1_795_500_000_000 - 1_795_500_000_000 % (24 * H)  # a UTC midnight
SHIFT = (DAY0 + 6 * H, DAY0 + 14 * H)
BREAK = (DAY0 + 9 * H, DAY0 + 9 * H + 1_800_000)
THRESHOLD_MS = 120_000
STATES = ("running", "idle", "fault", "setup", "planned_stop", "off")

CONFIG = PlantConfig.model_validate({
    "shifts": [{"name": "day", "start": "06:00", "end": "14:00",
                "breaks": [{"start": "09:00", "minutes": 30}]}],
    "lines": [{"id": "l1", "machines": [{"id": "m1", "ideal_cycle_time_ms": 1500}]}],
    "lateness": {"allowed_lateness_s": 300, "restatement_horizon_s": 86_400},
})


def overlap(a: int, b: int, lo: int, hi: int) -> int:
    return max(0, min(b, hi) - max(a, lo))


def daily_overlap(a: int, b: int, lo: int, hi: int) -> int:
    """Overlap of [a, b) with [lo, hi) repeated every day (the shift calendar repeats daily)."""
    first, last = (a - hi) // (24 * H), (b - lo) // (24 * H) + 1
    return sum(overlap(a, b, lo + k * 24 * H, hi + k * 24 * H) for k in range(first, last + 1))


def reference(changes: list[tuple[int, str]], end: int) -> dict[str, float]:
    """Whole-run seconds per fact column by interval arithmetic (KPI.md time model)."""
    out = dict.fromkeys(TIME_COLUMNS, 0.0)
    for (a, state), (b, _) in zip(changes, [*changes[1:], (end, "")], strict=True):
        d = b - a
        in_break = daily_overlap(a, b, *BREAK)
        working = daily_overlap(a, b, SHIFT[0], SHIFT[1]) - in_break
        outside = d - working - in_break
        out["all_s"] += d
        if state == "running":
            for c in ("scheduled_s", "planned_s", "run_s"):
                out[c] += d
            out["unscheduled_run_s"] += outside + in_break
            continue
        if state == "off":
            continue
        out["scheduled_s"] += working + in_break
        out["excluded_s"] += in_break
        if state == "planned_stop":
            out["excluded_s"] += working
            continue
        out["planned_s"] += working
        if state == "setup":
            out["setup_s"] += working
        elif state == "idle" and d < THRESHOLD_MS:
            out["run_s"] += working
            out["small_stop_s"] += working
        else:
            out["unplanned_stop_s"] += working
    return {k: v / 1000 for k, v in out.items()}


@st.composite
def shifts(draw: Any) -> tuple[list[tuple[int, str]], list[tuple[int, int]], int]:
    """State changes from about 05:00 (crossing shift and break edges), with part counts."""
    t = DAY0 + 5 * H + draw(st.integers(0, 59_999))
    changes: list[tuple[int, str]] = []
    counts: list[tuple[int, int]] = []
    steps = draw(st.lists(st.tuples(st.sampled_from(STATES),
                                    st.one_of(st.integers(600_000, 3 * H), st.integers(1, 150_000))),
                          min_size=1, max_size=40))
    for state, dur in steps:
        if not changes or changes[-1][1] != state:
            changes.append((t, state))
        if state == "running":
            for _ in range(draw(st.integers(0, 3))):
                counts.append((t + draw(st.integers(0, dur - 1)), draw(st.integers(1, 40))))
        t += dur
    return changes, counts, t


def samples(changes: list[tuple[int, str]], counts: list[tuple[int, int]], end: int
            ) -> list[tuple[int, str, Any]]:
    out: list[tuple[int, str, Any]] = [(ts, "machine_state", s) for ts, s in changes]
    out += [(ts, "good_parts", n) for ts, n in counts]
    out.append((end, "work_order", "end-of-test"))  # moves event time to the end, changes nothing
    # distinct timestamps keep the order of simultaneous samples unambiguous
    seen: set[int] = set()
    uniq = []
    for s in sorted(out, key=lambda x: x[0]):
        if s[0] not in seen:
            seen.add(s[0])
            uniq.append(s)
    return uniq


def run(samples_in_arrival_order: list[tuple[int, str, Any]], config: PlantConfig = CONFIG
        ) -> list[dict[str, Any]]:
    acc = OeeAccounting.for_config(config, "m1")
    rows = acc.process(samples_in_arrival_order) + acc.finish()
    return [r for t, r in rows if t == "oee_facts"]


def latest(facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Latest version of each window without the version (what the tables return)."""
    best: dict[int, int] = {}
    for f in facts:
        best[f["window_start"]] = max(best.get(f["window_start"], -1), f["version"])
    return sorted(({k: v for k, v in f.items() if k != "version"} for f in facts
                   if f["version"] == best[f["window_start"]]),
                  key=lambda f: (f["window_start"], f["shift"], f["work_order"]))


def total(facts: list[dict[str, Any]], col: str) -> float:
    return sum(f[col] for f in facts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shifts())
def test_summed_minute_facts_equal_the_whole_shift_and_lose_no_time(
    data: tuple[list[tuple[int, str]], list[tuple[int, int]], int]
) -> None:
    changes, counts, _ = data
    ss = samples(changes, counts, data[2])
    end = ss[-1][0]
    changes = [(ts, v) for ts, m, v in ss if m == "machine_state"]
    facts = latest(run(ss))
    ref = reference(changes, end)
    for col in TIME_COLUMNS:
        assert abs(total(facts, col) - ref[col]) < 1e-6, col
    # every millisecond from the first state to the end of input, once
    assert abs(total(facts, "all_s") - (end - changes[0][0]) / 1000) < 1e-6
    assert len({f["window_start"] for f in facts}) == len(facts) or all(
        f["shift"] in ("", "day") for f in facts)
    for f in facts:
        assert f["window_end"] - f["window_start"] == 60_000
        assert 0 <= f["all_s"] <= 60 + 1e-9
        assert abs(f["planned_s"] - (f["run_s"] + f["unplanned_stop_s"] + f["setup_s"])) < 1e-9
        assert f["small_stop_s"] <= f["run_s"] + 1e-9
        r = ratios(f["planned_s"], f["run_s"], f["ideal_s"], f["good"], f["total"], f["all_s"])
        for k in ("availability", "quality"):
            v = r[k]
            assert v is None or 0 <= v <= 1
    good = sum(n for ts, m, n in ss if m == "good_parts")
    assert total(facts, "good") == good and total(facts, "total") == good
    assert abs(total(facts, "ideal_s") - good * 1.5) < 1e-6
    # additivity across window sizes: hourly facts sum to the same as 1-minute facts
    hourly = latest(run(ss, CONFIG.model_copy(update={"window_s": 3600})))
    for col in (*TIME_COLUMNS, "ideal_s", "good", "stops", "small_stops"):
        assert abs(total(hourly, col) - total(facts, col)) < 1e-6, col


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shifts(), st.integers(0, 2**32 - 1))
def test_out_of_order_within_allowed_lateness_gives_the_in_order_result(
    data: tuple[list[tuple[int, str]], list[tuple[int, int]], int], seed: int
) -> None:
    changes, counts, _ = data
    ss = samples(changes, counts, data[2])
    rng = random.Random(seed)
    lateness = round(CONFIG.lateness.allowed_lateness_s * 1000)
    # each sample is delayed by up to the allowed lateness; arrival order = ts + delay
    shuffled = [s for _, s in sorted(((s[0] + rng.randint(0, lateness), i), s)
                                     for i, s in enumerate(ss))]
    assert latest(run(shuffled)) == latest(run(ss))


def test_a_minute_boundary_a_break_and_the_shift_end_split_a_long_stop_exactly() -> None:
    ss = [(SHIFT[0] - 90_000, "machine_state", "fault"), (SHIFT[1] + 30_000, "machine_state", "off"),
          (SHIFT[1] + 60_000, "work_order", "x")]
    facts = latest(run(ss))
    cols: Tally[str] = Tally()
    for f in facts:
        for c in ("unplanned_stop_s", "excluded_s", "planned_s", "all_s", "stops"):
            cols[c] += f[c]
    assert cols["unplanned_stop_s"] == 8 * 3600 - 1800
    assert cols["excluded_s"] == 1800
    assert cols["planned_s"] == 8 * 3600 - 1800
    assert cols["all_s"] == 8 * 3600 + 90 + 60  # off is all time too, not scheduled
    assert cols["stops"] == 1
    early = [(f["all_s"], f["planned_s"], f["shift"]) for f in facts if f["window_start"] < SHIFT[0]]
    assert early == [(30.0, 0.0, ""), (60.0, 0.0, "")]
