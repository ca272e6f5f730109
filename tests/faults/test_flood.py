"""Unconfigured machines and a flood of machine ids: bounded state, nothing lost.

Before: every new machine id got state in every per-machine flow (status, OEE, scrap, anomaly,
alerts), never evicted, and was never reported; an unconfigured machine showed performance 0 %
and OEE 0 %.

- 100,000 distinct random machine ids through the machine engine (32 shards, as the dataflow
  runs them): the state retained stays under :data:`BOUND_100K` (tracemalloc), a second
  100,000 ids add almost nothing (no memory per refused id), the configured machine keeps its
  results, every admitted machine is reported once and each shard's cap once.
- The user's path (`plantstream replay` → chDB): 3,000 random ids, everything archived, the
  notices in ``deadletter``, state only for the admitted machines.
- Worked numbers of an unconfigured machine through replay → `plantstream kpi oee`.
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from plantstream.connectors import kpi
from plantstream.flows.engine import ENGINE, SHARDS, EngineRun, MachineFlow, StateLimits, shard_of
from plantstream.flows.registry import FlowContext, available
from plantstream.flows.replay import replay
from plantstream.operators.alerts import EventClock, alert_spec
from plantstream.operators.anomaly import anomaly_spec
from plantstream.operators.logic import ManualClock
from plantstream.operators.oee import oee_spec
from plantstream.operators.scrap import scrap_spec
from plantstream.operators.status import status_spec
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.schemas.measurement import Measurement

T0 = 1_763_791_200_000
BOUND_100K = 24 * 1024 * 1024
"""Retained memory (tracemalloc) after 100,000 random machine ids with the default limits:
1,000 unconfigured machines admitted with state in every flow, the rest archived only
(docs/performance.md, docs/reliability.md)."""


def config(**state: Any) -> PlantConfig:
    return build_config({"site": "plant-a", "shifts": [{"name": "day", "start": "00:00", "end": "00:00"}],
                         "lines": [{"id": "line-1", "machines": [{"id": "press-01", "ideal_cycle_time_ms": 800}]}],
                         "state": state}, {})


def specs(cfg: PlantConfig) -> list[Any]:
    ctx = FlowContext(cfg)
    out = []
    for declared in available().values():
        fn = declared.build
        if isinstance(fn, MachineFlow):
            spec = fn.spec(FlowContext(cfg, declared.settings(cfg)) if declared.config else ctx)
            if spec is not None:
                out.append(spec)
    return out


class Shards:
    """The engine step as the dataflow runs it: one engine per machine shard, specs shared."""

    def __init__(self, cfg: PlantConfig, clock: ManualClock, the_specs: list[Any] | None = None) -> None:
        the_specs = the_specs or specs(cfg)
        limits = StateLimits.from_config(cfg)
        limits = StateLimits(limits.configured, limits.max_unconfigured, limits.idle_evict_s, clock.wall)
        self.runs = {f"s{k}": EngineRun(*the_specs, limits=limits) for k in range(SHARDS)}

    def batch(self, samples: list[Measurement]) -> list[Any]:
        by: dict[str, list[Measurement]] = {}
        for m in samples:
            by.setdefault(shard_of(m.machine), []).append(m)
        return [t for key, ms in by.items() for t in self.runs[key].batch(ms)]

    def admitted(self) -> int:
        return sum(len(r.engine.registry.unconfigured) for r in self.runs.values())

    def state_bytes(self) -> int:
        return sum(sum(r.engine.state_bytes().values()) for r in self.runs.values())


def flood(ids: list[str], t: int) -> list[Measurement]:
    """A few samples of each id, as a misconfigured gateway or an attacker would send them."""
    out = []
    for k, mid in enumerate(ids):
        ts = t + k
        out += [Measurement(ts, mid, "machine_state", "running", "plant-a", ""),
                Measurement(ts, mid, "good_count", k, "plant-a", ""),
                Measurement(ts, mid, f"sensor_{k % 7}_c", 20.0 + k % 5, "plant-a", "")]
    return out


def _through(shards: Shards, ids: list[str], t: int) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(ids), 2_000):
        out += shards.batch(flood(ids[start:start + 2_000], t + start))
    return out


def _press(t: int, n: int) -> list[Measurement]:
    return [m for k in range(n) for m in (
        Measurement(t + k * 1_000, "press-01", "machine_state", "running", "plant-a", "line-1"),
        Measurement(t + k * 1_000, "press-01", "good_count", k, "plant-a", "line-1"))]


def test_100k_random_machine_ids_stay_under_the_bound_and_nothing_stops() -> None:
    rng = random.Random(14)
    ids = [f"{rng.getrandbits(64):016x}" for _ in range(200_000)]
    shards = Shards(config(), ManualClock())
    shards.batch(_press(T0, 60))
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        rows = _through(shards, ids[:100_000], T0 + 60_000)
        gc.collect()
        after_100k = tracemalloc.get_traced_memory()[0] - base
        rows2 = _through(shards, ids[100_000:], T0 + 200_000)
        gc.collect()
        after_200k = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    admitted = shards.admitted()
    print(f"\nretained after 100k ids: {after_100k / 2**20:.1f} MiB; after 200k: {after_200k / 2**20:.1f} MiB; "
          f"admitted {admitted}; engine state {shards.state_bytes() / 2**20:.2f} MiB")
    assert after_100k < BOUND_100K
    assert after_200k - after_100k < 4 * 1024 * 1024  # no memory per refused id
    # 1,000 admitted (32 per shard, 1,024 at most), each reported once; each shard's cap once
    assert 1_000 <= admitted <= SHARDS * StateLimits().per_shard
    notices = [(r["kind"], r["machine"]) for f, _, r in rows + rows2 if f == ENGINE]
    unconfigured = [m for k, m in notices if k == "unconfigured"]
    assert len(unconfigured) == len(set(unconfigured)) == admitted
    assert sorted(shard_of(m) for k, m in notices if k == "unconfigured_cap") == \
        sorted(f"s{k}" for k in range(SHARDS))
    # machines with state: the configured one and the admitted ones, nothing else
    live = {m for r in shards.runs.values() for logics in r.engine.logics for m in logics}
    assert len(live) == admitted + 1
    # the flow goes on: the configured machine's results keep coming
    status = [r for f, _, r in shards.batch(_press(T0 + 400_000, 30)) if f == "status"]
    assert status and status[-1]["machine"] == "press-01" and status[-1]["line"] == "line-1"


def test_idle_unconfigured_machines_leave_live_memory_and_keep_their_state() -> None:
    clock = ManualClock()
    cfg = config(idle_evict_s=600, max_unconfigured_machines=4_000)
    timed = [status_spec(5.0, 60.0, now=clock), oee_spec(cfg, now=clock), scrap_spec(cfg),
             anomaly_spec(cfg.anomaly), alert_spec(cfg, EventClock(1.0, clock.wall))]
    shards = Shards(cfg, clock, timed)
    rng = random.Random(3)
    ids = [f"{rng.getrandbits(64):016x}" for _ in range(3_000)]
    _through(shards, ids, T0)
    live = sum(len(r.engine.logics[0]) for r in shards.runs.values())
    assert live == 3_000
    # 20 minutes without a sample: their timers fire (status, OEE, the silence alerts) …
    clock.advance(timedelta(minutes=20))
    for run in shards.runs.values():
        run.notify(clock.now)
    # … and the next batch of each shard sweeps it
    for run in shards.runs.values():
        run.batch([Measurement(T0 + 1_300_000, "press-01", "machine_state", "running", "plant-a", "line-1")])
    live = {m for r in shards.runs.values() for logics in r.engine.logics for m in logics}
    kept = {m for r in shards.runs.values() for snaps in r.engine.snaps for m in snaps}
    assert live == {"press-01"}
    assert set(ids) <= kept
    per_machine = shards.state_bytes() / len(kept)
    print(f"\nencoded state per machine (every flow): {per_machine:.0f} bytes")
    assert per_machine < 16 * 1024


def _line(ts_s: int, machine: str, metric: str, value: Any) -> bytes:
    return orjson.dumps({"ts": T0 + ts_s * 1000, "machine": machine, "metric": metric, "value": value})


def _machine_lines(machine: str, ideal_ms: int | None = None) -> list[bytes]:
    """15 minutes: running, a fault from minute 5 to 10, running again; 594 good and 6 rejects;
    a temperature every 10 s."""
    out = []
    if ideal_ms is not None:
        out.append(_line(0, machine, "ideal_cycle_time_ms", ideal_ms))
    out += [_line(0, machine, "machine_state", "running"), _line(0, machine, "good_count", 0),
            _line(0, machine, "reject_count", 0), _line(300, machine, "machine_state", "fault"),
            _line(600, machine, "machine_state", "running"), _line(900, machine, "good_count", 594),
            _line(900, machine, "reject_count", 6)]
    out += [_line(s, machine, "temperature_c", 60.0 + (s % 30) / 10) for s in range(0, 901, 10)]
    return sorted(out, key=lambda b: orjson.loads(b)["ts"])


@pytest.mark.integration
def test_an_unconfigured_machine_gets_availability_and_quality_and_is_reported_once(
        tmp_path: Path, ch_dsn: str, ch_db: str, ch: Any) -> None:
    src = tmp_path / "plant.jsonl"
    lines = [*_machine_lines("press-01"), *_machine_lines("ghost-7"), *_machine_lines("ghost-8", 800)]
    src.write_bytes(b"\n".join(lines) + b"\n")
    replay(src, config(), dsn=ch_dsn, database=ch_db, workdir=tmp_path / "work")
    # archived: every sample
    assert ch.query("SELECT count() FROM measurements FINAL").result_rows == [(len(lines),)]
    got = {r["machine"]: r for r in kpi.oee_rows(ch, "machine")}
    # planned 15 min, run 10 min: A = 66.67 %; Q = 594 / 600 = 99.00 %
    for machine in ("press-01", "ghost-7", "ghost-8"):
        assert round(100 * got[machine]["availability"], 2) == 66.67
        assert round(100 * got[machine]["quality"], 2) == 99.00
    # performance = 600 × 0.8 s / 600 s = 80 % where an ideal cycle time is known (config, or the
    # ideal_cycle_time_ms metric); unknown (NULL), never 0 %, for the machine without one
    assert round(100 * got["press-01"]["performance"], 2) == round(100 * got["ghost-8"]["performance"], 2) == 80.0
    assert round(100 * got["ghost-8"]["oee"], 2) == 52.8
    assert got["ghost-7"]["performance"] is None and got["ghost-7"]["oee"] is None
    # reported once each (not per sample) in machine_notices; nothing is a dead letter
    assert ch.query("SELECT count() FROM deadletter FINAL").result_rows == [(0,)]
    notes = ch.query("SELECT machine, kind, detail FROM machine_notices FINAL ORDER BY machine").result_rows
    assert [(m, k) for m, k, _ in notes] == [("ghost-7", "unconfigured"), ("ghost-8", "unconfigured")]
    assert "lines[].machines" in notes[0][2]


@pytest.mark.integration
def test_a_flood_of_ids_through_replay_is_archived_and_only_the_cap_gets_state(
        tmp_path: Path, ch_dsn: str, ch_db: str, ch: Any) -> None:
    rng = random.Random(9)
    ids = [f"flood-{rng.getrandbits(48):012x}" for _ in range(3_000)]
    lines = [*_machine_lines("press-01")]
    for k, mid in enumerate(ids):
        lines.append(_line(k % 900, mid, "machine_state", "running"))
        lines.append(_line(k % 900, mid, "temperature_c", 20.0))
    src = tmp_path / "flood.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    replay(src, config(max_unconfigured_machines=64), dsn=ch_dsn, database=ch_db, workdir=tmp_path / "work")
    # nothing lost: every line archived
    assert ch.query("SELECT count() FROM measurements FINAL").result_rows == [(len(lines),)]
    assert ch.query("SELECT uniqExact(machine) FROM measurements FINAL").result_rows == [(3_001,)]
    notes = ch.query("SELECT kind, machine FROM machine_notices FINAL").result_rows
    admitted = {m for k, m in notes if k == "unconfigured"}
    caps = [m for k, m in notes if k == "unconfigured_cap"]
    assert 0 < len(admitted) <= 64 and 0 < len(caps) <= SHARDS
    assert ch.query("SELECT count() FROM deadletter FINAL").result_rows == [(0,)]  # nothing dead-lettered
    # state (here: the twin) only for the configured machine and the admitted ones
    status = {m for (m,) in ch.query("SELECT machine FROM machine_status FINAL").result_rows}
    assert status == admitted | {"press-01"}
    assert ch.query("SELECT count() FROM oee_facts FINAL WHERE machine = 'press-01'").result_rows[0][0] > 0
