"""The OEE and scrap states are versioned plain data (``operators.state.StateCodec``): checked-in
snapshots of format version 1 decode (through the upgrade to today's format, whose journal is
packed by column), resume, and continue exactly like an uninterrupted run.

The fixtures ``tests/fixtures/state/oee_v1.bin`` and ``scrap_v1.bin`` were written when format 1
was introduced, from :func:`samples` (the state after :data:`HALF` of them); they are never
rewritten. Fixtures of today's format are the conformance suite's
(``tests/operators/test_state_conformance.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plantstream.operators.oee import OEE_STATE, OeeAccounting
from plantstream.operators.scrap import SCRAP_STATE, ScrapTracker
from plantstream.operators.state import check_plain, decode_header
from plantstream.schemas.config import PlantConfig, build_config

FIXTURES = Path(__file__).parents[1] / "fixtures" / "state"
T0 = 1_763_791_200_000
CONFIG: PlantConfig = build_config({
    "lines": [{"id": "line-1", "machines": [{"id": "press-01", "ideal_cycle_time_ms": 2000}]}],
    "lateness": {"allowed_lateness_s": 30}}, {})


def samples() -> list[tuple[int, str, Any]]:
    """Two hours of one press: states, counters with a reset, rejects with reasons, context."""
    out: list[tuple[int, str, Any]] = [(T0, "part_number", "P-1"), (T0, "work_order", "WO-1"),
                                       (T0, "machine_state", "running"), (T0, "good_count", 0),
                                       (T0, "reject_count", 0)]
    good = reject = 0
    for k in range(1, 720):
        t = T0 + k * 10_000
        if k % 97 == 0:
            out.append((t, "machine_state", "fault" if k % 2 else "idle"))
            out.append((t + 150_000, "machine_state", "running"))
        if k % 31 == 0:
            reject += 1
            out += [(t, "scrap_reason", "burr" if k % 3 else "dent"), (t, "reject_count", reject)]
        elif k == 400:
            good = reject = 0
            out += [(t, "good_count", 0), (t, "reject_count", 0)]
        else:
            good += 5
            out.append((t, "good_count", good))
    return sorted(out, key=lambda s: s[0])


HALF = 700  # the fixtures hold the state after this many samples


def latest(rows: list[tuple[str, dict[str, Any]]], key: tuple[str, ...]) -> dict[Any, Any]:
    best: dict[Any, dict[str, Any]] = {}
    for table, r in rows:
        k = (table, *(r[f] for f in key if f in r))
        if k not in best or r["version"] > best[k]["version"]:
            best[k] = r
    return {k: {f: v for f, v in r.items() if f != "version"} for k, r in best.items()}


def test_the_oee_v1_fixture_decodes_to_plain_data_and_resumes_like_an_uninterrupted_run() -> None:
    blob = (FIXTURES / "oee_v1.bin").read_bytes()
    kind, version, payload = decode_header(blob)
    assert (kind, version) == ("oee", 1)
    check_plain(payload)  # no pickled plantstream objects: a rename cannot break resume
    state = OEE_STATE.decode(blob)
    assert (state.machine, state.site, state.line) == ("press-01", "plant", "line-1")
    assert state.ledger["max_ts"] == samples()[HALF - 1][0]
    assert OEE_STATE.version > 1 and decode_header(OEE_STATE.encode(state))[1] == OEE_STATE.version
    # the upgraded state is the one today's code writes after the same samples
    today = OeeAccounting.for_config(CONFIG, "press-01")
    today.process(samples()[:HALF])
    assert OEE_STATE.payload(state) | {"ledger": None} == OEE_STATE.payload(today.state()) | {"ledger": None}
    assert OeeAccounting.machine_of(blob) == "press-01"

    resumed = OeeAccounting.for_config(CONFIG, OeeAccounting.machine_of(blob))
    resumed.load(blob)
    tail = resumed.process(samples()[HALF:]) + resumed.finish()
    whole = OeeAccounting.for_config(CONFIG, "press-01")
    head = whole.process(samples()[:HALF])
    rest = whole.process(samples()[HALF:]) + whole.finish()
    assert tail == rest and len([t for t, _ in tail if t == "oee_facts"]) > 10
    assert latest(head + tail, ("window_start", "start")) == latest(head + rest, ("window_start", "start"))


def test_the_scrap_v1_fixture_decodes_to_plain_data_and_resumes_like_an_uninterrupted_run() -> None:
    blob = (FIXTURES / "scrap_v1.bin").read_bytes()
    kind, version, payload = decode_header(blob)
    assert (kind, version) == ("scrap", 1)
    check_plain(payload)
    assert ScrapTracker.identity_of(blob) == ("press-01", "plant", "line-1")
    assert set(SCRAP_STATE.decode(blob).fold["counters"]) == {"good_count", "reject_count"}

    resumed = ScrapTracker.for_config(CONFIG, "press-01")
    resumed.load(blob)
    whole = ScrapTracker.for_config(CONFIG, "press-01")
    whole.process(samples()[:HALF])
    assert SCRAP_STATE.decode(resumed.dump()) == SCRAP_STATE.decode(whole.dump())
    tail = resumed.process(samples()[HALF:]) + resumed.finish()
    rest = whole.process(samples()[HALF:]) + whole.finish()
    assert tail == rest and [t for t, _ in tail if t == "scrap_events"]


def test_snapshots_round_trip_and_are_isolated_from_the_live_state() -> None:
    acc = OeeAccounting.for_config(CONFIG, "press-01")
    acc.process(samples()[:300])
    snap = acc.dump()
    again = OeeAccounting.for_config(CONFIG, "press-01")
    again.load(snap)
    assert OEE_STATE.decode(again.dump()) == OEE_STATE.decode(snap)
    before = OEE_STATE.decode(snap)
    acc.process(samples()[300:400])  # the live state moves on; the snapshot does not
    assert OEE_STATE.decode(acc.dump()) != before and OEE_STATE.decode(snap) == before
    assert OEE_STATE.decode(again.dump()) == before

