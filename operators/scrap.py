"""Scrap: reject deltas become scrap events with reason and cost; rolling scrap rate and yield.

Three pure pieces, each driven by one thin Bytewax step in :mod:`flows.scrap`:

:class:`ScrapTracker` (one per machine, key = machine id)
    Reads ``reject_count`` / ``good_count`` (cumulative, reset-safe deltas via
    :class:`operators.oee.Counter`), ``reject_parts`` / ``good_parts`` (increments), and the
    context ``scrap_reason``, ``part_number``, ``work_order`` (each applies until changed).
    Every reject delta is a **scrap event** keyed by ``(machine, ts)``: quantity, reason (the
    latest ``scrap_reason``, or ``unassigned``), category (:meth:`ScrapConfig.category`), part
    number and work order. Samples are ordered in event time like the OEE accounting: they wait
    until the watermark (largest ts − ``lateness.allowed_lateness_s``) passes them, so any
    arrival order within the allowed lateness gives the same events. A ``scrap_reason`` older
    than the watermark but within ``lateness.restatement_horizon_s`` is a **reclassification**:
    it applies from its ``ts`` until the next reason change, and every scrap event it changes is
    emitted again with a higher ``version`` (the table keeps the latest, never a second event).
    Other samples older than the watermark go to the dead letter (reason ``late``). Each time
    event time passes a hop boundary ``B`` (``scrap.hop_s``) the tracker emits its **rate
    contributions** for ``B``: the minute's good/reject counts and the sums over the rolling
    window ``[B − window_s, B)``, per machine, for its line and per part number.
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
[(2000, 'dent', 2)]
"""

from __future__ import annotations

import bisect
import csv
import io
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from plantstream.operators.oee import Counter
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import ConfigError
from plantstream.schemas.measurement import (
    GOOD_COUNT,
    GOOD_PARTS,
    PART_NUMBER,
    REJECT_COUNT,
    REJECT_PARTS,
    SCRAP_REASON,
    WORK_ORDER,
    Measurement,
)
from plantstream.schemas.scrap_config import UNASSIGNED, ScrapConfig

SCRAP_METRICS = frozenset({GOOD_COUNT, REJECT_COUNT, GOOD_PARTS, REJECT_PARTS, PART_NUMBER,
                           WORK_ORDER, SCRAP_REASON})
"""The metrics the scrap tracker reads."""

Output = tuple[str, dict[str, Any]]
"""(kind, row): ``scrap_events`` (uncosted), ``rate`` (a contribution) or ``deadletter``."""

_Event = tuple[int, int, str, Any]


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
class _Scrap:
    quantity: int
    part: str
    work_order: str
    reason: str


@dataclass
class _State:
    max_ts: int = -1
    seq: int = 0
    version: int = 0
    buffer: list[_Event] = field(default_factory=list)
    counters: dict[str, Counter] = field(default_factory=dict)
    part: str = ""
    work_order: str = ""
    reasons: list[tuple[int, str]] = field(default_factory=list)
    """Reason timeline ``(ts, reason)`` within the restatement horizon (sorted)."""
    events: dict[int, _Scrap] = field(default_factory=dict)
    """Scrap events within the restatement horizon, by ts (for reclassification)."""
    buckets: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    """Hop bucket start → part → [good, reject]."""
    next_boundary: int = -1


class ScrapTracker:
    """One machine's scrap events and rate contributions (pure; no I/O, no clock)."""

    def __init__(self, machine: str, site: str, line: str, scrap: ScrapConfig, lateness_ms: int,
                 horizon_ms: int) -> None:
        self.machine, self.site, self.line = machine, site, line
        self.cfg = scrap
        self.window_ms = scrap.window_s * 1000
        self.hop_ms = scrap.hop_s * 1000
        self.lateness_ms = lateness_ms
        self.horizon_ms = horizon_ms
        self.s = _State()
        self._out: list[Output] = []

    @classmethod
    def for_config(cls, config: PlantConfig, machine: str, site: str = "", line: str = "") -> ScrapTracker:
        """The tracker of ``machine``; site and line from the config unless given (a source
        that sends them)."""
        info = config.machine(machine)
        return cls(machine, site or info.site, line or info.line, config.scrap,
                   round(config.lateness.allowed_lateness_s * 1000),
                   round(config.lateness.restatement_horizon_s * 1000))

    # -- state ---------------------------------------------------------------------------------
    def dump(self) -> bytes:
        """The state as bytes (a cheap-to-copy Bytewax snapshot)."""
        return pickle.dumps((self.machine, self.site, self.line, self.s), protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, blob: bytes) -> None:
        _, self.site, self.line, self.s = pickle.loads(blob)

    @staticmethod
    def identity_of(blob: bytes) -> tuple[str, str, str]:
        """(machine, site, line) of a :meth:`dump`."""
        machine, site, line = pickle.loads(blob)[:3]
        return str(machine), str(site), str(line)

    @property
    def watermark(self) -> int:
        return self.s.max_ts - self.lateness_ms

    # -- input ---------------------------------------------------------------------------------
    def process(self, samples: Iterable[tuple[int, str, Any]]) -> list[Output]:
        """Feed ``(ts, metric, value)`` samples (any order); returns the rows that became final."""
        for ts, metric, value in samples:
            self.on_sample(ts, metric, value)
        return self.take()

    def take(self) -> list[Output]:
        out, self._out = self._out, []
        return out

    def on_sample(self, ts: int, metric: str, value: Any, raw: Measurement | None = None) -> None:
        s = self.s
        s.seq += 1
        if s.max_ts >= 0 and ts < self.watermark:
            if metric == SCRAP_REASON and ts >= s.max_ts - self.horizon_ms:
                self._reclassify(ts, reason_text(value))
            else:
                m = raw or Measurement(ts, self.machine, metric, value, self.site, self.line)
                self._out.append(("deadletter", {"ts": ts, "source": f"scrap:{self.machine}:{metric}",
                                                 "reason": "late", "raw": m.to_json().decode()}))
            return
        bisect.insort(s.buffer, (ts, s.seq, metric, value), key=lambda e: (e[0], e[1]))
        if ts > s.max_ts:
            s.max_ts = ts
        self._drain(self.watermark)

    def finish(self) -> list[Output]:
        """End of input: apply everything and close the hop containing the last sample.

        The state is left as it was, so more input later continues it and writes that hop
        again with a higher version.
        """
        out = self.take()
        if self.s.max_ts < 0:
            return out
        keep = pickle.dumps(self.s, protocol=pickle.HIGHEST_PROTOCOL)
        end = self.s.max_ts - self.s.max_ts % self.hop_ms + self.hop_ms
        self._drain(self.s.max_ts, boundaries_upto=end)
        out.extend(self.take())
        version = self.s.version
        self.s = pickle.loads(keep)
        self.s.version = version
        return out

    # -- logic -----------------------------------------------------------------------------------
    def _drain(self, upto: int, boundaries_upto: int | None = None) -> None:
        s = self.s
        buf = s.buffer
        i = 0
        while i < len(buf) and buf[i][0] <= upto:
            ev = buf[i]
            self._boundaries(ev[0])  # hops that end at or before this sample are complete
            self._apply(ev)
            i += 1
        if i:
            del buf[:i]
        self._boundaries(upto if boundaries_upto is None else boundaries_upto)

    def _apply(self, ev: _Event) -> None:
        ts, _, metric, value = ev
        s = self.s
        if s.next_boundary < 0:
            s.next_boundary = ts - ts % self.hop_ms + self.hop_ms
        if metric == SCRAP_REASON:
            reason = reason_text(value)
            if not s.reasons or s.reasons[-1][1] != reason:
                self._set_reason(ts, reason)
        elif metric == PART_NUMBER:
            s.part = str(value)
        elif metric == WORK_ORDER:
            s.work_order = str(value)
        elif metric in (GOOD_COUNT, REJECT_COUNT):
            v = _number(value)
            if v is None:
                return
            c = s.counters.get(metric)
            if c is None:
                c = s.counters[metric] = Counter()
            d = c.delta(v)
            if d > 0:
                self._count(ts, d, metric == REJECT_COUNT)
        elif metric in (GOOD_PARTS, REJECT_PARTS):
            v = _number(value)
            if v is not None and v > 0:
                self._count(ts, v, metric == REJECT_PARTS)

    def _set_reason(self, ts: int, reason: str) -> None:
        reasons = self.s.reasons
        i = bisect.bisect_left(reasons, ts, key=lambda e: e[0])
        if i < len(reasons) and reasons[i][0] == ts:
            reasons[i] = (ts, reason)
        else:
            reasons.insert(i, (ts, reason))

    def reason_at(self, ts: int) -> str:
        reasons = self.s.reasons
        i = bisect.bisect_right(reasons, ts, key=lambda e: e[0])
        return reasons[i - 1][1] if i else UNASSIGNED

    def _count(self, ts: int, qty: float, reject: bool) -> None:
        s = self.s
        m = ts - ts % self.hop_ms
        b = s.buckets.setdefault(m, {}).setdefault(s.part, [0, 0])
        b[1 if reject else 0] += int(qty)
        if not reject:
            return
        ev = s.events.get(ts)
        if ev is None:
            ev = s.events[ts] = _Scrap(0, s.part, s.work_order, self.reason_at(ts))
        ev.quantity += int(qty)
        self._emit_event(ts, ev)

    def _emit_event(self, ts: int, ev: _Scrap) -> None:
        self.s.version += 1
        self._out.append(("scrap_events", {
            "machine": self.machine, "site": self.site, "line": self.line, "ts": ts,
            "quantity": ev.quantity, "reason": ev.reason, "category": self.cfg.category(ev.reason),
            "part_number": ev.part, "work_order": ev.work_order, "version": self.s.version}))

    def _reclassify(self, ts: int, reason: str) -> None:
        s = self.s
        self._set_reason(ts, reason)
        i = bisect.bisect_right(s.reasons, ts, key=lambda e: e[0])
        until = s.reasons[i][0] if i < len(s.reasons) else None
        for ets in sorted(s.events):
            if ets < ts or (until is not None and ets >= until):
                continue
            ev = s.events[ets]
            if ev.reason != reason:
                ev.reason = reason
                self._emit_event(ets, ev)

    def _boundaries(self, upto: int) -> None:
        """Emit the rate contributions of every hop boundary ``B <= upto`` not yet emitted."""
        s = self.s
        if not 0 <= s.next_boundary <= upto:
            return
        while 0 <= s.next_boundary <= upto:
            b = s.next_boundary
            if not any(b - self.window_ms <= m < b for m in s.buckets):
                later = [m for m in s.buckets if m >= b]
                if not later:
                    s.next_boundary = upto - upto % self.hop_ms + self.hop_ms
                    self._prune(b)
                    break
                s.next_boundary = min(later) + self.hop_ms
                continue
            self._contribute(b)
            s.next_boundary = b + self.hop_ms
        self._prune(min(s.next_boundary, upto))

    def _prune(self, t: int) -> None:
        s = self.s
        for m in [m for m in s.buckets if m < t - self.window_ms]:
            del s.buckets[m]
        floor = s.max_ts - self.horizon_ms
        for ts in [ts for ts in s.events if ts < floor]:
            del s.events[ts]
        while len(s.reasons) >= 2 and s.reasons[1][0] <= floor:
            s.reasons.pop(0)

    def _contribute(self, b: int) -> None:
        s = self.s
        minute = s.buckets.get(b - self.hop_ms, {})
        window: dict[str, list[int]] = {}
        for m, parts in s.buckets.items():
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
        self._out.append(("rate", base | {"scope": "machine", "key": self.machine,
                                          "mg": mg, "mr": mr, "wg": wg, "wr": wr}))
        if self.line:
            self._out.append(("rate", base | {"scope": "line", "key": self.line,
                                              "mg": mg, "mr": mr, "wg": wg, "wr": wr}))
        for part in sorted(window):
            if not part:
                continue
            pm = minute.get(part, [0, 0])
            self._out.append(("rate", base | {"scope": "part", "key": part, "mg": pm[0], "mr": pm[1],
                                              "wg": window[part][0], "wr": window[part][1]}))


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


def iter_rate_rows(rows: Iterable[Output]) -> Iterator[dict[str, Any]]:
    """The rate contributions among a tracker's outputs (helper for tests and tools)."""
    return (r for k, r in rows if k == "rate")
