"""Late data: within the restatement horizon it restates facts and events (a higher version,
so queries are corrected, never doubled); beyond it, it is dead-lettered with reason ``late``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from plantstream.cli.main import app
from plantstream.connectors import clickhouse as chc
from plantstream.operators.oee import OeeAccounting
from plantstream.schemas.config import build_config
from tests.oee import worked


def late_samples() -> list[dict[str, Any]]:
    """A 5-minute fault at 11:00-11:05 that reaches plantstream after the end of the shift."""
    return [
        {"ts": worked.local_ms(11, 0), "machine": "press-01", "metric": "machine_state", "value": "fault"},
        {"ts": worked.local_ms(11, 5), "machine": "press-01", "metric": "machine_state", "value": "running"},
    ]


def too_late() -> dict[str, Any]:
    return {"ts": worked.SHIFT_START - 2 * 86_400_000, "machine": "press-01", "metric": "good_count",
            "value": 1}


@pytest.mark.integration
def test_late_samples_restate_facts_and_events_and_older_ones_are_dead_lettered(
    tmp_path: Path, ch_dsn: str, ch_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the embedded broker's work directory goes to the test's tmp
    cfg = tmp_path / "plant.yaml"
    cfg.write_text(yaml.safe_dump(worked.CONFIG | {"clickhouse": {"database": ch_db}}))
    data = tmp_path / "late.jsonl"
    data.write_bytes(worked.jsonl(worked.measurements() + late_samples() + [too_late()]))
    runner = CliRunner()
    res = runner.invoke(app, ["replay", str(data), "--config", str(cfg), "--clickhouse", ch_dsn,
                              "--flows", "oee", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.stdout)["deadlettered"] == 1

    res = runner.invoke(app, ["kpi", "oee", "--config", str(cfg), "--clickhouse", ch_dsn, "--format", "json"])
    assert res.exit_code == 0, res.output
    [r] = orjson.loads(res.stdout)
    # the worked example with 5 more minutes of faults: run 373 - 5 min, loss 47 + 5 min
    assert r["planned_min"] == pytest.approx(420)
    assert r["run_min"] == pytest.approx(368)
    assert r["unplanned_stop_min"] == pytest.approx(52)
    assert (r["total"], r["reject"]) == (worked.TOTAL, worked.REJECTS)
    assert r["availability"] == pytest.approx(368 / 420)
    assert r["performance"] == pytest.approx(worked.TOTAL / (368 * 60))

    res = runner.invoke(app, ["kpi", "downtime", "--config", str(cfg), "--clickhouse", ch_dsn,
                              "--format", "json"])
    events = orjson.loads(res.stdout)
    assert [(e["state"], e["duration_s"]) for e in events] == [
        ("fault", 1200.0), ("fault", 300.0), ("fault", 1620.0)]

    client = chc.connect(ch_dsn, database=ch_db)
    try:
        windows, rows = client.query(
            "SELECT uniqExact(machine, window_start), count() FROM oee_facts_latest").result_rows[0]
        restated = client.query("SELECT count() FROM oee_facts FINAL WHERE window_start >= "
                                "fromUnixTimestamp64Milli({t:Int64})",
                                parameters={"t": worked.local_ms(11, 0)}).result_rows[0][0]
        dead = client.query("SELECT reason, raw FROM deadletter FINAL").result_rows
    finally:
        client.close()
    assert windows == rows == 8 * 60  # one row per minute of the shift: corrected, not doubled
    assert restated == 180  # the restated windows replaced their first versions
    assert [d[0] for d in dead] == ["late"] and orjson.loads(dead[0][1])["ts"] == too_late()["ts"]


def test_restatement_equals_processing_the_late_samples_in_order() -> None:
    config = build_config(worked.CONFIG, {})

    def run(samples: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        acc = OeeAccounting.for_config(config, "press-01")
        out = acc.process((int(m["ts"]), str(m["metric"]), m["value"]) for m in samples) + acc.finish()
        best: dict[int, int] = {}
        facts = [r for t, r in out if t == "oee_facts"]
        for f in facts:
            best[f["window_start"]] = max(best.get(f["window_start"], 0), f["version"])
        return sorted(tuple(v for k, v in f.items() if k != "version") for f in facts
                      if f["version"] == best[f["window_start"]])

    in_order = sorted(worked.measurements() + late_samples(), key=lambda m: int(m["ts"]))
    assert run(worked.measurements() + late_samples()) == run(in_order)


def test_a_late_state_change_that_moves_a_stop_start_deletes_the_old_event() -> None:
    config = build_config({"lateness": {"allowed_lateness_s": 10}, "microstop_threshold_s": 0}, {})
    acc = OeeAccounting.for_config(config, "m1")
    out = acc.process([(0, "machine_state", "running"), (200_000, "machine_state", "fault"),
                       (400_000, "machine_state", "running"), (1_000_000, "good_parts", 1),
                       (150_000, "machine_state", "fault")])  # arrives 850 s late
    out += acc.finish()
    latest: dict[int, dict[str, Any]] = {}
    for t, r in out:
        if t == "downtime_events" and (r["start"] not in latest or latest[r["start"]]["version"] < r["version"]):
            latest[r["start"]] = r
    live = {s: (r["end"], r["duration_s"]) for s, r in latest.items() if not r["deleted"]}
    assert live == {150_000: (400_000, 250.0)}
    assert latest[200_000]["deleted"] == 1
    facts = [r for t, r in out if t == "oee_facts"]
    best: dict[int, int] = {}
    for f in facts:
        best[f["window_start"]] = max(best.get(f["window_start"], 0), f["version"])
    assert sum(f["unplanned_stop_s"] for f in facts if f["version"] == best[f["window_start"]]) == 250


def test_a_sample_earlier_than_the_first_seen_restates_oee_and_scrap_alike_and_25_h_is_too_late() -> None:
    from plantstream.operators.scrap import ScrapTracker

    config = build_config({"lateness": {"allowed_lateness_s": 0}}, {})
    h = 3_600_000
    t0 = 100 * h
    first = [(t0, "machine_state", "running"), (t0, "good_count", 10), (t0, "reject_count", 1),
             (t0 + 600_000, "good_count", 40), (t0 + 900_000, "reject_count", 3), (t0 + h, "good_count", 50)]
    early = [(t0 - 23 * h, "machine_state", "running"), (t0 - 23 * h, "good_count", 0),
             (t0 - 23 * h, "reject_count", 0)]  # a day's start, 23 h before the first sample seen
    acc, scrap = OeeAccounting.for_config(config, "m1"), ScrapTracker.for_config(config, "m1")
    out = acc.process(first) + acc.process(early)
    sout = scrap.process(first) + scrap.process(early)
    assert not [r for t, r in out + sout if t == "deadletter"]
    facts: dict[int, dict[str, Any]] = {}
    for t, r in out + acc.finish():
        if t == "oee_facts" and r["version"] >= facts.get(r["window_start"], {"version": -1})["version"]:
            facts[r["window_start"]] = r
    events: dict[int, dict[str, Any]] = {}
    for t, r in sout + scrap.finish():
        if t == "scrap_events" and r["version"] > events.get(r["ts"], {"version": -1})["version"]:
            events[r["ts"]] = r
    # the counters start from the early baseline now: 10 and 1 more parts at t0, for both flows
    assert sum(f["good"] for f in facts.values()) == 50
    assert sum(f["reject"] for f in facts.values()) == sum(e["quantity"] for e in events.values()) == 3
    assert min(facts) == t0 - 23 * h and sum(f["run_s"] for f in facts.values()) == 24 * 3600
    # 25 h before the newest sample: beyond the horizon, dead-lettered by both, nothing changes
    late = (t0 + h - 25 * h, "good_count", 5)
    assert [(t, r["reason"]) for t, r in acc.process([late])] == [("deadletter", "late")]
    assert [(t, r["source"]) for t, r in scrap.process([late])] == [("deadletter", "scrap:m1:good_count")]
