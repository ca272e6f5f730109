"""The event-time ledger's clock-skew policy and redelivery absorption, on the OEE accounting and
the scrap tracker (the two folds that share the ledger).

- ahead of the wall clock: ``clock_skew``, the machine's time does not move;
- older than the horizon: ``late`` within ``max_behind``, held beyond it; a sample on the
  machine's timeline rejects the held ones (``clock_skew``), a held timeline that goes on re-bases
  the machine (the old one finished, the held samples applied — nothing lost or doubled);
- a gap longer than ``max_gap`` is not accounted window by window;
- a redelivered sample (same time, metric, value) is applied once, wherever the original is.
"""

from __future__ import annotations

from typing import Any

import pytest

from plantstream.operators.ledger import ClockPolicy, Ledger
from plantstream.operators.oee import OEE_STATE, OeeAccounting
from plantstream.operators.scrap import ScrapTracker
from plantstream.schemas.config import build_config
from plantstream.schemas.errors import ConfigError

H = 3_600_000
DAY = 24 * H
NOW = 1_796_000_000_000  # the wall clock of these tests (2026-11-30)
T = NOW - NOW % 60_000 - 2 * H  # the machine's samples start 2 h before, on a minute


def config(**clock: Any) -> Any:
    return build_config({"lateness": {"allowed_lateness_s": 0}, "clock": clock,
                         "lines": [{"id": "l1", "machines": [{"id": "m1", "ideal_cycle_time_ms": 1000}]}]}, {})


def run(t0: int, n: int = 600, step: int = 10_000) -> list[tuple[int, str, Any]]:
    """n samples from t0: the state changes every 100 samples, a good part every sample."""
    out: list[tuple[int, str, Any]] = []
    for i in range(n):
        ts = t0 + i * step
        if i % 100 == 0:
            out.append((ts, "machine_state", "running" if i % 200 == 0 else "fault"))
        else:
            out.append((ts, "good_parts", 1))
    return out


def latest(rows: list[tuple[str, dict[str, Any]]], table: str, key: str) -> dict[Any, dict[str, Any]]:
    best: dict[Any, dict[str, Any]] = {}
    for t, r in rows:
        if t == table and (r[key] not in best or r["version"] > best[r[key]]["version"]):
            best[r[key]] = r
    return best


def facts(rows: list[tuple[str, dict[str, Any]]]) -> dict[int, tuple[Any, ...]]:
    return {ws: (r["run_s"], r["unplanned_stop_s"], r["good"], r["all_s"])
            for ws, r in latest(rows, "oee_facts", "window_start").items()}


def feed(acc: Ledger, samples: list[tuple[int, str, Any]], now_ms: int | None = NOW) -> list[Any]:
    out: list[Any] = []
    for s in samples:
        acc.ingest([s], now_ms=now_ms)
        out += acc.take()
    Ledger.finish(acc)
    return out + acc.take()


def reasons(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [r["reason"].split(":")[0] for t, r in rows if t == "deadletter"]


def test_a_sample_30_days_ahead_of_the_wall_clock_is_clock_skew_and_moves_nothing() -> None:
    acc = OeeAccounting.for_config(config(), "m1")
    out = feed(acc, [(T + 30 * DAY, "machine_state", "running"), *run(T)])
    clean = OeeAccounting.for_config(config(), "m1")
    assert reasons(out) == ["clock_skew"]
    [dead] = [r for t, r in out if t == "deadletter"]
    assert dead["reason"].startswith(f"clock_skew: {(T + 30 * DAY - NOW) // 1000} s ahead of the wall clock")
    assert dead["source"] == "oee:m1:machine_state" and dead["ts"] == T + 30 * DAY
    assert facts(out) == facts(feed(clean, run(T)))  # the real ones, exactly as without it
    assert acc.max_ts == T + 599 * 10_000 and acc.counts["clock_skew"] == 1


def test_without_a_wall_clock_one_sample_30_days_ahead_costs_one_window_and_a_re_base() -> None:
    # replay of an old file with one sample 30 days after the rest: the wall clock allows it
    acc = OeeAccounting.for_config(config(), "m1")
    out = feed(acc, [(T + 30 * DAY, "machine_state", "running"), *run(T)], now_ms=None)
    clean = facts(feed(OeeAccounting.for_config(config(), "m1"), run(T), now_ms=None))
    got = facts(out)
    assert {ws: f for ws, f in got.items() if ws < T + DAY} == clean  # every real fact, the same
    assert len(got) - len(clean) <= 1  # the bad sample's own window, nothing in between
    assert not [r for t, r in out if t == "deadletter"]  # held, then applied: nothing lost
    assert acc.counts["rebases"] == 1 and acc.held == []


def test_a_first_sample_90_days_old_does_not_fill_90_days_of_windows() -> None:
    acc = OeeAccounting.for_config(config(), "m1")
    out: list[Any] = []
    most_windows = 0
    for s in [(T - 90 * DAY, "machine_state", "running"), *run(T)]:
        acc.ingest([s], now_ms=NOW)
        most_windows = max(most_windows, len(acc.acc.windows))
        out += acc.take()
    Ledger.finish(acc)
    out += acc.take()
    assert most_windows <= 2  # the fold never held more than the open window (and the next)
    f = facts(out)
    assert len(f) == 100  # 100 minutes of real samples (the old state alone accounted no time)
    assert facts([(t, r) for t, r in out if t != "oee_facts" or r["window_start"] >= T - DAY]) == \
        facts(feed(OeeAccounting.for_config(config(), "m1"), run(T)))
    assert acc.counts["jumps"] == 1 and len(acc.dump()) < 20_000


def test_a_gap_longer_than_max_gap_is_unmonitored_and_a_shorter_one_is_accounted() -> None:
    for gap_s, windows in ((3_600, 1), (7_200, 121)):
        acc = OeeAccounting.for_config(config(max_gap_s=gap_s), "m1")
        out = feed(acc, [(T, "machine_state", "running"), (T + 2 * H, "good_parts", 1)])
        assert len(facts(out)) == windows


def test_a_sample_beyond_the_horizon_is_late_within_max_behind_and_held_beyond_it() -> None:
    acc = OeeAccounting.for_config(config(), "m1")
    feed(acc, run(T, 10))
    acc.ingest([(T - 2 * DAY, "good_parts", 1)], now_ms=NOW)  # beyond 24 h, within 7 days
    assert reasons(acc.take()) == ["late"]
    acc.ingest([(T - 30 * DAY, "good_parts", 1)], now_ms=NOW)  # a wrong clock: held
    assert acc.take() == [] and len(acc.held) == 1
    acc.ingest([(T + 200_000, "good_parts", 1)], now_ms=NOW)  # the machine's timeline goes on
    [(_, r)] = [x for x in acc.take() if x[0] == "deadletter"]
    assert r["reason"].startswith("clock_skew: 2592090 s behind the machine's time")
    assert acc.held == [] and acc.counts["clock_skew"] == 1 and acc.counts["rebases"] == 0


def test_max_behind_below_the_horizon_stops_at_start_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"clock\.max_behind_s \(3600\) must be at least"):
        build_config({"clock": {"max_behind_s": 3600}}, {})
    with pytest.raises(ConfigError, match=r"clock\.max_gap_s \(1e\+06\) allows more than 100,000 windows"):
        build_config({"window_s": 1, "clock": {"max_gap_s": 10**6}}, {})
    assert ClockPolicy.of(build_config({}, {})) == ClockPolicy(300_000, 7 * DAY, DAY, 300_000, 1_000)


def plc_reset() -> tuple[list[tuple[int, str, Any]], list[tuple[int, str, Any]]]:
    """A PLC counting parts at T, whose clock resets to 2000-01-01 and ticks on from there."""
    before = [(T, "machine_state", "running")] + [(T + i * 1000, "good_count", 1000 + i) for i in range(1, 300)]
    y2k = 946_684_800_000
    after = [(y2k, "machine_state", "running")] + [(y2k + i * 1000, "good_count", 1299 + i) for i in range(1, 900)]
    return before, after


def test_a_plc_clock_reset_to_2000_re_bases_after_rebase_after_s_and_loses_nothing() -> None:
    before, after = plc_reset()
    acc = OeeAccounting.for_config(config(), "m1")
    out = feed(acc, before + after)
    assert acc.counts["rebases"] == 1 and not [r for t, r in out if t == "deadletter"]
    f = latest(out, "oee_facts", "window_start")
    old = [r for ws, r in f.items() if ws >= T]
    new = [r for ws, r in f.items() if ws < T]
    assert sum(r["good"] for r in old) == 298  # the old timeline (its first count a baseline), finished
    assert sum(r["good"] for r in new) == 899  # the new one, its first count a delta: nothing lost or doubled
    assert min(f) == 946_684_800_000 and sum(r["run_s"] for r in new) == pytest.approx(899)
    assert len(acc.held) == 0 and acc.max_ts == after[-1][0]


def test_the_held_list_is_bounded_and_survives_a_snapshot() -> None:
    acc = OeeAccounting.for_config(config(rebase_after_samples=50, rebase_after_s=3600), "m1")
    feed(acc, run(T, 10))
    y2k = 946_684_800_000
    acc.ingest([(y2k + i, "good_parts", 1) for i in range(49)], now_ms=NOW)
    assert len(acc.held) == 49
    st = OEE_STATE.decode(acc.dump())
    assert len(st.ledger["held"]) == 49 and st.ledger["held_span"] == (y2k, y2k + 48)
    resumed = OeeAccounting.for_config(config(rebase_after_samples=50, rebase_after_s=3600), "m1")
    resumed.restore(st)
    resumed.ingest([(y2k + 49, "good_parts", 1)], now_ms=NOW)  # the 50th: re-based
    assert resumed.counts["rebases"] == 1 and resumed.held == []
    out = resumed.take() + resumed.finish()
    assert sum(r["good"] for r in latest(out, "oee_facts", "window_start").values() if r["window_start"] < T) == 50


def test_a_state_without_clock_events_has_no_clock_keys() -> None:
    acc = OeeAccounting.for_config(config(), "m1")
    feed(acc, run(T, 20))
    assert not {"held", "held_span", "clock_counts"} & set(acc.ledger_payload())


@pytest.mark.parametrize(("where", "later"), [("same batch", 0), ("buffered", 30), ("applied", 90),
                                              ("restating", 700)])
def test_a_redelivered_sample_counts_once_in_oee_and_scrap(where: str, later: int) -> None:
    """The original is buffered (within the 60 s lateness), applied in the journal's open
    segment, or in a closed one (the redelivery would restate) when its copy arrives."""
    cfg = build_config({"lateness": {"allowed_lateness_s": 60},
                        "lines": [{"id": "l1", "machines": [{"id": "m1"}]}]}, {})
    base = [(T, "machine_state", "running")] + [(T + i * 1000, "good_parts", 1) for i in range(1, 1200)] \
        + [(T + i * 1000, "reject_parts", 2) for i in range(1, 1200, 100)]
    base.sort(key=lambda s: s[0])
    original = (T + 501_000, "reject_parts", 2)
    at = base.index(original)
    totals = []
    for redeliver in (False, True):
        acc, scrap = OeeAccounting.for_config(cfg, "m1"), ScrapTracker.for_config(cfg, "m1")
        out: list[Any] = []
        sout: list[Any] = []
        for i, s in enumerate(base):
            batch = [s]
            if redeliver and i == at + later:
                batch = [s, original]
            acc.ingest(batch, now_ms=NOW)
            scrap.ingest(batch, now_ms=NOW)
            out += acc.take()
            sout += scrap.take()
        out += acc.finish()
        sout += scrap.finish()
        f = latest(out, "oee_facts", "window_start").values()
        ev = latest(sout, "scrap_events", "ts").values()
        totals.append((sum(r["good"] for r in f), sum(r["reject"] for r in f), sum(e["quantity"] for e in ev)))
        if redeliver:
            assert reasons(out) == reasons(sout) == ["duplicate"]
            assert acc.counts["duplicates"] == scrap.counts["duplicates"] == 1
            if where == "restating":
                assert acc.segments and original[0] < acc.open_since  # the original was in a closed segment
    assert totals[0] == totals[1] == (1199, 24, 24)


def test_two_values_at_the_same_time_are_not_duplicates_and_a_held_redelivery_is() -> None:
    acc = OeeAccounting.for_config(config(), "m1")
    out = feed(acc, [(T, "machine_state", "running"), (T + 1000, "good_parts", 1),
                     (T + 1000, "good_parts", 2), (T + 1000, "good_parts", 1.0), (T + 2000, "good_parts", 1)])
    assert sum(r["good"] for r in latest(out, "oee_facts", "window_start").values()) == 5
    assert acc.counts["duplicates"] == 0
    acc.ingest([(T - 30 * DAY, "good_parts", 1), (T - 30 * DAY, "good_parts", 1)], now_ms=NOW)
    assert len(acc.held) == 1 and acc.counts["duplicates"] == 1


def test_scrap_re_bases_like_oee_and_counts_rejects_across_a_clock_reset_once() -> None:
    cfg = config()
    y2k = 946_684_800_000
    samples = [(T, "work_order", "WO-1"), (T, "reject_count", 10)] + \
        [(T + i * 1000, "reject_count", 10 + i) for i in range(1, 100)] + \
        [(y2k + i * 1000, "reject_count", 110 + i) for i in range(400)]
    tracker = ScrapTracker.for_config(cfg, "m1")
    out = feed(tracker, samples)
    events = latest(out, "scrap_events", "ts")
    assert tracker.counts["rebases"] == 1 and not reasons(out)
    assert sum(e["quantity"] for e in events.values() if e["ts"] >= T) == 99
    new = [e for e in events.values() if e["ts"] < T]
    assert sum(e["quantity"] for e in new) == 400 and {e["work_order"] for e in new} == {"WO-1"}


def test_held_samples_at_the_end_of_input_are_dead_letters_provisionally_and_stay_held() -> None:
    acc = OeeAccounting.for_config(config(), "m1")
    feed(acc, run(T, 10))
    acc.ingest([(946_684_800_000, "good_parts", 1)], now_ms=NOW)
    out = acc.finish()
    [(_, r)] = [x for x in out if x[0] == "deadletter"]
    assert r["reason"].startswith("clock_skew: ") and r["reason"].endswith("held at the end of input")
    assert len(acc.held) == 1  # the state goes on: a resumed run may still re-base onto it


def test_a_tick_of_the_held_timeline_counts_towards_the_re_base() -> None:
    acc = OeeAccounting.for_config(config(), "m1")
    feed(acc, run(T, 10))
    y2k = 946_684_800_000
    acc.ingest([(y2k, "machine_state", "running")], now_ms=NOW)
    acc.on_tick(y2k + 200_000, NOW)  # a temperature of the PLC's new clock
    assert acc.counts["rebases"] == 0 and len(acc.held) == 1
    acc.on_tick(y2k + 300_000, NOW)
    assert acc.counts["rebases"] == 1 and acc.held == [] and acc.max_ts == y2k
    acc.on_tick(y2k + 400_000, NOW)  # the new timeline goes on: its windows close
    new = [(r["window_start"], r["run_s"]) for t, r in acc.take() if t == "oee_facts" and r["window_start"] < T]
    assert new[:2] == [(y2k, 60.0), (y2k + 60_000, 60.0)]


def test_one_sample_30_days_ahead_in_the_middle_of_an_old_file_is_taken_back_without_a_loss() -> None:
    """No wall clock (an old file replayed): the sample jumps the machine 30 days ahead, the
    real ones after it are held and take the timeline before the jump up again, as it was."""
    samples = [(T, "machine_state", "running")] + [(T + i * 1000, "good_count", 100 + i) for i in range(1, 900)]
    bad = (T + 30 * DAY, "machine_state", "running")
    clean = feed(OeeAccounting.for_config(config(), "m1"), samples, now_ms=None)
    acc = OeeAccounting.for_config(config(), "m1")
    out = feed(acc, [*samples[:400], bad, *samples[400:]], now_ms=None)
    assert acc.counts["jumps"] == 1 and acc.counts["rebases"] == 1
    assert facts(out) == facts(clean)  # every window as without it, the one of the jump included
    assert "stash" not in acc.ledger_payload()


def test_the_timeline_before_a_jump_is_dropped_once_the_new_one_goes_on() -> None:
    acc = OeeAccounting.for_config(config(), "m1")
    feed(acc, run(T, 10))
    acc.ingest([(T + 3 * DAY, "machine_state", "running")], now_ms=None)  # a real gap: the machine was off
    assert "stash" in acc.ledger_payload()
    st = OEE_STATE.decode(acc.dump())
    resumed = OeeAccounting.for_config(config(), "m1")
    resumed.restore(st)
    resumed.ingest([(T + 3 * DAY + 300_000, "good_parts", 1)], now_ms=None)
    assert "stash" not in resumed.ledger_payload() and resumed.counts["jumps"] == 1


def test_stray_wrong_times_never_add_up_to_a_re_base() -> None:
    acc = OeeAccounting.for_config(config(), "m1")
    feed(acc, run(T, 10))
    y2k, epoch = 946_684_800_000, 1_000
    acc.ingest([(y2k, "good_parts", 1), (epoch, "good_parts", 1), (y2k + 5_000, "good_parts", 1)], now_ms=NOW)
    assert acc.counts["rebases"] == 0 and acc.held_span == (y2k + 5_000, y2k + 5_000)
    # a PLC clock reset that goes on: the run from 2000 re-bases; the stray 1970 one is dead-lettered
    acc.ingest([(y2k + i * 1000, "good_parts", 1) for i in range(6, 400)], now_ms=NOW)
    out = acc.take()
    assert acc.counts["rebases"] == 1
    assert [r["ts"] for t, r in out if t == "deadletter"] == [epoch]
    Ledger.finish(acc)
    new = [r for t, r in out + acc.take() if t == "oee_facts" and r["window_start"] < T]
    assert sum(r["good"] for r in latest([("f", r) for r in new], "f", "window_start").values()) == 396  # 2 + 394: the stray is not among them
