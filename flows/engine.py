"""The machine engine: every per-machine flow of the plant in one batched Bytewax step.

Most of what plantstream computes is per machine: the twin (status), OEE accounting, scrap,
condition monitoring, alert rules. Written as one ``op.stateful`` step per flow keyed by
machine, each measurement crosses Bytewax once per flow and every live machine is a Bytewax
key per flow, which costs a few microseconds per item and grows with the number of machines.
The engine runs the same per-machine logic (each flow's :class:`MachineStep`, a Bytewax
``StatefulLogic`` per machine) inside ONE ``op.stateful_batch`` step keyed by a machine shard:

- input: batches of decoded measurements (one Kafka poll each), split by shard
  (:func:`shard_of`, a stable hash of the machine id, so the result does not depend on how a
  producer partitioned the topic) and within a shard by machine;
- per shard: a dict machine → logic per flow; a machine's samples go to the logics of the
  flows whose ``relevant`` accepts them, in arrival order, as the per-flow steps would see them
  (in one ``on_items`` call where the logic has it);
- feeds: a step may take another step's outputs for the same machine (``MachineStep.fed``:
  alerts take the OEE step's facts);
- timers: each logic's ``notify_at`` is kept in a heap; the step wakes for the earliest, on a
  :data:`TIMER_GRAIN` grid;
- snapshot: per flow, machine → bytes, re-encoded only for machines that changed during the
  epoch, so Bytewax's per-epoch copy of the shard's state is a copy of references.

A flow stays a function over a ``Stream[Measurement]`` (:class:`MachineFlow` is callable as
one, building the per-flow steps); :func:`flows.main.build_dataflow` runs every MachineFlow it
is given in the engine instead. Rows leave as ``(flow, table, row)`` triples, one list per
activation, and each flow's ``post`` wires its own downstream steps (scrap's rate and cost
joins, the alert webhook) exactly as in its function form.
"""

from __future__ import annotations

import heapq
import pickle
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream

from plantstream.connectors.clickhouse import JsonRows
from plantstream.flows.registry import Decoded, FlowContext, Results, Row
from plantstream.schemas.measurement import Measurement

SHARDS = 32
"""Machine shards: the keys of the engine step. Changing it needs a fresh recovery store."""

TIMER_GRAIN = timedelta(milliseconds=500)
"""Machine timers fire on this grid of wall time (a wake-up serves every timer due by then)."""

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

Tagged = tuple[str, str, Row]
"""(flow name, table, row)"""


@dataclass(frozen=True)
class MachineStep:
    """One flow's per-machine logic.

    ``relevant`` picks the measurements the flow sees (None: all of them); ``builder`` makes the logic of one
    machine from its snapshot (or None), as a Bytewax ``op.stateful`` builder does; ``rows``
    turns one output of the logic into ``(table, row)`` pairs.
    """

    name: str
    relevant: Callable[[Measurement], bool] | None
    builder: Callable[[Any], op.StatefulLogic[Measurement, Any, Any]]
    rows: Callable[[Any], Iterable[tuple[str, Row]]]
    engine_filters: bool = True
    """False when the logic's ``on_items`` skips irrelevant samples itself (cheaper than a
    filter call per sample)."""
    timers: bool = True
    """False when the logic never asks for a timer (``notify_at`` is always None)."""
    fed: tuple[str, Callable[[], MachineStep]] | None = None
    """(another step's name, a variant of this step): when both run in the machine engine,
    the variant runs instead (alerts take the OEE flow's facts rather than computing them)."""
    upstream: str | None = None
    """The step whose outputs for a machine this step's logic takes, through ``on_upstream``."""


def per_machine(step: MachineStep, measurements: Stream[Measurement]) -> Stream[tuple[str, Row]]:
    """The per-flow Bytewax form of a step: filter, key by machine, ``op.stateful``, rows."""
    pick, name = step.relevant, step.name
    relevant = measurements if pick is None else op.filter(f"{name}_machine_relevant", measurements, pick)
    keyed = op.key_on(f"{step.name}_machine_key", relevant, lambda m: m.machine)
    outputs = op.stateful(f"{step.name}_machine", keyed, step.builder)
    return op.flat_map(f"{step.name}_machine_out", outputs, lambda kv: step.rows(kv[1]))


Post = Callable[[FlowContext, Stream[tuple[str, Row]]], Results]


@dataclass(frozen=True)
class MachineFlow:
    """A flow made of a per-machine step and what follows it (``post``).

    Called as a flow function it builds its own keyed step (:func:`per_machine`);
    :func:`flows.main.build_dataflow` runs its step in the machine engine instead.
    """

    step: Callable[[FlowContext], MachineStep | None]
    post: Post
    doc: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "__doc__", self.doc)  # what `plantstream flows` lists

    def __call__(self, ctx: FlowContext, measurements: Stream[Measurement]) -> Results:
        step = self.step(ctx)
        if step is None:
            return {}
        return self.post(ctx, per_machine(step, measurements))


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


def shard_of(machine: str) -> str:
    """The engine key of a machine: a stable hash (CRC-32) of its id modulo :data:`SHARDS`.

    >>> shard_of("press-01") == shard_of("press-01"), shard_of("press-01")
    (True, 's5')
    """
    key = _shard_cache.get(machine)
    if key is None:
        if len(_shard_cache) > 1_000_000:
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
"""flow name → machine → the machine logic's snapshot, pickled unless it is already bytes."""


def _encode(snap: Any) -> bytes:
    return snap if isinstance(snap, bytes) else b"\x00" + pickle.dumps(snap, pickle.HIGHEST_PROTOCOL)


def _decode(blob: bytes) -> Any:
    return pickle.loads(blob[1:]) if blob[:1] == b"\x00" else blob


class MachineEngine(op.StatefulBatchLogic[Grouped, list[Tagged], Snapshot]):
    """The logics of one shard's machines for every step; see the module docstring."""

    def __init__(self, steps: Sequence[MachineStep], resume: Snapshot | None) -> None:
        self.steps = tuple(steps)
        index = {s.name: i for i, s in enumerate(self.steps)}
        self.feeds: dict[int, list[int]] = {}
        """feeding step → the steps its outputs go to (handed over after each activation)."""
        for i, step in enumerate(self.steps):
            if step.upstream is not None:
                self.feeds.setdefault(index[step.upstream], []).append(i)
        self._fed: dict[tuple[int, str], list[Any]] = {}
        self.logics: list[dict[str, op.StatefulLogic[Measurement, Any, Any]]] = [{} for _ in self.steps]
        self.snaps: list[dict[str, bytes]] = [{} for _ in self.steps]
        self.dirty: list[set[str]] = [set() for _ in self.steps]
        self.due: list[dict[str, datetime]] = [{} for _ in self.steps]
        self.heap: list[tuple[datetime, int, str]] = []
        if resume:
            for i, step in enumerate(self.steps):
                for machine, blob in resume.get(step.name, {}).items():
                    self.logics[i][machine] = step.builder(_decode(blob))
                    self.snaps[i][machine] = blob
                    self._schedule(i, machine)

    def _emit(self, i: int, items: Iterable[Any], out: list[Tagged], machine: str) -> None:
        name, rows = self.steps[i].name, self.steps[i].rows
        if i in self.feeds:
            items = list(items)
            self._fed.setdefault((i, machine), []).extend(items)
        for item in items:
            for table, row in rows(item):
                out.append((name, table, row))

    def _deliver(self, out: list[Tagged]) -> None:
        """Hand each feeding step's outputs of this activation to the steps it feeds."""
        fed, self._fed = self._fed, {}
        for (f, machine), items in fed.items():
            for i in self.feeds[f]:
                logics = self.logics[i]
                logic = logics.get(machine)
                if logic is None:
                    logic = logics[machine] = self.steps[i].builder(None)
                results, discard = logic.on_upstream(items)  # type: ignore[attr-defined]
                self._settle(i, machine, results, discard, out)

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
        # independent): each flow's logic gets its relevant samples in one call when it takes
        # a list (``on_items``), else one by one. Per-sample cost: a filter call per flow; no
        # Bytewax item, no per-sample method dispatch for the hot flows.
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
        for i, step in enumerate(self.steps):
            relevant, logics = step.relevant, self.logics[i]
            if not step.engine_filters:
                relevant = None
            for machine, group in by_machine.items():
                mine = group if relevant is None else [m for m in group if relevant(m)]
                if not mine:
                    continue
                logic = logics.get(machine)
                if logic is None:
                    logic = logics[machine] = step.builder(None)
                on_items = getattr(logic, "on_items", None)
                if on_items is not None:
                    items, discard = on_items(mine)
                    self._settle(i, machine, items, discard, out)
                else:
                    self._one_by_one(i, machine, logic, mine, out)
                    if step.timers:
                        self._schedule(i, machine)
        if self._fed:
            self._deliver(out)
        return ([out] if out else []), False

    def _one_by_one(self, i: int, machine: str, logic: op.StatefulLogic[Measurement, Any, Any] | None,
                    mine: list[Measurement], out: list[Tagged]) -> None:
        logics, builder = self.logics[i], self.steps[i].builder
        for m in mine:
            if logic is None:  # discarded by the previous sample: a fresh one, as Bytewax would
                logic = logics[machine] = builder(None)
            items, discard = logic.on_item(m)
            if items:
                self._emit(i, items, out, machine)
            if discard:
                self._drop(i, machine)
                logic = None
        if logic is not None:
            self.dirty[i].add(machine)

    def _settle(self, i: int, machine: str, items: Iterable[Any], discard: bool, out: list[Tagged], *,
                schedule: bool = True) -> None:
        """After a logic call: its outputs out, the logic dropped or marked changed, its timer."""
        if items:
            self._emit(i, items, out, machine)
        if discard:
            self._drop(i, machine)
            return
        self.dirty[i].add(machine)
        if schedule and self.steps[i].timers:
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
            items, discard = logic.on_notify()
            self._settle(i, machine, items, discard, out)
        if self._fed:
            self._deliver(out)
        return ([out] if out else []), False

    def on_eof(self) -> tuple[Iterable[list[Tagged]], bool]:
        out: list[Tagged] = []
        for i, logics in enumerate(self.logics):
            for machine, logic in list(logics.items()):
                items, discard = logic.on_eof()
                self._settle(i, machine, items, discard, out, schedule=False)
        if self._fed:
            self._deliver(out)
        return ([out] if out else []), False

    def snapshot(self) -> Snapshot:
        for i, dirty in enumerate(self.dirty):
            logics, snaps = self.logics[i], self.snaps[i]
            for machine in dirty:
                snaps[machine] = _encode(logics[machine].snapshot())
            dirty.clear()
        return {s.name: dict(self.snaps[i]) for i, s in enumerate(self.steps)}


def with_feeds(steps: Sequence[MachineStep]) -> list[MachineStep]:
    """``steps``, each replaced by its ``fed`` variant when the step that feeds it is there too."""
    names = {s.name for s in steps}
    return [s.fed[1]() if s.fed is not None and s.fed[0] in names else s for s in steps]


def engine_step(step_id: str, shards: Any, steps: Sequence[MachineStep]) -> Stream[Tagged]:
    """Run ``steps`` over ``(shard, measurements)`` batches; one ``(flow, table, row)`` per row."""
    outputs = op.stateful_batch(step_id, shards, lambda resume: MachineEngine(steps, resume))
    return op.flat_map(f"{step_id}_rows", outputs, lambda kv: kv[1])
