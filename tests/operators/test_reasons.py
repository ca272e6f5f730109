"""Operator reasons, corrections and splits in the OEE fold (docs/oee.md, "Operator reasons,
corrections and splits"): the operator-entry contract, sample by sample on one machine's
:class:`~plantstream.operators.oee.OeeAccounting` (its event-time ledger included).

A stop is ``(machine, start)``; a ``reason_code`` names its (first part's) reason, a
``reason_split`` strictly inside it splits it, one less than 1 s after a split point replaces
that part's reason (an empty value removes the split point), and one outside every stop is one
dead letter. The stop stays one event with a higher version; its duration and the OEE facts
never change.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from plantstream.operators.downtime import MAX_PARTS, OUTSIDE, DowntimeTracker, Stop
from plantstream.operators.oee import OEE_STATE, OeeAccounting, OeeFold
from plantstream.schemas.config import build_config

MIN = 60_000
T0 = 1_763_971_200_000  # 2025-11-24T08:00Z, the shift's start
A_START, A_END = T0 + 120 * MIN, T0 + 160 * MIN  # 10:00–10:40, fault E7
B_START, B_END = T0 + 180 * MIN, T0 + 190 * MIN  # 11:00–11:10, idle

CONFIG: dict[str, Any] = {
    "timezone": "UTC",
    "shifts": [{"name": "day", "start": "08:00", "end": "16:00"}],
    "lines": [{"id": "line-1", "machines": [{"id": "press-01", "ideal_cycle_time_ms": 1000}]}],
    "lateness": {"allowed_lateness_s": 60},
    "losses": {
        "fault_codes": {"E7": {"reason": "hydraulic leak", "category": "mechanical"}},
        "reason_codes": {"no_operator": {"reason": "no operator", "category": "operator"},
                         "no_material": {"reason": "no material", "category": "material"},
                         "jam": {"reason": "jam", "category": "material"}},
    },
}

Sample = tuple[int, str, Any]


def shift() -> list[Sample]:
    """4 h of a machine: running, stop A (fault E7), running, stop B (idle), running, off;
    a good part every 10 s while running and a temperature every 30 s throughout."""
    out: list[Sample] = [(T0, "machine_state", "running"), (A_START, "machine_state", "fault"),
                         (A_START, "fault_code", "E7"), (A_END, "machine_state", "running"),
                         (A_END, "fault_code", 0), (B_START, "machine_state", "idle"),
                         (B_END, "machine_state", "running"), (T0 + 240 * MIN, "machine_state", "off")]
    good = 0
    for t in range(T0, T0 + 240 * MIN, 10_000):
        if not (A_START <= t < A_END or B_START <= t < B_END):
            good += 1
            out.append((t + 5_000, "good_count", good))
    out += [(t, "temperature_c", 40.0) for t in range(T0, T0 + 300 * MIN, 30_000)]
    return sorted(out, key=lambda s: s[0])


def accounting(**changes: Any) -> OeeAccounting:
    return OeeAccounting.for_config(build_config(CONFIG | changes, {}), "press-01")


def run(*arrivals: list[Sample], acc: OeeAccounting | None = None) -> dict[str, Any]:
    """Feed each list as one arrival (one Kafka poll), then the end of input; the latest row of
    every stop and window, and the dead letters."""
    acc = acc or accounting()
    out = []
    for batch in arrivals:
        acc.ingest([s for s in batch if s[1] != "temperature_c"])
        for t, _, _ in (s for s in batch if s[1] == "temperature_c"):
            acc.on_tick(t)
        out += acc.take()
    out += acc.finish()
    stops: dict[int, dict[str, Any]] = {}
    facts: dict[tuple[int, str], dict[str, Any]] = {}
    dead = []
    for table, row in out:
        if table == "downtime_events":
            if row["start"] not in stops or row["version"] > stops[row["start"]]["version"]:
                stops[row["start"]] = row
        elif table == "oee_facts":
            key = (row["window_start"], row["shift"])
            if key not in facts or row["version"] > facts[key]["version"]:
                facts[key] = row
        else:
            dead.append(row)
    return {"stops": {s: r for s, r in stops.items() if not r["deleted"]}, "dead": dead,
            "facts": {k: {c: v for c, v in r.items() if c != "version"} for k, r in facts.items()}}


def parts(stop: dict[str, Any]) -> list[tuple[int, str, str]]:
    return [(s["from"], s["reason"], s["category"]) for s in stop.get("segments", [])]


@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    return run(shift())


def test_the_shift_without_entries(baseline: dict[str, Any]) -> None:
    a, b = baseline["stops"][A_START], baseline["stops"][B_START]
    assert (a["end"], a["duration_s"], a["reason"], a["category"], parts(a)) == (
        A_END, 2400.0, "hydraulic leak", "mechanical", [])
    assert "segments" not in a  # an unsplit stop's record has no segments (the table: [])
    assert (b["end"], b["duration_s"], b["reason"]) == (B_END, 600.0, "unassigned")
    assert sum(f["unplanned_stop_s"] for f in baseline["facts"].values()) == 3000
    assert baseline["dead"] == []


@pytest.mark.parametrize("late", [False, True], ids=["in_time", "after_the_shift"])
def test_a_reason_after_the_stop_ended_restates_it_with_a_higher_version_and_nothing_else(
    baseline: dict[str, Any], late: bool
) -> None:
    entry = (A_END + 1, "reason_code", "no_operator")
    got = run(shift(), [entry]) if late else run(sorted([*shift(), entry], key=lambda s: s[0]))
    a = got["stops"][A_START]
    assert (a["reason"], a["category"]) == ("no operator", "operator")
    assert a["version"] > baseline["stops"][A_START]["version"]
    assert (a["end"], a["duration_s"], parts(a)) == (A_END, 2400.0, [])
    assert got["facts"] == baseline["facts"]  # a reason changes the loss category, not the time
    b, base_b = got["stops"][B_START], baseline["stops"][B_START]
    assert b | {"version": 0} == base_b | {"version": 0}  # stop B as it was
    assert got["dead"] == []


@pytest.mark.parametrize("order", list(itertools.permutations([1, 2])))
@pytest.mark.parametrize("late", [False, True], ids=["in_time", "after_the_shift"])
def test_a_correction_at_end_plus_2_wins_over_end_plus_1_in_any_arrival_order(
    baseline: dict[str, Any], order: tuple[int, int], late: bool
) -> None:
    entries = {1: (A_END + 1, "reason_code", "no_operator"), 2: (A_END + 2, "reason_code", "jam")}
    if late:  # both arrive after the shift, in this order, one poll each
        got = run(shift(), [entries[order[0]]], [entries[order[1]]])
    else:  # both within the allowed lateness of each other, in this order
        samples = shift()
        at = next(i for i, s in enumerate(samples) if s[0] > A_END + 30_000)
        got = run([*samples[:at], entries[order[0]], entries[order[1]], *samples[at:]])
    a = got["stops"][A_START]
    assert (a["reason"], a["category"], a["duration_s"]) == ("jam", "material", 2400.0)
    assert got["facts"] == baseline["facts"]


def test_a_split_makes_two_parts_of_one_event_and_a_correction_replaces_the_second(
    baseline: dict[str, Any]
) -> None:
    split = A_START + 25 * MIN
    got = run(sorted([*shift(), (split, "reason_split", "no_material")], key=lambda s: s[0]))
    a = got["stops"][A_START]
    assert list(got["stops"]) == list(baseline["stops"])  # still one event per stop
    assert (a["reason"], a["duration_s"], a["end"]) == ("hydraulic leak", 2400.0, A_END)
    assert parts(a) == [(A_START, "hydraulic leak", "mechanical"), (split, "no material", "material")]
    assert got["facts"] == baseline["facts"]

    # the second part corrected 2 ms later: still one split point, its reason replaced
    fixed = run(sorted([*shift(), (split, "reason_split", "no_material"),
                        (split + 2, "reason_split", "no_operator")], key=lambda s: s[0]))
    assert parts(fixed["stops"][A_START]) == [(A_START, "hydraulic leak", "mechanical"),
                                              (split, "no operator", "operator")]
    # … and the first part's reason by a reason_code after the end
    first = run(shift(), [(split, "reason_split", "no_material"), (A_END + 1, "reason_code", "jam")])
    a = first["stops"][A_START]
    assert (a["reason"], a["category"]) == ("jam", "material")
    assert parts(a) == [(A_START, "jam", "material"), (split, "no material", "material")]
    assert first["facts"] == baseline["facts"]


def test_an_empty_split_removes_the_split_point(baseline: dict[str, Any]) -> None:
    split = A_START + 25 * MIN
    got = run(shift(), [(split, "reason_split", "no_material")], [(split + 3, "reason_split", "")])
    a = got["stops"][A_START]
    assert (parts(a), a["reason"], a["duration_s"]) == ([], "hydraulic leak", 2400.0)
    assert a["version"] > baseline["stops"][A_START]["version"]  # split, then unsplit again
    # split and removed in one arrival: the stop is as it was, not written again
    assert run(shift(), [(split, "reason_split", "no_material"), (split + 3, "reason_split", "")]) == baseline
    # an empty value with no split point within 1 s before it changes nothing
    got = run(shift(), [(split, "reason_split", "no_material"), (split + 1_000, "reason_split", "")])
    assert len(parts(got["stops"][A_START])) == 2
    assert got["dead"] == []


def test_splits_keep_their_order_and_each_part_its_reason(baseline: dict[str, Any]) -> None:
    entries = [(A_START + 30 * MIN, "reason_split", "jam"), (A_START + 10 * MIN, "reason_split", "no_material"),
               (A_START + 10 * MIN + 999, "reason_split", "fuse"),  # replaces the 10-minute part
               (A_START + 20 * MIN, "reason_split", "no_operator")]
    got = run(shift(), entries)
    assert parts(got["stops"][A_START]) == [
        (A_START, "hydraulic leak", "mechanical"), (A_START + 10 * MIN, "fuse", "material"),
        (A_START + 20 * MIN, "no operator", "operator"), (A_START + 30 * MIN, "jam", "material")]
    assert got["facts"] == baseline["facts"]


@pytest.mark.parametrize("ts", [T0 + 30 * MIN, A_START, A_END, B_END + 1])
def test_a_split_outside_a_stop_is_exactly_one_dead_letter(baseline: dict[str, Any], ts: int) -> None:
    got = run(shift(), [(ts, "reason_split", "jam")])
    assert [(d["ts"], d["source"], d["reason"]) for d in got["dead"]] == [
        (ts, "oee:press-01:reason_split", OUTSIDE)]
    assert '"metric":"reason_split"' in got["dead"][0]["raw"]
    assert got["stops"] == baseline["stops"]
    assert got["facts"] == baseline["facts"]


def test_a_refused_split_is_dead_lettered_once_no_restatement_can_reach_it() -> None:
    acc = accounting(lateness={"allowed_lateness_s": 60, "restatement_horizon_s": 3600})
    acc.ingest([*shift()[:50], (T0 + 1000, "reason_split", "jam")])
    for minute in (30, 61):  # a late state could still put it inside a stop
        acc.ingest([(T0 + minute * MIN, "machine_state", "running")])
        assert not [r for t, r in acc.take() if t == "deadletter"]
    acc.ingest([(T0 + 62 * MIN, "machine_state", "running")])  # the horizon (1 h) has passed it
    assert [r["reason"] for t, r in acc.take() if t == "deadletter"] == [OUTSIDE]
    acc.ingest([(T0 + 63 * MIN, "machine_state", "running")])
    assert not [r for t, r in acc.take() if t == "deadletter"] + [r for t, r in acc.finish() if t == "deadletter"]


def test_a_split_that_came_before_its_stop_applies_to_it_and_is_no_dead_letter(
    baseline: dict[str, Any]
) -> None:
    samples = shift()
    split = (A_START + 25 * MIN, "reason_split", "no_material")
    stop_a = [s for s in samples if s[0] == A_START]
    rest = [s for s in samples if s[0] != A_START]
    got = run([*rest, split], stop_a)  # the stop's start arrives last, after the shift
    assert parts(got["stops"][A_START])[1] == (A_START + 25 * MIN, "no material", "material")
    assert got["dead"] == []
    assert got["facts"] == baseline["facts"]


def test_shuffled_arrival_gives_the_rows_and_dead_letters_of_the_ordered_one() -> None:
    entries = [(A_END + 1, "reason_code", "no_operator"), (A_END + 2, "reason_code", "jam"),
               (A_START + 25 * MIN, "reason_split", "no_material"),
               (A_START + 25 * MIN + 2, "reason_split", "no_operator"),
               (B_START + 4 * MIN, "reason_split", "jam"), (B_START + 4 * MIN + 1, "reason_split", ""),
               (T0 + 30 * MIN, "reason_split", "jam")]
    ordered = run(sorted(shift() + entries, key=lambda s: s[0]))
    samples = shift() + entries
    random.Random(17).shuffle(samples)
    shuffled = run(*(samples[i:i + 200] for i in range(0, len(samples), 200)))
    strip = {s: {k: v for k, v in r.items() if k != "version"} for s, r in ordered["stops"].items()}
    assert {s: {k: v for k, v in r.items() if k != "version"} for s, r in shuffled["stops"].items()} == strip
    assert shuffled["facts"] == ordered["facts"]
    assert [(d["ts"], d["reason"]) for d in shuffled["dead"]] == [(d["ts"], d["reason"]) for d in ordered["dead"]] \
        == [(T0 + 30 * MIN, OUTSIDE)]
    a = ordered["stops"][A_START]
    assert (a["reason"], parts(a)[1][1:]) == ("jam", ("no operator", "operator"))
    assert parts(ordered["stops"][B_START]) == []


def test_a_redelivered_entry_is_absorbed(baseline: dict[str, Any]) -> None:
    split = (A_START + 25 * MIN, "reason_split", "no_material")
    once = run(shift(), [split, (A_END + 1, "reason_code", "jam")])
    twice = run(shift(), [split], [split, (A_END + 1, "reason_code", "jam")], [(A_END + 1, "reason_code", "jam")])
    assert parts(twice["stops"][A_START]) == parts(once["stops"][A_START])
    assert parts(once["stops"][A_START]) == [(A_START, "jam", "material"), (split[0], "no material", "material")]
    assert [d["reason"][:9] for d in twice["dead"]] == ["duplicate", "duplicate"]
    assert twice["facts"] == baseline["facts"]


def test_a_stop_keeps_at_most_max_parts() -> None:
    entries = [(A_START + 1_000 * (i + 1), "reason_split", f"r{i}") for i in range(MAX_PARTS + 2)]
    got = run(shift(), entries)
    assert len(parts(got["stops"][A_START])) == MAX_PARTS
    assert [d["reason"][:12] for d in got["dead"]] == ["reason_split"] * 3


def test_an_open_stop_is_split_while_it_lasts() -> None:
    t = DowntimeTracker()
    losses = build_config(CONFIG, {}).losses
    t.on_state(0, "fault", "", losses)
    [row], _ = t.on_split(60_000, 7, losses)  # a number is a code as text
    assert (row["is_open"], row["duration_s"]) == (1, 60.0)
    assert [(s["from"], s["reason"]) for s in row["segments"]] == [(0, "unassigned"), (60_000, "7")]
    assert t.tick(90_000)[0]["segments"][1]["from"] == 60_000


def test_the_state_keeps_splits_as_an_optional_key_and_reads_states_without_it() -> None:
    acc = accounting()
    first_half = [s for s in shift() if s[0] < A_START + 30 * MIN]
    acc.ingest([*first_half, (A_START + 25 * MIN, "reason_split", "no_material"), (T0 + 30 * MIN, "reason_split", "jam")])
    acc.take()
    state = acc.state()
    stop = state.account["downtime"][0]  # stop A, open
    assert stop["splits"] == [(A_START + 25 * MIN, "no material", "material")]
    assert state.account["refused"][0][0] == T0 + 30 * MIN
    again = accounting()
    again.restore(OEE_STATE.decode(OEE_STATE.encode(state)))
    assert again.state().account == state.account
    assert next(r for t, r in again.finish() if t == "deadletter")["reason"] == OUTSIDE
    # a stop and an account as written before splits existed: no keys, read as unsplit
    plain = Stop(A_START, "fault", 0)
    payload = {k: v for k, v in vars(plain).items() if k != "splits"}
    fold = OeeFold("m", "", "", None, {}, acc.acc_fold.cal, acc.acc_fold.losses, 0)
    account = acc.acc_fold.dump_state()
    account.pop("refused", None)
    fold.load_state(account | {"downtime": (payload, None)})
    assert fold.acc.downtime.current is not None and fold.acc.downtime.current.splits == []
    assert fold.acc.refused == []
    unsplit = accounting()
    unsplit.ingest(first_half)
    unsplit.take()
    assert all(s is None or "splits" not in s for s in unsplit.state().account["downtime"])
    assert "refused" not in unsplit.state().account


def test_the_topic_and_cloud_records_carry_the_parts_and_old_records_without_them_still_read() -> None:
    import dataclasses

    import orjson

    from plantstream.connectors.eventhubs import record_value
    from plantstream.flows.main import row_json
    from plantstream.operators.rollup import COALESCE_STATE, CoalesceState, event_key

    split = A_START + 25 * MIN
    got = run(shift(), [(split, "reason_split", "no_material")])
    row = got["stops"][A_START]
    want = [{"from": A_START, "reason": "hydraulic leak", "category": "mechanical"},
            {"from": split, "reason": "no material", "category": "material"}]
    assert orjson.loads(row_json(row))["segments"] == want  # plantstream.downtime
    cloud = orjson.loads(record_value("downtime_events", row))  # Event Hubs
    assert (cloud["type"], cloud["segments"]) == ("downtime_events", want)
    # the cloud export's coalescing step keeps the row as plain data (its format unchanged)
    state = CoalesceState({event_key(row): row})
    checked = dataclasses.replace(COALESCE_STATE, check=True)
    assert checked.decode(checked.encode(state)).pending[event_key(row)]["segments"] == want
    # an unsplit stop's record has no segments: readers take it as unsplit
    assert "segments" not in orjson.loads(row_json(got["stops"][B_START]))



def test_a_reason_sent_with_a_planned_stop_names_it_not_the_last_stop() -> None:
    """A source that sends each state with its reason (the bakery: idle ``No Dough``, running,
    then ``planned_stop`` with ``Sanitation`` at one instant): the reason names the planned stop,
    which is not downtime, and stop B keeps its reason. A reason a moment later, with no stop
    open, is an operator's reason for the most recent stop, as before."""
    planned = B_END + 20 * MIN
    samples = [*shift(), (B_START, "reason_code", "no_material"), (planned, "machine_state", "planned_stop"),
               (planned, "reason_code", "Sanitation"), (planned + 5 * MIN, "machine_state", "running")]
    stops = run(sorted(samples, key=lambda s: s[0]))["stops"]
    assert (stops[B_START]["reason"], stops[B_START]["category"]) == ("no material", "material")
    assert planned not in stops  # a planned stop is not downtime
    later = [*samples, (planned + 1, "reason_code", "no_operator")]
    assert run(sorted(later, key=lambda s: s[0]))["stops"][B_START]["reason"] == "no operator"
