"""Operator reasons, corrections and splits through the user's path: ``plantstream replay FILE``
(embedded broker, chDB) → ``plantstream kpi downtime --format json`` / ``kpi oee`` / ``query``.

The operator-entry contract (docs/oee.md, "Operator reasons, corrections and splits"): a station
sends ``reason_code`` at ``end + n`` ms for a stop that ended, ``reason_split`` at a point
strictly inside a stop, a correction of a split part at ``split point + n`` ms, an empty split
to remove it. Every stop stays one downtime event with a higher version, its duration and the
shift's OEE facts unchanged; loss by reason splits a stop's minutes by its parts.

One 4-hour shift of ``press-01`` (UTC, 08:00–16:00) with three stops — A 10:00–10:40 (fault
``E7``: hydraulic leak, mechanical), B 11:00–11:10 (idle), C 12:00–12:20 (fault ``E7``) — and a
temperature every second, for 3 h after the shift too: more than 10,000 lines (one Kafka poll at
most) after the shift's last sample, so entries at the end of the file arrive after the shift was
accounted and restate it. The operator's entries:

- A: ``reason_code`` ``no_operator`` at end + 1, corrected to ``jam`` at end + 2; a split at
  10:25 (``no_material``) corrected at 10:25 + 2 ms to ``no_operator``;
- B: a split at 11:04 (``jam``) removed at 11:04 + 1 ms (empty value);
- C: a split at 12:05 (``no_material``);
- a split at 08:30, while the machine runs: outside every stop.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from plantstream.cli.main import app
from plantstream.connectors import clickhouse as chc
from plantstream.connectors import kpi
from tests.operators.test_reasons import CONFIG as REASONS_CONFIG

MIN = 60_000
T0 = 1_763_971_200_000  # 2025-11-24T08:00:00Z
A, A_END = T0 + 120 * MIN, T0 + 160 * MIN
B, B_END = T0 + 180 * MIN, T0 + 190 * MIN
C, C_END = T0 + 240 * MIN, T0 + 260 * MIN
END = T0 + 270 * MIN
ISO = {A: "2025-11-24T10:00:00Z", B: "2025-11-24T11:00:00Z", C: "2025-11-24T12:00:00Z"}

CONFIG: dict[str, Any] = {"site": "plant-a", **REASONS_CONFIG}


def m(ts: int, metric: str, value: Any, source: str = "plc") -> dict[str, Any]:
    return {"ts": ts, "machine": "press-01", "line": "line-1", "metric": metric, "value": value,
            "source": source}


def shift() -> list[dict[str, Any]]:
    """The machine's samples in time order: states, fault codes, a good part every 10 s while
    running, a temperature every second."""
    out = [m(T0, "machine_state", "running"), m(END, "machine_state", "off")]
    for start, end, state in ((A, A_END, "fault"), (B, B_END, "idle"), (C, C_END, "fault")):
        out += [m(start, "machine_state", state), m(end, "machine_state", "running")]
        if state == "fault":
            out += [m(start, "fault_code", "E7"), m(end, "fault_code", 0)]
    good = 0
    for t in range(T0, END, 10_000):
        if not any(s <= t < e for s, e in ((A, A_END), (B, B_END), (C, C_END))):
            good += 1
            out.append(m(t + 5_000, "good_count", good))
    out += [m(t, "temperature_c", 40.0 + (t // 1000) % 7) for t in range(T0, END + 180 * MIN, 1_000)]
    return sorted(out, key=lambda s: s["ts"])


def entries() -> list[dict[str, Any]]:
    """The station's entries, in the order the operator made them."""
    return [m(A_END + 1, "reason_code", "no_operator", "station"),
            m(A_END + 2, "reason_code", "jam", "station"),
            m(A + 25 * MIN, "reason_split", "no_material", "station"),
            m(A + 25 * MIN + 2, "reason_split", "no_operator", "station"),
            m(B + 4 * MIN, "reason_split", "jam", "station"),
            m(B + 4 * MIN + 1, "reason_split", "", "station"),
            m(C + 5 * MIN, "reason_split", "no_material", "station"),
            m(T0 + 30 * MIN, "reason_split", "jam", "station")]


class Plant:
    """Replays into a database of their own, read back with the CLI."""

    def __init__(self, tmp: Path, dsn: str) -> None:
        """``dsn``: the session's chDB (one path per process)."""
        self.tmp, self.dsn, self.dbs = tmp, dsn, []
        self.runner = CliRunner()

    def replay(self, name: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
        db = f"{self.tmp.name[-10:].replace('-', '_')}_{name}"
        self.dbs.append(db)
        cfg = self.tmp / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(CONFIG | {"clickhouse": {"database": db}}))
        data = self.tmp / f"{name}.jsonl"
        data.write_bytes(b"\n".join(orjson.dumps(s) for s in samples) + b"\n")
        res = self.runner.invoke(app, ["replay", str(data), "--config", str(cfg), "--clickhouse", self.dsn,
                                       "--flows", "oee", "--format", "json"])
        assert res.exit_code == 0, res.output
        summary: dict[str, Any] = orjson.loads(res.stdout)
        assert summary["records_in"] == len(samples)
        return {"summary": summary, "cfg": cfg, "db": db, "dsn": self.dsn,
                "downtime": [{k: v for k, v in r.items() if k != "version"}  # versions: below
                             for r in self.cli(cfg, "kpi", "downtime")],
                "oee": self.cli(cfg, "kpi", "oee", "--by", "machine,shift"),
                "facts": self.cli(cfg, "query", "SELECT * EXCEPT (stored_at, version) FROM oee_facts_latest "
                                                "ORDER BY window_start, shift, part_number, work_order"),
                "versions": {r["start"]: r["version"] for r in self.cli(
                    cfg, "query", "SELECT start, version FROM downtime_events_latest")},
                "pareto": self.cli(cfg, "query", "SELECT reason, category, sum(duration_s) / 60 AS minutes "
                                                 "FROM downtime_segments_latest GROUP BY reason, category "
                                                 "ORDER BY reason"),
                "dead": self.cli(cfg, "query", "SELECT ts, source, reason, raw FROM deadletter ORDER BY ts, reason")}

    def cli(self, cfg: Path, *args: str) -> Any:
        res = self.runner.invoke(app, [*args, "--config", str(cfg), "--clickhouse", self.dsn, "--format", "json"])
        assert res.exit_code == 0, res.output
        return orjson.loads(res.stdout)

    def drop(self) -> None:
        admin = chc.connect(self.dsn)
        try:
            for db in self.dbs:
                admin.command(f"DROP DATABASE IF EXISTS {db} SYNC")
        finally:
            admin.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, ch_dsn: str) -> Iterator[dict[str, dict[str, Any]]]:
    plant = Plant(tmp_path_factory.mktemp("reasons"), ch_dsn)
    base, ops = shift(), entries()
    late = [*base, ops[1], ops[0], *ops[2:]]  # after the shift; the correction before what it corrects
    # each entry in its place in event time (within the allowed lateness), again the correction
    # at end + 2 arriving before the entry at end + 1 that it corrects
    ordered = sorted([*base, ops[1], ops[0], *ops[2:]], key=lambda s: s["ts"] if s is not ops[1] else A_END)
    shuffled = list(ordered)
    random.Random(2026).shuffle(shuffled)
    try:
        yield {"baseline": plant.replay("baseline", base), "late": plant.replay("late", late),
               "ordered": plant.replay("ordered", ordered), "shuffled": plant.replay("shuffled", shuffled),
               "redelivered": plant.replay("redelivered", [*late, *ops[:-1]])}
    finally:
        plant.drop()


def stops(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["start"]: e for e in run["downtime"]}


def parts(event: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    return [(p["from"][11:19], p["reason"], p["category"], round(p["duration_s"] / 60, 3))
            for p in event["segments"]]


def test_the_shift_without_entries(runs: dict[str, dict[str, Any]]) -> None:
    base = stops(runs["baseline"])
    assert [(e["start"], e["duration_s"], e["reason"], e["category"], e["segments"]) for e in base.values()] == [
        (ISO[A], 2400.0, "hydraulic leak", "mechanical", []), (ISO[B], 600.0, "unassigned", "unassigned", []),
        (ISO[C], 1200.0, "hydraulic leak", "mechanical", [])]
    [oee] = runs["baseline"]["oee"]
    assert oee["unplanned_stop_min"] == pytest.approx(70) and oee["planned_min"] == pytest.approx(270)
    assert runs["baseline"]["dead"] == []


@pytest.mark.parametrize("name", ["late", "ordered", "shuffled", "redelivered"])
def test_entries_restate_reasons_and_parts_never_durations_or_oee(
    runs: dict[str, dict[str, Any]], name: str
) -> None:
    run, base = runs[name], runs["baseline"]
    got = stops(run)
    assert list(got) == list(stops(base))  # one event per stop, never a second one
    for start, event in got.items():  # durations, ends and states as they were
        before = stops(base)[start]
        assert {k: event[k] for k in ("end", "duration_s", "state", "fault_code", "is_open")} == {
            k: before[k] for k in ("end", "duration_s", "state", "fault_code", "is_open")}
    # A: end + 2 ("jam") wins over end + 1 whatever the arrival order; its split at 10:25 was
    # corrected at + 2 ms: still one split point, the second part's reason replaced
    a = got[ISO[A]]
    assert (a["reason"], a["category"]) == ("jam", "material")
    assert parts(a) == [("10:00:00", "jam", "material", 25.0), ("10:25:00", "no operator", "operator", 15.0)]
    # B: split, then the split removed (an empty value 1 ms after it): unsplit again
    assert (got[ISO[B]]["segments"], got[ISO[B]]["reason"]) == ([], "unassigned")
    # C: split at 12:05 — two parts whose minutes sum to the stop's
    c = got[ISO[C]]
    assert (c["reason"], c["category"]) == ("hydraulic leak", "mechanical")
    assert parts(c) == [("12:00:00", "hydraulic leak", "mechanical", 5.0),
                        ("12:05:00", "no material", "material", 15.0)]
    assert sum(p["duration_s"] for p in c["segments"]) == c["duration_s"] == 1200.0
    # the shift's OEE facts are those without any entry
    assert run["oee"] == base["oee"]
    assert run["facts"] == base["facts"]
    # the stops an entry changed were written again with a higher version (B, split and unsplit
    # in one arrival, is as it was: not written again)
    if name != "shuffled":  # (versions count the restatements of an arrival order)
        assert run["versions"][ISO[A]] > base["versions"][ISO[A]]
        assert run["versions"][ISO[C]] > base["versions"][ISO[C]]
        assert run["versions"][ISO[B]] >= base["versions"][ISO[B]]


def test_the_pareto_counts_each_part_under_its_own_reason(runs: dict[str, dict[str, Any]]) -> None:
    pareto = {(r["reason"], r["category"]): round(r["minutes"], 3) for r in runs["late"]["pareto"]}
    assert pareto == {("jam", "material"): 25.0, ("no operator", "operator"): 15.0,
                      ("unassigned", "unassigned"): 10.0, ("hydraulic leak", "mechanical"): 5.0,
                      ("no material", "material"): 15.0}
    assert sum(pareto.values()) == pytest.approx(sum(e["duration_s"] for e in runs["late"]["downtime"]) / 60)
    baseline = {(r["reason"], r["category"]): round(r["minutes"], 3) for r in runs["baseline"]["pareto"]}
    assert baseline == {("hydraulic leak", "mechanical"): 60.0, ("unassigned", "unassigned"): 10.0}
    # the daily report's and dashboards' causes query: the same split
    client = chc.connect(runs["late"]["dsn"], database=runs["late"]["db"])
    try:
        causes = kpi.downtime_causes(client, kpi.Filter())
    finally:
        client.close()
    assert [(r, c, n, round(mins, 3)) for r, c, _, n, mins in causes] == [
        ("jam", "material", 1, 25.0), ("no material", "material", 1, 15.0), ("no operator", "operator", 1, 15.0),
        ("unassigned", "unassigned", 1, 10.0), ("hydraulic leak", "mechanical", 1, 5.0)]


@pytest.mark.parametrize("name", ["late", "ordered", "shuffled"])
def test_a_split_outside_a_stop_is_exactly_one_dead_letter(runs: dict[str, dict[str, Any]], name: str) -> None:
    [dead] = runs[name]["dead"]
    assert (dead["ts"], dead["source"], dead["reason"]) == (
        "2025-11-24T08:30:00Z", "oee:press-01:reason_split", "reason_split outside a stop")
    assert orjson.loads(dead["raw"])["metric"] == "reason_split"
    assert runs[name]["summary"]["deadlettered"] == 1


def test_a_shuffled_file_gives_the_ordered_result(runs: dict[str, dict[str, Any]]) -> None:
    for key in ("downtime", "oee", "facts", "pareto", "dead"):
        assert runs["shuffled"][key] == runs["ordered"][key] == runs["late"][key], key


def test_redelivered_entries_are_absorbed(runs: dict[str, dict[str, Any]]) -> None:
    run = runs["redelivered"]
    for key in ("downtime", "oee", "facts", "pareto"):
        assert run[key] == runs["late"][key], key
    dead = run["dead"]
    # (the outside split is not redelivered: the table keeps one dead letter per source and time)
    assert sorted(d["reason"].split(":")[0] for d in dead) == ["duplicate"] * 7 + ["reason_split outside a stop"]
    assert run["summary"]["deadlettered"] == 8


def test_rows_written_before_segments_read_as_unsplit(ch: Any) -> None:
    """A row without ``segments`` (written before migration 057, or an unsplit stop's record)
    reads as ``[]``, counts whole under its reason, and sits beside a split stop."""
    base = {"machine": "press-01", "site": "plant-a", "line": "line-1", "state": "fault", "fault_code": "",
            "category": "mechanical", "planned": 0, "small_stop": 0, "is_open": 0, "shift": "day",
            "part_number": "", "work_order": "", "version": 1, "deleted": 0}
    old = base | {"start": A, "end": A_END, "duration_s": 2400.0, "reason": "hydraulic leak"}
    split = base | {"start": C, "end": C_END, "duration_s": 1200.0, "reason": "hydraulic leak",
                    "segments": [{"from": C, "reason": "hydraulic leak", "category": "mechanical"},
                                 {"from": C + 5 * MIN, "reason": "no material", "category": "material"}]}
    chc.insert_rows(ch, "downtime_events", [old])
    chc.insert_rows(ch, "downtime_events", [split])
    names, rows = kpi.downtime_rows(ch)
    got = [dict(zip(names, r, strict=True)) for r in rows]
    assert got[0]["segments"] == []
    assert [(p["reason"], p["duration_s"]) for p in got[1]["segments"]] == [("hydraulic leak", 300.0),
                                                                            ("no material", 900.0)]
    causes = kpi.downtime_causes(ch, kpi.Filter())
    assert [(r, n, mins) for r, _, _, n, mins in causes] == [("hydraulic leak", 2, 45.0), ("no material", 1, 15.0)]
