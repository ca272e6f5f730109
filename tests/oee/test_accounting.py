"""Unit behaviour of the per-machine accounting: counters, ideal cycle times, reason codes."""

from __future__ import annotations

from typing import Any

from plantstream.operators.oee import OeeAccounting
from plantstream.schemas.config import PlantConfig

CFG = PlantConfig.model_validate({
    "lines": [{"id": "l1", "machines": [{"id": "m1", "ideal_cycle_time_ms": 1000,
                                          "ideal_cycle_time_ms_by_part": {"P-2": 4000}}]}],
    "lateness": {"allowed_lateness_s": 0},
    "losses": {"parents": {"fault_hydraulic": "fault"},
               "fault_codes": {"17": {"reason": "jam", "category": "material"}},
               "reason_codes": {"HOP": {"reason": "hopper empty", "category": "material"}}},
})


def run(samples: list[tuple[int, str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    acc = OeeAccounting.for_config(CFG, "m1")
    return acc.process(samples) + acc.finish()


def facts(out: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for t, r in out if t == "oee_facts"]


def test_counter_resets_never_count_negative_and_parts_follow_their_ideal() -> None:
    out = run([(0, "machine_state", "running"), (0, "good_count", 900), (10_000, "good_count", 910),
               (20_000, "good_count", 3),                      # PLC reset: 3 made since
               (30_000, "part_number", "P-2"), (40_000, "good_count", 5),
               (45_000, "ideal_cycle_time_ms", 2000), (50_000, "good_count", 6),
               (55_000, "reject_parts", 2), (60_000, "work_order", "x")])
    rows = [f for f in facts(out) if f["window_start"] == 0]
    assert [f["part_number"] for f in rows] == ["", "P-2"]  # facts split at the part change
    assert [(f["good"], f["reject"], f["total"]) for f in rows] == [(13, 0, 13), (3, 2, 5)]
    # 13 at 1 s, 2 at 4 s (part P-2), then the metric overrides: 1 good + 2 rejects at 2 s
    assert sum(f["ideal_s"] for f in rows) == 13 * 1 + 2 * 4 + 3 * 2


def test_total_and_good_counters_without_rejects_give_rejects_as_the_difference() -> None:
    out = run([(0, "machine_state", "running"), (0, "total_count", 0), (0, "good_count", 0),
               (30_000, "total_count", 50), (30_000, "good_count", 47), (60_000, "work_order", "x")])
    [f] = [f for f in facts(out) if f["window_start"] == 0]
    assert (f["good"], f["reject"], f["total"]) == (47, 3, 50)


def test_a_reason_code_after_the_stop_restates_the_same_event_with_a_higher_version() -> None:
    out = run([(0, "machine_state", "running"), (60_000, "fault_code", 17),
               (60_000, "machine_state", "fault_hydraulic"), (300_000, "machine_state", "running"),
               (900_000, "reason_code", "HOP"), (960_000, "work_order", "x")])
    events = [r for t, r in out if t == "downtime_events"]
    assert {e["start"] for e in events} == {60_000}
    last = max(events, key=lambda e: e["version"])
    closed = [e for e in events if e["end"] is not None and e["reason"] == "jam"]
    assert closed and closed[-1]["version"] < last["version"]
    assert (last["end"], last["duration_s"], last["reason"], last["category"], last["fault_code"]) == (
        300_000, 240.0, "hopper empty", "material", "17")
    # the sub-state inherits fault's bucket: an unplanned stop, counted for MTBF/MTTR
    assert sum(f["unplanned_stop_s"] for f in facts(out)) == 240
    assert sum(f["stops"] for f in facts(out)) == 1


def test_an_idle_shorter_than_the_threshold_is_a_small_stop_inside_run_time() -> None:
    out = run([(0, "machine_state", "running"), (30_000, "machine_state", "idle"),
               (90_000, "machine_state", "running"), (200_000, "machine_state", "idle"),
               (400_000, "machine_state", "running"), (420_000, "work_order", "x")])
    fs = facts(out)
    assert sum(f["small_stop_s"] for f in fs) == 60
    assert sum(f["unplanned_stop_s"] for f in fs) == 200
    assert sum(f["run_s"] for f in fs) == 420 - 200
    assert (sum(f["small_stops"] for f in fs), sum(f["stops"] for f in fs)) == (1, 1)
    events = {r["start"]: r for t, r in out if t == "downtime_events"}
    assert (events[30_000]["small_stop"], events[200_000]["small_stop"]) == (1, 0)


def test_loss_config_errors_name_the_field_and_the_fix() -> None:
    import pytest

    from plantstream.schemas.config import build_config
    from plantstream.schemas.errors import ConfigError

    with pytest.raises(ConfigError) as bad_category:
        build_config({"losses": {"fault_codes": {"E1": {"reason": "jam", "category": "gremlins"}}}}, {})
    assert "losses.fault_codes.E1.category" in str(bad_category.value)
    assert "mechanical" in str(bad_category.value)
    with pytest.raises(ConfigError) as bad_bucket:
        build_config({"losses": {"buckets": {"idle": "coffee"}}}, {})
    assert "losses.buckets.idle" in str(bad_bucket.value)
    with pytest.raises(ConfigError) as cycle:
        build_config({"losses": {"parents": {"a": "b", "b": "a"}}}, {})
    assert "cycle" in str(cycle.value)
    env = build_config({}, {"PLANTSTREAM__LOSSES__SMALL_STOP_STATES": "[idle, fault]"})
    assert env.losses.small_stop_eligible("fault")
