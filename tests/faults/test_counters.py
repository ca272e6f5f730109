"""Counters that match PLCs (issue 14, item 4): step backs, resets, wraps, redelivery, any two of
good / reject / total, values out of range — against hand-computed numbers.

Before: any decrease was a reset (4500, 4501, 4500, 4502 counted 4,503 parts), a machine that
sent ``total_count`` and ``reject_count`` got good 0 and quality 0 %, and a 30-digit integer was
accepted as a counter value.

The OEE accounting and scrap run in the machine engine (:class:`EngineRun`) as the flows run
them; one case goes the user's way: ``plantstream replay`` → ``plantstream kpi oee`` /
``plantstream query`` (embedded broker, chDB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from plantstream.cli.main import app
from plantstream.flows.engine import EngineRun
from plantstream.operators.counters import Counter, CounterRules
from plantstream.operators.oee import oee_spec
from plantstream.operators.scrap import scrap_spec
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.schemas.counters_config import CounterConfig
from plantstream.schemas.errors import ConfigError
from plantstream.schemas.measurement import DeadLetter, Measurement, decode

T0 = 1_763_791_200_000  # 2025-11-22 06:00 UTC, on a minute
S = 1_000


def config(**counters: Any) -> PlantConfig:
    plant: dict[str, Any] = {"site": "s", "lines": [{"id": "l1", "machines": [
        {"id": "m1", "ideal_cycle_time_ms": 1000}]}]}
    if counters:
        plant["counters"] = counters
    return build_config(plant, {})


def m(t_s: float, metric: str, value: Any, machine: str = "m1") -> Measurement:
    return Measurement(T0 + round(t_s * S), machine, metric, value, "s", "l1")


def running(*samples: Measurement) -> list[Measurement]:
    """The machine running from 0 s, then ``samples``."""
    return [m(0, "machine_state", "running"), *samples]


def latest(rows: list[tuple[str, dict[str, Any]]], table: str, key: tuple[str, ...]) -> list[dict[str, Any]]:
    """The latest version of each row of ``table`` (restatements and the end of input write
    rows again with a higher version; a table keeps the latest)."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for t, r in rows:
        if t == table:
            k = tuple(r[c] for c in key)
            if k not in best or r["version"] > best[k]["version"]:
                best[k] = r
    return list(best.values())


FACT_KEY = ("window_start", "shift", "part_number", "work_order")


def run(cfg: PlantConfig, *batches: list[Measurement]) -> dict[str, Any]:
    """The OEE and scrap logics over ``batches`` (each one engine batch), to the end of input:
    the sums of the latest OEE facts, the scrap events and the scrap rate's counts."""
    engine = EngineRun(oee_spec(cfg), scrap_spec(cfg))
    tagged = [t for b in batches for t in engine.batch(b)] + engine.eof()
    oee = [(table, row) for flow, table, row in tagged if flow == "oee"]
    scrap = [(table, row) for flow, table, row in tagged if flow == "scrap"]
    facts = latest(oee, "oee_facts", FACT_KEY)
    events = latest(scrap, "scrap_events", ("ts",))
    rates = [r for r in latest(scrap, "rate", ("scope", "window_end")) if r["scope"] == "machine"]
    good, reject, total = (sum(f[c] for f in facts) for c in ("good", "reject", "total"))
    mg, mr = sum(r["mg"] for r in rates), sum(r["mr"] for r in rates)
    return {"good": good, "reject": reject, "total": total,
            "quality": good / total if total else None,
            "ideal_s": sum(f["ideal_s"] for f in facts),
            "stepbacks": sum(f.get("counter_stepbacks", 0) for f in facts),
            "scrap_events": sum(e["quantity"] for e in events),
            "scrap_good": mg, "scrap_reject": mr,
            "scrap_rate": mr / (mg + mr) if mg + mr else None}


# -- the must-shows ----------------------------------------------------------------------------


def test_counter_4500_4501_4500_4502_is_2_parts_and_one_counted_step_back() -> None:
    got = run(config(), running(m(1, "good_count", 4500), m(2, "good_count", 4501),
                                m(3, "good_count", 4500), m(4, "good_count", 4502)))
    assert (got["good"], got["total"], got["stepbacks"]) == (2, 2, 1)  # was 4,503
    rej = run(config(), running(m(1, "reject_count", 4500), m(2, "reject_count", 4501),
                                m(3, "reject_count", 4500), m(4, "reject_count", 4502)))
    assert (rej["reject"], rej["scrap_events"], rej["scrap_reject"]) == (2, 2, 2)


def test_a_redelivered_good_count_counts_once() -> None:
    first = [m(1, "good_count", 100), m(2, "good_count", 101), m(3, "good_count", 105)]
    again = m(2, "good_count", 101)
    expected = 5  # 100 → 105
    # redelivered in the same batch, in the next batch, and after newer values (restated in place)
    assert run(config(), running(*first, again))["good"] == expected
    assert run(config(), running(*first), [again])["good"] == expected
    later = [m(200, "good_count", 110)]
    assert run(config(), running(*first), later, [again, m(1, "good_count", 100)])["good"] == 10
    assert run(config(), running(*first), later, [again])["stepbacks"] == 0


def test_a_redelivered_good_parts_increment_counts_once() -> None:
    once = m(2, "good_parts", 5)
    got = run(config(), running(m(1, "good_parts", 3), once), [once])
    assert got["good"] == 8


def test_counter_semantics_alone() -> None:
    """The Counter of one cumulative counter: a value sent again is a rise of 0; an older value
    redelivered after newer ones is a step back (ignored), never a reset."""
    rules = CounterRules.of(CounterConfig())
    c = Counter()
    assert [c.step(v, rules) for v in (4500, 4501, 4501, 4502, 4501, 4503)] == [0, 1, 0, 1, None, 1]
    assert c.last == 4503


# -- resets and wraps --------------------------------------------------------------------------


def test_a_reset_to_3_after_9871_is_3_more_parts() -> None:
    got = run(config(), running(m(1, "good_count", 9_860), m(2, "good_count", 9_871),
                                m(3, "good_count", 3), m(4, "good_count", 8)))
    assert (got["good"], got["stepbacks"]) == (11 + 3 + 5, 0)


def test_a_reset_seen_late_below_half_is_a_reset_not_a_step_back() -> None:
    # the first sample after the reset already counts 120 (> reset_below 10, < half of 9,871)
    got = run(config(), running(m(1, "good_count", 9_871), m(60, "good_count", 120),
                                m(70, "good_count", 130)))
    assert (got["good"], got["stepbacks"]) == (130, 0)


def test_a_16_bit_wrap_65530_to_4_is_10_parts() -> None:
    samples = running(m(1, "good_count", 65_520), m(2, "good_count", 65_530), m(3, "good_count", 4))
    assert run(config(rollover_bits=16), samples)["good"] == 10 + 10
    # without a configured width it is a reset to 4: the 6 parts before the wrap are not seen
    assert run(config(), samples)["good"] == 10 + 4


def test_a_machine_overrides_the_plant_counters_field_by_field() -> None:
    cfg = build_config({"counters": {"reset_below": 0, "reset_fraction": 0}, "lines": [{"id": "l1", "machines": [
        {"id": "m1"}, {"id": "m2", "counters": {"rollover_at": 10_000}}]}]}, {})
    assert cfg.counters_for("m1") == CounterConfig(reset_below=0, reset_fraction=0)
    assert cfg.counters_for("m2") == CounterConfig(reset_below=0, reset_fraction=0, rollover_at=10_000)
    assert cfg.counters_for("unknown") == cfg.counters
    wrap = [m(1, "good_count", 9_995, "m2"), m(2, "good_count", 5, "m2")]
    assert run(cfg, [m(0, "machine_state", "running", "m2"), *wrap])["good"] == 10
    # m1 with reset_below 0 and reset_fraction 0: every decrease but one to 0 is a step back
    got = run(cfg, running(m(1, "good_count", 50), m(2, "good_count", 3), m(3, "good_count", 52)))
    assert (got["good"], got["stepbacks"]) == (2, 1)


@pytest.mark.parametrize(("section", "field"), [
    ({"rollover_bits": 12}, "counters.rollover_bits"),
    ({"rollover_bits": 16, "rollover_at": 65536}, "counters"),
    ({"reset_fraction": 1.5}, "counters.reset_fraction"),
    ({"wrap_within": 0}, "counters.wrap_within"),
])
def test_invalid_counters_config_stops_at_start_naming_the_field(section: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"plant config field '{field}'"):
        build_config({"counters": section}, {})


# -- any two of good, reject and total ---------------------------------------------------------

# 100 parts made, 10 of them rejects, in one minute (ideal cycle 1 s): quality 90 %.
PAIRS = {
    "good+reject": [("good_count", 1_000, 1_090), ("reject_count", 200, 210)],
    "good+total": [("good_count", 1_000, 1_090), ("total_count", 5_000, 5_100)],
    "total+reject": [("total_count", 5_000, 5_100), ("reject_count", 200, 210)],
    "total+reject_parts": [("total_count", 5_000, 5_100), ("reject_parts", 0, 10)],
    "good_parts+total": [("good_parts", 0, 90), ("total_count", 5_000, 5_100)],
}


@pytest.mark.parametrize("pair", list(PAIRS))
def test_any_two_of_good_reject_and_total_give_the_third(pair: str) -> None:
    samples = running(*(m(1, metric, start) for metric, start, _ in PAIRS[pair]),
                      *(m(50, metric, end) for metric, _, end in PAIRS[pair]))
    got = run(config(), samples)
    assert (got["good"], got["reject"], got["total"]) == (90, 10, 100)
    assert got["quality"] == pytest.approx(0.9)
    assert got["ideal_s"] == pytest.approx(100.0)
    assert (got["scrap_good"], got["scrap_reject"], got["scrap_rate"]) == (90, 10, pytest.approx(0.1))
    assert got["scrap_events"] == 10


def test_with_all_three_good_and_reject_win_and_total_sets_the_ideal_time() -> None:
    # total counts 105 cycles (5 in process, not yet judged): good 90 and reject 10 as sent
    got = run(config(), running(m(1, "good_count", 0), m(1, "reject_count", 0), m(1, "total_count", 0),
                                m(50, "good_count", 90), m(50, "reject_count", 10), m(50, "total_count", 105)))
    assert (got["good"], got["reject"], got["total"], got["ideal_s"]) == (90, 10, 100, 105.0)
    assert (got["scrap_good"], got["scrap_reject"]) == (90, 10)


def test_total_alone_counts_every_part_good() -> None:
    got = run(config(), running(m(1, "total_count", 7), m(50, "total_count", 107)))
    assert (got["good"], got["reject"], got["quality"]) == (100, 0, 1.0)


def test_a_total_read_a_scan_late_never_makes_negative_or_extra_rejects() -> None:
    """good + total, sampled separately: the total of each step arrives 1 s after the good count
    (one of them across a window boundary). Rejects are never negative, never counted twice:
    in the end exactly total − good."""
    samples = running(m(1, "good_count", 0), m(1, "total_count", 0))
    good = total = 0
    for i, (g, r) in enumerate([(9, 1), (10, 0), (8, 2), (10, 0), (7, 3)]):
        t = 10 + 12 * i  # 10, 22, 34, 46, 58: the last total comes at 59 s … and 71 s
        good, total = good + g, total + g + r
        samples += [m(t, "good_count", good), m(t + 1 if i < 4 else t + 13, "total_count", total)]
    got = run(config(), samples)
    assert (got["good"], got["reject"], got["total"]) == (44, 6, 50)
    assert (got["scrap_reject"], got["scrap_events"]) == (6, 6)


# -- values out of range -----------------------------------------------------------------------

OUT_OF_RANGE = [
    b'{"ts": 1763791200000, "machine": "m1", "metric": "good_count", "value": -5}',
    b'{"ts": 1763791200000, "machine": "m1", "metric": "reject_count", "value": 2.5}',
    b'{"ts": 1763791200000, "machine": "m1", "metric": "total_count", "value": 123456789012345678901234567890}',
    b'{"ts": 1763791200000, "machine": "m1", "metric": "good_count", "value": 18446744073709551615}',
    b'{"ts": 1763791200000, "machine": "m1", "metric": "good_parts", "value": -1}',
    b'{"ts": 1763791200000, "machine": "m1", "metric": "reject_parts", "value": 1e300}',
]


@pytest.mark.parametrize("raw", OUT_OF_RANGE)
def test_counter_values_outside_the_range_are_dead_lettered(raw: bytes) -> None:
    dead = decode(raw)
    assert isinstance(dead, DeadLetter) and dead.reason.startswith("counter out of range: ")
    assert "whole number of parts from 0 to 2^63 - 1" in dead.reason


def test_counter_values_inside_the_range_pass() -> None:
    for value in (b"0", b"4501", b"4501.0", b"9223372036854775807"):
        assert isinstance(decode(b'{"ts": 1763791200000, "machine": "m1", "metric": "good_count", "value": '
                                 + value + b"}"), Measurement)


@pytest.mark.integration
def test_through_replay_and_kpi_total_and_reject_with_a_step_back_a_reset_a_wrap_and_bad_values(
        tmp_path: Path, ch_dsn: str, ch_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's path. press-01 sends total_count and reject_count (no good count) with a step
    back and a reset; press-02 (16-bit counters) sends good_count and total_count across a wrap;
    six values out of range go to the dead letter.

    press-01: total 1000 → 1100 (+100), 1099 (step back, ignored), 1200 (+100), 5 (reset, +5),
    105 (+100) = 305; reject 50 → 55 → 55 → 60 → 1 (reset) → 6 = 5 + 5 + 1 + 5 = 16; good 289.
    press-02: total 65,530 → 4 (wrap: +10), good 65,520 → 65,528 (+8): reject 2.
    """
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "plant.yaml"
    cfg.write_text(yaml.safe_dump({
        "site": "s", "clickhouse": {"database": ch_db}, "lateness": {"allowed_lateness_s": 0},
        "lines": [{"id": "l1", "machines": [
            {"id": "press-01", "ideal_cycle_time_ms": 1000},
            {"id": "press-02", "ideal_cycle_time_ms": 1000, "counters": {"rollover_bits": 16}}]}]}))

    def line(t_s: int, machine: str, metric: str, value: Any) -> dict[str, Any]:
        return {"ts": T0 + t_s * S, "machine": machine, "metric": metric, "value": value}

    p1 = [line(0, "press-01", "machine_state", "running")]
    for t, total, reject in [(0, 1000, 50), (60, 1100, 55), (120, 1099, 55), (180, 1200, 60), (240, 5, 1),
                             (300, 105, 6)]:
        p1 += [line(t, "press-01", "total_count", total), line(t, "press-01", "reject_count", reject)]
    p1.append(line(360, "press-01", "machine_state", "idle"))
    p2 = [line(0, "press-02", "machine_state", "running"), line(0, "press-02", "total_count", 65_530),
          line(0, "press-02", "good_count", 65_520), line(60, "press-02", "total_count", 4),
          line(60, "press-02", "good_count", 65_528), line(360, "press-02", "machine_state", "idle")]
    bad = [line(100, "press-01", "reject_count", -5), line(100, "press-01", "reject_count", 2.5),
           line(100, "press-01", "reject_parts", -1), line(100, "press-02", "good_count", 70_000)]
    data = tmp_path / "counters.jsonl"
    data.write_bytes(b"\n".join([*(orjson.dumps(x) for x in p1 + p2 + bad),
                                 OUT_OF_RANGE[2].replace(b'"m1"', b'"press-01"'),
                                 OUT_OF_RANGE[3].replace(b'"m1"', b'"press-02"')]) + b"\n")

    runner = CliRunner()
    res = runner.invoke(app, ["replay", str(data), "--config", str(cfg), "--clickhouse", ch_dsn,
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.stdout)["deadlettered"] == 6

    res = runner.invoke(app, ["kpi", "oee", "--by", "machine", "--config", str(cfg), "--clickhouse", ch_dsn,
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    kpi = {r["machine"]: r for r in orjson.loads(res.stdout)}
    assert (kpi["press-01"]["good"], kpi["press-01"]["reject"], kpi["press-01"]["total"]) == (289, 16, 305)
    assert kpi["press-01"]["quality"] == pytest.approx(289 / 305)  # was good 0, quality 0 %
    assert (kpi["press-02"]["good"], kpi["press-02"]["reject"], kpi["press-02"]["total"]) == (8, 2, 10)

    res = runner.invoke(app, ["query", "SELECT machine, sum(counter_stepbacks) AS n FROM oee_facts "
                              "GROUP BY machine ORDER BY machine", "--config", str(cfg),
                              "--clickhouse", ch_dsn, "--format", "json"])
    assert res.exit_code == 0, res.output
    assert [(r["machine"], r["n"]) for r in orjson.loads(res.stdout)] == [("press-01", 1), ("press-02", 0)]

    res = runner.invoke(app, ["query", "SELECT reason FROM deadletter ORDER BY reason", "--config", str(cfg),
                              "--clickhouse", ch_dsn, "--format", "json"])
    reasons = [r["reason"] for r in orjson.loads(res.stdout)]
    assert len(reasons) == 6 and all(r.startswith("counter out of range: ") for r in reasons)
    assert sum("configured rollover 65536" in r for r in reasons) == 1
