"""Scrap operator: events, rolling rate against a brute-force count, ordering, reclassification,
restatement of late counter samples."""

from __future__ import annotations

import random
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from plantstream.flows.scrap import scrap_streams
from plantstream.operators.scrap import CostJoin, RateAggregator, ScrapTracker, WorkOrderRef
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.schemas.measurement import Measurement

HOUR = 3_600_000


def _cfg(lateness_s: float = 0, **extra: Any) -> PlantConfig:
    return build_config({"lines": [{"id": "l1", "machines": [{"id": "m1"}, {"id": "m2"}]}],
                         "lateness": {"allowed_lateness_s": lateness_s}, **extra}, {})


def _production(seed: int, machine: str = "m1") -> tuple[list[tuple[int, str, Any]], list[tuple[int, int, str]]]:
    """A random 3-hour stream of cumulative counters with resets and reasons; and per part the
    truth: every produced part as (ts, is_reject, reason)."""
    rng = random.Random(seed)
    samples: list[tuple[int, str, Any]] = [(0, "good_count", 0), (0, "reject_count", 0)]
    parts: list[tuple[int, int, str]] = []
    good = reject = 0
    reason = "unassigned"
    t = 0
    while t < 3 * HOUR:
        t += rng.randint(500, 20_000)
        if rng.random() < 0.02:
            reason = rng.choice(["burr", "dent", "startup"])
            samples.append((t, "scrap_reason", reason))
        if rng.random() < 0.003:  # counter reset by the PLC
            good = reject = 0
            samples += [(t, "good_count", 0), (t, "reject_count", 0)]
            continue
        if rng.random() < 0.08:
            reject += 1
            samples.append((t, "reject_count", reject))
            parts.append((t, 1, reason))
        else:
            good += 1
            samples.append((t, "good_count", good))
            parts.append((t, 0, reason))
    return samples, parts


def _run(tracker: ScrapTracker, samples: list[tuple[int, str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = tracker.process(samples)
    return out + tracker.finish()


def test_rolling_rate_equals_a_brute_force_count_over_the_last_hour() -> None:
    cfg = _cfg()
    samples, parts = _production(3)
    out = _run(ScrapTracker.for_config(cfg, "m1"), samples)
    rows = [r for k, r in out if k == "rate" and r["scope"] == "machine"]
    assert len(rows) > 170  # a row per minute with production in the last hour
    for r in rows:
        end = r["window_end"]
        in_window = [p for p in parts if end - HOUR <= p[0] < end]
        in_hop = [p for p in parts if end - 60_000 <= p[0] < end]
        assert (r["wr"], r["wg"] + r["wr"]) == (sum(p[1] for p in in_window), len(in_window)), end
        assert (r["mr"], r["mg"] + r["mr"]) == (sum(p[1] for p in in_hop), len(in_hop)), end
    # the hop counts add up to everything produced, the events to every reject with its reason
    assert sum(r["mg"] + r["mr"] for r in rows) == len(parts)
    events = [r for k, r in out if k == "scrap_events"]
    by_reason: dict[str, int] = {}
    for p in parts:
        if p[1]:
            by_reason[p[2]] = by_reason.get(p[2], 0) + 1
    got: dict[str, int] = {}
    for e in events:
        got[e["reason"]] = got.get(e["reason"], 0) + e["quantity"]
    assert got == by_reason


def test_any_arrival_order_within_the_allowed_lateness_gives_the_same_events_and_rates() -> None:
    cfg = _cfg(lateness_s=60)
    samples, _ = _production(5)
    in_order = _run(ScrapTracker.for_config(cfg, "m1"), samples)
    rng = random.Random(1)
    shuffled = sorted(samples, key=lambda s: s[0] + rng.randint(0, 50_000))
    # same-ts samples keep their relative order (a PLC publishes them in order)
    out_of_order = _run(ScrapTracker.for_config(cfg, "m1"), shuffled)
    assert not [r for k, r in out_of_order if k == "deadletter"]

    def final(out: list[tuple[str, dict[str, Any]]]) -> tuple[dict[Any, Any], dict[Any, Any]]:
        ev = {r["ts"]: (r["quantity"], r["reason"]) for k, r in out if k == "scrap_events"}
        rt = {(r["scope"], r["key"], r["window_end"]): (r["mg"], r["mr"], r["wg"], r["wr"])
              for k, r in out if k == "rate"}
        return ev, rt

    assert final(out_of_order) == final(in_order)


def test_a_late_reclassification_restates_only_the_events_it_covers() -> None:
    cfg = _cfg(lateness_s=0)
    t = ScrapTracker.for_config(cfg, "m1")
    out = t.process([(0, "reject_count", 0), (0, "scrap_reason", "burr"),
                     (10_000, "reject_count", 2), (20_000, "reject_count", 3),
                     (30_000, "scrap_reason", "dent"), (40_000, "reject_count", 5),
                     (600_000, "good_count", 1)])
    first = {r["ts"]: r for k, r in out if k == "scrap_events"}
    assert {ts: (r["quantity"], r["reason"]) for ts, r in first.items()} == {
        10_000: (2, "burr"), 20_000: (1, "burr"), 40_000: (2, "dent")}
    # ten minutes later the quality inspector reclassifies the rejects from 15 s on as porosity
    again = t.process([(15_000, "scrap_reason", "porosity")])
    assert [(r["ts"], r["quantity"], r["reason"], r["category"]) for k, r in again] == [
        (20_000, 1, "porosity", "production")]
    assert again[0][1]["version"] > max(r["version"] for r in first.values())
    # a reject counter sample beyond the allowed lateness but within the restatement horizon
    # restates like any other: a new event, and the minute's rate contributions again
    late = t.process([(50_000, "reject_count", 9)])
    assert [(r["ts"], r["quantity"], r["reason"]) for k, r in late if k == "scrap_events"] == [
        (50_000, 4, "dent")]
    rates = [r for k, r in late if k == "rate"]
    # every boundary whose rolling hour holds minute 0 (60 s ... 600 s), for the machine and its line
    assert sorted({r["window_end"] for r in rates}) == list(range(60_000, 600_001, 60_000))
    assert len(rates) == 20 and {r["wr"] for r in rates} == {9}
    assert {r["mr"] for r in rates if r["window_end"] == 60_000} == {9}
    assert not [k for k, _ in late if k == "deadletter"]
    # beyond the restatement horizon even a reason is too late
    t2 = ScrapTracker.for_config(_cfg(lateness={"allowed_lateness_s": 0, "restatement_horizon_s": 60}), "m1")
    t2.process([(0, "reject_count", 0), (10_000, "reject_count", 1), (200_000, "good_count", 1)])
    assert [k for k, _ in t2.process([(10_000, "scrap_reason", "x")])] == ["deadletter"]


def test_boundary_reason_values_and_increment_metrics() -> None:
    t = ScrapTracker.for_config(_cfg(scrap={"reasons": {"burr": "tooling"}}), "m1")
    out = t.process([(0, "part_number", "P-1"), (0, "work_order", "WO-9"), (0, "scrap_reason", ""),
                     (1_000, "reject_parts", 2), (2_000, "scrap_reason", "burr"), (3_000, "reject_parts", 1),
                     (3_000, "reject_parts", 4), (4_000, "reject_parts", 0), (5_000, "good_parts", 3)])
    out += t.finish()
    ev = {r["ts"]: r for k, r in out if k == "scrap_events"}
    assert {ts: (r["quantity"], r["reason"], r["category"]) for ts, r in ev.items()} == {
        1_000: (2, "unassigned", "unassigned"), 3_000: (5, "burr", "tooling")}
    assert (ev[3_000]["part_number"], ev[3_000]["work_order"]) == ("P-1", "WO-9")
    [part] = [r for k, r in out if k == "rate" and r["scope"] == "part"]
    assert (part["key"], part["wg"], part["wr"]) == ("P-1", 3, 7)


def test_line_rate_sums_its_machines_and_the_latest_row_is_complete() -> None:
    agg = RateAggregator(window_ms=HOUR)
    base = {"scope": "line", "key": "l1", "site": "s", "line": "l1", "window_end": HOUR}
    agg.on_contribution(base | {"machine": "m1", "mg": 1, "mr": 1, "wg": 50, "wr": 50})
    agg.on_contribution(base | {"machine": "m1", "mg": 1, "mr": 1, "wg": 60, "wr": 40} | {"window_end": 2 * HOUR})
    row = agg.on_contribution(base | {"machine": "m2", "mg": 2, "mr": 0, "wg": 150, "wr": 0})
    assert (row["window_end"], row["window_good"], row["window_reject"], row["machines"]) == (HOUR, 200, 50, 2)
    assert row["scrap_rate"] == pytest.approx(0.2)


def test_cost_join_keeps_uncosted_events_until_the_work_order_arrives() -> None:
    j = CostJoin()
    ev = {"machine": "m1", "ts": 5, "quantity": 3, "part_number": "P", "work_order": "WO-1", "version": 4}
    [first] = j.on_event(ev, None, 10)
    assert (first["costed"], first["cost"]) == (0, 0.0)
    [later] = j.on_ref(WorkOrderRef("WO-1", material_cost=2.0, labor_rate=60.0, labor_s_per_unit=30), None)
    assert (later["costed"], later["material_cost"], later["labor_cost"], later["cost"]) == (1, 6.0, 1.5, 7.5)
    assert later["version"] > first["version"]
    [next_ev] = j.on_event(ev | {"ts": 9, "version": 5}, None, 10)
    assert next_ev["cost"] == 7.5 and not j.pending


def test_scrap_flow_joins_reference_records_that_arrive_after_the_events() -> None:
    cfg = _cfg()
    ms = [Measurement(0, "m1", "work_order", "WO-1"), Measurement(0, "m1", "reject_count", 0),
          Measurement(1_000, "m1", "reject_count", 4), Measurement(2_000, "m2", "work_order", "WO-2"),
          Measurement(2_000, "m2", "reject_parts", 2)]
    refs = [WorkOrderRef("WO-1", "P", material_cost=1.5), WorkOrderRef("WO-2", "Q", material_cost=0.5)]
    flow = Dataflow("scrap_join")
    measurements = op.input("ms", flow, TestingSource(ms))
    ref_stream = op.input("refs", flow, TestingSource(refs))
    # the two inputs interleave in any order: the latest version of every event is costed
    out = scrap_streams(cfg, measurements, ref_stream)
    got: list[dict[str, Any]] = []
    op.output("events", out["scrap_events"], TestingSink(got))
    run_main(flow)
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for r in got:
        key = (r["machine"], r["ts"])
        if key not in latest or r["version"] > latest[key]["version"]:
            latest[key] = r
    assert {k: (r["quantity"], r["cost"], r["costed"]) for k, r in latest.items()} == {
        ("m1", 1_000): (4, 6.0, 1), ("m2", 2_000): (2, 1.0, 1)}
