"""The machine engine: every per-machine flow of the plant in one batched Bytewax step.

Most of what plantstream computes is per machine: the twin (status), OEE accounting, scrap,
condition monitoring, alert rules. Each flow declares its per-machine logic as a
:class:`~plantstream.operators.logic.LogicSpec` (a :class:`~plantstream.operators.logic.MachineLogic`
per machine, its state codec and its capabilities); the engine runs the logics of every flow
inside ONE ``op.stateful_batch`` step keyed by a machine shard. It is the only way a
per-machine flow runs — in the plant's dataflow (:func:`plantstream.flows.main.build_dataflow`),
when a :class:`MachineFlow` is called as a flow function over a ``Stream[Measurement]`` (an
engine step of its own), and in unit tests (:class:`EngineRun`, an engine without Bytewax
around it):

- input: batches of decoded measurements (one Kafka poll each), split by shard
  (:func:`shard_of`, a stable hash of the machine id, so the result does not depend on how a
  producer partitioned the topic) and within a shard by machine;
- per shard: a dict machine → logic per flow; a machine's samples of a batch that pass the
  spec's ``filters`` go to its logic in one ``on_batch`` call, in arrival order;
- feeds: a logic may take another flow's outputs for the same machine (``LogicSpec.upstream``,
  chosen through ``LogicSpec.fed``: alerts take the OEE step's facts);
- timers: only for specs that declare ``timers``; each logic's ``notify_at`` is kept in a heap;
  the step wakes for the earliest, on a :data:`TIMER_GRAIN` grid;
- snapshot: flow → machine → the bytes of the logic's state encoded by the spec's
  :class:`~plantstream.operators.state.StateCodec` (one convention, versioned), re-encoded only
  for machines that changed during the epoch, so Bytewax's per-epoch copy of the shard's state
  is a copy of references.

Rows leave as ``(flow, table, row)`` triples, one list per activation, and each flow's ``post``
wires its own downstream steps (scrap's rate and cost joins, the alert webhook).
"""

from __future__ import annotations

import heapq
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream

from plantstream.connectors.clickhouse import JsonRows
from plantstream.flows.registry import Decoded, FlowContext, Results, Row
from plantstream.operators.logic import LogicError, LogicSpec, MachineLogic
from plantstream.operators.state import StateCodec
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import Measurement

log = logging.getLogger(__name__)

SHARDS = 32
"""Machine shards: the keys of the engine step. Changing it needs a fresh recovery store."""

TIMER_GRAIN = timedelta(milliseconds=500)
"""Machine timers fire on this grid of wall time (a wake-up serves every timer due by then)."""

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

Tagged = tuple[str, str, Row]
"""(flow name, table, row)"""

Spec = LogicSpec[Any, Any]
"""What a flow gives the engine: its per-machine logic spec."""

ENGINE = "_engine"
"""The engine's own key: in the snapshot (its registry of unconfigured machines) and as the
flow name of the rows it emits itself (:data:`NOTICES` of unconfigured machines)."""
NOTICES = "machine_notices"
"""The table of what the engine reports once per machine (migration 056): not dead letters."""


@dataclass(frozen=True)
class StateLimits:
    """How much per-machine state an engine keeps (the plant config's ``state:`` section).

    ``configured`` tells a machine of the plant config from an unconfigured one (None: every
    machine counts as configured — no cap, no notices); ``max_unconfigured`` is the plant's cap,
    each shard admitting ``ceil(max_unconfigured / SHARDS)``; ``idle_evict_s`` the wall time
    without a sample after which a machine's logics leave live memory (0: never); ``clock``
    the wall clock in seconds (injected for tests).
    """

    configured: Callable[[str], bool] | None = None
    max_unconfigured: int = 1000
    idle_evict_s: float = 0.0
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def from_config(cls, config: PlantConfig) -> StateLimits:
        st = config.state
        return cls(config.configured, st.max_unconfigured_machines, st.idle_evict_s)

    @property
    def per_shard(self) -> int:
        """Unconfigured machines one shard admits."""
        return -(-self.max_unconfigured // SHARDS)


@dataclass
class Registry:
    """The engine's own state in the snapshot: the unconfigured machines a shard admitted
    (machine → event time of its first sample) and whether its cap was reported."""

    unconfigured: dict[str, int]
    capped: bool = False


REGISTRY: StateCodec[Registry] = StateCodec("engine", 1, Registry)
"""Format 1: ``{"unconfigured": {machine: first ts}, "capped": bool}``."""

UNCONFIGURED = ("unconfigured machine: not in the plant config (lines[].machines); its samples are "
                "archived, it gets availability and quality, performance once an ideal cycle time is "
                "known (config or the ideal_cycle_time_ms metric); reported once. Add it to "
                "lines[].machines")


def _notice(kind: str, machine: str, detail: str, m: Measurement) -> Row:
    """A ``machine_notices`` row: reported once, not a dead letter (the samples are archived)."""
    return {"ts": m.ts, "machine": machine, "kind": kind, "detail": detail,
            "sample": m.to_json().decode("utf-8", "backslashreplace")}


# -- flows -------------------------------------------------------------------------------------


def per_machine(spec: Spec, measurements: Stream[Measurement],
                limits: StateLimits | None = None) -> Stream[tuple[str, Row]]:
    """One flow's spec over a ``Stream[Measurement]``: a machine engine of its own (step id
    ``<flow>_machines``), ``(table, row)`` pairs out (the engine's own notices left out)."""
    shards = op.map(f"{spec.kind}_machine_shards", measurements,
                    lambda m: (shard_of(m.machine), {m.machine: [m]}))
    tagged = engine_step(f"{spec.kind}_machines", shards, [spec], limits)
    return op.filter_map(f"{spec.kind}_machine_rows", tagged,
                         lambda t: (t[1], t[2]) if t[0] != ENGINE else None)


Post = Callable[[FlowContext, Stream[tuple[str, Row]]], Results]


@dataclass(frozen=True)
class MachineFlow:
    """A flow made of a per-machine step and what follows it (``post``).

    :func:`plantstream.flows.main.build_dataflow` runs the steps of every MachineFlow together
    in one machine engine; called as a flow function over a ``Stream[Measurement]``, a
    MachineFlow runs its step in a machine engine of its own (:func:`per_machine`).
    """

    step: Callable[[FlowContext], Spec | None]
    post: Post
    doc: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "__doc__", self.doc)  # what `plantstream flows` lists

    def __call__(self, ctx: FlowContext, measurements: Stream[Measurement]) -> Results:
        spec = self.step(ctx)
        if spec is None:
            return {}
        return self.post(ctx, per_machine(spec, measurements))

    def spec(self, ctx: FlowContext) -> Spec | None:
        """The flow's logic spec for ``ctx`` (None when the config turns the flow off)."""
        return self.step(ctx)


@dataclass(frozen=True)
class BatchFlow:
    """A stateless flow that turns each decoded batch into blocks for the sink (the archive).

    ``blocks`` gives, for the flow context, the function from a decoded batch to ``(table,
    block)`` pairs (:class:`connectors.clickhouse.JsonRows`, rows ClickHouse parses); ``item``
    is the flow's per-measurement function form (rows), for callers that compose flows
    themselves.
    """

    blocks: Callable[[FlowContext], Callable[[Decoded], list[tuple[str, JsonRows]]]]
    item: Callable[[FlowContext, Stream[Measurement]], Results]
    doc: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "__doc__", self.doc)

    def __call__(self, ctx: FlowContext, measurements: Stream[Measurement]) -> Results:
        return self.item(ctx, measurements)

    def blocks_of(self, ctx: FlowContext) -> Callable[[Decoded], list[tuple[str, JsonRows]]]:
        """``Decoded`` batch → ``(table, block)`` items, for :func:`flows.main.build_dataflow`."""
        make = self.blocks(ctx)
        return lambda decoded: [(t, b) for t, b in make(decoded) if len(b)]


def split_tables(name: str, tagged: Stream[tuple[str, Row]], tables: Sequence[str]) -> Results:
    """One stream of rows per table from ``(table, row)`` pairs (a ``post`` for simple flows)."""

    def pick(table: str) -> Callable[[tuple[str, Row]], Row | None]:
        return lambda tr: tr[1] if tr[0] == table else None

    return {t: op.filter_map(f"{name}_{t}_rows", tagged, pick(t)) for t in tables}


_shard_cache: dict[str, str] = {}
_SHARD_CACHE_MAX = 50_000
"""Machine ids whose shard is remembered (cleared beyond: a flood of ids costs at most ~8 MB here)."""


def shard_of(machine: str) -> str:
    """The engine key of a machine: a stable hash (CRC-32) of its id modulo :data:`SHARDS`.

    >>> shard_of("press-01") == shard_of("press-01"), shard_of("press-01")
    (True, 's5')
    """
    key = _shard_cache.get(machine)
    if key is None:
        if len(_shard_cache) >= _SHARD_CACHE_MAX:
            _shard_cache.clear()
        key = _shard_cache[machine] = f"s{zlib.crc32(machine.encode()) % SHARDS}"
    return key


Grouped = dict[str, list[Measurement]]
"""machine → its samples of one batch, in arrival order."""


def by_shard(measurements: list[Measurement]) -> list[tuple[str, Grouped]]:
    """Split a batch by machine shard and, within a shard, by machine (order kept per machine)."""
    shards: dict[str, Grouped] = {}
    machines: Grouped = {}
    for m in measurements:
        group = machines.get(m.machine)
        if group is None:
            machine = m.machine
            group = machines[machine] = [m]
            key = shard_of(machine)  # once per machine and batch
            grouped = shards.get(key)
            if grouped is None:
                shards[key] = {machine: group}
            else:
                grouped[machine] = group
        else:
            group.append(m)
    return list(shards.items())


Snapshot = dict[str, dict[str, bytes]]
"""flow name → machine → the machine logic's state, encoded by the flow's codec."""


class MachineEngine(op.StatefulBatchLogic[Grouped, list[Tagged], Snapshot]):
    """The logics of one shard's machines for every flow; see the module docstring.

    With :class:`StateLimits` the engine also bounds its state: unconfigured machines are
    admitted up to the shard's cap (each reported once: a log line and one ``deadletter``
    notice; beyond the cap one notice per shard and archived only), and machines idle for
    ``idle_evict_s`` of wall time leave live memory, their state kept as encoded bytes in
    ``snaps`` (so inside the recovery snapshot) and decoded again when they return.
    """

    def __init__(self, specs: Sequence[Spec], resume: Snapshot | None,
                 limits: StateLimits | None = None) -> None:
        self.specs = tuple(specs)
        index = {s.kind: i for i, s in enumerate(self.specs)}
        self.timers = tuple(s.timers for s in self.specs)
        self.discards = tuple(s.discards for s in self.specs)
        self.feeds: dict[int, list[int]] = {}
        """feeding flow → the flows its outputs go to (handed over after each activation)."""
        for i, spec in enumerate(self.specs):
            if spec.upstream is not None:
                if spec.upstream not in index:
                    msg = f"flow {spec.kind!r} takes {spec.upstream!r}'s outputs, which is not in this engine"
                    raise LogicError(msg)
                self.feeds.setdefault(index[spec.upstream], []).append(i)
        self._fed: dict[tuple[int, str], list[Any]] = {}
        self.logics: list[dict[str, MachineLogic[Any, Any]]] = [{} for _ in self.specs]
        """flow → machine → its live logic (machines in memory)."""
        self.snaps: list[dict[str, bytes]] = [{} for _ in self.specs]
        """flow → machine → its encoded state: current for every machine not in ``dirty``,
        and the only copy of an evicted machine's state."""
        self.dirty: list[set[str]] = [set() for _ in self.specs]
        self.due: list[dict[str, datetime]] = [{} for _ in self.specs]
        self.heap: list[tuple[datetime, int, str]] = []
        self.limits = limits
        self.registry = Registry({})
        self.touched: dict[str, float] = {}
        """Live machine → wall time of its last sample (what the idle eviction reads)."""
        self.next_sweep = 0.0
        self.evicted = 0
        """Evictions so far (a figure for tests and benchmarks)."""
        if resume:
            blob = resume.get(ENGINE, {}).get("registry")
            if blob is not None:
                self.registry = REGISTRY.decode(blob)
            for i, spec in enumerate(self.specs):
                decode, build = spec.codec.decode, spec.build
                for machine, blob in resume.get(spec.kind, {}).items():
                    self.logics[i][machine] = build(decode(blob))
                    self.snaps[i][machine] = blob
                    if spec.timers:
                        self._schedule(i, machine)
            if limits is not None:
                now = limits.clock()
                known, reg = limits.configured, self.registry.unconfigured
                for logics in self.logics:
                    for machine in logics:
                        self.touched[machine] = now
                        if known is not None and not known(machine) and machine not in reg:
                            reg[machine] = 0  # state of an earlier run, or a machine no longer configured

    # -- machines: admission, eviction, restore ----------------------------------------------

    def _admit(self, by_machine: Grouped, out: list[Tagged]) -> Grouped:
        """The machines of a batch that get per-machine state: configured ones, and unconfigured
        ones up to the shard's cap (a new one is reported once); the rest are archived only."""
        limits = self.limits
        assert limits is not None
        known = limits.configured
        if known is None:
            return by_machine
        reg = self.registry.unconfigured
        refused: list[str] = []
        for machine, group in by_machine.items():
            if machine in reg or known(machine):
                continue
            first = group[0]
            if len(reg) < limits.per_shard:
                reg[machine] = first.ts
                log.warning("unconfigured machine %r: not in the plant config (lines[].machines); archived, "
                            "availability and quality only until it is configured (reported once)", machine)
                out.append((ENGINE, NOTICES, _notice("unconfigured", machine, UNCONFIGURED, first)))
                continue
            refused.append(machine)
            if not self.registry.capped:
                self.registry.capped = True
                shard = shard_of(machine)
                reason = (f"more than state.max_unconfigured_machines ({limits.max_unconfigured}; "
                          f"{limits.per_shard} per shard) unconfigured machines: {machine} and every further "
                          f"unconfigured machine of shard {shard} are archived only (no status, OEE, scrap, "
                          "anomalies or alerts); list them in lines[].machines or raise the cap")
                log.warning("%s (reported once per shard)", reason)
                out.append((ENGINE, NOTICES, _notice("unconfigured_cap", machine, reason, first)))
        if not refused:
            return by_machine
        return {m: g for m, g in by_machine.items() if m not in refused}

    def _sweep(self, now: float) -> None:
        """Evict every live machine idle for ``idle_evict_s`` (no sample) and without a pending timer."""
        assert self.limits is not None
        idle = self.limits.idle_evict_s
        self.next_sweep = now + idle / 4
        cutoff = now - idle
        for machine in [m for m, at in self.touched.items() if at <= cutoff]:
            if any(machine in due for due in self.due):
                continue  # a timer still to fire: evicted at a later sweep
            self.evict(machine)

    def evict(self, machine: str) -> None:
        """Take a machine's logics out of live memory; its state stays, encoded, in ``snaps``."""
        self.touched.pop(machine, None)
        for i, logics in enumerate(self.logics):
            logic = logics.pop(machine, None)
            if logic is None:
                continue
            dirty = self.dirty[i]
            if machine in dirty:
                self.snaps[i][machine] = self.specs[i].codec.encode(logic.state())
                dirty.discard(machine)
        self.evicted += 1

    def _logic(self, i: int, machine: str) -> MachineLogic[Any, Any]:
        logics = self.logics[i]
        logic = logics.get(machine)
        if logic is None:
            spec = self.specs[i]
            blob = self.snaps[i].get(machine)  # an evicted machine back: its state, decoded
            logic = logics[machine] = spec.build(None if blob is None else spec.codec.decode(blob))
        return logic

    # -- the stateful batch logic --------------------------------------------------------------

    def _emit(self, i: int, items: list[Any], out: list[Tagged], machine: str) -> None:
        spec = self.specs[i]
        name, rows = spec.kind, spec.rows
        if i in self.feeds:
            self._fed.setdefault((i, machine), []).extend(items)
        for item in items:
            for table, row in rows(item):
                out.append((name, table, row))

    def _deliver(self, out: list[Tagged]) -> None:
        """Hand each feeding flow's outputs of this activation to the flows it feeds."""
        fed, self._fed = self._fed, {}
        for (f, machine), items in fed.items():
            for i in self.feeds[f]:
                logic = self._logic(i, machine)
                self._settle(i, machine, logic, logic.on_upstream(items), out)

    def _schedule(self, i: int, machine: str) -> None:
        logic = self.logics[i].get(machine)
        at = None if logic is None else logic.notify_at()
        due = self.due[i]
        if at is None:
            due.pop(machine, None)
        elif due.get(machine) != at:
            due[machine] = at
            heapq.heappush(self.heap, (at, i, machine))

    def on_batch(self, values: list[Grouped]) -> tuple[Iterable[list[Tagged]], bool]:
        # Batches arrive grouped by machine (arrival order kept per machine; machines are
        # independent): each flow's logic gets its machine's samples that pass the flow's
        # filter in one call. Per-sample cost: a filter call per filtering flow; no Bytewax
        # item, no per-sample method dispatch.
        by_machine = values[0]
        if len(values) > 1:
            by_machine = {machine: list(group) for machine, group in by_machine.items()}
            for more in values[1:]:
                for machine, group in more.items():
                    mine = by_machine.get(machine)
                    if mine is None:
                        by_machine[machine] = group
                    else:
                        mine.extend(group)
        out: list[Tagged] = []
        limits = self.limits
        if limits is not None:
            by_machine = self._admit(by_machine, out)
            if limits.idle_evict_s > 0:
                now = limits.clock()
                touched = self.touched
                for machine in by_machine:
                    touched[machine] = now
                if now >= self.next_sweep:
                    self._sweep(now)
        for i, spec in enumerate(self.specs):
            relevant, logics = spec.filters, self.logics[i]
            for machine, group in by_machine.items():
                mine = group if relevant is None else [m for m in group if relevant(m)]
                if not mine:
                    continue
                logic = logics.get(machine)
                if logic is None:
                    logic = self._logic(i, machine)
                self._settle(i, machine, logic, logic.on_batch(mine), out)
        if self._fed:
            self._deliver(out)
        return ([out] if out else []), False

    def _settle(self, i: int, machine: str, logic: MachineLogic[Any, Any], items: list[Any],
                out: list[Tagged], *, schedule: bool = True) -> None:
        """After a logic call: its outputs out, the logic dropped or marked changed, its timer."""
        if items:
            self._emit(i, items, out, machine)
        if self.discards[i] and logic.discard():
            self._drop(i, machine)
            return
        self.dirty[i].add(machine)
        if schedule and self.timers[i]:
            self._schedule(i, machine)

    def _drop(self, i: int, machine: str) -> None:
        self.logics[i].pop(machine, None)
        self.snaps[i].pop(machine, None)
        self.dirty[i].discard(machine)
        self.due[i].pop(machine, None)

    def notify_at(self) -> datetime | None:
        # The earliest timer, rounded up to TIMER_GRAIN: machines' timers that fall close together
        # fire in one wake-up instead of one each (hundreds a second at plant load).
        at = self._earliest()
        if at is None:
            return None
        return at + (-(at - _EPOCH) % TIMER_GRAIN)

    def _earliest(self) -> datetime | None:
        heap = self.heap
        while heap:
            at, i, machine = heap[0]
            if self.due[i].get(machine) == at:
                return at
            heapq.heappop(heap)
        return None

    def on_notify(self) -> tuple[Iterable[list[Tagged]], bool]:
        out: list[Tagged] = []
        now = self.notify_at()  # every timer up to the wake-up this call is for
        fired: list[tuple[int, str]] = []
        while now is not None and self.heap and self.heap[0][0] <= now:
            at, i, machine = heapq.heappop(self.heap)
            if self.due[i].get(machine) != at:
                continue
            del self.due[i][machine]
            fired.append((i, machine))
        for i, machine in fired:
            logic = self.logics[i].get(machine)
            if logic is None:
                continue
            self._settle(i, machine, logic, logic.on_notify(), out)
        if self._fed:
            self._deliver(out)
        return ([out] if out else []), False

    def on_eof(self) -> tuple[Iterable[list[Tagged]], bool]:
        out: list[Tagged] = []
        for i, logics in enumerate(self.logics):
            evicted = [m for m in self.snaps[i] if m not in logics]
            for machine in evicted:  # evicted machines end like the others (restored one by one)
                self._logic(i, machine)
            for machine, logic in list(logics.items()):
                self._settle(i, machine, logic, logic.on_eof(), out, schedule=False)
        if self._fed:
            self._deliver(out)
        return ([out] if out else []), False

    def snapshot(self) -> Snapshot:
        for i, dirty in enumerate(self.dirty):
            if not dirty:
                continue
            logics, snaps, encode = self.logics[i], self.snaps[i], self.specs[i].codec.encode
            for machine in dirty:
                snaps[machine] = encode(logics[machine].state())
            dirty.clear()
        snap = {s.kind: dict(self.snaps[i]) for i, s in enumerate(self.specs)}
        if self.registry.unconfigured or self.registry.capped:
            snap[ENGINE] = {"registry": REGISTRY.encode(self.registry)}
        return snap

    def state_bytes(self) -> dict[str, int]:
        """Flow → bytes of its machines' encoded states (after encoding what changed): the
        size of the engine's part of a recovery snapshot."""
        self.snapshot()
        return {s.kind: sum(len(b) for b in self.snaps[i].values()) for i, s in enumerate(self.specs)}


def with_feeds(specs: Sequence[Spec]) -> list[Spec]:
    """``specs``, each replaced by its ``fed`` variant when the flow that feeds it runs in the
    same engine."""
    names = {s.kind for s in specs}
    return [s.fed[1]() if s.fed is not None and s.fed[0] in names else s for s in specs]


def engine_step(step_id: str, shards: Any, specs: Sequence[Spec],
                limits: StateLimits | None = None) -> Stream[Tagged]:
    """Run ``specs`` over ``(shard, measurements)`` batches; one ``(flow, table, row)`` per row
    (with ``limits``, also the engine's own notices, flow :data:`ENGINE`)."""
    fed = with_feeds(specs)
    outputs = op.stateful_batch(step_id, shards, lambda resume: MachineEngine(fed, resume, limits))
    return op.flat_map(f"{step_id}_rows", outputs, lambda kv: kv[1])


# -- an engine without Bytewax around it (unit tests, tools) --------------------------------------


class EngineRun:
    """The machine engine driven directly, as the dataflow drives one shard of it: an engine of
    one machine (or a few) for unit tests, with the wall clock under the test's control.

    Inject a :class:`~plantstream.operators.logic.ManualClock` into the specs whose logics have
    timers and call :meth:`notify` with its time: every wake-up due by then fires, as Bytewax
    would fire them when its clock passed them.

    >>> from plantstream.operators.status import status_spec
    >>> run = EngineRun(status_spec(throttle_s=5.0))
    >>> [r["state"] for _, _, r in run.batch([Measurement(0, "m1", "machine_state", "running")])]
    ['running']
    >>> run.batch([Measurement(1_000, "m1", "machine_state", "fault")]), len(run.eof())
    ([], 1)
    """

    def __init__(self, *specs: Spec, resume: Snapshot | None = None,
                 limits: StateLimits | None = None) -> None:
        self.engine = MachineEngine(with_feeds(specs), resume, limits)

    @staticmethod
    def _flat(outputs: Iterable[list[Tagged]]) -> list[Tagged]:
        return [t for out in outputs for t in out]

    def batch(self, samples: Sequence[Measurement]) -> list[Tagged]:
        """One input batch (any machines, arrival order); its rows."""
        if not samples:
            return []
        grouped: Grouped = {}
        for m in samples:
            grouped.setdefault(m.machine, []).append(m)
        return self._flat(self.engine.on_batch([grouped])[0])

    def notify(self, now: datetime) -> list[Tagged]:
        """Every wake-up due at or before ``now`` (wall time); their rows."""
        out: list[Tagged] = []
        last: datetime | None = None
        while True:
            at = self.engine.notify_at()
            if at is None or at > now:
                return out
            rows = self._flat(self.engine.on_notify()[0])
            if at == last and not rows:
                return out  # a timer that keeps asking for the same wake-up: Bytewax would spin too
            out += rows
            last = at

    def eof(self) -> list[Tagged]:
        """The end of the input."""
        return self._flat(self.engine.on_eof()[0])

    def snapshot(self) -> Snapshot:
        """The recovery snapshot, as Bytewax takes it at the end of an epoch."""
        return self.engine.snapshot()


def run_engine(specs: Sequence[Spec], samples: Sequence[Measurement], *, batch_size: int = 0,
               eof: bool = True, limits: StateLimits | None = None) -> list[Tagged]:
    """The rows of ``specs`` over ``samples`` in batches of ``batch_size`` (0: one batch),
    then the end of input (``eof``)."""
    run = EngineRun(*specs, limits=limits)
    size = batch_size or max(1, len(samples))
    out: list[Tagged] = []
    for start in range(0, len(samples), size):
        out += run.batch(samples[start:start + size])
    if eof:
        out += run.eof()
    return out
