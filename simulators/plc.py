"""A deterministic PLC line simulator with exact ground truth (pure Python, no I/O, no sleeping).

:class:`PlcLine` simulates the machines of a discrete-manufacturing line (presses, CNCs, …) in
event time, from a seed, a start time and the plant config's shift calendar. It produces the
KEPServerEX-style tag updates a PLC would publish (:meth:`PlcLine.run_tags`), the canonical
:class:`~schemas.measurement.Measurement` stream the OPC UA connector delivers after tag mapping
(:meth:`PlcLine.run`), and the **ground truth** the KPI tests check against
(:meth:`PlcLine.ground_truth`). The OPC UA server (``simulators/opcua_server.py``)
serves the same tag updates at any speed; tests and replays use the core directly.

What it simulates, per machine
------------------------------
- **States** ``running`` ``idle`` ``fault`` ``setup`` ``planned_stop`` ``off`` (PLC integers
  :data:`STATE_CODES`): micro-stops (``idle`` shorter than ``microstop_threshold_s``), longer
  idles, faults with codes (:data:`FAULT_CODES` gives reason and category), setups on part
  change (a work order is done → new part, new work order, new ideal cycle time), breaks from
  the shift calendar as ``planned_stop``, ``off`` outside shifts and on holidays. Without
  shifts in the config the line is scheduled 24/7.
- **Counts** cumulative ``good_count`` / ``reject_count`` (``PartCountGood`` /
  ``PartCountReject``); the PLC resets both to 0 at some work-order changes (a counter reset).
- **Scrap**: baseline rejects with a reason, start-up rejects after setups, and reject bursts
  from tool wear (reason ``tool_wear``) ended by a tool change (fault 301). ``scrap_reason``
  is emitted (when it changes) at the same ``ts`` *before* the rejects it explains.
- **Operator reasons**: minutes after some stops a ``reason_code`` is entered
  (:data:`OPERATOR_REASONS`); it overrides the mapped reason. It is dropped (never entered) if
  another stop starts first, so it always refers to the current or most recent stop.
- **Condition**: every ``sample_ms`` ``temperature_c``, ``ambient_temperature_c``,
  ``vibration_rms_mms``, ``spindle_speed_rpm``; injected anomalies: ``bearing_wear``
  (vibration RMS ramps linearly from its baseline into ISO 10816 zone C, ≥ 7.1 mm/s) and
  ``overheating`` (temperature − ambient ramps up by 18–25 °C). Vibration and spindle speed
  only show the machine's signature while it runs.
- Only **value changes** are emitted, like an OPC UA subscription delivers them.

Ground truth (:class:`GroundTruth`, JSONL via :meth:`PlcLine.write_ground_truth`)
--------------------------------------------------------------------------------
One JSON object per line, each with a ``kind``:

- ``meta``: seed, start_ms, end_ms, machines, microstop_threshold_s, fault_codes,
  state_codes.
- ``state``: ``machine, start_ms, end_ms, state, fault_code, reason, category, reason_code,
  reason_code_ts, microstop, shift`` — the true state intervals ``[start_ms, end_ms)``, one per
  state change, in order (``shift`` is the shift at ``start_ms``; intervals are *not* split at
  shift boundaries — use :meth:`GroundTruth.state_ms` to clip). ``reason``/``category`` are the
  final ones (operator ``reason_code`` if entered, else the fault-code map, ``unassigned`` for
  idles, ``changeover`` for setups, ``break``/``scheduled maintenance`` for planned stops —
  the defaults of ``losses.state_categories``). Downtime events are the
  ``idle``/``fault``/``setup`` intervals (:meth:`GroundTruth.downtime`). Use
  :func:`losses_config` as the plant config's ``losses:`` so flows map codes the same way.
- ``counts``: per machine ``good, reject, total, rejects_by_reason`` over the run.
- ``shift_counts``: per machine and shift instance ``shift, shift_start_ms, good, reject``
  (a part counts in the shift in which its cycle ended).
- ``work_order``: ``work_order, part_number, ideal_cycle_time_ms, start_ms, end_ms, good,
  reject``.
- ``scrap``: a run of consecutive rejects with the same reason: ``start_ms, end_ms, reason,
  quantity, part_number, work_order``.
- ``anomaly``: ``type, signal, start_ms, end_ms, zone_c_ms`` (bearing wear: when the
  noise-free RMS crosses 7.1 mm/s), ``peak``.
- ``counter_reset``: ``ts`` of a PLC counter reset.
- ``final``: the last emitted ``good_count``/``reject_count``/``machine_state`` per machine.

Intervals still open at the end of the run are closed at the run's end (``meta.end_ms``).

Examples
--------
>>> from plantstream.schemas.config import build_config
>>> cfg = build_config({"microstop_threshold_s": 120, "shifts": [{"name": "day",
...     "start": "06:00", "end": "14:00", "breaks": [{"start": "09:00", "minutes": 15}]}]}, {})
>>> line = PlcLine(seed=1, machines=2, start_ms=1763791200000, config=cfg)  # 2025-11-22 06:00Z
>>> ms = list(line.run(1763791200000 + 8 * 3600_000))
>>> truth = line.ground_truth()
>>> sorted(truth.machines)
['cnc-01', 'press-01']
>>> truth.counts["press-01"]["good"] > 10_000
True
>>> brk = [s for s in truth.states if s.machine == "press-01" and s.state == "planned_stop"]
>>> [(s.start_ms - 1763791200000) // 60_000 for s in brk], brk[0].end_ms - brk[0].start_ms
([180], 900000)
>>> list(PlcLine(seed=1, machines=2, start_ms=1763791200000, config=cfg).run(
...     1763791200000 + 8 * 3600_000)) == ms  # deterministic
True
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final

import orjson

from plantstream.schemas.config import MachineConfig, PlantConfig
from plantstream.schemas.measurement import Measurement

# -- vocabulary -----------------------------------------------------------------------------

STATE_CODES: Final = {"off": 0, "running": 1, "idle": 2, "fault": 3, "setup": 4, "planned_stop": 5}
"""The PLC integer of each machine state (``MachineState`` tag)."""
CODE_STATES: Final = {v: k for k, v in STATE_CODES.items()}

FAULT_CODES: Final[dict[int, tuple[str, str]]] = {
    101: ("hydraulic_pressure_low", "mechanical"),
    102: ("die_jam", "mechanical"),
    103: ("bearing_failure", "mechanical"),
    201: ("servo_overload", "electrical"),
    202: ("sensor_fault", "electrical"),
    301: ("tool_change", "tooling"),
    302: ("tool_breakage", "tooling"),
    401: ("material_shortage", "material"),
    501: ("emergency_stop", "operator"),
    601: ("quality_hold", "quality hold"),
}
"""Fault code → (reason, category) used by the simulator (KPI.md categories)."""

OPERATOR_REASONS: Final[dict[str, str]] = {
    "waiting_material": "material",
    "no_operator": "operator",
    "no_demand": "no demand",
    "quality_check": "quality hold",
    "die_adjustment": "mechanical",
    "electrical_repair": "electrical",
}
"""Operator ``reason_code`` → category (entered minutes after some stops)."""



def losses_config() -> dict[str, Any]:
    """The ``losses:`` config section with the simulator's fault-code and reason-code maps.

    Give it to the plant config (``build_config({"losses": losses_config(), …})``) so the
    downtime reasons and categories computed by the flows are the ground truth's.

    >>> losses_config()["fault_codes"]["301"]
    {'reason': 'tool_change', 'category': 'tooling'}
    >>> losses_config()["reason_codes"]["no_demand"]
    {'reason': 'no_demand', 'category': 'no demand'}
    """
    return {
        "fault_codes": {str(k): {"reason": r, "category": c} for k, (r, c) in FAULT_CODES.items()},
        "reason_codes": {k: {"reason": k, "category": c} for k, c in OPERATOR_REASONS.items()},
    }


SCRAP_REASONS: Final = ("dimension_out_of_tolerance", "surface_defect", "burr")
"""Baseline reject reasons; plus ``startup`` (first parts after a setup) and ``tool_wear``."""

TAGS: Final[dict[str, tuple[str | None, str]]] = {
    "MachineState": ("machine_state", ""),
    "PartCountGood": ("good_count", "count"),
    "PartCountReject": ("reject_count", "count"),
    "CycleCount": (None, "count"),
    "CycleTimeActual_ms": ("cycle_time_ms", "ms"),
    "CycleTimeTarget_ms": ("ideal_cycle_time_ms", "ms"),
    "ActiveFaultCode": ("fault_code", ""),
    "ReasonCode": ("reason_code", ""),
    "ScrapReason": ("scrap_reason", ""),
    "PartNumber": ("part_number", ""),
    "WorkOrder": ("work_order", ""),
    "ToolID": (None, ""),
    "SpindleSpeed_RPM": ("spindle_speed_rpm", "rpm"),
    "Temperature_C": ("temperature_c", "C"),
    "Vibration_Velocity_mms": ("vibration_rms_mms", "mm/s"),
    "AmbientTemperature_C": ("ambient_temperature_c", "C"),
}
"""KEPServerEX-style tag name → (canonical metric or None, unit). ``CycleCount`` (good +
reject since the last reset) and ``ToolID`` are PLC tags without a canonical metric; the
``MachineState`` integer maps through :data:`STATE_CODES`."""

# per machine type: ideal cycle ms, mean s between stops, spindle rpm, vib baseline, motor ΔT
_TYPES: Final[dict[str, dict[str, float]]] = {
    "press": {"ideal": 1000, "mtbs": 420, "rpm": 1200, "vib": 1.8, "dt": 24, "life": 4000},
    "cnc": {"ideal": 2500, "mtbs": 600, "rpm": 8000, "vib": 1.2, "dt": 18, "life": 1500},
    "molder": {"ideal": 20000, "mtbs": 1500, "rpm": 150, "vib": 0.9, "dt": 30, "life": 800},
}
_TYPE_ORDER: Final = ("press", "cnc", "molder")
_FAULTS_BY_TYPE: Final[dict[str, tuple[int, ...]]] = {
    "press": (101, 102, 102, 201, 202, 302, 401, 501, 601),
    "cnc": (103, 201, 202, 302, 401, 501, 601),
    "molder": (101, 201, 202, 401, 601),
}
_FAULT_MINUTES: Final = (1.0, 20.0)
_SETUP_MINUTES: Final = (8.0, 25.0)
_TOOL_CHANGE_MINUTES: Final = (3.0, 8.0)
_DAY_MS: Final = 86_400_000
_WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ZONE_C_MMS: Final = 7.1


# -- shift calendar -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of calendar time: ``kind`` is ``work``, ``break`` or ``off``.

    ``shift``/``shift_start_ms`` name the shift instance (empty/0 when ``off``).
    """

    start_ms: int
    end_ms: int
    kind: str
    shift: str = ""
    shift_start_ms: int = 0


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


class ShiftCalendar:
    """The plant's shift calendar in epoch ms: shifts (crossing midnight), breaks, holidays.

    Without shifts every instant is ``work`` in shift ``all``.

    >>> from plantstream.schemas.config import build_config
    >>> cal = ShiftCalendar(build_config({"timezone": "Europe/Berlin", "shifts": [{"name": "n",
    ...     "start": "22:00", "end": "06:00", "breaks": [{"start": "02:00", "minutes": 30}]}]}, {}))
    >>> seg = cal.segment_at(1763776800000)  # 2025-11-22 03:00 Berlin
    >>> seg.kind, seg.shift, datetime.fromtimestamp(seg.start_ms / 1000, cal.tz).strftime("%H:%M")
    ('work', 'n', '02:30')
    """

    def __init__(self, config: PlantConfig) -> None:
        self.config = config
        self.tz = config.tz
        self.holidays = frozenset(config.holidays)
        self._cache: dict[date, list[Segment]] = {}

    def _instances(self, day: date) -> list[Segment]:
        """The shifts starting on local ``day``: one ``work`` segment each, breaks cut out."""
        cached = self._cache.get(day)
        if cached is not None:
            return cached
        out: list[Segment] = []
        if day not in self.holidays:
            for shift in self.config.shifts:
                if _WEEKDAYS[day.weekday()] not in shift.days:
                    continue
                sm = shift.start_minute
                start_local = datetime.combine(day, time(sm // 60, sm % 60), tzinfo=self.tz)
                start = _ms(start_local)
                end = _ms(start_local + timedelta(minutes=shift.length_minutes))
                cuts: list[tuple[int, int]] = []
                for b in shift.breaks:
                    bm = b.start_minute
                    bday = day + timedelta(days=1) if bm < sm else day
                    bl = datetime.combine(bday, time(bm // 60, bm % 60), tzinfo=self.tz)
                    cuts.append((_ms(bl), _ms(bl + timedelta(minutes=b.minutes))))
                cuts.sort()
                t = start
                for bs, be in cuts:
                    if bs > t:
                        out.append(Segment(t, bs, "work", shift.name, start))
                    if be > max(bs, t):
                        out.append(Segment(max(bs, t), be, "break", shift.name, start))
                    t = max(t, be)
                if t < end:
                    out.append(Segment(t, end, "work", shift.name, start))
        self._cache[day] = out
        return out

    def segment_at(self, t: int) -> Segment:
        """The calendar segment containing epoch-ms ``t``."""
        if not self.config.shifts:
            return Segment(t - (t % _DAY_MS), t - (t % _DAY_MS) + 3650 * _DAY_MS, "work", "all",
                           0)
        local = datetime.fromtimestamp(t / 1000, self.tz).date()
        best: Segment | None = None
        prev_end = None
        for d in (local - timedelta(days=2), local - timedelta(days=1), local):
            for seg in self._instances(d):
                if seg.start_ms <= t < seg.end_ms and (best is None or seg.start_ms > best.start_ms):
                    best = seg
                if seg.end_ms <= t and (prev_end is None or seg.end_ms > prev_end):
                    prev_end = seg.end_ms
        if best is not None:
            return best
        nxt = None
        for k in range(0, 15):
            for seg in self._instances(local + timedelta(days=k)):
                if seg.start_ms > t and (nxt is None or seg.start_ms < nxt):
                    nxt = seg.start_ms
            if nxt is not None:
                break
        start = prev_end if prev_end is not None else t
        return Segment(start, nxt if nxt is not None else t + 14 * _DAY_MS, "off")

    def segments(self, start_ms: int, end_ms: int) -> list[Segment]:
        """The calendar segments covering ``[start_ms, end_ms)``, clipped to it."""
        out: list[Segment] = []
        t = start_ms
        while t < end_ms:
            s = self.segment_at(t)
            out.append(Segment(t, min(s.end_ms, end_ms), s.kind, s.shift, s.shift_start_ms))
            t = s.end_ms
        return out


# -- ground truth records -------------------------------------------------------------------


@dataclass(slots=True)
class StateInterval:
    """A true machine state interval ``[start_ms, end_ms)`` (see the module docstring)."""

    machine: str
    start_ms: int
    end_ms: int
    state: str
    fault_code: int = 0
    reason: str = ""
    category: str = ""
    reason_code: str = ""
    reason_code_ts: int = 0
    microstop: bool = False
    shift: str = ""

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(slots=True)
class WorkOrderTruth:
    machine: str
    work_order: str
    part_number: str
    ideal_cycle_time_ms: float
    start_ms: int
    end_ms: int = 0
    good: int = 0
    reject: int = 0


@dataclass(slots=True)
class ScrapTruth:
    machine: str
    start_ms: int
    end_ms: int
    reason: str
    quantity: int
    part_number: str
    work_order: str


@dataclass(slots=True)
class AnomalyTruth:
    machine: str
    type: str
    signal: str
    start_ms: int
    end_ms: int
    zone_c_ms: int = 0
    peak: float = 0.0


@dataclass(frozen=True, slots=True)
class AnomalySpec:
    """An anomaly to inject: ``type`` ``bearing_wear`` or ``overheating``."""

    machine: str
    type: str
    start_ms: int
    duration_ms: int
    peak: float = 0.0
    """Bearing wear: RMS mm/s reached at the end (default 9–12); overheating: added °C."""


@dataclass
class GroundTruth:
    """What really happened in a simulated run; the reference KPI tests check against."""

    seed: int
    start_ms: int
    end_ms: int
    machines: dict[str, dict[str, Any]]
    microstop_threshold_s: float
    states: list[StateInterval] = field(default_factory=list)
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    shift_counts: list[dict[str, Any]] = field(default_factory=list)
    work_orders: list[WorkOrderTruth] = field(default_factory=list)
    scrap: list[ScrapTruth] = field(default_factory=list)
    anomalies: list[AnomalyTruth] = field(default_factory=list)
    counter_resets: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, dict[str, Any]] = field(default_factory=dict)

    def downtime(self, machine: str | None = None) -> list[StateInterval]:
        """The true downtime events: ``idle`` (micro-stops flagged), ``fault`` and ``setup``."""
        return [s for s in self.states if s.state in ("idle", "fault", "setup")
                and (machine is None or s.machine == machine)]

    def state_ms(self, machine: str, start_ms: int, end_ms: int) -> dict[str, int]:
        """Milliseconds per state of ``machine`` inside ``[start_ms, end_ms)``."""
        out: dict[str, int] = {}
        for s in self.states:
            if s.machine != machine:
                continue
            lo, hi = max(s.start_ms, start_ms), min(s.end_ms, end_ms)
            if hi > lo:
                out[s.state] = out.get(s.state, 0) + hi - lo
        return out

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record as a JSON-able dict with its ``kind`` (the JSONL file's lines)."""
        yield {"kind": "meta", "seed": self.seed, "start_ms": self.start_ms, "end_ms": self.end_ms,
               "machines": self.machines, "microstop_threshold_s": self.microstop_threshold_s,
               "fault_codes": {str(k): {"reason": r, "category": c} for k, (r, c) in FAULT_CODES.items()},
               "state_codes": STATE_CODES}
        for s in self.states:
            yield {"kind": "state", **asdict(s)}
        for m, c in self.counts.items():
            yield {"kind": "counts", "machine": m, **c}
        for sc in self.shift_counts:
            yield {"kind": "shift_counts", **sc}
        for w in self.work_orders:
            yield {"kind": "work_order", **asdict(w)}
        for sc2 in self.scrap:
            yield {"kind": "scrap", **asdict(sc2)}
        for a in self.anomalies:
            yield {"kind": "anomaly", **asdict(a)}
        for r in self.counter_resets:
            yield {"kind": "counter_reset", **r}
        for m, f in self.final.items():
            yield {"kind": "final", "machine": m, **f}

    def write(self, path: str | Path) -> int:
        """Write the JSONL ground-truth file; returns the number of records."""
        n = 0
        with Path(path).open("wb") as fh:
            for rec in self.records():
                fh.write(orjson.dumps(rec) + b"\n")
                n += 1
        return n


def load_ground_truth(path: str | Path) -> GroundTruth:
    """Read a ground-truth JSONL file written by :meth:`GroundTruth.write`."""
    truth: GroundTruth | None = None
    with Path(path).open("rb") as fh:
        for raw in fh:
            rec = orjson.loads(raw)
            kind = rec.pop("kind")
            if kind == "meta":
                truth = GroundTruth(rec["seed"], rec["start_ms"], rec["end_ms"], rec["machines"],
                                    rec["microstop_threshold_s"])
                continue
            if truth is None:
                msg = f"ground-truth file {path}: the first line must be the 'meta' record"
                raise ValueError(msg)
            if kind == "state":
                truth.states.append(StateInterval(**rec))
            elif kind == "counts":
                truth.counts[rec.pop("machine")] = rec
            elif kind == "shift_counts":
                truth.shift_counts.append(rec)
            elif kind == "work_order":
                truth.work_orders.append(WorkOrderTruth(**rec))
            elif kind == "scrap":
                truth.scrap.append(ScrapTruth(**rec))
            elif kind == "anomaly":
                truth.anomalies.append(AnomalyTruth(**rec))
            elif kind == "counter_reset":
                truth.counter_resets.append(rec)
            elif kind == "final":
                truth.final[rec.pop("machine")] = rec
    if truth is None:
        msg = f"ground-truth file {path} is empty"
        raise ValueError(msg)
    return truth


# -- the simulation -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TagUpdate:
    """One PLC tag value change at event time ``ts`` (epoch ms)."""

    ts: int
    machine: str
    tag: str
    value: int | float | str


@dataclass(frozen=True, slots=True)
class MachineSpec:
    id: str
    type: str
    line: str
    ideal_ms: dict[str, float]
    """Ideal cycle ms per part number this machine makes."""


# event kinds, in processing order at equal times
_CAL, _END, _CYCLE, _STOP, _EMIT, _SAMPLE = range(6)


class _Machine:
    def __init__(self, spec: MachineSpec, line: PlcLine, rng: random.Random) -> None:
        self.spec = spec
        self.line = line
        self.rng = rng
        p = _TYPES[spec.type]
        self.p = p
        self.events: list[tuple[int, int, int, int, Any]] = []
        self.seq = 0
        self.out: list[tuple[int, int, TagUpdate]] = []
        self.last: dict[str, Any] = {}
        self.epoch = 0
        self.state = ""
        self.fault_code = 0
        self.interval: StateInterval | None = None
        self.segment: Segment | None = None
        # production context
        self.part = ""
        self.ideal = 0.0
        self.order: WorkOrderTruth | None = None
        self.order_seq = 0
        self.order_qty = 0
        self.good = self.reject = self.cycles = 0
        self.true_good = self.true_reject = 0
        self.by_reason: dict[str, int] = {}
        self.shift_counts: dict[tuple[str, int], list[int]] = {}
        self.tool_id = 1
        self.wear = 0
        self.tool_life = self._tool_life()
        self.burst_left = -1
        self.startup_left = 0
        self.scrap_reason = ""
        self.scrap_run: ScrapTruth | None = None
        self.pending_reason: tuple[int, str] | None = None
        self.stop_index = 0
        # condition
        self.motor_dt = 3.0
        self.last_sample = 0
        self.anomalies: list[AnomalySpec] = []

    # -- plumbing
    def schedule(self, t: int, kind: int, payload: Any = None, epoch: int = -1) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, kind, self.seq, epoch, payload))

    def emit(self, t: int, tag: str, value: int | float | str) -> None:
        if self.last.get(tag) == value and tag in self.last:
            return
        self.last[tag] = value
        self.line.seq += 1
        self.out.append((t, self.line.seq, TagUpdate(t, self.spec.id, tag, value)))

    def _tool_life(self) -> int:
        life = self.p["life"]
        return int(self.rng.uniform(0.7, 1.3) * life)

    # -- states
    def set_state(self, t: int, state: str, *, fault_code: int = 0, reason: str = "",
                  category: str = "") -> None:
        if state == self.state and fault_code == self.fault_code:
            return
        self.epoch += 1
        if state != "running":
            self.pending_reason = None
        self.close_interval(t)
        seg = self.segment
        self.interval = StateInterval(self.spec.id, t, t, state, fault_code, reason, category,
                                      shift=seg.shift if seg is not None and seg.kind != "off" else "")
        if fault_code and fault_code != self.fault_code:
            self.emit(t, "ActiveFaultCode", fault_code)
        self.state = state
        self.emit(t, "MachineState", STATE_CODES[state])
        if not fault_code and self.fault_code:
            self.emit(t, "ActiveFaultCode", 0)
        self.fault_code = fault_code
        if state != "running":
            self.scrap_run = None

    def close_interval(self, t: int) -> None:
        iv = self.interval
        if iv is None:
            return
        iv.end_ms = t
        if iv.end_ms > iv.start_ms:
            thr = self.line.microstop_threshold_ms
            iv.microstop = iv.state == "idle" and iv.duration_ms < thr
            self.line.truth_states.append(iv)
        self.interval = None

    def enter_running(self, t: int) -> None:
        self.set_state(t, "running")
        self.schedule_cycle(t)
        gap = self.rng.expovariate(1.0 / self.p["mtbs"])
        self.schedule(t + max(1000, int(gap * 1000)), _STOP, epoch=self.epoch)

    def cycle_ms(self) -> int:
        f = self.rng.uniform(1.30, 1.60) if self.rng.random() < 0.05 else self.rng.uniform(1.01, 1.08)
        return max(1, round(self.ideal * f))

    # -- context
    def new_order(self, t: int, first: bool) -> None:
        if self.order is not None:
            self.order.end_ms = t
        parts = sorted(self.spec.ideal_ms)
        if first:
            part = self.rng.choice(parts)
        else:
            others = [p for p in parts if p != self.part] or parts
            part = self.rng.choice(others)
        self.part, self.ideal = part, self.spec.ideal_ms[part]
        self.order_seq += 1
        wo = f"WO-{self.spec.id.upper()}-{self.order_seq:04d}"
        self.order = WorkOrderTruth(self.spec.id, wo, part, self.ideal, t, t)
        self.line.truth_orders.append(self.order)
        self.order_qty = max(20, round(self.rng.uniform(3600.0, 3 * 3600.0) * 1000 / self.ideal))
        if not first and self.rng.random() < 0.4 and (self.good or self.reject or self.cycles):
            self.good = self.reject = self.cycles = 0
            self.line.truth_resets.append({"machine": self.spec.id, "ts": t})
            self.emit(t, "PartCountGood", 0)
            self.emit(t, "PartCountReject", 0)
            self.emit(t, "CycleCount", 0)
        self.emit(t, "PartNumber", part)
        self.emit(t, "WorkOrder", wo)
        self.emit(t, "CycleTimeTarget_ms", round(self.ideal))

    # -- event handlers
    def start(self, t: int) -> None:
        self.segment = self.line.calendar.segment_at(t)
        self.new_order(t, first=True)
        self.emit(t, "PartCountGood", 0)
        self.emit(t, "PartCountReject", 0)
        self.emit(t, "CycleCount", 0)
        self.emit(t, "ActiveFaultCode", 0)
        self.emit(t, "ToolID", self.tool_id)
        self.last_sample = t
        self.on_calendar(t)
        self.schedule(t, _SAMPLE)

    def on_calendar(self, t: int) -> None:
        seg = self.line.calendar.segment_at(t)
        self.segment = seg
        if seg.kind == "work":
            if self.state in ("", "planned_stop", "off"):
                self.enter_running(t)
            elif self.interval is not None and self.interval.start_ms == t:
                self.interval.shift = seg.shift
        elif seg.kind == "break":
            self.set_state(t, "planned_stop", reason="break", category="scheduled maintenance")
        else:
            self.set_state(t, "off", reason="not_scheduled", category="")
        self.schedule(seg.end_ms, _CAL)

    def on_cycle(self, t: int) -> None:
        rng = self.rng
        self.wear += 1
        reason = ""
        if self.startup_left > 0:
            self.startup_left -= 1
            reason = "startup"
        elif self.wear > self.tool_life:
            if self.burst_left < 0:
                self.burst_left = rng.randint(8, 20)
            self.burst_left -= 1
            if rng.random() < 0.7:
                reason = "tool_wear"
        elif rng.random() < 0.012:
            reason = rng.choice(SCRAP_REASONS)
        seg = self.segment
        key = (seg.shift, seg.shift_start_ms) if seg is not None else ("", 0)
        sc = self.shift_counts.setdefault(key, [0, 0])
        assert self.order is not None
        self.cycles += 1
        if reason:
            if reason != self.scrap_reason:
                self.scrap_reason = reason
                self.emit(t, "ScrapReason", reason)
            self.reject += 1
            self.true_reject += 1
            sc[1] += 1
            self.order.reject += 1
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
            self.emit(t, "PartCountReject", self.reject)
            run = self.scrap_run
            if run is not None and run.reason == reason:
                run.end_ms = t
                run.quantity += 1
            else:
                run = ScrapTruth(self.spec.id, t, t, reason, 1, self.part, self.order.work_order)
                self.line.truth_scrap.append(run)
                self.scrap_run = run
        else:
            self.good += 1
            self.true_good += 1
            sc[0] += 1
            self.order.good += 1
            self.emit(t, "PartCountGood", self.good)
            self.scrap_run = None
        self.emit(t, "CycleCount", self.cycles)
        self.emit(t, "CycleTimeActual_ms", self.last_cycle_ms)
        if self.burst_left == 0:
            self.burst_left = -1
            self.tool_id += 1
            self.wear = 0
            self.tool_life = self._tool_life()
            self.emit(t, "ToolID", self.tool_id)
            reason_, category = FAULT_CODES[301]
            self.start_stop(t, "fault", 301, reason_, category, _minutes(rng, _TOOL_CHANGE_MINUTES))
            return
        if self.order.good >= self.order_qty:
            self.new_order(t, first=False)
            self.set_state(t, "setup", reason="changeover", category="changeover")
            dur = _minutes(rng, _SETUP_MINUTES)
            self.schedule(t + dur, _END, "setup", epoch=self.epoch)
            return
        self.schedule_cycle(t)

    def schedule_cycle(self, t: int) -> None:
        ms = self.cycle_ms()
        self.last_cycle_ms = ms
        self.schedule(t + ms, _CYCLE, epoch=self.epoch)

    def start_stop(self, t: int, state: str, code: int, reason: str, category: str, dur: int) -> None:
        self.set_state(t, state, fault_code=code, reason=reason, category=category)
        self.stop_index += 1
        self.schedule(t + dur, _END, state, epoch=self.epoch)
        if state == "idle" and dur < self.line.microstop_threshold_ms:
            return
        p = 0.7 if state == "idle" else 0.3
        if self.rng.random() < p:
            choices = [r for r in OPERATOR_REASONS if r != self.last.get("ReasonCode")]
            rc = self.rng.choice(sorted(choices))
            self.pending_reason = (self.stop_index, rc)
            delay = round(self.rng.uniform(60.0, 480.0) * 1000)
            self.schedule(t + delay, _EMIT, (self.stop_index, rc, self.interval))

    def on_stop(self, t: int) -> None:
        rng = self.rng
        thr = self.line.microstop_threshold_ms
        u = rng.random()
        if u < 0.55 and thr >= 5000:
            dur = round(rng.uniform(3000.0, min(0.9 * thr, 100_000.0)))
            self.start_stop(t, "idle", 0, "unassigned", "unassigned", dur)
        elif u < 0.70:
            lo = 1.1 * thr + 10_000
            dur = round(rng.uniform(lo, lo + 900_000))
            self.start_stop(t, "idle", 0, "unassigned", "unassigned", dur)
        else:
            code = rng.choice(_FAULTS_BY_TYPE[self.spec.type])
            reason, category = FAULT_CODES[code]
            self.start_stop(t, "fault", code, reason, category, _minutes(rng, _FAULT_MINUTES))

    def on_end(self, t: int, what: str) -> None:
        if what == "setup":
            self.startup_left = self.rng.choice((0, 1, 1, 2, 3))
        self.enter_running(t)

    def on_emit(self, t: int, payload: tuple[int, str, StateInterval]) -> None:
        idx, rc, iv = payload
        if self.pending_reason != (idx, rc):
            return
        self.pending_reason = None
        self.emit(t, "ReasonCode", rc)
        iv.reason_code, iv.reason_code_ts = rc, t
        iv.reason, iv.category = rc, OPERATOR_REASONS[rc]

    def on_sample(self, t: int) -> None:
        rng = self.rng
        dt_s = (t - self.last_sample) / 1000
        self.last_sample = t
        running = self.state == "running"
        day_frac = (t % _DAY_MS) / _DAY_MS
        ambient = 21.0 + 3.0 * math.sin(2 * math.pi * (day_frac - 0.375)) + rng.gauss(0, 0.05)
        target = self.p["dt"] if running else 3.0
        self.motor_dt += (target - self.motor_dt) * (1 - math.exp(-dt_s / 600.0))
        vib = self.p["vib"] + rng.gauss(0, 0.08) if running else abs(0.15 + rng.gauss(0, 0.03))
        heat = 0.0
        for a in self.anomalies:
            if a.start_ms <= t < a.start_ms + a.duration_ms:
                frac = (t - a.start_ms) / a.duration_ms
                if a.type == "bearing_wear" and running:
                    vib += frac * (a.peak - self.p["vib"])
                elif a.type == "overheating":
                    heat += frac * a.peak
        temp = ambient + self.motor_dt + heat + rng.gauss(0, 0.1)
        rpm = round(self.p["rpm"] * (1 + rng.gauss(0, 0.002))) if running else 0
        self.emit(t, "AmbientTemperature_C", round(ambient, 2))
        self.emit(t, "Temperature_C", round(temp, 2))
        self.emit(t, "Vibration_Velocity_mms", round(max(vib, 0.01), 3))
        self.emit(t, "SpindleSpeed_RPM", rpm)
        self.schedule(t + self.line.sample_ms, _SAMPLE)

    def advance(self, horizon: int) -> None:
        ev = self.events
        while ev and ev[0][0] < horizon:
            t, kind, _, epoch, payload = heapq.heappop(ev)
            if epoch >= 0 and epoch != self.epoch:
                continue
            if kind == _CAL:
                self.on_calendar(t)
            elif kind == _CYCLE:
                self.on_cycle(t)
            elif kind == _END:
                self.on_end(t, payload)
            elif kind == _STOP:
                self.on_stop(t)
            elif kind == _EMIT:
                self.on_emit(t, payload)
            else:
                self.on_sample(t)

    last_cycle_ms: int = 0


def _minutes(rng: random.Random, bounds: tuple[float, float]) -> int:
    return round(rng.uniform(*bounds) * 60_000)


def _machine_type(m: MachineConfig) -> str:
    if m.type in _TYPES:
        return m.type
    for t in _TYPES:
        if m.id.lower().startswith(t):
            return t
    return "press"


class PlcLine:
    """A simulated production line: machines, their PLC tags and the ground truth.

    Parameters
    ----------
    seed
        Everything is reproducible from it.
    machines
        How many machines. The first come from ``config.lines`` (ids, ideal cycle times per
        part); the rest are generated (``press-0N``, ``cnc-0N``, ``molder-0N``) on ``line``.
    start_ms
        Event time of the first sample, epoch ms UTC.
    config
        The plant config: shift calendar, holidays, ``microstop_threshold_s``, site, machines.
    line
        Line id for generated machines (default: the config's first line, else ``line-1``).
    sample_ms
        Period of the condition signals.
    anomalies
        Anomalies to inject; ``None`` = from the seed: per machine one every
        ``anomaly_mean_gap_s`` on average (exponential), the first after ``anomaly_warmup_s``.
    """

    def __init__(self, seed: int = 1, machines: int = 3, start_ms: int = 1763791200000,
                 config: PlantConfig | None = None, *, line: str | None = None, sample_ms: int = 10_000,
                 anomalies: Sequence[AnomalySpec] | None = None, anomaly_warmup_s: float = 2 * 3600,
                 anomaly_mean_gap_s: float = 4 * 3600, source: str = "opcua") -> None:
        if machines < 1:
            msg = f"machines must be >= 1, got {machines}"
            raise ValueError(msg)
        if sample_ms < 1:
            msg = f"sample_ms must be >= 1, got {sample_ms}"
            raise ValueError(msg)
        self.seed = seed
        self.config = config or PlantConfig()
        self.start_ms = start_ms
        self.now = start_ms
        self.sample_ms = sample_ms
        self.source = source
        self.microstop_threshold_ms = round(self.config.microstop_threshold_s * 1000)
        self.calendar = ShiftCalendar(self.config)
        self.seq = 0
        self.truth_states: list[StateInterval] = []
        self.truth_orders: list[WorkOrderTruth] = []
        self.truth_scrap: list[ScrapTruth] = []
        self.truth_resets: list[dict[str, Any]] = []
        self.specs = self._specs(machines, line)
        self.machines = [
            _Machine(s, self, random.Random(f"plantstream-plc:{seed}:{s.id}")) for s in self.specs
        ]
        self.anomaly_specs = list(anomalies) if anomalies is not None else self._anomalies(
            anomaly_warmup_s, anomaly_mean_gap_s)
        ids = {s.id for s in self.specs}
        for a in self.anomaly_specs:
            if a.machine not in ids:
                msg = f"anomaly for unknown machine {a.machine!r}; machines are {sorted(ids)}"
                raise ValueError(msg)
            if a.type not in ("bearing_wear", "overheating"):
                msg = f"anomaly type must be bearing_wear or overheating, got {a.type!r}"
                raise ValueError(msg)
        for m in self.machines:
            m.anomalies = [a for a in self.anomaly_specs if a.machine == m.spec.id]
            m.start(start_ms)
        self._info = {
            s.id: {"site": self.config.site, "line": s.line} for s in self.specs
        }

    def _specs(self, n: int, line: str | None) -> list[MachineSpec]:
        out: list[MachineSpec] = []
        for ln in self.config.lines:
            for mc in ln.machines:
                if len(out) == n:
                    return out
                mtype = _machine_type(mc)
                base = mc.ideal_cycle_time_ms or _TYPES[mtype]["ideal"]
                parts = {p: base for p in ("P-100", "P-200", "P-300")}
                parts.update(mc.ideal_cycle_time_ms_by_part)
                out.append(MachineSpec(mc.id, mtype, ln.id, parts))
        gen_line = line or (self.config.lines[0].id if self.config.lines else "line-1")
        taken = {s.id for s in out}
        counters = dict.fromkeys(_TYPE_ORDER, 0)
        i = 0
        while len(out) < n:
            mtype = _TYPE_ORDER[i % len(_TYPE_ORDER)]
            i += 1
            counters[mtype] += 1
            mid = f"{mtype}-{counters[mtype]:02d}"
            if mid in taken:
                continue
            base = _TYPES[mtype]["ideal"]
            parts = {"P-100": base, "P-200": round(base * 1.2), "P-300": round(base * 0.9)}
            out.append(MachineSpec(mid, mtype, gen_line, parts))
            taken.add(mid)
        return out

    def _anomalies(self, warmup_s: float, gap_s: float) -> list[AnomalySpec]:
        out: list[AnomalySpec] = []
        horizon = self.start_ms + 60 * _DAY_MS
        for s in self.specs:
            rng = random.Random(f"plantstream-plc-anomaly:{self.seed}:{s.id}")
            t = self.start_ms + round((warmup_s + rng.expovariate(1.0 / gap_s)) * 1000)
            kinds = ["bearing_wear", "overheating"]
            rng.shuffle(kinds)
            k = 0
            while t < horizon and len(out) < 10_000:
                kind = kinds[k % 2]
                k += 1
                if kind == "bearing_wear":
                    dur = round(rng.uniform(60, 120) * 60_000)
                    peak = round(rng.uniform(9.0, 12.0), 2)
                else:
                    dur = round(rng.uniform(30, 90) * 60_000)
                    peak = round(rng.uniform(18.0, 25.0), 2)
                out.append(AnomalySpec(s.id, kind, t, dur, peak))
                t += dur + round(rng.expovariate(1.0 / gap_s) * 1000) + 600_000
        return out

    # -- running
    @property
    def machine_ids(self) -> list[str]:
        return [s.id for s in self.specs]

    def run_tags(self, until_ms: int, step_ms: int = 60_000) -> Iterator[TagUpdate]:
        """Advance event time to ``until_ms`` (exclusive) and yield the PLC tag changes in order.

        Calls continue where the last one stopped; the output is ordered by ``ts`` (ties in
        emission order, so per machine it is the order the PLC wrote its tags).
        """
        while self.now < until_ms:
            horizon = min(until_ms, self.now + step_ms)
            for m in self.machines:
                m.advance(horizon)
            batch: list[tuple[int, int, TagUpdate]] = []
            for m in self.machines:
                batch.extend(m.out)
                m.out.clear()
            batch.sort(key=lambda x: (x[0], x[1]))
            self.now = horizon
            for _, _, upd in batch:
                yield upd

    def run(self, until_ms: int) -> Iterator[Measurement]:
        """Advance to ``until_ms`` and yield the canonical Measurements (as after tag mapping)."""
        for upd in self.run_tags(until_ms):
            m = self.to_measurement(upd)
            if m is not None:
                yield m

    def to_measurement(self, upd: TagUpdate) -> Measurement | None:
        """Map one tag update to its canonical Measurement (None for tags without a metric)."""
        metric, unit = TAGS[upd.tag]
        if metric is None:
            return None
        value = upd.value
        if upd.tag == "MachineState":
            value = CODE_STATES[int(value)]
        info = self._info[upd.machine]
        return Measurement(upd.ts, upd.machine, metric, value, info["site"], info["line"], unit,
                           self.source)

    # -- truth
    def ground_truth(self) -> GroundTruth:
        """The ground truth up to the current event time (open intervals closed there)."""
        end = self.now
        states = list(self.truth_states)
        for m in self.machines:
            iv = m.interval
            if iv is not None and end > iv.start_ms:
                c = StateInterval(**asdict(iv))
                c.end_ms = end
                c.microstop = c.state == "idle" and c.duration_ms < self.microstop_threshold_ms
                states.append(c)
        states.sort(key=lambda s: (s.machine, s.start_ms))
        truth = GroundTruth(self.seed, self.start_ms, end,
                            {s.id: {"type": s.type, "line": s.line, "site": self.config.site,
                                    "ideal_cycle_time_ms": s.ideal_ms} for s in self.specs},
                            self.config.microstop_threshold_s, states)
        for m in self.machines:
            mid = m.spec.id
            truth.counts[mid] = {"good": m.true_good, "reject": m.true_reject,
                                 "total": m.true_good + m.true_reject,
                                 "rejects_by_reason": dict(sorted(m.by_reason.items()))}
            for (shift, sstart), (g, r) in sorted(m.shift_counts.items(), key=lambda kv: kv[0][1]):
                truth.shift_counts.append({"machine": mid, "shift": shift, "shift_start_ms": sstart,
                                           "good": g, "reject": r})
            state = m.last.get("MachineState")
            truth.final[mid] = {"good_count": m.last.get("PartCountGood", 0),
                                "reject_count": m.last.get("PartCountReject", 0),
                                "machine_state": CODE_STATES.get(state, "") if state is not None else ""}
        for w in self.truth_orders:
            c2 = WorkOrderTruth(**asdict(w))
            if w is self._open_order(w.machine):
                c2.end_ms = end
            truth.work_orders.append(c2)
        truth.scrap = [ScrapTruth(**asdict(s)) for s in self.truth_scrap]
        for a in self.anomaly_specs:
            if a.start_ms >= end:
                continue
            if a.type == "bearing_wear":
                base = _TYPES[self._spec(a.machine).type]["vib"]
                frac = (ZONE_C_MMS - base) / (a.peak - base) if a.peak > base else 1.0
                zc = a.start_ms + math.ceil(frac * a.duration_ms) if 0 <= frac < 1 else 0
                truth.anomalies.append(AnomalyTruth(a.machine, a.type, "vibration_rms_mms", a.start_ms,
                                                    min(a.start_ms + a.duration_ms, end),
                                                    zc if zc < end else 0, a.peak))
            else:
                truth.anomalies.append(AnomalyTruth(a.machine, a.type, "temperature_c", a.start_ms,
                                                    min(a.start_ms + a.duration_ms, end), 0, a.peak))
        truth.counter_resets = list(self.truth_resets)
        return truth

    def _spec(self, machine: str) -> MachineSpec:
        return next(s for s in self.specs if s.id == machine)

    def _open_order(self, machine: str) -> WorkOrderTruth | None:
        return next((m.order for m in self.machines if m.spec.id == machine), None)

    # -- files
    def write_replay_file(self, path: str | Path, until_ms: int) -> int:
        """Run to ``until_ms`` and write the Measurements as JSONL (``plantstream replay``)."""
        n = 0
        with Path(path).open("wb") as fh:
            for m in self.run(until_ms):
                fh.write(m.to_json() + b"\n")
                n += 1
        return n

    def write_ground_truth(self, path: str | Path) -> int:
        """Write :meth:`ground_truth` as JSONL; returns the number of records."""
        return self.ground_truth().write(path)


def simulate(seed: int, machines: int, start_ms: int, until_ms: int, config: PlantConfig | None = None,
             **kwargs: Any) -> tuple[list[Measurement], GroundTruth]:
    """Run a line from ``start_ms`` to ``until_ms``: the Measurements and the ground truth."""
    line = PlcLine(seed=seed, machines=machines, start_ms=start_ms, config=config, **kwargs)
    ms = list(line.run(until_ms))
    return ms, line.ground_truth()


def state_changes(measurements: Iterable[Measurement]) -> dict[str, list[tuple[int, str]]]:
    """Per machine the ``(ts, state)`` sequence of ``machine_state`` measurements."""
    out: dict[str, list[tuple[int, str]]] = {}
    for m in measurements:
        if m.metric == "machine_state":
            out.setdefault(m.machine, []).append((m.ts, str(m.value)))
    return out
