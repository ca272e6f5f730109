"""The machine engine's bounds on state: idle eviction with restore, the cap on unconfigured
machines with notices, and per-machine caps on metric-keyed state.

Eviction must be invisible in the results: an engine that evicts machines (to their encoded
state, kept in ``snaps``, so in the recovery snapshot) gives the same rows, machine by machine
and in order, and ends with the same states as one that keeps every machine live.
"""

from __future__ import annotations

import pickle
import zlib
from datetime import timedelta
from functools import cache
from typing import Any

from plantstream.flows.engine import ENGINE, SHARDS, EngineRun, Spec, StateLimits, shard_of
from plantstream.operators.alerts import EventClock, alert_spec
from plantstream.operators.anomaly import anomaly_spec
from plantstream.operators.logic import ManualClock
from plantstream.operators.oee import oee_spec
from plantstream.operators.scrap import scrap_spec
from plantstream.operators.status import status_spec
from plantstream.schemas.anomaly_config import AnomalyConfig
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.schemas.measurement import Measurement
from plantstream.simulators.plc import PlcLine

T0 = 1_763_791_200_000
MIN = 60_000


def config(silence: bool = True) -> PlantConfig:
    return build_config({"site": "plant-a", "lines": [{"id": "line-1", "machines": [
        {"id": "press-01", "ideal_cycle_time_ms": 1000}]}], "alerts": {"silence": {"enabled": silence}}}, {})


def specs(clock: ManualClock, silence: bool = True) -> list[Spec]:
    """Every per-machine flow, timers on the test's clock (alerts next to OEE: its fed variant)."""
    cfg = config(silence)
    return [status_spec(5.0, 60.0, now=clock), oee_spec(cfg, now=clock), scrap_spec(cfg),
            anomaly_spec(AnomalyConfig(warmup=30, sample_s=0)),
            alert_spec(cfg, EventClock(1.0, clock.wall))]


@cache
def plc() -> tuple[Measurement, ...]:
    """90 minutes of three PLC machines; the first is silent from minute 30 to 60."""
    ms = list(PlcLine(seed=7, machines=3, start_ms=T0, config=config()).run(T0 + 90 * MIN))
    first = ms[0].machine
    return tuple(m for m in ms if not (m.machine == first and T0 + 30 * MIN <= m.ts < T0 + 60 * MIN))


def by_minute(ms: tuple[Measurement, ...]) -> list[list[Measurement]]:
    out: dict[int, list[Measurement]] = {}
    for m in ms:
        out.setdefault((m.ts - T0) // MIN, []).append(m)
    return [out[k] for k in sorted(out)]


def per_machine(tagged: list[tuple[str, str, dict[str, Any]]]) -> dict[tuple[str, str], list[Any]]:
    """Rows per (flow, machine), in order (machines are independent: their interleaving is no
    part of the result)."""
    out: dict[tuple[str, str], list[Any]] = {}
    for flow, table, row in tagged:
        out.setdefault((flow, str(row.get("machine") or row.get("source"))), []).append((table, row))
    return out


def drive(limits: StateLimits | None, clock: ManualClock, *, evict_all: bool = False, silence: bool = True,
          probe: dict[str, Any] | None = None) -> tuple[list[Any], EngineRun]:
    """One batch per minute of event time, the wall clock a minute on each, timers fired.

    A machine with a timer still to fire is never evicted (a timer of the alert rules reads the
    wall time of the machine's last sample, which only the live logic knows); with the silence
    rule off, most machines have none after each minute."""
    run = EngineRun(*specs(clock, silence), limits=limits)
    out: list[Any] = []
    for k, batch in enumerate(by_minute(plc())):
        out += run.batch(batch)
        clock.advance(timedelta(minutes=1))
        out += run.notify(clock.now)
        if evict_all:  # the harshest schedule: every machine without a pending timer, every minute
            engine = run.engine
            for machine in {m for logics in engine.logics for m in logics}:
                if not any(machine in due for due in engine.due):
                    engine.evict(machine)
        if probe is not None and k == 50:
            probe["live"] = {m for logics in run.engine.logics for m in logics}
            probe["kept"] = {m for snaps in run.engine.snaps for m in snaps}
    out += run.eof()
    return out, run


def _plain(value: Any) -> Any:
    """A payload with its compressed journal segments opened (their bytes depend on how pickle
    shared equal strings, not on what they hold)."""
    if isinstance(value, bytes) and value[:2] == b"x\x9c":
        return _plain(pickle.loads(zlib.decompress(value)))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def payloads(run: EngineRun) -> dict[tuple[str, str], Any]:
    """Every machine's state at the end, per flow, as plain data."""
    snap = run.snapshot()
    out = {}
    for spec in run.engine.specs:
        for machine, blob in snap.get(spec.kind, {}).items():
            out[(spec.kind, machine)] = _plain(spec.codec.payload(spec.codec.decode(blob)))
    return out


def test_an_idle_machine_is_evicted_and_comes_back_with_its_state() -> None:
    ref, ref_run = drive(None, ManualClock())
    clock = ManualClock()
    probe: dict[str, Any] = {}
    got, run = drive(StateLimits(idle_evict_s=600, clock=clock.wall), clock, probe=probe)
    silent = plc()[0].machine
    # minute 50: the machine silent since minute 30 is out of live memory, its state still kept
    assert silent not in probe["live"] and silent in probe["kept"]
    assert run.engine.evicted >= 1
    assert len(per_machine(ref)) > 10, "the comparison must cover rows of every flow"
    assert per_machine(got) == per_machine(ref)
    assert payloads(run) == payloads(ref_run)


def test_evicting_every_machine_after_every_batch_changes_no_row() -> None:
    ref, _ = drive(None, ManualClock(), silence=False)
    got, run = drive(None, ManualClock(), silence=False, evict_all=True)
    assert run.engine.evicted > 100
    flows = {flow for flow, _ in per_machine(ref)}
    assert flows == {"status", "oee", "scrap", "anomaly", "alerts"}
    assert per_machine(got) == per_machine(ref)
    # (the states hold the same, though a ledger decoded and appended to packs its journal in
    # other pieces than one that never left memory: compared by the rows they give)


def _m(ts: int, machine: str, metric: str = "machine_state", value: Any = "running") -> Measurement:
    return Measurement(ts, machine, metric, value, "plant-a", "")


def test_unconfigured_machines_are_reported_once_and_capped_per_shard() -> None:
    clock = ManualClock()
    limits = StateLimits(config().configured, max_unconfigured=2 * SHARDS, clock=clock.wall)
    assert limits.per_shard == 2
    run = EngineRun(*specs(clock), limits=limits)
    # three unknown machines in one shard, each sending twice; a configured one besides
    same = [f"ghost-{i}" for i in range(200) if shard_of(f"ghost-{i}") == shard_of("ghost-0")][:3]
    rows = run.batch([_m(T0, m) for m in [*same, "press-01"]])
    rows += run.batch([_m(T0 + 1_000, m, "good_count", 5) for m in [*same, "press-01"]])
    notices = [r for f, _, r in rows if f == ENGINE]
    assert [(n["kind"], n["machine"]) for n in notices] == [
        ("unconfigured", same[0]), ("unconfigured", same[1]), ("unconfigured_cap", same[2])]
    assert "lines[].machines" in notices[0]["detail"] and same[2] in notices[2]["detail"]
    machines = {r.get("machine") for f, _, r in rows if f == "status"}
    assert machines == {same[0], same[1], "press-01"}  # the third one: archived only
    assert same[2] not in {m for logics in run.engine.logics for m in logics}
    # resumed from the snapshot: the registry is kept, nobody is reported again
    again = EngineRun(*specs(clock), resume=run.snapshot(), limits=limits)
    more = again.batch([_m(T0 + 2_000, m, "temperature_c", 40.0) for m in [*same, "ghost-new"]])
    assert [r for f, _, r in more if f == ENGINE and shard_of("ghost-new") != shard_of(same[0])] == \
        [r for f, _, r in more if f == ENGINE]
    assert not [r for f, _, r in more if f == ENGINE and r["machine"] in same]


def test_without_a_machine_list_no_notices_and_no_cap() -> None:
    """A bare engine (unit tests, tools): no limits, every machine gets state as before."""
    run = EngineRun(*specs(ManualClock()))
    rows = run.batch([_m(T0, f"m{i}") for i in range(300)])
    assert not [r for f, _, r in rows if f == ENGINE]
    assert len(run.engine.logics[0]) == 300


def test_a_machine_sending_ever_new_metric_names_keeps_bounded_state() -> None:
    cfg = build_config({"state": {"max_signals_per_machine": 8}}, {})
    clock = ManualClock()
    run = EngineRun(status_spec(5.0, 60.0, now=clock, max_signals=8),
                    anomaly_spec(AnomalyConfig(warmup=5, sample_s=10), 8),
                    alert_spec(cfg, EventClock(1.0, clock.wall)))
    for k in range(50):
        run.batch([_m(T0 + k * 1_000, "m1", f"sensor_{k}_{j}_c", 20.0 + j) for j in range(40)])
    status, anomaly, alerts = (logics["m1"] for logics in run.engine.logics)
    assert len(status.state().twin.signals) == 8
    assert len(anomaly.state().models) <= 8 and len(anomaly.state().pending) <= 8
    assert len(alerts.state().rules.last_seen) == 8
    sizes = run.engine.state_bytes()
    assert max(sizes.values()) < 64 * 1024, sizes  # 2,000 metric names sent, a few KiB kept
