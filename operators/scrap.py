"""Scrap: reject deltas become scrap events with reason and cost; rolling scrap rate and yield.

Three pure pieces, each driven by one thin Bytewax step in :mod:`flows.scrap`:

:class:`ScrapTracker` (one per machine, key = machine id)
    A :class:`ScrapFold` on the machine's event-time ledger (:mod:`operators.ledger`, shared
    with the OEE accounting). The fold reads ``reject_count`` / ``good_count`` /
    ``total_count`` (cumulative: deltas by :class:`operators.counters.Counter` in event-time
    order, resets and wraps as configured, step backs ignored), ``reject_parts`` /
    ``good_parts`` (increments), and the context ``scrap_reason``, ``part_number``,
    ``work_order`` (each applies until changed). Any two of good, reject and total give the
    third (:class:`operators.counters.Balance`: a machine with good and total counts total −
    good as rejects, one with total and reject counts total − reject as good; with all three
    good and reject are taken as sent). Every reject delta is a
    **scrap event** keyed by ``(machine, ts)``: quantity, reason (the latest ``scrap_reason``,
    or ``unassigned``), category (:meth:`ScrapConfig.category`), part number and work order.
    The ledger applies samples in event-time order once the watermark (largest ts −
    ``lateness.allowed_lateness_s``) passes them; a sample older than that but within
    ``lateness.restatement_horizon_s`` — a counter sample or a ``scrap_reason`` (a
    **reclassification**) alike — restates: the events and rate contributions it changes are
    emitted again with a higher ``version`` (the table keeps the latest, never a second event;
    an event that no longer exists is written with quantity 0). Older samples go to the dead
    letter (reason ``late``, or ``clock_skew`` under the ledger's clock policy; redeliveries are
    absorbed). Each time event time passes a hop
    boundary ``B`` (``scrap.hop_s``) the fold emits its **rate contributions** for ``B``: the
    minute's good/reject counts and the sums over the rolling window ``[B − window_s, B)``, per
    machine, for its line and per part number.
:class:`RateAggregator` (one per scope and key: ``machine|press-01``, ``line|line-1``, ``part|P-100``)
    Sums the contributions of every machine for each boundary and emits the ``scrap_rate`` row
    (``reject / (good + reject)`` and first-pass yield ``good / total`` over the window, plus
    the additive hop counts). A line's row is written again, with a higher version, as each of
    its machines reports the boundary; the latest row is the complete one.
:class:`CostJoin` (one per work order)
    The stream join with the work-order reference data (compacted topic
    ``plantstream.workorders`` and/or ``scrap.workorders_file``): cost = quantity × material
    cost per unit + quantity × labor rate × labor seconds per unit (``labor_s_per_unit``, else
    the ideal cycle time of the part). An event whose work order has no reference yet is
    written with ``costed = 0`` and kept (up to ``scrap.max_pending_per_work_order``); when the
    reference arrives it is written again, costed, with a higher version.

Examples
--------
>>> from plantstream.schemas.config import PlantConfig
>>> cfg = PlantConfig.model_validate({"lines": [{"id": "l1", "machines": [{"id": "m1"}]}],
...                                   "lateness": {"allowed_lateness_s": 0}})
>>> t = ScrapTracker.for_config(cfg, "m1")
>>> out = t.process([(0, "work_order", "WO-1"), (0, "reject_count", 10), (0, "good_count", 0),
...                  (1_000, "good_count", 5), (2_000, "scrap_reason", "burr"),
...                  (2_000, "reject_count", 12), (61_000, "good_count", 6)])
>>> [(r["ts"], r["quantity"], r["reason"], r["work_order"]) for k, r in out if k == "scrap_events"]
[(2000, 2, 'burr', 'WO-1')]
>>> [(r["scope"], r["window_end"], r["mg"], r["mr"]) for k, r in out if k == "rate"]
[('machine', 60000, 5, 2), ('line', 60000, 5, 2)]
>>> [(r["ts"], r["reason"], r["version"]) for k, r in t.process([(2_000, "scrap_reason", "dent")])]
[(2000, 'dent', 4)]
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
import yaml

from plantstream.operators.counters import (
    DEFAULT_RULES,
    GOOD,
    REJECT,
    SIDE,
    Balance,
    Counter,
    CounterRules,
)
from plantstream.operators.ledger import ClockPolicy, Emitted, Event, Ledger, Output, upgrade_state_v1
from plantstream.operators.logic import LogicSpec, MachineLogic
from plantstream.operators.state import StateCodec
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import ConfigError
from plantstream.schemas.measurement import (
    GOOD_COUNT,
    GOOD_PARTS,
    PART_NUMBER,
    REJECT_COUNT,
    REJECT_PARTS,
    SCRAP_REASON,
    TOTAL_COUNT,
    WORK_ORDER,
    Measurement,
)
from plantstream.schemas.scrap_config import UNASSIGNED, ScrapConfig

SCRAP_METRICS = frozenset({GOOD_COUNT, REJECT_COUNT, TOTAL_COUNT, GOOD_PARTS, REJECT_PARTS, PART_NUMBER,
                           WORK_ORDER, SCRAP_REASON})
"""The metrics the scrap tracker reads."""



def _sides_of(counters: dict[str, Counter]) -> list[str]:
    """The sides (good, reject, total) a machine's cumulative counters report, in that order."""
    return [side for side in (GOOD, REJECT, "total") if any(SIDE[m] == side for m in counters)]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def reason_text(value: object) -> str:
    """A ``scrap_reason`` value as text; empty, ``0`` and ``None`` mean ``unassigned``.

    >>> reason_text(" burr "), reason_text(""), reason_text(0), reason_text(None)
    ('burr', 'unassigned', 'unassigned', 'unassigned')
    """
    text = "" if value is None else str(value).strip()
    return UNASSIGNED if text in ("", "0", "0.0", "None", "none") else text


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# -- work-order reference data ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkOrderRef:
    """Reference data of one work order (a record of ``plantstream.workorders``)."""

    work_order: str
    part_number: str = ""
    material_cost: float = 0.0
    """Material cost per unit."""
    labor_rate: float = 0.0
    """Labor cost per hour."""
    labor_s_per_unit: float | None = None
    """Labor seconds per unit; unset = the ideal cycle time of the part."""
    currency: str = ""

    def cost(self, quantity: float, ideal_ms: float | None) -> tuple[float, float]:
        """(material cost, labor cost) of ``quantity`` scrapped units.

        >>> WorkOrderRef("WO-1", material_cost=2.5, labor_rate=36.0).cost(4, 1000.0)
        (10.0, 0.04)
        """
        labor_s = self.labor_s_per_unit
        if labor_s is None:
            labor_s = (ideal_ms or 0.0) / 1000
        return quantity * self.material_cost, quantity * self.labor_rate * labor_s / 3600


def workorder_from_mapping(rec: dict[str, Any]) -> WorkOrderRef:
    """Validate one work-order record; ``ValueError`` names the field and the fix.

    >>> workorder_from_mapping({"work_order": "WO-1", "material_cost": "2.5"}).material_cost
    2.5
    >>> workorder_from_mapping({"material_cost": 1})
    Traceback (most recent call last):
    ...
    ValueError: work-order record field 'work_order': required, a non-empty string
    """
    wo = rec.get("work_order")
    if not isinstance(wo, str | int) or not str(wo).strip():
        msg = "work-order record field 'work_order': required, a non-empty string"
        raise ValueError(msg)
    nums: dict[str, float | None] = {}
    for name in ("material_cost", "labor_rate", "labor_s_per_unit"):
        raw = rec.get(name)
        if raw is None or raw == "":
            nums[name] = None
            continue
        try:
            v = float(raw)
        except (TypeError, ValueError):
            msg = f"work-order record field {name!r}: must be a number >= 0, got {raw!r}"
            raise ValueError(msg) from None
        if v < 0 or v != v:
            msg = f"work-order record field {name!r}: must be a number >= 0, got {raw!r}"
            raise ValueError(msg)
        nums[name] = v
    return WorkOrderRef(str(wo).strip(), str(rec.get("part_number") or ""), nums["material_cost"] or 0.0,
                        nums["labor_rate"] or 0.0, nums["labor_s_per_unit"],
                        str(rec.get("currency") or ""))


def decode_workorder(raw: bytes) -> WorkOrderRef | str:
    """A ``plantstream.workorders`` record value → the reference, or the reason it is bad.

    >>> decode_workorder(b'{"work_order": "WO-1", "material_cost": 0.75}').material_cost
    0.75
    >>> decode_workorder(b'nope')
    'work order: not a JSON object'
    """
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "work order: not a JSON object"
    if not isinstance(rec, dict):
        return "work order: not a JSON object"
    try:
        return workorder_from_mapping(rec)
    except ValueError as exc:
        return str(exc)


def load_workorders(path: str | Path) -> dict[str, WorkOrderRef]:
    """Read a work-order file (JSONL, CSV with a header, or a YAML list) → work order → ref."""
    p = Path(path)
    if not p.is_file():
        msg = f"scrap.workorders_file {str(p)!r} does not exist; write it or remove the setting"
        raise ConfigError(msg)
    text = p.read_text(encoding="utf-8")
    records: list[Any]
    if p.suffix.lower() == ".csv":
        records = list(csv.DictReader(io.StringIO(text)))
    elif p.suffix.lower() in (".yaml", ".yml"):
        records = yaml.safe_load(text) or []
    else:
        records = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    out: dict[str, WorkOrderRef] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            msg = f"scrap.workorders_file {str(p)!r} record {i + 1}: must be a mapping of fields"
            raise ConfigError(msg)
        try:
            ref = workorder_from_mapping(rec)
        except ValueError as exc:
            msg = f"scrap.workorders_file {str(p)!r} record {i + 1}: {exc}"
            raise ConfigError(msg) from None
        out[ref.work_order] = ref
    return out


# -- rolling counts --------------------------------------------------------------------------


@dataclass
class RollingCounts:
    """Good/reject counts in hop buckets; sums over a rolling window ending at a boundary.

    >>> r = RollingCounts(window_ms=180_000, hop_ms=60_000)
    >>> r.add(10_000, 5, 1); r.add(70_000, 3, 0); r.add(200_000, 1, 1)
    >>> r.window(180_000), r.window(240_000), r.window(300_000)
    ((8, 1), (4, 1), (1, 1))
    """

    window_ms: int
    hop_ms: int
    buckets: dict[int, list[int]] = field(default_factory=dict)

    def add(self, ts: int, good: float, reject: float) -> None:
        b = self.buckets.setdefault(ts - ts % self.hop_ms, [0, 0])
        b[0] += int(good)
        b[1] += int(reject)

    def window(self, end: int) -> tuple[int, int]:
        """(good, reject) over ``[end − window, end)``."""
        g = r = 0
        for m, (bg, br) in self.buckets.items():
            if end - self.window_ms <= m < end:
                g += bg
                r += br
        return g, r

    def prune(self, end: int) -> None:
        """Forget buckets that no window ending at or after ``end`` contains."""
        for m in [m for m in self.buckets if m < end - self.window_ms]:
            del self.buckets[m]


# -- per machine -----------------------------------------------------------------------------


@dataclass
class ScrapState:
    """What a scrap tracker keeps between epochs, as plain data (see :data:`SCRAP_STATE`)."""

    machine: str
    site: str
    line: str
    ledger: dict[str, Any]
    """The event-time ledger: watermark, buffer, journal of the horizon, version."""
    fold: dict[str, Any]
    """The fold's state (:meth:`ScrapFold.dump_state`)."""



SCRAP_STATE: StateCodec[ScrapState] = StateCodec("scrap", 2, ScrapState, upgrades={1: upgrade_state_v1})
"""The versioned codec of :class:`ScrapState` (kind ``scrap``). Format 2: the ledger's journal
by column (:func:`~plantstream.operators.ledger.pack_events`); format 1 (segments of pickled
sample tuples) is upgraded on decode."""


class ScrapFold:
    """The scrap rules over one machine's samples in event-time order (a ledger fold).

    Emits ``("scrap_events", ts, [row])`` for every reject delta (quantities at one instant add
    up to one event) and ``("rate", (scope, key, boundary), [contribution])`` each time event
    time passes a hop boundary.
    """

    def __init__(self, machine: str, site: str, line: str, scrap: ScrapConfig,
                 counter_rules: CounterRules = DEFAULT_RULES) -> None:
        self.machine, self.site, self.line = machine, site, line
        self.cfg = scrap
        self.rules = counter_rules
        self.window_ms = scrap.window_s * 1000
        self.hop_ms = scrap.hop_s * 1000
        self._out: list[Emitted] = []
        self.reset()

    # -- the fold protocol ---------------------------------------------------------------------
    def reset(self) -> None:
        self.cursor = -1
        self.counters: dict[str, Counter] = {}
        self.bal = Balance()
        """Which of good, reject and total the machine reports; the derived count owed."""
        self.part = ""
        self.work_order = ""
        self.reason = UNASSIGNED
        self.last_event: list[Any] | None = None
        """The scrap event of the latest instant with rejects: [ts, quantity, part, work order, reason]."""
        self.buckets: dict[int, dict[str, list[int]]] = {}
        """Hop bucket start → part → [good, reject]."""
        self.next_boundary = -1
        self._out = []

    def take(self) -> list[Emitted]:
        out, self._out = self._out, []
        return out

    def dump_state(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "counters": {k: c.last for k, c in self.counters.items()},
                "part": self.part, "work_order": self.work_order, "reason": self.reason,
                "last_event": None if self.last_event is None else list(self.last_event),
                "buckets": {m: {part: list(gr) for part, gr in parts.items()}
                            for m, parts in self.buckets.items()},
                "next_boundary": self.next_boundary} | self._balance_extra()

    def _balance_extra(self) -> dict[str, Any]:
        """Optional keys (absent = their default, as in states written before them): the sides
        seen when they are not just those of the counters, ``owed`` while a count is owed."""
        out: dict[str, Any] = {}
        bal = self.bal
        sides = [side for side in (GOOD, REJECT, "total") if getattr(bal, side)]
        if sides != _sides_of(self.counters):
            out["sides"] = sides
        if bal.owed:
            out["owed"] = (bal.owed, bal.owed_ts)
        return out

    def load_state(self, p: dict[str, Any]) -> None:
        self.cursor = p["cursor"]
        self.counters = {k: Counter(v) for k, v in p["counters"].items()}
        sides = p.get("sides", _sides_of(self.counters))
        owed, owed_ts = p.get("owed", (0.0, -1))
        self.bal = Balance(GOOD in sides, REJECT in sides, "total" in sides, owed, owed_ts)
        self.part, self.work_order, self.reason = p["part"], p["work_order"], p["reason"]
        self.last_event = None if p["last_event"] is None else list(p["last_event"])
        self.buckets = {m: {part: list(gr) for part, gr in parts.items()}
                        for m, parts in p["buckets"].items()}
        self.next_boundary = p["next_boundary"]
        self._out = []

    def apply(self, ev: Event) -> None:
        ts, _, metric, value = ev
        self._settle(ts if metric in SIDE else None)
        self._boundaries(ts)  # hops that end at or before this sample are complete
        if ts > self.cursor:
            self.cursor = ts
        if self.next_boundary < 0:
            self.next_boundary = ts - ts % self.hop_ms + self.hop_ms
        if metric == SCRAP_REASON:
            self.reason = reason_text(value)
        elif metric == PART_NUMBER:
            self.part = str(value)
            self._first_context(ts, 2, self.part)
        elif metric == WORK_ORDER:
            self.work_order = str(value)
            self._first_context(ts, 3, self.work_order)
        elif metric in (GOOD_COUNT, REJECT_COUNT, TOTAL_COUNT):
            v = _number(value)
            if v is None:
                return
            c = self.counters.get(metric)
            if c is None:
                c = self.counters[metric] = Counter()
            self._parts(ts, SIDE[metric], c.delta(v, self.rules))  # step backs: counted by OEE
        elif metric in (GOOD_PARTS, REJECT_PARTS):
            v = _number(value)
            if v is not None and v >= 0:
                self._parts(ts, SIDE[metric], v)

    def _parts(self, ts: int, side: str, qty: float) -> None:
        """``qty`` parts of ``side`` (good, reject or total) at ``ts``: good and reject counted as
        sent, total only towards the count derived from it (:meth:`_settle`)."""
        bal = self.bal
        bal.see(side)
        bal.count(ts, side, qty)
        if qty > 0 and side != "total":
            self._count(ts, qty, side == REJECT)

    def _settle(self, before: int | None) -> None:
        """Count the derived good or reject parts of the last instant once event time is past it
        (``before``: the next sample's time; None: now). Derived rejects are scrap events of
        that instant like measured ones."""
        due = self.bal.settle(before)
        if due is not None:
            self._count(due[0], due[1], self.bal.derived == REJECT)

    def advance(self, t: int) -> None:
        self._settle(t)
        if t > self.cursor:
            self.cursor = t
        self._boundaries(t)

    def finish(self) -> None:
        """Close the hop that holds the last sample."""
        self._settle(None)
        if self.cursor >= 0:
            self._boundaries(self.cursor - self.cursor % self.hop_ms + self.hop_ms)

    def carry(self) -> list[tuple[str, Any]]:
        """The machine's context as samples, for a re-base onto a new timeline (its clock
        jumped): part number, work order, scrap reason and the last value of each counter."""
        out: list[tuple[str, Any]] = []
        if self.part:
            out.append((PART_NUMBER, self.part))
        if self.work_order:
            out.append((WORK_ORDER, self.work_order))
        if self.reason != UNASSIGNED:
            out.append((SCRAP_REASON, self.reason))
        return out + [(metric, c.last) for metric, c in self.counters.items() if c.last is not None]

    def tombstone(self, table: str, key: Hashable, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A scrap event that no longer exists is written again with quantity 0; a rate
        contribution with zero counts."""
        if table == "scrap_events":
            return [r | {"quantity": 0} for r in rows]
        return [r | {"mg": 0, "mr": 0, "wg": 0, "wr": 0} for r in rows]

    # -- rules -----------------------------------------------------------------------------------
    def _first_context(self, ts: int, field: int, value: str) -> None:
        """Parts counted at an instant belong to the context in force before it (the ledger
        orders counters before context at one instant); but rejects counted before the machine
        had any part number or work order take the first one, sent at their instant."""
        ev = self.last_event
        if ev is not None and ev[0] == ts and not ev[field] and value:
            ev[field] = value
            self._emit_event(ev)

    def _count(self, ts: int, qty: float, reject: bool) -> None:
        m = ts - ts % self.hop_ms
        b = self.buckets.setdefault(m, {}).setdefault(self.part, [0, 0])
        b[1 if reject else 0] += int(qty)
        if not reject:
            return
        ev = self.last_event
        if ev is None or ev[0] != ts:
            ev = self.last_event = [ts, 0, self.part, self.work_order, self.reason]
        ev[1] += int(qty)
        self._emit_event(ev)

    def _emit_event(self, ev: list[Any]) -> None:
        self._out.append(("scrap_events", ev[0], [{
            "machine": self.machine, "site": self.site, "line": self.line, "ts": ev[0],
            "quantity": ev[1], "reason": ev[4], "category": self.cfg.category(ev[4]),
            "part_number": ev[2], "work_order": ev[3]}]))

    def _boundaries(self, upto: int) -> None:
        """Emit the rate contributions of every hop boundary ``B <= upto`` not yet emitted."""
        if not 0 <= self.next_boundary <= upto:
            return
        while 0 <= self.next_boundary <= upto:
            b = self.next_boundary
            if not any(b - self.window_ms <= m < b for m in self.buckets):
                later = [m for m in self.buckets if m >= b]
                if not later:
                    self.next_boundary = upto - upto % self.hop_ms + self.hop_ms
                    self._prune(b)
                    break
                self.next_boundary = min(later) + self.hop_ms
                continue
            self._contribute(b)
            self.next_boundary = b + self.hop_ms
        self._prune(min(self.next_boundary, upto))

    def _prune(self, t: int) -> None:
        for m in [m for m in self.buckets if m < t - self.window_ms]:
            del self.buckets[m]

    def _contribute(self, b: int) -> None:
        minute = self.buckets.get(b - self.hop_ms, {})
        window: dict[str, list[int]] = {}
        for m, parts in self.buckets.items():
            if b - self.window_ms <= m < b:
                for part, (g, r) in parts.items():
                    w = window.setdefault(part, [0, 0])
                    w[0] += g
                    w[1] += r
        mg = sum(v[0] for v in minute.values())
        mr = sum(v[1] for v in minute.values())
        wg = sum(v[0] for v in window.values())
        wr = sum(v[1] for v in window.values())
        base = {"machine": self.machine, "site": self.site, "line": self.line, "window_end": b}
        out = self._out
        out.append(("rate", ("machine", self.machine, b), [base | {
            "scope": "machine", "key": self.machine, "mg": mg, "mr": mr, "wg": wg, "wr": wr}]))
        if self.line:
            out.append(("rate", ("line", self.line, b), [base | {
                "scope": "line", "key": self.line, "mg": mg, "mr": mr, "wg": wg, "wr": wr}]))
        for part in sorted(window):
            if not part:
                continue
            pm = minute.get(part, [0, 0])
            out.append(("rate", ("part", part, b), [base | {
                "scope": "part", "key": part, "mg": pm[0], "mr": pm[1],
                "wg": window[part][0], "wr": window[part][1]}]))


class ScrapTracker(Ledger):
    """One machine's scrap events and rate contributions: a :class:`ScrapFold` on the machine's
    event-time :class:`~operators.ledger.Ledger` (pure; no I/O, no clock)."""

    def __init__(self, machine: str, site: str, line: str, scrap: ScrapConfig, lateness_ms: int,
                 horizon_ms: int, counter_rules: CounterRules = DEFAULT_RULES,
                 clock: ClockPolicy | None = None) -> None:
        self.machine = machine
        self.cfg = scrap
        self.scrap_fold = ScrapFold(machine, site, line, scrap, counter_rules)
        super().__init__(self.scrap_fold, lateness_ms, horizon_ms, self._late, clock)

    @classmethod
    def for_config(cls, config: PlantConfig, machine: str, site: str = "", line: str = "") -> ScrapTracker:
        """The tracker of ``machine``; site and line from the config unless given (a source
        that sends them)."""
        info = config.machine(machine)
        return cls(machine, site or info.site, line or info.line, config.scrap,
                   round(config.lateness.allowed_lateness_s * 1000),
                   round(config.lateness.restatement_horizon_s * 1000),
                   CounterRules.of(config.counters_for(machine)), ClockPolicy.of(config))

    @property
    def site(self) -> str:
        return self.scrap_fold.site

    @property
    def line(self) -> str:
        return self.scrap_fold.line

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> ScrapState:
        return ScrapState(self.machine, self.site, self.line, self.ledger_payload(),
                          self.scrap_fold.dump_state())

    def dump(self) -> bytes:
        """The state, encoded by :data:`SCRAP_STATE` (a cheap-to-copy Bytewax snapshot)."""
        return SCRAP_STATE.encode(self.state())

    def load(self, blob: bytes) -> None:
        """Continue from a :meth:`dump`."""
        self.restore(SCRAP_STATE.decode(blob))

    def restore(self, st: ScrapState) -> None:
        """Continue from a decoded state (of this machine)."""
        self.scrap_fold.site, self.scrap_fold.line = st.site, st.line
        self.load_ledger(st.ledger)
        self.scrap_fold.load_state(st.fold)

    @staticmethod
    def identity_of(blob: bytes) -> tuple[str, str, str]:
        """(machine, site, line) of a :meth:`dump`."""
        st = SCRAP_STATE.decode(blob)
        return st.machine, st.site, st.line

    # -- input ---------------------------------------------------------------------------------
    def process(self, samples: Iterable[tuple[int, str, Any]]) -> list[Output]:
        """Feed ``(ts, metric, value)`` samples one at a time, in the order given (any order);
        returns the rows that became final. (:meth:`ingest` takes samples that arrived together.)"""
        for ts, metric, value in samples:
            self.ingest(((ts, metric, value),))
        return self.take()

    def finish(self) -> list[Output]:  # type: ignore[override]
        """End of input: apply everything and close the hop containing the last sample.

        The state is left as it was, so more input later continues it and writes that hop
        again with a higher version.
        """
        super().finish()
        return self.take()

    def _late(self, ev: Event, raw: Measurement | None) -> dict[str, Any]:
        m = raw or Measurement(ev[0], self.machine, ev[2], ev[3], self.site, self.line)
        return {"ts": ev[0], "source": f"scrap:{self.machine}:{ev[2]}", "reason": "late",
                "raw": m.to_json().decode()}


class ScrapLogic(MachineLogic[ScrapState, list[Output]]):
    """One machine's :class:`ScrapTracker`, run by the machine engine (:func:`scrap_spec`).

    A batch's samples (already the scrap metrics of usable quality: the spec's filter) go to
    the tracker at once, so late ones among them restate once. The tracker is built from the
    first sample's machine, site and line (a source that sends them wins over the plant
    config), or from the resumed state. Each output is the list of ``(table, row)`` that one
    call made final. ``now`` is the wall clock the samples arrive at (the clock policy's
    ``max_ahead``; injected for tests).
    """

    def __init__(self, make: Callable[[str, str, str], ScrapTracker], state: ScrapState | None,
                 now: Callable[[], datetime] = _utc_now) -> None:
        self.make = make
        self.now = now
        self.tracker: ScrapTracker | None = None
        if state is not None:
            self.tracker = make(state.machine, state.site, state.line)
            self.tracker.restore(state)

    def on_batch(self, samples: list[Measurement]) -> list[list[Output]]:
        tracker = self.tracker
        if tracker is None:
            first = samples[0]
            tracker = self.tracker = self.make(first.machine, first.site, first.line)
        tracker.ingest([(m.ts, m.metric, m.value) for m in samples], samples,
                       round(self.now().timestamp() * 1000))
        out = tracker.take()
        return [out] if out else []

    def on_eof(self) -> list[list[Output]]:
        if self.tracker is None:
            return []
        out = self.tracker.finish()
        return [out] if out else []

    def state(self) -> ScrapState:
        if self.tracker is None:  # never asked: the engine builds a logic for a sample
            return ScrapState("", "", "", {}, {})
        return self.tracker.state()


def relevant(m: Measurement) -> bool:
    """What the scrap logic sees: the scrap metrics (:data:`SCRAP_METRICS`) of usable quality."""
    return m.metric in SCRAP_METRICS and m.quality != "bad"


def _scrap_rows(out: list[Output]) -> list[Output]:
    return out


def scrap_spec(config: PlantConfig,
               now: Callable[[], datetime] = _utc_now) -> LogicSpec[ScrapState, list[Output]]:
    """The scrap flow's per-machine logic: each machine's scrap metrics into its :class:`ScrapLogic`
    (``now``: the wall clock samples arrive at, injected for tests).

    >>> from plantstream.schemas.config import build_config
    >>> spec = scrap_spec(build_config({}, {}))
    >>> logic = spec.build(None)
    >>> logic.on_batch([Measurement(0, "m1", "reject_count", 3)])
    []
    >>> st = spec.codec.decode(spec.codec.encode(logic.state()))
    >>> st.machine, st.ledger["buffer"]   # waiting for the watermark (allowed lateness)
    ('m1', [(0, 1, 'reject_count', 3)])
    """

    def make(machine: str, site: str, line: str) -> ScrapTracker:
        return ScrapTracker.for_config(config, machine, site, line)

    def build(state: ScrapState | None) -> ScrapLogic:
        return ScrapLogic(make, state, now)

    return LogicSpec("scrap", SCRAP_STATE, build, _scrap_rows, filters=relevant)


# -- per scope key ---------------------------------------------------------------------------


@dataclass
class RateAggregator:
    """Sums the machines' contributions per boundary into ``scrap_rate`` rows (one scope key).

    >>> agg = RateAggregator(window_ms=3_600_000)
    >>> c = {"scope": "line", "key": "l1", "site": "s", "line": "l1", "window_end": 60_000}
    >>> _ = agg.on_contribution(c | {"machine": "a", "mg": 90, "mr": 10, "wg": 90, "wr": 10})
    >>> row = agg.on_contribution(c | {"machine": "b", "mg": 95, "mr": 5, "wg": 95, "wr": 5})
    >>> row["good"], row["reject"], row["scrap_rate"], row["first_pass_yield"], row["machines"]
    (185, 15, 0.075, 0.925, 2)
    """

    window_ms: int
    keep_ms: int = 24 * 3_600_000
    """Boundaries are kept this long behind the newest (machines may lag each other in a replay)."""
    version: int = 0
    by_end: dict[int, dict[str, tuple[int, int, int, int]]] = field(default_factory=dict)
    totals: dict[int, list[int]] = field(default_factory=dict)
    """Per boundary the sums of ``by_end`` (kept as contributions replace each other): a
    contribution costs the same whether the scope has 10 machines or 10,000."""
    newest: int = -1

    def on_contribution(self, c: dict[str, Any]) -> dict[str, Any]:
        end = int(c["window_end"])
        machine = str(c["machine"])
        per = self.by_end.get(end)
        if per is None:
            per = self.by_end[end] = {}
            self.totals[end] = [0, 0, 0, 0]
            if end > self.newest:
                self.newest = end
                floor = end - self.keep_ms
                for e in [e for e in self.by_end if e < floor]:
                    del self.by_end[e]
                    del self.totals[e]
        new = (int(c["mg"]), int(c["mr"]), int(c["wg"]), int(c["wr"]))
        old = per.get(machine)
        per[machine] = new
        sums = self.totals[end]
        for i in range(4):
            sums[i] += new[i] - (old[i] if old is not None else 0)
        mg, mr, wg, wr = sums
        total = wg + wr
        self.version += 1
        return {
            "scope": c["scope"], "key": c["key"], "site": c.get("site", ""),
            "line": c.get("line", "") if c["scope"] != "part" else "",
            "window_start": end - self.window_ms, "window_end": end,
            "good": mg, "reject": mr, "window_good": wg, "window_reject": wr,
            "scrap_rate": wr / total if total else None,
            "first_pass_yield": wg / total if total else None,
            "machines": len(per), "version": self.version,
        }


# -- per work order --------------------------------------------------------------------------


@dataclass
class CostJoin:
    """The join of one work order's scrap events with its reference data.

    >>> j = CostJoin()
    >>> ev = {"machine": "m", "ts": 5, "quantity": 4, "part_number": "P", "work_order": "WO-1", "version": 1}
    >>> [(r["cost"], r["costed"], r["version"]) for r in j.on_event(ev, None, 10)]
    [(0.0, 0, 2)]
    >>> ref = WorkOrderRef("WO-1", material_cost=2.5)
    >>> [(r["cost"], r["costed"], r["version"]) for r in j.on_ref(ref, None)]
    [(10.0, 1, 3)]
    """

    ref: WorkOrderRef | None = None
    pending: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    @staticmethod
    def costed(row: dict[str, Any], ref: WorkOrderRef | None, ideal_ms: float | None) -> dict[str, Any]:
        """The event row with its costs; version = 2 × event version (+1 when costed)."""
        if ref is None:
            return row | {"material_cost": 0.0, "labor_cost": 0.0, "cost": 0.0, "currency": "",
                          "costed": 0, "version": 2 * int(row["version"])}
        material, labor = ref.cost(row["quantity"], ideal_ms)
        return row | {"material_cost": material, "labor_cost": labor, "cost": material + labor,
                      "currency": ref.currency, "costed": 1, "version": 2 * int(row["version"]) + 1}

    def on_event(self, row: dict[str, Any], fallback: WorkOrderRef | None, max_pending: int,
                 ideal_ms: float | None = None) -> list[dict[str, Any]]:
        ref = self.ref or fallback
        key = (str(row["machine"]), int(row["ts"]))
        if ref is None and max_pending > 0 and row.get("work_order"):
            self.pending[key] = row
            while len(self.pending) > max_pending:
                del self.pending[next(iter(self.pending))]
        else:
            self.pending.pop(key, None)
        return [self.costed(row, ref, ideal_ms)]

    def on_ref(self, ref: WorkOrderRef, ideal: Any) -> list[dict[str, Any]]:
        """New reference data: cost the events that waited for it (``ideal(row)`` → ms)."""
        self.ref = ref
        rows = [self.costed(r, ref, ideal(r) if ideal else None) for r in self.pending.values()]
        self.pending.clear()
        return rows


RATE_STATE: StateCodec[RateAggregator] = StateCodec("scrap_rate", 1, RateAggregator)
"""The versioned codec of a scope key's :class:`RateAggregator` (kind ``scrap_rate``, format 1:
its fields; ``by_end`` boundary → machine → (mg, mr, wg, wr), ``totals`` boundary → sums)."""


def _dump_join(j: CostJoin) -> dict[str, Any]:
    ref = j.ref
    return {"ref": None if ref is None else (ref.work_order, ref.part_number, ref.material_cost,
                                             ref.labor_rate, ref.labor_s_per_unit, ref.currency),
            "pending": [(k, dict(row)) for k, row in j.pending.items()]}


def _load_join(p: dict[str, Any]) -> CostJoin:
    ref = p["ref"]
    return CostJoin(None if ref is None else WorkOrderRef(*ref),
                    {(str(k[0]), int(k[1])): dict(row) for k, row in p["pending"]})


JOIN_STATE: StateCodec[CostJoin] = StateCodec("scrap_cost", 1, CostJoin, _dump_join, _load_join)
"""The versioned codec of a work order's :class:`CostJoin` (kind ``scrap_cost``, format 1: the
reference as a tuple of its fields, the events waiting for it as ``((machine, ts), row)``
pairs in arrival order)."""


class RateLogic(op.StatefulLogic[dict[str, Any], dict[str, Any], bytes]):
    """The Bytewax step of one scope key (``scope|key``): its :class:`RateAggregator`; the
    snapshot is the aggregator encoded by :data:`RATE_STATE`."""

    def __init__(self, window_ms: int, keep_ms: int, resume: bytes | None) -> None:
        self.agg = RATE_STATE.decode(resume) if resume else RateAggregator(window_ms, keep_ms)

    def on_item(self, value: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        return [self.agg.on_contribution(value)], op.StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return RATE_STATE.encode(self.agg)


Joined = tuple[str, Any]
"""("ref", WorkOrderRef) or ("event", uncosted scrap event row)."""


class JoinLogic(op.StatefulLogic[Joined, dict[str, Any], bytes]):
    """The Bytewax step of one work order: its :class:`CostJoin` with the reference data
    (``static``: the work-order file, the fallback until the topic sends a record); the
    snapshot is the join encoded by :data:`JOIN_STATE`."""

    def __init__(self, config: PlantConfig, static: dict[str, WorkOrderRef], resume: bytes | None) -> None:
        self.config = config
        self.static = static
        self.join = JOIN_STATE.decode(resume) if resume else CostJoin()

    def _ideal(self, row: dict[str, Any]) -> float | None:
        return self.config.machine(str(row["machine"])).ideal_for_part(str(row.get("part_number", "")))

    def on_item(self, value: Joined) -> tuple[list[dict[str, Any]], bool]:
        kind, item = value
        if kind == "ref":
            return self.join.on_ref(item, self._ideal), op.StatefulLogic.RETAIN
        fallback = self.static.get(str(item.get("work_order", "")))
        rows = self.join.on_event(item, fallback, self.config.scrap.max_pending_per_work_order,
                                  self._ideal(item))
        return rows, op.StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return JOIN_STATE.encode(self.join)


def iter_rate_rows(rows: Iterable[Output]) -> Iterator[dict[str, Any]]:
    """The rate contributions among a tracker's outputs (helper for tests and tools)."""
    return (r for k, r in rows if k == "rate")
