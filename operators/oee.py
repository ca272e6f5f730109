"""Time-in-state accounting: additive OEE facts per machine and window, in event time.

One keyed stateful step per machine (key = machine id) integrates the time spent in each
machine state and splits it exactly at window (``window_s``), shift and break boundaries
(:mod:`operators.shifts`). When event time passes a window's end the window's **facts** leave
the operator: milliseconds become seconds of all, scheduled, planned production, run,
unplanned-stop, setup, small-stop and excluded time, ideal seconds (ideal cycle × count) and
good / reject / total counts, per shift, part number and work order. Ratios are never emitted;
the query layer computes them from sums (:func:`ratios`).

Time model (KPI.md), per span of time in one state:

- not in a shift (or a holiday), or state bucket ``not_scheduled``: all time only — except a
  running machine, which is counted as planned and run time and flagged in
  ``unscheduled_run_s``;
- in a break, or bucket ``excluded``: scheduled, not planned (``excluded_s``);
- ``run``: planned and run; ``setup`` / ``unplanned_stop``: planned and that loss;
- ``small_stop`` (and stops of a small-stop state that end before ``microstop_threshold_s``):
  planned and run time, with the same seconds in ``small_stop_s`` (a performance loss inside
  run time). So ``planned_s = run_s + unplanned_stop_s + setup_s`` always.

Event time is the machine's :class:`~operators.ledger.Ledger` (shared with scrap): the
accounting is a fold (:class:`OeeFold`) that sees the machine's samples in event-time order.
Samples wait until the watermark (largest timestamp − ``lateness.allowed_lateness_s``) passes
them, so any arrival order within the allowed lateness gives the same facts. A sample older
than that but within ``lateness.restatement_horizon_s`` — also one earlier than the first
sample seen of the machine — restates: the fold is restored from the journal's last
checkpoint before it, the samples since are applied again with it in its place, and every
window and downtime event whose content changed is emitted again with a higher ``version``
(tables keep the latest version; an event that no longer exists gets ``deleted = 1``). Older
samples go to the dead letter with reason ``late``, or ``clock_skew`` when the machine's clock
is wrong (the ledger's clock policy, config section ``clock``: ahead of the wall clock, far
behind the machine's time, gaps and re-bases; redeliveries are absorbed). The end of input
closes every open window and resolves every pending stop provisionally, without ending them: a
run resumed later restates them.

Counters (:mod:`operators.counters`, docs/oee.md "Counters"): ``good_count`` /
``reject_count`` / ``total_count`` are cumulative; the first value is a baseline, a decrease is
a reset or a wrap only when it looks like one (the plant's and machine's ``counters:``), any
other decrease is a step back: ignored, and counted in the window's ``counter_stepbacks``.
``good_parts`` / ``reject_parts`` are increments. Any two of good, reject and total give the
third (:class:`~operators.counters.Balance`): total = good + reject; good + total gives reject =
total − good, total + reject gives good = total − reject, total alone counts every part good;
with all three, good and reject are taken as sent. The ideal time follows ``total_count`` when
the machine sends it (else good + reject). Ideal cycle time: the
``ideal_cycle_time_ms`` metric when sent (until the part number changes), else the config's
per part number, else per machine.

Examples
--------
>>> from plantstream.schemas.config import PlantConfig
>>> cfg = PlantConfig.model_validate({"lines": [{"id": "l1", "machines": [
...     {"id": "m1", "ideal_cycle_time_ms": 1000}]}], "lateness": {"allowed_lateness_s": 0}})
>>> acc = OeeAccounting.for_config(cfg, "m1")
>>> out = acc.process([(0, "machine_state", "running"), (0, "good_count", 100),
...                    (30_000, "good_count", 127), (30_000, "reject_count", 0),
...                    (45_000, "reject_count", 2), (60_000, "machine_state", "fault"),
...                    (90_000, "machine_state", "running"), (120_000, "good_count", 130)])
>>> facts = [r for t, r in out + acc.finish() if t == "oee_facts"]
>>> [(f["window_start"], f["run_s"], f["unplanned_stop_s"], f["good"], f["reject"], f["ideal_s"])
...  for f in facts]
[(0, 60.0, 0.0, 27, 2, 29.0), (60000, 30.0, 30.0, 0, 0, 0.0), (120000, 0.0, 0.0, 3, 0, 3.0)]
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Callable, Hashable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from plantstream.operators.counters import (
    DEFAULT_RULES,
    GOOD,
    REJECT,
    SIDE,
    Balance,
    Counter,
    CounterRules,
)
from plantstream.operators.downtime import DowntimeTracker, Stop, fault_text
from plantstream.operators.ledger import (
    ORIGIN,
    ClockPolicy,
    Emitted,
    Event,
    Ledger,
    Output,
    order_key,
    upgrade_state_v1,
)
from plantstream.operators.logic import LogicError, LogicSpec, MachineLogic
from plantstream.operators.shifts import ShiftCalendar, Span
from plantstream.operators.state import StateCodec
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import (
    FAULT_CODE,
    GOOD_COUNT,
    GOOD_PARTS,
    IDEAL_CYCLE_TIME_MS,
    MACHINE_STATE,
    PART_NUMBER,
    REASON_CODE,
    REASON_SPLIT,
    REJECT_COUNT,
    REJECT_PARTS,
    TOTAL_COUNT,
    WORK_ORDER,
    Measurement,
)
from plantstream.schemas.oee_config import LossConfig

OEE_METRICS = frozenset({MACHINE_STATE, GOOD_COUNT, REJECT_COUNT, TOTAL_COUNT, GOOD_PARTS,
                         REJECT_PARTS, IDEAL_CYCLE_TIME_MS, PART_NUMBER, WORK_ORDER, FAULT_CODE,
                         REASON_CODE, REASON_SPLIT})
"""The metrics the OEE accounting reads; everything else passes it by."""

# fact vector layout (times in ms, counts as ints, ideal in ms as float)
ALL, SCHED, PLANNED, RUN, UNPLANNED, SETUP, SMALL, EXCLUDED, UNSCHED_RUN = range(9)
IDEAL, V_GOOD, V_REJECT, V_TOTAL, STOPS, SMALL_STOPS, TOTAL_CTR = range(9, 16)
_VEC_LEN = 16
STEPBACKS = 16
"""Ignored counter step backs: a 17th slot, added to a window's vector by the first one (so the
state of a machine without step backs is as it was)."""
TIME_COLUMNS = ("all_s", "scheduled_s", "planned_s", "run_s", "unplanned_stop_s", "setup_s",
                "small_stop_s", "excluded_s", "unscheduled_run_s")
"""Fact columns in seconds, in fact-vector order."""


FactKey = tuple[str, int, int, str, str]
"""(shift, shift_start, production day ordinal, part number, work order)."""


@dataclass
class Account:
    """The accounting state of one machine at its ``cursor`` (small and picklable)."""

    cursor: int = -1
    state: str = ""
    state_since: int = 0
    part: str = ""
    work_order: str = ""
    ideal_override_ms: float | None = None
    fault: str = ""
    counters: dict[str, Counter] = field(default_factory=dict)
    bal: Balance = field(default_factory=Balance)
    """Which of good, reject and total the machine reports; the derived count owed."""
    windows: dict[int, dict[FactKey, list[float]]] = field(default_factory=dict)
    pending: list[tuple[int, FactKey, int]] | None = None
    """Stop time not yet known to be a small stop or an unplanned stop: (window, key, ms)."""
    stop_resolved: bool = True
    downtime: DowntimeTracker = field(default_factory=DowntimeTracker)
    refused: list[tuple[int, int, str, Any, str]] = field(default_factory=list)
    """Samples the fold could not use (a ``reason_split`` outside a stop) as (ts, seq, metric,
    value, reason), held until they are final (:meth:`OeeFold._release`)."""


def ratios(planned_s: float, run_s: float, ideal_s: float, good: float, total: float,
           all_s: float) -> dict[str, float | None]:
    """Availability, performance, quality, OEE (both forms) and TEEP from sums.

    Performance above 1 is returned as measured (the ideal cycle time is wrong), not capped;
    without ideal time (no ideal cycle time known, or no part counted) it is None, not 0.

    >>> ratios(60, 60, 0, 27, 29, 60)["performance"] is None
    True
    >>> r = ratios(420 * 60, 373 * 60, 19_271, 19_271 - 423, 19_271, 480 * 60)
    >>> [round(100 * r[k], 2) for k in ("availability", "performance", "quality", "oee", "oee_good")]
    [88.81, 86.11, 97.8, 74.79, 74.79]
    """
    a = run_s / planned_s if planned_s else None
    p = ideal_s / run_s if run_s and ideal_s else None
    q = good / total if total else None
    oee = a * p * q if a is not None and p is not None and q is not None else None
    oee_good = (ideal_s * good / total) / planned_s if planned_s and total and ideal_s else None
    teep = oee * planned_s / all_s if oee is not None and all_s else None
    return {"availability": a, "performance": p, "quality": q, "oee": oee, "oee_good": oee_good,
            "teep": teep}


@dataclass
class OeeState:
    """What an OEE accounting keeps between epochs, as plain data (see :data:`OEE_STATE`)."""

    machine: str
    site: str
    line: str
    ledger: dict[str, Any]
    """The event-time ledger: watermark, buffer, journal of the horizon, version."""
    account: dict[str, Any]
    """The fold's :class:`Account` (:meth:`OeeFold.dump_state`)."""



OEE_STATE: StateCodec[OeeState] = StateCodec("oee", 2, OeeState, upgrades={1: upgrade_state_v1})
"""The versioned codec of :class:`OeeState` (kind ``oee``). Format 2: the ledger's journal by
column (:func:`~plantstream.operators.ledger.pack_events`); format 1 (segments of pickled sample
tuples) is upgraded on decode."""


def _stop_payload(stop: Stop | None) -> dict[str, Any] | None:
    """A stop as plain data; ``splits`` is an optional key, written only when the stop is split
    (a state without it, as written before splits existed, reads as unsplit)."""
    if stop is None:
        return None
    vars(stop).setdefault("splits", [])  # a Stop pickled before splits existed (pre-ledger states)
    p = asdict(stop)
    if not p["splits"]:
        del p["splits"]
    return p


def _stop_of(p: dict[str, Any] | None) -> Stop | None:
    if p is None:
        return None
    return Stop(**(p | {"context": dict(p["context"]),
                        "splits": [(t, r, c) for t, r, c in p.get("splits", ())]}))


def _account_payload(a: Account) -> dict[str, Any]:
    """An :class:`Account` as plain data (the OEE fold's state)."""
    return {
        "cursor": a.cursor, "state": a.state, "state_since": a.state_since, "part": a.part,
        "work_order": a.work_order, "ideal_override_ms": a.ideal_override_ms, "fault": a.fault,
        "counters": {k: c.last for k, c in a.counters.items()},
        "has_reject": a.bal.reject, "has_total": a.bal.total,
        "windows": {ws: {key: list(vec) for key, vec in win.items()} for ws, win in a.windows.items()},
        "pending": None if a.pending is None else list(a.pending),
        "stop_resolved": a.stop_resolved,
        "downtime": (_stop_payload(a.downtime.current), _stop_payload(a.downtime.last)),
    } | _balance_extra(a) | _refused_extra(a)


def _refused_extra(a: Account) -> dict[str, Any]:
    """The optional key ``refused``: only while the fold holds refused samples (an Account
    pickled before it existed has none)."""
    refused = vars(a).get("refused")
    return {"refused": list(refused)} if refused else {}


def _balance_extra(a: Account) -> dict[str, Any]:
    """The optional keys of an account (absent = their default, as in states written before
    them): ``has_good`` when it is not just "sends ``good_count``", ``owed`` while a derived
    count is owed (:class:`~operators.counters.Balance`)."""
    out: dict[str, Any] = {}
    if a.bal.good != (GOOD_COUNT in a.counters):
        out["has_good"] = a.bal.good
    if a.bal.owed:
        out["owed"] = (a.bal.owed, a.bal.owed_ts)
    return out


def _balance_of(p: dict[str, Any]) -> Balance:
    owed, owed_ts = p.get("owed", (0.0, -1))
    return Balance(p.get("has_good", GOOD_COUNT in p["counters"]), p["has_reject"], p["has_total"],
                   owed, owed_ts)


def pre_ledger_payload(blob: bytes) -> dict[str, Any]:
    """An OEE accounting's snapshot from before the event-time ledger (a pickled tuple of
    machine, :class:`Account`, buffer, watermark, journal of pickled checkpoints …, found in
    alert states of format 1) as an :class:`OeeState` payload of format 1.

    Site and line were not kept then: they are left empty, so the resumed accounting keeps the
    plant config's (:meth:`OeeAccounting.restore`) until a sample names them. A segment's
    ``from`` is its checkpoint's time; the first segment, taken before any sample, reaches back
    to the origin, as in the ledger.
    """
    (machine, acc, buffer, max_ts, seq, version, journal, ckpt, recent,
     _dt_starts) = pickle.loads(blob)  # our own recovery store, of the release before

    def start(ts: int, account: Account) -> int:
        return ORIGIN if account.cursor < 0 else ts

    def legacy(account: Account) -> Account:  # kept has_reject / has_total, no Balance yet
        if "bal" not in vars(account):
            old = vars(account)
            account.bal = Balance(GOOD_COUNT in account.counters, old.pop("has_reject", False),
                                  old.pop("has_total", False))
        return account

    segments = []
    for ts, seg in journal:
        ck_blob, evs = pickle.loads(zlib.decompress(seg))
        ck: Account = legacy(pickle.loads(ck_blob))
        segments.append((start(ts, ck), zlib.compress(pickle.dumps(
            (_account_payload(ck), [tuple(e) for e in evs]), pickle.HIGHEST_PROTOCOL))))
    open_from = open_state = None
    open_since = 0
    if ckpt is not None:
        ck = legacy(pickle.loads(ckpt[1]))
        open_from, open_since, open_state = start(ckpt[0], ck), ckpt[0], _account_payload(ck)
    events = [tuple(e) for e in recent]
    ledger = {"max_ts": max_ts, "seq": seq, "version": version, "pos": acc.cursor,
              "last_key": order_key(events[-1]) if events else None,
              "buffer": sorted((tuple(e) for e in buffer), key=order_key), "segments": segments,
              "open_from": open_from, "open_since": open_since, "open_state": open_state,
              "recent": events}
    return {"machine": machine, "site": "", "line": "", "ledger": ledger,
            "account": _account_payload(legacy(acc))}


class OeeAccounting(Ledger):
    """Per-machine event-time accounting: samples in, fact and downtime rows out.

    Pure apart from its own state: no I/O, no clock. An :class:`OeeFold` on the machine's
    :class:`~operators.ledger.Ledger`: :meth:`process` takes samples in any order;
    :meth:`finish` is the end of input. The Bytewax step only routes samples here and
    snapshots :meth:`dump`.
    """

    def __init__(self, machine: str, site: str, line: str, config_ideal_ms: float | None,
                 ideal_by_part: dict[str, float], calendar: ShiftCalendar, losses: LossConfig,
                 microstop_ms: int, lateness_ms: int, horizon_ms: int,
                 counter_rules: CounterRules = DEFAULT_RULES, clock: ClockPolicy | None = None) -> None:
        self.machine = machine
        self.acc_fold = OeeFold(machine, site, line, config_ideal_ms, ideal_by_part, calendar, losses,
                                microstop_ms, counter_rules, horizon_ms)
        super().__init__(self.acc_fold, lateness_ms, horizon_ms, self._late, clock)

    @classmethod
    def for_config(cls, config: PlantConfig, machine: str,
                   calendar: ShiftCalendar | None = None) -> OeeAccounting:
        info = config.machine(machine)
        return cls(machine, info.site, info.line, info.config.ideal_cycle_time_ms,
                   dict(info.config.ideal_cycle_time_ms_by_part),
                   calendar or ShiftCalendar.from_config(config), config.losses,
                   round(config.microstop_threshold_s * 1000),
                   round(config.lateness.allowed_lateness_s * 1000),
                   round(config.lateness.restatement_horizon_s * 1000),
                   CounterRules.of(config.counters_for(machine)), ClockPolicy.of(config))

    @property
    def site(self) -> str:
        return self.acc_fold.site

    @site.setter
    def site(self, value: str) -> None:
        self.acc_fold.site = value

    @property
    def line(self) -> str:
        return self.acc_fold.line

    @line.setter
    def line(self, value: str) -> None:
        self.acc_fold.line = value

    @property
    def acc(self) -> Account:
        """The accounting state at the fold's cursor."""
        return self.acc_fold.acc

    # -- state for recovery ------------------------------------------------------------------
    def state(self) -> OeeState:
        return OeeState(self.machine, self.site, self.line, self.ledger_payload(), self.acc_fold.dump_state())

    def dump(self) -> bytes:
        """The whole state, encoded by :data:`OEE_STATE` (an immutable Bytewax snapshot)."""
        return OEE_STATE.encode(self.state())

    def load(self, blob: bytes) -> None:
        """Continue from a :meth:`dump`."""
        self.restore(OEE_STATE.decode(blob))

    def restore(self, st: OeeState) -> None:
        """Continue from a decoded state (of this machine); an empty site or line (not known
        when the state was written) keeps the plant config's."""
        self.site, self.line = st.site or self.site, st.line or self.line
        self.load_ledger(st.ledger)
        self.acc_fold.load_state(st.account)

    @staticmethod
    def machine_of(blob: bytes) -> str:
        """The machine id a :meth:`dump` belongs to."""
        return OEE_STATE.decode(blob).machine

    # -- input -------------------------------------------------------------------------------
    def process(self, samples: Iterable[tuple[int, str, Any]]) -> list[Output]:
        """Feed ``(ts, metric, value)`` samples one at a time, in the order given (any order);
        returns the rows that became final. (:meth:`ingest` takes samples that arrived together.)"""
        for ts, metric, value in samples:
            self.ingest(((ts, metric, value),))
        return self.take()

    def on_tick(self, ts: int, now_ms: int | None = None) -> None:
        """Another metric from this machine (a temperature, a vibration) was measured at ``ts``.

        The machine's event time has passed ``ts``, so windows close while it sits in one state
        (a PLC reports its state only when it changes). A tick is never late and never buffered:
        one older than the newest sample changes nothing.

        >>> from plantstream.schemas.config import build_config
        >>> acc = OeeAccounting.for_config(build_config({}, {}), "press-01")
        >>> acc.on_sample(0, "machine_state", "running")
        >>> acc.on_tick(30_000); acc.take()
        []
        >>> acc.on_tick(185_000)   # 3 min later: minutes 0 and 1 are final (lateness 60 s)
        >>> [(r["window_start"], r["run_s"]) for t, r in acc.take() if t == "oee_facts"]
        [(0, 60.0), (60000, 60.0)]
        """
        self.tick(ts, now_ms)

    def flush(self) -> list[Output]:  # type: ignore[override]
        """Apply every buffered sample now (the machine went quiet: its buffered samples are
        taken as final, so an open stop becomes visible). Samples that arrive later for an
        earlier time restate, so the final rows are the same as without the flush."""
        super().flush()
        return self.take()

    def finish(self) -> list[Output]:  # type: ignore[override]
        """End of input: every open window and stop, as of the last sample, provisionally.

        The state itself is left as it was, so more input later continues it and restates
        these rows with a higher version.
        """
        super().finish()
        return self.take()

    def _late(self, ev: Event, raw: Measurement | None) -> dict[str, Any]:
        m = raw or Measurement(ev[0], self.machine, ev[2], ev[3], self.site, self.line)
        return {"ts": ev[0], "source": f"oee:{self.machine}:{ev[2]}", "reason": "late",
                "raw": m.to_json().decode()}


class OeeFold:
    """The OEE accounting rules over one machine's samples in event-time order (a ledger fold).

    Emits ``("oee_facts", window_start, rows)`` when a window closes (its rows share one
    version), ``("downtime_events", start, [row])`` for every change of a stop, and
    ``("deadletter", key, [row])`` for a sample it refused once that is final (``horizon_ms``
    of event time later, or at the end of input; see :meth:`_release`).
    """

    MAX_REFUSED = 64
    """Refused samples held at most; beyond, the oldest is dead-lettered at once."""

    def __init__(self, machine: str, site: str, line: str, config_ideal_ms: float | None,
                 ideal_by_part: dict[str, float], calendar: ShiftCalendar, losses: LossConfig,
                 microstop_ms: int, counter_rules: CounterRules = DEFAULT_RULES,
                 horizon_ms: int | None = None) -> None:
        self.machine, self.site, self.line = machine, site, line
        self.horizon_ms = horizon_ms
        self.rules = counter_rules
        self.config_ideal_ms = config_ideal_ms
        self.ideal_by_part = ideal_by_part
        self.cal = calendar
        self.losses = losses
        self.microstop_ms = microstop_ms
        self.w = calendar.window_ms
        self.acc = Account()
        self._out: list[Emitted] = []

    # -- the fold protocol ---------------------------------------------------------------------
    def reset(self) -> None:
        self.acc = Account()
        self._out = []

    def take(self) -> list[Emitted]:
        out, self._out = self._out, []
        return out

    def dump_state(self) -> dict[str, Any]:
        return _account_payload(self.acc)

    def load_state(self, p: dict[str, Any]) -> None:
        self.acc = Account(
            cursor=p["cursor"], state=p["state"], state_since=p["state_since"], part=p["part"],
            work_order=p["work_order"], ideal_override_ms=p["ideal_override_ms"], fault=p["fault"],
            counters={k: Counter(v) for k, v in p["counters"].items()},
            bal=_balance_of(p),
            windows={ws: {tuple(key): list(vec) for key, vec in win.items()}
                     for ws, win in p["windows"].items()},
            pending=None if p["pending"] is None else [tuple(x) for x in p["pending"]],
            stop_resolved=p["stop_resolved"],
            downtime=DowntimeTracker(_stop_of(p["downtime"][0]), _stop_of(p["downtime"][1])),
            refused=[tuple(r) for r in p.get("refused", ())])
        self._out = []

    def advance(self, upto: int) -> None:
        self._settle(upto)
        acc = self.acc
        if upto > acc.cursor >= 0 and (upto // self.w != acc.cursor // self.w or acc.pending is not None):
            self._advance(upto)
        if acc.refused:
            self._release(upto)

    def finish(self) -> None:
        if self.acc.refused:
            self._release(None)
        if self.acc.cursor < 0:
            return
        self._settle(None)
        self._resolve_pending(final=True)
        self._close_windows(None)
        self._downtime(self.acc.downtime.tick(self.acc.cursor))

    def carry(self) -> list[tuple[str, Any]]:
        """The machine's context as samples, for a re-base onto a new timeline (its clock
        jumped): part number, work order, ideal cycle time, the last value of each cumulative
        counter, the fault code and the state."""
        acc = self.acc
        out: list[tuple[str, Any]] = []
        if acc.part:
            out.append((PART_NUMBER, acc.part))
        if acc.work_order:
            out.append((WORK_ORDER, acc.work_order))
        if acc.ideal_override_ms is not None:
            out.append((IDEAL_CYCLE_TIME_MS, acc.ideal_override_ms))
        out += [(metric, c.last) for metric, c in acc.counters.items() if c.last is not None]
        if acc.fault:
            out.append((FAULT_CODE, acc.fault))
        if acc.state:
            out.append((MACHINE_STATE, acc.state))
        return out

    def tombstone(self, table: str, key: Hashable, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A downtime event that no longer exists is written again with ``deleted = 1``; a
        window never disappears (its facts are replaced by the next version)."""
        if table != "downtime_events":
            return []
        return [self._base_row() | {
            "start": key, "end": None, "duration_s": 0.0, "state": "", "fault_code": "",
            "reason": "", "category": "unassigned", "planned": 0, "small_stop": 0,
            "is_open": 0, "shift": "", "part_number": "", "work_order": "", "deleted": 1}]

    # -- accounting --------------------------------------------------------------------------
    def _base_row(self) -> dict[str, Any]:
        return {"machine": self.machine, "site": self.site, "line": self.line}

    def _span_at(self, ts: int) -> Span:
        return self.cal.spans(ts, ts + 1)[0]

    def _key(self, sp: Span) -> FactKey:
        return (sp.shift, sp.shift_start, sp.day.toordinal(), self.acc.part, self.acc.work_order)

    def _vec(self, ws: int, key: FactKey) -> list[float]:
        win = self.acc.windows.get(ws)
        if win is None:
            win = self.acc.windows[ws] = {}
        vec = win.get(key)
        if vec is None:
            vec = win[key] = [0] * _VEC_LEN
        return vec

    def _ideal_ms(self) -> float | None:
        acc = self.acc
        if acc.ideal_override_ms is not None:
            return acc.ideal_override_ms
        return self.ideal_by_part.get(acc.part, self.config_ideal_ms)

    def _count(self, ts: int, good: float, reject: float, total_ctr: float = 0) -> None:
        """Count parts at ``ts``. Ideal time follows the ``total_count`` counter when the machine
        has one (else good + reject); a count the machine does not send is derived from the
        other two (:meth:`_settle`)."""
        if not good and not reject and not total_ctr:
            return
        sp = self._span_at(ts)
        vec = self._vec(sp.window_start, self._key(sp))
        vec[V_GOOD] += good
        vec[V_REJECT] += reject
        vec[TOTAL_CTR] += total_ctr
        ideal = self._ideal_ms()
        if ideal is not None:
            vec[IDEAL] += (total_ctr if self.acc.bal.total else good + reject) * ideal

    def _settle(self, before: int | None) -> None:
        """Count the derived good or reject parts of the last instant, once event time is past
        it (``before``: the next sample's time; None: now)."""
        bal = self.acc.bal
        due = bal.settle(before)
        if due is not None:
            ts, qty = due
            sp = self._span_at(ts)
            vec = self._vec(sp.window_start, self._key(sp))
            vec[V_GOOD if bal.derived == GOOD else V_REJECT] += qty

    def _step_back(self, ts: int) -> None:
        sp = self._span_at(ts)
        vec = self._vec(sp.window_start, self._key(sp))
        if len(vec) <= STEPBACKS:
            vec.append(0)
        vec[STEPBACKS] += 1

    def apply(self, ev: Event) -> None:
        ts, _, metric, value = ev
        acc = self.acc
        self._settle(ts if metric in SIDE else None)
        if acc.cursor < 0:
            acc.cursor = ts
        self._advance(ts)
        if metric == MACHINE_STATE:
            state = self.losses.state_name(value)
            if state != acc.state:
                self._change_state(ts, state)
        elif metric in (GOOD_COUNT, REJECT_COUNT, TOTAL_COUNT):
            if not isinstance(value, int | float) or isinstance(value, bool):
                return
            c = acc.counters.get(metric)
            if c is None:
                c = acc.counters[metric] = Counter()
            d = c.step(float(value), self.rules)
            if d is None:
                self._step_back(ts)
                d = 0
            self._parts(ts, SIDE[metric], d)
        elif metric in (GOOD_PARTS, REJECT_PARTS):
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                return
            self._parts(ts, SIDE[metric], float(value))
        elif metric == IDEAL_CYCLE_TIME_MS:
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                acc.ideal_override_ms = float(value)
        elif metric == PART_NUMBER:
            part = str(value)
            if part != acc.part:
                acc.part = part
                acc.ideal_override_ms = None
        elif metric == WORK_ORDER:
            acc.work_order = str(value)
        elif metric == FAULT_CODE:
            code = fault_text(value)
            before = acc.downtime.current
            split = before is not None and bool(before.fault_code) and bool(code) \
                and code != before.fault_code
            acc.fault = code
            self._downtime(acc.downtime.on_fault_code(ts, code, self.losses))
            if split and acc.pending is None and self.losses.bucket(acc.state) == "unplanned_stop":
                self._count_stop(ts, STOPS)
        elif metric == REASON_CODE:
            # A reason that comes with a state that is not downtime (a planned stop or off, sent
            # with its reason at the instant it begins) names that state, not the last stop.
            if not (acc.downtime.current is None and acc.state_since == ts
                    and self.losses.bucket(acc.state) in ("excluded", "not_scheduled")):
                self._downtime(acc.downtime.on_reason(ts, str(value), self.losses))
        elif metric == REASON_SPLIT:
            rows, refused = acc.downtime.on_split(ts, value, self.losses)
            if refused is not None:
                acc.refused.append((ts, ev[1], metric, value, refused))
                if len(acc.refused) > self.MAX_REFUSED:
                    self._refuse(acc.refused.pop(0))
            self._downtime(rows)
        if acc.refused:
            self._release(ts)

    def _parts(self, ts: int, side: str, qty: float) -> None:
        """``qty`` parts of ``side`` (good, reject or total) at ``ts``."""
        bal = self.acc.bal
        bal.see(side)
        bal.count(ts, side, qty)
        if side == GOOD:
            self._count(ts, qty, 0)
        elif side == REJECT:
            self._count(ts, 0, qty)
        else:
            self._count(ts, 0, 0, qty)

    def _context(self, ts: int) -> dict[str, Any]:
        sp = self._span_at(ts)
        return {"shift": sp.shift, "part_number": self.acc.part, "work_order": self.acc.work_order}

    def _change_state(self, ts: int, state: str) -> None:
        acc = self.acc
        small = False
        if acc.pending is not None:
            small = self._resolve_pending(final=True)
        acc.state, acc.state_since = state, ts
        if self.losses.bucket(state) == "run":
            acc.fault = ""  # a fault code names the stop it belongs to, not the next one
        eligible = (self.losses.bucket(state) == "unplanned_stop"
                    and self.losses.small_stop_eligible(state) and self.microstop_ms > 0)
        acc.pending = [] if eligible else None
        acc.stop_resolved = not eligible
        if self.losses.bucket(state) == "unplanned_stop" and not eligible:
            self._count_stop(ts, STOPS)
        self._downtime(acc.downtime.on_state(ts, state, acc.fault, self.losses,
                                             self._context(ts), small_stop=small))

    def _count_stop(self, ts: int, idx: int) -> None:
        sp = self._span_at(ts)
        self._vec(sp.window_start, self._key(sp))[idx] += 1

    def _resolve_pending(self, final: bool) -> bool:
        """Settle the pending stop: a small stop when it ended (or input ended) before the
        threshold, an unplanned stop otherwise. Returns True for a small stop."""
        acc = self.acc
        if acc.pending is None:
            return False
        small = final and acc.cursor - acc.state_since < self.microstop_ms
        for ws, key, ms in acc.pending:
            vec = self._vec(ws, key)
            if small:
                vec[RUN] += ms
                vec[SMALL] += ms
            else:
                vec[UNPLANNED] += ms
        self._count_stop(acc.state_since, SMALL_STOPS if small else STOPS)
        acc.pending = None
        acc.stop_resolved = True
        return small

    def _advance(self, t: int) -> None:
        acc = self.acc
        if acc.cursor < 0 or t <= acc.cursor:
            return
        start = acc.cursor
        if acc.state:
            bucket = self.losses.bucket(acc.state)
            if acc.pending is not None:
                limit = acc.state_since + self.microstop_ms
                if start < limit < t:
                    self._integrate(start, limit, bucket)
                    acc.cursor = limit
                    self._resolve_pending(final=False)
                    start = limit
            self._integrate(start, t, bucket)
        acc.cursor = t
        if acc.pending is not None and t - acc.state_since >= self.microstop_ms:
            self._resolve_pending(final=False)
        self._close_windows(t)

    def _integrate(self, a: int, z: int, bucket: str) -> None:
        acc = self.acc
        pending = acc.pending
        for sp in self.cal.spans(a, z):
            d = sp.end - sp.start
            key = self._key(sp)
            vec = self._vec(sp.window_start, key)
            vec[ALL] += d
            if bucket == "run":
                vec[SCHED] += d
                vec[PLANNED] += d
                vec[RUN] += d
                if not sp.scheduled or sp.in_break:
                    vec[UNSCHED_RUN] += d
            elif not sp.scheduled or bucket == "not_scheduled":
                continue
            elif sp.in_break or bucket == "excluded":
                vec[SCHED] += d
                vec[EXCLUDED] += d
            else:
                vec[SCHED] += d
                vec[PLANNED] += d
                if bucket == "setup":
                    vec[SETUP] += d
                elif bucket == "small_stop":
                    vec[RUN] += d
                    vec[SMALL] += d
                elif pending is not None:
                    pending.append((sp.window_start, key, d))
                else:
                    vec[UNPLANNED] += d

    def _close_windows(self, t: int | None) -> None:
        """Emit windows that end at or before ``t`` (all when ``None``) and hold no pending stop."""
        acc = self.acc
        if not acc.windows:
            return
        hold = None
        if t is not None and acc.pending is not None:
            hold = acc.state_since - acc.state_since % self.w
        ready = sorted(ws for ws in acc.windows
                       if t is None or (ws + self.w <= t and (hold is None or ws < hold)))
        if not ready:
            return
        for ws in ready:
            self._out.append(("oee_facts", ws, [self._fact_row(ws, key, vec)
                                                for key, vec in sorted(acc.windows.pop(ws).items())]))
        if t is not None:
            self._downtime(acc.downtime.tick(min(t, acc.cursor)))

    def _fact_row(self, ws: int, key: FactKey, vec: list[float]) -> dict[str, Any]:
        shift, shift_start, day, part, wo = key
        row = self._base_row() | {
            "window_start": ws, "window_end": ws + self.w, "shift": shift,
            "shift_start": shift_start, "day": date.fromordinal(day), "part_number": part,
            "work_order": wo}
        for i, col in enumerate(TIME_COLUMNS):
            row[col] = vec[i] / 1000
        row["ideal_s"] = vec[IDEAL] / 1000
        good, reject = int(vec[V_GOOD]), int(vec[V_REJECT])
        row["good"] = good
        row["reject"] = reject
        row["total"] = good + reject
        row["stops"] = int(vec[STOPS])
        row["small_stops"] = int(vec[SMALL_STOPS])
        if len(vec) > STEPBACKS and vec[STEPBACKS]:
            row["counter_stepbacks"] = int(vec[STEPBACKS])
        return row

    def _downtime(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            self._out.append(("downtime_events", r["start"], [self._base_row() | r | {"deleted": 0}]))

    def _release(self, upto: int | None) -> None:
        """Dead-letter the refused samples that are final: older than ``horizon_ms`` before
        ``upto`` (no restatement can reach them any more), all of them when ``upto`` is None
        (the end of input, provisionally like every row then).

        A refusal waits because a later restatement may undo it: a ``reason_split`` that came
        before the ``machine_state`` that starts its stop (a shuffled file, a late PLC sample)
        applies to that stop once the state is placed, and is no dead letter. So any arrival
        order gives the same dead letters, as it gives the same rows.
        """
        refused = self.acc.refused
        if upto is None:
            done = len(refused)
        elif self.horizon_ms is None:
            return
        else:
            floor = upto - self.horizon_ms
            done = 0
            while done < len(refused) and refused[done][0] < floor:
                done += 1
        for r in refused[:done]:
            self._refuse(r)
        del refused[:done]

    def _refuse(self, refused: tuple[int, int, str, Any, str]) -> None:
        """A sample the fold cannot use as a dead letter, keyed by the sample: a restatement
        that replays it again does not write it again."""
        ts, seq, metric, value, reason = refused
        raw = Measurement(ts, self.machine, metric, value, self.site, self.line)
        self._out.append(("deadletter", ("refused", ts, seq), [{
            "ts": ts, "source": f"oee:{self.machine}:{metric}", "reason": reason,
            "raw": raw.to_json().decode()}]))


# -- the machine logic -------------------------------------------------------------------------


def accounting_factory(config: PlantConfig) -> Callable[[str], OeeAccounting]:
    """Machine id → its accounting; one shift calendar shared by every machine."""
    calendar = ShiftCalendar.from_config(config)
    return lambda machine: OeeAccounting.for_config(config, machine, calendar)


_OPERATOR_ENTRIES = frozenset({REASON_CODE, REASON_SPLIT})
"""Metrics an operator enters: their batch applies the machine's buffered samples at once."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OeeLogic(MachineLogic[OeeState, list[Output]]):
    """One machine's :class:`OeeAccounting`, run by the machine engine (:func:`oee_spec`).

    A batch's OEE samples (:data:`OEE_METRICS`) go to the accounting at once (late ones among
    them restate once); its other samples are ticks of the machine's event time (the newest
    counts). The accounting is built from the first OEE sample's machine id, or from the resumed
    state; the source's site and line win over the plant config's, as in every other table,
    and are part of the state. A machine that sends no OEE metric at all (a sensor-only asset)
    has no accounting: the logic asks to be discarded (:meth:`discard`), so it keeps no state.

    When a machine goes quiet with samples still waiting for the watermark (a machine that stops
    sends nothing more), a timer ``allowed_lateness_s`` of wall time later applies them
    (:meth:`OeeAccounting.flush`), so the open stop is visible while it lasts. A batch with an
    operator's entry (``reason_code``, ``reason_split``: the station sends an open stop's reason
    at the machine's latest event time, inside the allowed lateness) applies them at once the
    same way, so the restated stop shows within seconds, not ``allowed_lateness_s`` of event time
    later; a sample that then arrives for an earlier time restates, so the final rows are the
    same. ``now`` is the
    wall clock (injected for tests). Each output is the list of ``(table, row)`` that one call
    made final.
    """

    def __init__(self, make: Callable[[str], OeeAccounting], state: OeeState | None,
                 now: Callable[[], datetime] = _utc_now) -> None:
        self.make = make
        self.now = now
        self.acc: OeeAccounting | None = None
        self.due: datetime | None = None
        if state is not None:
            self.acc = make(state.machine)
            self.acc.restore(state)

    def on_batch(self, samples: list[Measurement]) -> list[list[Output]]:
        acc = self.acc
        batch: list[tuple[int, str, object]] = []
        raws: list[Measurement] = []
        tick = -1
        for m in samples:
            if m.metric not in OEE_METRICS:
                if m.ts > tick:
                    tick = m.ts
                continue
            if acc is None:
                acc = self.acc = self.make(m.machine)
            if m.site and m.site != acc.site:
                acc.site = m.site
            if m.line and m.line != acc.line:
                acc.line = m.line
            batch.append((m.ts, m.metric, m.value))
            raws.append(m)
        if acc is None:  # ticks of a sensor-only asset: no OEE, nothing kept (see discard)
            return []
        now = self.now()
        now_ms = round(now.timestamp() * 1000)
        flushed: list[Output] = []
        if batch:
            acc.ingest(batch, raws, now_ms)
            if acc.buffer and any(metric in _OPERATOR_ENTRIES for _, metric, _ in batch):
                flushed = acc.flush()  # an operator's entry shows at once, not an allowed lateness later
            self.due = now + timedelta(milliseconds=acc.lateness_ms) if acc.buffer else None
        if tick >= 0:
            acc.on_tick(tick, now_ms)
        out = flushed + acc.take()
        return [out] if out else []

    def notify_at(self) -> datetime | None:
        return self.due

    def on_notify(self) -> list[list[Output]]:
        self.due = None
        if self.acc is None:
            return []
        out = self.acc.flush()
        return [out] if out else []

    def on_eof(self) -> list[list[Output]]:
        if self.acc is None:
            return []
        out = self.acc.finish()
        return [out] if out else []

    def discard(self) -> bool:
        return self.acc is None

    def state(self) -> OeeState:
        if self.acc is None:
            msg = "an OEE logic without accounting has no state: the engine discards it (spec: discards=True)"
            raise LogicError(msg)
        return self.acc.state()


class Ticks:
    """What the OEE logic needs to see: every usable OEE sample, and of a machine's other
    metrics at most one every ``step_ms`` of event time (5 s). Sensors report every second or
    faster; a tick every few seconds closes windows just as well, and spares the logic the
    rest. The cost: at the end of a replay a machine's time is known up to its last tick, at
    most ``step_ms`` before its last sample. Dropping a tick is always safe (the next one, or
    the next OEE sample, does its work), so this memory of one number per machine is not part
    of any snapshot.

    >>> keep = Ticks(step_ms=5_000)
    >>> def m(ts, metric="temperature_c", quality="good"):
    ...     return Measurement(ts=ts, site="s", line="l", machine="m1", metric=metric,
    ...                        value=1.0, quality=quality, source="t")
    >>> [keep(m(t)) for t in (60_000, 61_000, 64_999, 65_000, 66_000, 80_000)]
    [True, False, False, True, False, True]
    >>> keep(m(80_001, "machine_state")), keep(m(90_000, quality="bad"))
    (True, False)
    """

    def __init__(self, step_ms: int = 5_000) -> None:
        self.step_ms = step_ms
        self.last: dict[str, int] = {}

    def __call__(self, m: Measurement) -> bool:
        if m.quality == "bad":
            return False
        if m.metric in OEE_METRICS:
            return True
        slot = m.ts // self.step_ms
        if slot <= self.last.get(m.machine, slot - 1):
            return False
        self.last[m.machine] = slot
        return True


def _oee_rows(out: list[Output]) -> list[Output]:
    return out


def oee_spec(config: PlantConfig,
             now: Callable[[], datetime] = _utc_now) -> LogicSpec[OeeState, list[Output]]:
    """The OEE flow's per-machine logic: usable OEE samples and ticks of each machine into its
    :class:`OeeLogic` (``now``: the wall clock of its timers, injected for tests).

    >>> from plantstream.schemas.config import build_config
    >>> spec = oee_spec(build_config({}, {}))
    >>> logic = spec.build(None)
    >>> logic.on_batch([Measurement(0, "m1", "temperature_c", 40.0)]), logic.discard()
    ([], True)
    >>> logic.on_batch([Measurement(0, "m1", "machine_state", "running")]), logic.discard()
    ([], False)
    >>> spec.build(spec.codec.decode(spec.codec.encode(logic.state()))).state().machine
    'm1'
    """
    make = accounting_factory(config)

    def build(state: OeeState | None) -> OeeLogic:
        return OeeLogic(make, state, now)

    return LogicSpec("oee", OEE_STATE, build, _oee_rows, filters=Ticks(), timers=True, discards=True)
