"""Clock skew and redeliveries through the user's path: ``plantstream replay`` into the embedded
broker and chDB, then ClickHouse queried (OEE and scrap flows).

Before: one sample dated 30 days ahead made the OEE flow invent 43,200 ``oee_facts`` rows and
dead-letter all 600 real samples after it as ``late``; a first sample 90 days old filled every
window from then to now (163 MiB); a PLC whose clock reset to 2000-01-01 would have needed more
than 10 GiB; a redelivered ``good_parts`` counted twice.

One replay holds every case, one machine (or a pair: the case and the same samples without the
fault) each, so the machines' results can be compared window by window.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from plantstream.cli.main import app
from plantstream.connectors import clickhouse as chc
from plantstream.flows.engine import EngineRun
from plantstream.operators.logic import ManualClock
from plantstream.operators.oee import OEE_STATE, oee_spec
from plantstream.schemas.config import build_config
from plantstream.schemas.measurement import Measurement

pytestmark = pytest.mark.integration

DAY = 86_400_000
NOW = int(time.time() * 1000)
T = NOW - NOW % 60_000 - 3 * 3_600_000  # the real samples start 3 h ago, on a minute
Y2K = 946_684_800_000
PAIRS = ("ahead", "old", "dup")


def real(machine: str, t0: int = T, n: int = 600) -> list[dict[str, Any]]:
    """600 real samples, one every 10 s: a state change every 100, else a good part (every
    20th a reject)."""
    out = []
    for i in range(n):
        ts = t0 + i * 10_000
        if i % 100 == 0:
            metric, value = "machine_state", "running" if i % 200 == 0 else "fault"
        else:
            metric, value = ("reject_parts", 1) if i % 20 == 0 else ("good_parts", 1)
        out.append({"ts": ts, "machine": machine, "metric": metric, "value": value})
    return out


def plc_reset() -> list[dict[str, Any]]:
    """A PLC counting a part every 2 s for 10 minutes; then its clock resets to 2000-01-01 and
    ticks on for 15 minutes, counting on."""
    out = [{"ts": T, "machine": "reset", "metric": "machine_state", "value": "running"}]
    out += [{"ts": T + i * 2000, "machine": "reset", "metric": "good_count", "value": 5000 + i}
            for i in range(300)]
    out += [{"ts": Y2K + i * 2000, "machine": "reset", "metric": "good_count", "value": 5300 + i}
            for i in range(450)]
    return out


def with_redeliveries(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Redeliver four samples: 1 line (same poll), 3 lines (buffered: 30 s), 20 lines (applied:
    200 s) and 150 lines (25 minutes: the journal segment is closed, the copy would restate)
    after the original."""
    again = {at + later: samples[at] for at, later in ((101, 1), (205, 3), (320, 20), (260, 150))}
    out = []
    for i, s in enumerate(samples):
        out.append(s)
        if i in again:
            out.append(dict(again[i]))
    return out


def plant_file() -> list[dict[str, Any]]:
    lines = [{"ts": T + 30 * DAY, "machine": "ahead-a", "metric": "machine_state", "value": "running"}]
    lines += real("ahead-a") + real("ahead-b")
    lines += [{"ts": T - 90 * DAY, "machine": "old-a", "metric": "machine_state", "value": "running"}]
    lines += real("old-a") + real("old-b")
    lines += with_redeliveries(real("dup-a")) + real("dup-b")
    return lines + plc_reset()


def config() -> dict[str, Any]:
    machines = [{"id": f"{p}-{s}", "ideal_cycle_time_ms": 5000} for p in PAIRS for s in "ab"]
    return {"site": "s", "lines": [{"id": "l1", "machines": [*machines, {"id": "reset"}]}]}


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory, ch_dsn: str) -> Iterator[tuple[Any, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("clock")
    db = f"t_clock_{NOW}"
    client = chc.connect(ch_dsn, database=db)
    chc.migrate(client)
    cfg = tmp / "plant.yaml"
    cfg.write_text(yaml.safe_dump(config() | {"clickhouse": {"database": db}}))
    data = tmp / "plant.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(m) for m in plant_file()) + b"\n")
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp)  # the embedded broker's work directory
    try:
        res = CliRunner().invoke(app, ["replay", str(data), "--config", str(cfg), "--clickhouse", ch_dsn,
                                       "--flows", "oee,scrap", "--format", "json"])
        assert res.exit_code == 0, res.output
        yield client, orjson.loads(res.stdout)
    finally:
        mp.undo()
        client.command(f"DROP DATABASE IF EXISTS {db} SYNC")
        client.close()


def utc(ms: int) -> datetime:
    """An epoch-ms time as ClickHouse returns it (naive UTC)."""
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


def facts(client: Any, machine: str) -> list[tuple[Any, ...]]:
    return client.query(
        "SELECT window_start, shift, run_s, unplanned_stop_s, ideal_s, good, reject, total, stops "
        "FROM oee_facts_latest WHERE machine = {m:String} ORDER BY window_start",
        parameters={"m": machine}).result_rows


def scrap(client: Any, machine: str) -> list[tuple[Any, ...]]:
    return client.query("SELECT ts, quantity FROM scrap_events FINAL WHERE machine = {m:String} "
                        "AND quantity > 0 ORDER BY ts", parameters={"m": machine}).result_rows


def dead(client: Any, like: str) -> list[tuple[Any, ...]]:
    return client.query("SELECT source, reason, ts FROM deadletter WHERE reason LIKE {r:String} "
                        "ORDER BY source, ts", parameters={"r": like}).result_rows


def test_one_sample_30_days_ahead_then_600_real_ones_is_one_clock_skew_dead_letter(
        replayed: tuple[Any, dict[str, Any]]) -> None:
    client, _ = replayed
    got, clean = facts(client, "ahead-a"), facts(client, "ahead-b")
    assert len(clean) == 100  # 100 minutes of real samples
    assert got == clean  # the real ones produce their facts, exactly as without the bad sample
    assert scrap(client, "ahead-a") == scrap(client, "ahead-b") and len(scrap(client, "ahead-b")) == 24
    [(source, reason, ts)] = dead(client, "clock_skew%")  # the only one of the whole replay
    assert source == "oee:ahead-a:machine_state"
    assert ts == utc(T + 30 * DAY)
    ahead_s = int(reason.split()[1])
    assert reason.startswith("clock_skew: ") and 30 * 86_400 - 4 * 3_600 < ahead_s < 30 * 86_400 - 2 * 3_600
    assert not dead(client, "late%")


def test_a_first_sample_90_days_old_adds_no_window_between(replayed: tuple[Any, dict[str, Any]]) -> None:
    client, _ = replayed
    got, clean = facts(client, "old-a"), facts(client, "old-b")
    assert [f for f in got if f[0] >= utc(T - DAY)] == clean
    assert len(got) - len(clean) <= 1  # at most the old sample's own window (it accounts no time)
    assert client.query("SELECT count() FROM oee_facts WHERE machine = 'old-a'").result_rows[0][0] <= \
        client.query("SELECT count() FROM oee_facts WHERE machine = 'old-b'").result_rows[0][0] + 1


def test_a_plc_clock_reset_to_2000_recovers_by_itself_and_counts_every_part_once(
        replayed: tuple[Any, dict[str, Any]]) -> None:
    client, _ = replayed
    rows = facts(client, "reset")
    y2k_end = utc(Y2K + DAY)
    old = [r for r in rows if r[0] > y2k_end]
    new = [r for r in rows if r[0] <= y2k_end]
    assert sum(r[5] for r in old) == 299  # the first count is the baseline
    assert sum(r[5] for r in new) == 450  # the new timeline counts on from the last count: none lost
    assert len(new) == 15 and new[0][0] == utc(Y2K)
    assert sum(r[2] for r in new) == pytest.approx(898)  # running from the re-base on
    assert not client.query("SELECT count() FROM deadletter WHERE source LIKE '%:reset:%'").result_rows[0][0]


def test_redelivered_samples_count_once_and_are_counted(replayed: tuple[Any, dict[str, Any]]) -> None:
    client, _ = replayed
    assert facts(client, "dup-a") == facts(client, "dup-b")
    assert scrap(client, "dup-a") == scrap(client, "dup-b")
    dups = dead(client, "duplicate%")
    # four redeliveries (two good parts, two rejects), each absorbed by both flows that read it
    assert sorted(s for s, _, _ in dups) == [
        "oee:dup-a:good_parts", "oee:dup-a:good_parts", "oee:dup-a:reject_parts", "oee:dup-a:reject_parts",
        "scrap:dup-a:good_parts", "scrap:dup-a:good_parts", "scrap:dup-a:reject_parts", "scrap:dup-a:reject_parts"]


def test_the_fold_of_a_machine_whose_first_sample_is_90_days_old_stays_small() -> None:
    """The engine as the flow runs it (wall clock injected): windows held and state bytes."""
    clock = ManualClock(datetime.fromtimestamp(NOW / 1000, UTC))
    cfg = build_config(config(), {})
    run = EngineRun(oee_spec(cfg, now=clock))
    old = Measurement(T - 90 * DAY, "old-a", "machine_state", "running")
    run.batch([old])
    largest = 0
    for m in real("old-a"):
        run.batch([Measurement(m["ts"], m["machine"], m["metric"], m["value"])])
        logic = run.engine.logics[0]["old-a"]
        largest = max(largest, len(logic.acc.acc.windows))
    assert largest <= 2
    [blob] = run.snapshot()["oee"].values()
    st = OEE_STATE.decode(blob)
    assert st.ledger["clock_counts"]["jumps"] == 1 and len(blob) < 20_000


def test_the_replay_read_every_line(replayed: tuple[Any, dict[str, Any]]) -> None:
    _, summary = replayed
    assert summary["records_in"] == len(plant_file())
    assert summary["rows"]["oee_facts"] > 500 and summary["rows"]["scrap_events"] > 0
