"""Alerts: rules over one machine's stream, with a lifecycle (raised → cleared) and timers.

:class:`AlertEngine` (one per machine, pure; no I/O, no clock) evaluates the rules of the
``alerts:`` config section (:mod:`schemas.alerts_config`, KPI.md defaults):

- ``machine_down``: an unplanned stop (loss bucket ``unplanned_stop``, e.g. ``fault``, ``idle``)
  longer than 15 min. Due at ``stop start + 15 min + 1 ms``: it fires while the stop is still
  open, either when a later sample passes that time or from a **timer** (:meth:`due` /
  :meth:`advance`) without new data; clears when the machine leaves the unplanned stop.
- ``scrap_rate``: rejects / (good + rejects) over the last hour above 5 %, evaluated at every
  minute boundary of event time (:class:`operators.scrap.RollingCounts`); clears at ≤ 4 %.
- ``oee`` / ``quality``: shift-to-date from the OEE facts of an embedded
  :class:`operators.oee.OeeAccounting` (the same accounting as the oee flow): OEE below 60 %
  raises a warning that escalates to critical below 40 % (same alert, new record); quality
  below 95 %. They clear with hysteresis, or at the end of the shift (the next shift starts a
  new shift-to-date).
- ``vibration``: RMS in ISO 10816 zone C (warning) or D (critical) for 2 consecutive samples
  (:func:`operators.anomaly.iso10816_zone`); clears below 7.1 − 0.5 mm/s.
- ``silence``: a condition signal silent longer than 15 min while the machine runs (timer;
  OPC UA and MQTT deliver changes only, so a stopped machine's signals may rightly be still);
  clears when the signal comes back. A machine that never sends ``machine_state`` is always judged.
- ``oil_temperature``: ``oil_temperature_c`` outside ``oil_temperature_target_c`` ± band for a
  minimum duration; clears within band − hysteresis.

A value equal to a threshold never fires. Each episode raises ONE alert with a stable id
(hash of machine, rule, signal and raise time); a record is written when it is raised, when its
severity escalates and when it clears — each record has its own ``event_id`` (the idempotency
key of the webhook) and a higher ``version`` (the ``alerts`` table keeps the latest per id).

Time: the engine's clock is the largest event time it has seen; :meth:`advance` moves it
forward without data (the Bytewax step maps wall time to event time with an injected
:class:`EventClock`). Samples are applied in arrival order. At the end of input nothing is
advanced: an open stop or a silent signal raises only if the data reached its due time, and
alerts still open stay open (the condition held at the end of the data).

Examples
--------
>>> from plantstream.schemas.config import build_config
>>> eng = AlertEngine.for_config(build_config({}, {}), "press-01")
>>> eng.on_samples([Measurement(0, "press-01", "machine_state", "fault")])
[]
>>> eng.due()
900001
>>> [(a["rule"], a["status"], a["ts"], a["severity"]) for a in eng.advance(1_000_000)]
[('machine_down', 'raised', 900001, 'critical')]
>>> back = eng.on_samples([Measurement(960_000, "press-01", "machine_state", "running")])
>>> [(a["rule"], a["status"], a["ts"]) for a in back]
[('machine_down', 'cleared', 960000)]
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from plantstream.operators.anomaly import ISO10816_ZONES, iso10816_zone
from plantstream.operators.counters import DEFAULT_RULES, Counter, CounterRules
from plantstream.operators.logic import LogicSpec, MachineLogic
from plantstream.operators.oee import (
    OEE_METRICS,
    OEE_STATE,
    OeeAccounting,
    OeeState,
    pre_ledger_payload,
)
from plantstream.operators.scrap import RollingCounts
from plantstream.operators.shifts import ShiftCalendar
from plantstream.operators.state import MAGIC, StateCodec, StateError, decode_header
from plantstream.schemas.alerts_config import AlertsConfig
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.measurement import (
    GOOD_COUNT,
    GOOD_PARTS,
    MACHINE_STATE,
    REJECT_COUNT,
    REJECT_PARTS,
    Measurement,
    is_condition_metric,
)
from plantstream.schemas.oee_config import LossConfig

Row = dict[str, Any]
ZONE_C = next(b for b, z in ISO10816_ZONES if z == "B")  # upper bound of zone B = start of C
ZONE_D = next(b for b, z in ISO10816_ZONES if z == "C")
_OFF_BUCKETS = ("not_scheduled", "excluded")
_RANK = {"info": 0, "warning": 1, "critical": 2}
_UNKNOWN = -(1 << 62)
"""Marks :attr:`AlertEngine._next` as to be recomputed."""


def alert_id(machine: str, rule: str, signal: str, raised_at: int) -> str:
    """The stable id of one alert episode.

    >>> alert_id("press-01", "machine_down", "machine_state", 900001)
    'a569c878e0f68e3f381f'
    """
    return hashlib.sha1(f"{machine}|{rule}|{signal}|{raised_at}".encode()).hexdigest()[:20]


@dataclass(frozen=True)
class EventClock:
    """Maps wall time to event time: last event ts + (wall now − wall at that event) × speed.

    Injected into the Bytewax step so tests run timers faster than real time (``speed``).

    >>> c = EventClock(speed=60.0, wall=lambda: 100.0)
    >>> c.event_now(last_ts=0, last_wall=99.0), c.wall_at(120_000, last_ts=0, last_wall=99.0)
    (60000, 101.0)
    """

    speed: float = 1.0
    wall: Callable[[], float] = time.time

    def event_now(self, last_ts: int, last_wall: float) -> int:
        return last_ts + int((self.wall() - last_wall) * 1000 * self.speed)

    def wall_at(self, due_ts: int, last_ts: int, last_wall: float) -> float:
        """The wall time (s) at which event time reaches ``due_ts``."""
        return last_wall + (due_ts - last_ts) / 1000 / self.speed

    def datetime_at(self, due_ts: int, last_ts: int, last_wall: float) -> datetime:
        return datetime.fromtimestamp(self.wall_at(due_ts, last_ts, last_wall), UTC)


@dataclass
class Episode:
    alert_id: str
    rule: str
    signal: str
    severity: str
    raised_at: int
    value: float
    threshold: float
    message: str


@dataclass
class _AState:
    now: int = -1
    version: int = 0
    state: str = ""
    state_bucket: str = ""
    active_since: int = -1
    """Since when the machine is not off (silence is only judged while it is on)."""
    down_since: int | None = None
    down_state: str = ""
    last_seen: dict[str, int] = field(default_factory=dict)
    open: dict[tuple[str, str], Episode] = field(default_factory=dict)
    counters: dict[str, Counter] = field(default_factory=dict)
    rolling: RollingCounts | None = None
    next_boundary: int = -1
    vib_streak: int = 0
    oil_target: float | None = None
    oil_out_since: int | None = None
    shift_key: tuple[Any, ...] | None = None
    shift_facts: dict[tuple[Any, ...], tuple[float, float, float, float]] = field(default_factory=dict)
    """Current shift: (window, part, work order) → (planned_s, ideal_s, good, total)."""
    shift_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    """The sums of ``shift_facts`` (a restated window replaces its earlier version)."""


@dataclass
class AlertState:
    """The state of one machine's alert logic: who it is, the rules' state and, when the engine
    keeps its own OEE accounting, that accounting's state (the OEE flow's :class:`OeeState`)."""

    machine: str = ""
    """Empty until the machine's first sample (a builder does not get the key)."""
    site: str = ""
    line: str = ""
    rules: _AState = field(default_factory=_AState)
    oee: OeeState | None = None


class AlertEngine:
    """The alert rules of one machine (see the module docstring)."""

    def __init__(self, machine: str, site: str, line: str, cfg: AlertsConfig, losses: LossConfig,
                 oee: OeeAccounting | None) -> None:
        self.machine, self.site, self.line = machine, site, line
        self.cfg = cfg
        self.losses = losses
        self.oee = oee
        self.wall_ms: int | None = None
        """The wall clock at the current batch (epoch ms), for the OEE accounting's clock-skew
        check (samples too far ahead of it are dead-lettered, never applied); None: no check."""
        self.counter_rules = DEFAULT_RULES
        """How a decrease of a counter is read (the machine's ``counters:``; :meth:`for_config`)."""
        self.s = _AState()
        self.s.rolling = RollingCounts(cfg.scrap_rate.window_s * 1000, 60_000)
        self._ruled = frozenset({MACHINE_STATE, GOOD_COUNT, REJECT_COUNT, GOOD_PARTS, REJECT_PARTS,
                                 cfg.oil_temperature.target_signal,
                                 cfg.oil_temperature.signal} | (OEE_METRICS if oee is not None else set()))
        """Metrics some rule other than ``silence`` reads (vibration aside, shortcut in its
        normal zones): :meth:`on_samples` never shortcuts them."""
        self._watched: dict[str, bool] = {}
        self.max_signals = 128
        """Signals whose silence is watched at most (``state.max_signals_per_machine``)."""
        self._next: int | None = _UNKNOWN
        """A lower bound of :meth:`due` (None: no timer), recomputed only when reached or
        after a change that can bring a timer forward (state, episodes, a new signal)."""

    @classmethod
    def for_config(cls, config: PlantConfig, machine: str, site: str = "", line: str = "",
                   calendar: ShiftCalendar | None = None, *, own_oee: bool = True) -> AlertEngine:
        """The machine's rules. The OEE and quality rules read OEE facts: from an accounting of
        the engine's own, or (``own_oee=False``) from :meth:`on_facts` — the OEE flow's."""
        info = config.machine(machine)
        cfg = config.alerts
        oee = None
        if own_oee and (cfg.oee.enabled or cfg.quality.enabled):
            oee = OeeAccounting.for_config(config, machine, calendar)
        engine = cls(machine, site or info.site, line or info.line, cfg, config.losses, oee)
        engine.counter_rules = CounterRules.of(config.counters_for(machine))
        engine.max_signals = config.state.max_signals_per_machine
        return engine

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> AlertState:
        """The engine's state (live: encode it at once, :data:`ALERTS_CODEC`)."""
        return AlertState(self.machine, self.site, self.line, self.s,
                          self.oee.state() if self.oee is not None else None)

    def restore(self, state: AlertState) -> None:
        """Continue from ``state`` (of this machine; its OEE accounting only when it keeps one)."""
        self.site, self.line, self.s = state.site, state.line, state.rules
        self._next = _UNKNOWN
        if self.oee is not None and state.oee is not None:
            self.oee.restore(state.oee)

    @property
    def now(self) -> int:
        return self.s.now

    # -- records -------------------------------------------------------------------------------
    def _record(self, ep: Episode, status: str, ts: int, value: float | None = None) -> Row:
        self.s.version += 1
        return {
            "alert_id": ep.alert_id, "event_id": f"{ep.alert_id}:{status}:{ep.severity}",
            "machine": self.machine, "site": self.site, "line": self.line, "rule": ep.rule,
            "signal": ep.signal, "severity": ep.severity, "status": status, "ts": ts,
            "raised_at": ep.raised_at, "cleared_at": ts if status == "cleared" else None,
            "value": ep.value if value is None else value, "threshold": ep.threshold,
            "message": ep.message, "version": self.s.version,
        }

    def _raise(self, rule: str, signal: str, ts: int, severity: str, value: float, threshold: float,
               message: str) -> list[Row]:
        key = (rule, signal)
        ep = self.s.open.get(key)
        if ep is not None:
            if _RANK[severity] > _RANK[ep.severity]:  # escalation: same alert, new record
                self._next = _UNKNOWN
                ep.severity, ep.value, ep.threshold, ep.message = severity, value, threshold, message
                return [self._record(ep, "raised", ts)]
            return []
        ep = Episode(alert_id(self.machine, rule, signal, ts), rule, signal, severity, ts, value, threshold,
                     message)
        self.s.open[key] = ep
        self._next = _UNKNOWN
        return [self._record(ep, "raised", ts)]

    def _clear(self, rule: str, signal: str, ts: int, value: float | None = None) -> list[Row]:
        ep = self.s.open.pop((rule, signal), None)
        if ep is None:
            return []
        self._next = _UNKNOWN
        return [self._record(ep, "cleared", ts, value)]

    # -- time ----------------------------------------------------------------------------------
    def _silence_watched(self, signal: str) -> bool:
        sig = self.cfg.silence.signals
        return signal in sig if sig else is_condition_metric(signal)

    def _down_due(self) -> int | None:
        s, cfg = self.s, self.cfg
        if not cfg.machine_down.enabled or s.down_since is None or ("machine_down", MACHINE_STATE) in s.open:
            return None
        return s.down_since + round(cfg.machine_down.minutes * 60_000) + 1

    def due(self) -> int | None:
        """The next event time at which a timer rule fires without new data (or None)."""
        s, cfg = self.s, self.cfg
        dues: list[int] = []
        down = self._down_due()
        if down is not None:
            dues.append(down)
        if cfg.silence.enabled and (s.active_since >= 0 or not s.state_bucket):
            limit = round(cfg.silence.minutes * 60_000) + 1
            for sig, seen in s.last_seen.items():
                if ("silence", sig) not in s.open:
                    dues.append(max(seen, s.active_since) + limit)  # no state known: always judged
        return min(dues) if dues else None

    def next_due(self) -> int | None:
        """:meth:`due`, or an earlier time when a timer may have moved since it was computed."""
        if self._next == _UNKNOWN:
            self._next = self.due()
        return self._next

    def advance(self, t: int) -> list[Row]:
        """Move event time to ``t``: fire every timer due at or before it (at its due time)."""
        s, cfg = self.s, self.cfg
        nxt = self.next_due()
        if nxt is None or nxt > t:  # the common case: nothing can be due yet
            if t > s.now:
                s.now = t
            return []
        out: list[Row] = []
        while True:
            d = self.due()
            if d is None or d > t:
                break
            if d == self._down_due() and s.down_since is not None:
                mins = (d - s.down_since) / 60_000
                out += self._raise("machine_down", MACHINE_STATE, d, cfg.machine_down.severity, mins,
                                   cfg.machine_down.minutes,
                                   f"{self.machine} down ({s.down_state}) for more than "
                                   f"{cfg.machine_down.minutes:g} min")
                continue
            limit = round(cfg.silence.minutes * 60_000) + 1
            for sig, seen in sorted(s.last_seen.items()):
                if ("silence", sig) not in s.open and max(seen, s.active_since) + limit == d:
                    msg = f"{self.machine} {sig} silent for more than {cfg.silence.minutes:g} min"
                    out += self._raise("silence", sig, d, cfg.silence.severity, (d - seen) / 60_000,
                                       cfg.silence.minutes, msg)
        if t > s.now:
            s.now = t
        self._next = _UNKNOWN
        return out

    # -- input ---------------------------------------------------------------------------------
    def _sample(self, ts: int, metric: str, value: Any) -> list[Row]:
        """One sample (arrival order): timers up to ``ts`` first, then the rules it feeds."""
        out = self.advance(ts)
        s, cfg = self.s, self.cfg
        if self.oee is not None and metric in OEE_METRICS:
            self.oee.ingest(((ts, metric, value),), None, self.wall_ms)
            out += self._on_facts(self.oee.take())
        if metric == MACHINE_STATE:
            out += self._on_state(ts, value)
        elif metric in (GOOD_COUNT, REJECT_COUNT, GOOD_PARTS, REJECT_PARTS):
            out += self._on_count(ts, metric, value)
        elif cfg.vibration.enabled and metric == cfg.vibration.signal:
            out += self._on_vibration(ts, value)
        elif metric == cfg.oil_temperature.target_signal:
            if _num(value) is not None:
                s.oil_target = _num(value)
        elif cfg.oil_temperature.enabled and metric == cfg.oil_temperature.signal:
            out += self._on_oil(ts, value)
        if cfg.silence.enabled and self._silence_watched(metric):
            seen = s.last_seen.get(metric)
            if seen is None:
                if len(s.last_seen) >= self.max_signals:
                    return out  # bounded: a machine sending ever new metric names
                self._next = _UNKNOWN  # a new signal: a new silence timer
                s.last_seen[metric] = ts
            elif ts > seen:
                s.last_seen[metric] = ts
            if ("silence", metric) in s.open:
                out += self._clear("silence", metric, ts)
        return out

    def on_samples(self, samples: Iterable[Measurement]) -> list[Row]:
        """The only data entry: the machine's samples in arrival order (one sample is a list
        of one). Each goes through the rules it feeds (timers up to its time first), except
        the condition signals no rule but ``silence`` watches (most of the traffic): when no
        timer can be due, such a sample only moves event time and its signal's last-seen time."""
        out: list[Row] = []
        s, cfg = self.s, self.cfg
        ruled = self._ruled
        silence = cfg.silence.enabled
        watched = self._watched
        vib = cfg.vibration.signal if cfg.vibration.enabled else None
        vib_key = ("vibration", vib)
        for m in samples:
            ts, metric = m.ts, m.metric
            nxt = self._next
            if metric == vib:  # in zone A or B with no alert open: the rule only resets its streak
                v = m.value
                if (type(v) is not float and type(v) is not int) or v >= ZONE_C or vib_key in s.open:
                    out += self._sample(ts, metric, v)
                    continue
                s.vib_streak = 0
            if metric in ruled or nxt == _UNKNOWN or (nxt is not None and nxt <= ts):
                out += self._sample(ts, metric, m.value)
                continue
            if silence:
                w = watched.get(metric)
                if w is None:
                    if len(watched) >= 4 * self.max_signals:
                        watched.clear()  # a cache of metric names: bounded
                    w = watched[metric] = self._silence_watched(metric)
                if w:
                    seen = s.last_seen.get(metric)
                    if seen is None or ("silence", metric) in s.open:
                        out += self._sample(ts, metric, m.value)  # a new signal, or one coming back
                        continue
                    if ts > seen:
                        s.last_seen[metric] = ts
            if ts > s.now:
                s.now = ts
        return out

    def finish(self) -> list[Row]:
        """End of input: no timer is advanced (see the module docstring); OEE windows close."""
        if self.oee is None:
            return []
        keep = self.oee.dump()
        out = self._on_facts(self.oee.finish())
        self.oee.load(keep)
        return out

    # -- rules -----------------------------------------------------------------------------------
    def _on_state(self, ts: int, value: Any) -> list[Row]:
        s = self.s
        self._next = _UNKNOWN
        state = self.losses.state_name(value)
        bucket = self.losses.bucket(state)
        out: list[Row] = []
        active = bucket == "run" if self.cfg.silence.only_while_running else bucket not in _OFF_BUCKETS
        if not active:
            s.active_since = -1
        elif s.active_since < 0:
            s.active_since = ts
        s.state, s.state_bucket = state, bucket
        if bucket == "unplanned_stop":
            if s.down_since is None:
                s.down_since = ts
            s.down_state = state
        elif s.down_since is not None:
            down_min = (ts - s.down_since) / 60_000
            s.down_since = None
            out += self._clear("machine_down", MACHINE_STATE, ts, down_min)
        return out

    def _on_count(self, ts: int, metric: str, value: Any) -> list[Row]:
        s, rule = self.s, self.cfg.scrap_rate
        v = _num(value)
        if v is None:
            return []
        if metric in (GOOD_COUNT, REJECT_COUNT):
            c = s.counters.setdefault(metric, Counter())
            d = c.delta(v, self.counter_rules)
        else:
            d = v if v > 0 else 0
        out: list[Row] = []
        assert s.rolling is not None
        hop = s.rolling.hop_ms
        if s.next_boundary < 0:
            s.next_boundary = ts - ts % hop + hop
        while rule.enabled and s.next_boundary <= ts:  # minutes that ended before this sample
            out += self._judge_rate(s.next_boundary)
            s.next_boundary += hop
            if not any(m >= s.next_boundary - s.rolling.window_ms for m in s.rolling.buckets):
                s.next_boundary = ts - ts % hop + hop
        if d > 0:
            reject = metric in (REJECT_COUNT, REJECT_PARTS)
            s.rolling.add(ts, 0 if reject else d, d if reject else 0)
        return out

    def _judge_rate(self, end: int) -> list[Row]:
        s, rule = self.s, self.cfg.scrap_rate
        assert s.rolling is not None
        g, r = s.rolling.window(end)
        s.rolling.prune(end)
        if g + r < rule.min_parts:
            return []
        rate = r / (g + r)
        if rate > rule.threshold:
            return self._raise("scrap_rate", "scrap_rate", end, rule.severity, rate, rule.threshold,
                               f"{self.machine} scrap rate {100 * rate:.1f} % over the last "
                               f"{rule.window_s // 60} min (> {100 * rule.threshold:g} %)")
        if rate <= rule.clear_below:
            return self._clear("scrap_rate", "scrap_rate", end, rate)
        return []

    def _on_vibration(self, ts: int, value: Any) -> list[Row]:
        s, rule = self.s, self.cfg.vibration
        v = _num(value)
        if v is None:
            return []
        zone = iso10816_zone(v)
        if zone in ("C", "D"):
            s.vib_streak += 1
            if s.vib_streak >= rule.min_samples:
                sev = "critical" if zone == "D" else "warning"
                return self._raise("vibration", rule.signal, ts, sev, v, ZONE_D if zone == "D" else ZONE_C,
                                   f"{self.machine} vibration {v:.2f} mm/s RMS in ISO 10816 zone {zone}")
            return []
        s.vib_streak = 0
        if v < ZONE_C - rule.clear_margin:
            return self._clear("vibration", rule.signal, ts, v)
        return []

    def _on_oil(self, ts: int, value: Any) -> list[Row]:
        s, rule = self.s, self.cfg.oil_temperature
        v = _num(value)
        target = s.oil_target if s.oil_target is not None else rule.target
        if v is None or target is None:
            return []
        dev = abs(v - target)
        if dev > rule.band:
            if s.oil_out_since is None:
                s.oil_out_since = ts
            if ts - s.oil_out_since >= rule.min_duration_s * 1000:
                thr = target + rule.band if v > target else target - rule.band
                return self._raise("oil_temperature", rule.signal, ts, rule.severity, v, thr,
                                   f"{self.machine} oil {v:.1f} outside {target:g} ± {rule.band:g}")
            return []
        s.oil_out_since = None
        if dev <= rule.band - rule.hysteresis:
            return self._clear("oil_temperature", rule.signal, ts, v)
        return []

    def on_facts(self, outputs: list[tuple[str, Row]]) -> list[Row]:
        """OEE facts of this machine computed elsewhere (the OEE flow), for the OEE and quality
        rules; other tables are ignored."""
        if not (self.cfg.oee.enabled or self.cfg.quality.enabled):
            return []
        return self._on_facts(outputs)

    def _on_facts(self, outputs: list[tuple[str, Row]]) -> list[Row]:
        s = self.s
        out: list[Row] = []
        for table, row in outputs:
            if table != "oee_facts":
                continue
            key = (row["shift"], row["shift_start"], row["day"] if not row["shift"] else None)
            ts = int(row["window_end"])
            if s.shift_key != key:
                if s.shift_key is not None and _shift_order(key) < _shift_order(s.shift_key):
                    continue  # a restated window of an earlier shift: that shift is over
                if s.shift_key is not None:
                    out += self._clear("oee", "oee", ts)
                    out += self._clear("quality", "quality", ts)
                s.shift_key, s.shift_facts, s.shift_sums = key, {}, [0.0, 0.0, 0.0, 0.0]
            fact = (row["planned_s"], row["ideal_s"], row["good"], row["total"])
            old = s.shift_facts.get((row["window_start"], row["part_number"], row["work_order"]))
            s.shift_facts[(row["window_start"], row["part_number"], row["work_order"])] = fact
            for i, v in enumerate(fact):
                s.shift_sums[i] += v - (old[i] if old is not None else 0)
            out += self._judge_shift(ts)
        return out

    def _judge_shift(self, ts: int) -> list[Row]:
        cfg = self.cfg
        planned, ideal, good, total = self.s.shift_sums
        out: list[Row] = []
        rule = cfg.oee
        if rule.enabled and total and planned >= rule.min_planned_minutes * 60 and planned > 0:
            oee = ideal * good / total / planned
            if oee < rule.critical or oee < rule.warning:
                sev = "critical" if oee < rule.critical else "warning"
                thr = rule.critical if sev == "critical" else rule.warning
                out += self._raise("oee", "oee", ts, sev, oee, thr,
                                   f"{self.machine} OEE shift-to-date {100 * oee:.1f} % (< {100 * thr:g} %)")
            elif oee >= rule.warning + rule.hysteresis:
                out += self._clear("oee", "oee", ts, oee)
        q = cfg.quality
        if q.enabled and total >= q.min_parts:
            quality = good / total
            if quality < q.threshold:
                out += self._raise("quality", "quality", ts, q.severity, quality, q.threshold,
                                   f"{self.machine} quality shift-to-date {100 * quality:.2f} % "
                                   f"(< {100 * q.threshold:g} %)")
            elif quality >= q.threshold + q.hysteresis:
                out += self._clear("quality", "quality", ts, quality)
        return out


def _shift_order(key: tuple[Any, ...]) -> tuple[int, str]:
    return int(key[1]), str(key[2] or "")


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# -- state codec -------------------------------------------------------------------------------


def _dump_day(key: tuple[Any, ...] | None) -> Any:
    if key is None:
        return None
    shift, start, day = key
    return (shift, start, day.isoformat() if isinstance(day, date) else None)


def _load_day(p: Any) -> tuple[Any, ...] | None:
    if p is None:
        return None
    shift, start, day = p
    return (shift, start, None if day is None else date.fromisoformat(day))


def _dump_alerts(st: AlertState) -> dict[str, Any]:
    s = st.rules
    rolling = s.rolling
    return {
        "machine": st.machine, "site": st.site, "line": st.line,
        "oee": None if st.oee is None else (OEE_STATE.version, OEE_STATE.payload(st.oee)),
        "now": s.now, "version": s.version, "state": s.state, "state_bucket": s.state_bucket,
        "active_since": s.active_since, "down_since": s.down_since, "down_state": s.down_state,
        "last_seen": dict(s.last_seen),
        "open": [(e.alert_id, e.rule, e.signal, e.severity, e.raised_at, e.value, e.threshold, e.message)
                 for e in s.open.values()],
        "counters": {k: c.last for k, c in s.counters.items()},
        "rolling": None if rolling is None else (rolling.window_ms, rolling.hop_ms,
                                                 {b: list(v) for b, v in rolling.buckets.items()}),
        "next_boundary": s.next_boundary, "vib_streak": s.vib_streak, "oil_target": s.oil_target,
        "oil_out_since": s.oil_out_since, "shift_key": _dump_day(s.shift_key),
        "shift_facts": [(k, v) for k, v in s.shift_facts.items()], "shift_sums": list(s.shift_sums),
    }


def _load_alerts(p: dict[str, Any]) -> AlertState:
    rolling = p["rolling"]
    episodes = [Episode(*e) for e in p["open"]]
    rules = _AState(
        now=p["now"], version=p["version"], state=p["state"], state_bucket=p["state_bucket"],
        active_since=p["active_since"], down_since=p["down_since"], down_state=p["down_state"],
        last_seen=dict(p["last_seen"]), open={(e.rule, e.signal): e for e in episodes},
        counters={k: Counter(last) for k, last in p["counters"].items()},
        rolling=None if rolling is None else RollingCounts(rolling[0], rolling[1],
                                                           {b: list(v) for b, v in rolling[2].items()}),
        next_boundary=p["next_boundary"], vib_streak=p["vib_streak"], oil_target=p["oil_target"],
        oil_out_since=p["oil_out_since"], shift_key=_load_day(p["shift_key"]),
        shift_facts={(k[0], k[1], k[2]): (v[0], v[1], v[2], v[3]) for k, v in p["shift_facts"]},
        shift_sums=list(p["shift_sums"]),
    )
    oee = p["oee"]
    return AlertState(p["machine"], p["site"], p["line"], rules,
                      None if oee is None else OEE_STATE.from_payload(oee[1], oee[0]))


def _upgrade_alerts_v1(p: dict[str, Any]) -> dict[str, Any]:
    """Format 1 kept the embedded OEE accounting as bytes: its codec's (``PS1`` header), or,
    written before the event-time ledger, a pickle of its own (:func:`pre_ledger_payload`)."""
    blob = p["oee"]
    oee: tuple[int, Any] | None = None
    if blob and bytes(blob[:len(MAGIC)]) == MAGIC:
        kind, version, payload = decode_header(blob)
        if kind != OEE_STATE.kind:
            msg = f"alerts state holds {kind!r} state where the OEE accounting's belongs"
            raise StateError(msg)
        oee = (version, payload)
    elif blob:
        oee = (1, pre_ledger_payload(blob))
    return p | {"oee": oee}


ALERTS_CODEC: StateCodec[AlertState] = StateCodec("alerts", 2, AlertState, _dump_alerts, _load_alerts,
                                                  upgrades={1: _upgrade_alerts_v1})
"""Format 2: machine, site, line; the rules' state field by field (open alerts as tuples of
their episode, counters as their last value, the rolling scrap counts as (window, hop,
buckets), the shift key's day as an ISO date); ``oee``: the embedded OEE accounting's state as
``(OEE format version, payload)`` of :data:`~plantstream.operators.oee.OEE_STATE` (None when the
OEE flow feeds the rules), so the OEE codec's own upgrades apply to it. Format 1 held that
accounting's bytes (:func:`_upgrade_alerts_v1`)."""


# -- the machine logic -------------------------------------------------------------------------


class AlertLogic(MachineLogic[AlertState, Row]):
    """One machine's :class:`AlertEngine` with timers.

    After every call the engine asks for a wake-up (:meth:`notify_at`) when event time reaches
    the rules' next due time, mapping event time to wall time with an :class:`EventClock` (last
    event ts + wall time elapsed since it); on wake-up (:meth:`on_notify`) the rules advance to
    the current event time and fire what is due — so "machine down" is raised at minute 15 of
    an open stop without any new data. At the end of input nothing is advanced.
    """

    def __init__(self, make: Callable[[str, str, str], AlertEngine], clock: EventClock,
                 state: AlertState | None) -> None:
        self.make = make
        self.clock = clock
        self.engine: AlertEngine | None = None
        self.last_ts = -1
        self.last_wall = clock.wall()
        if state is not None and state.machine:
            self.engine = make(state.machine, state.site, state.line)
            self.engine.restore(state)
            self.last_ts = self.engine.now

    def on_batch(self, samples: list[Measurement]) -> list[Row]:
        engine = self.engine
        if engine is None:
            first = samples[0]
            engine = self.engine = self.make(first.machine, first.site, first.line)
        engine.wall_ms = round(self.clock.wall() * 1000)
        out = engine.on_samples(samples)
        top = max(m.ts for m in samples)
        if top >= self.last_ts:
            self.last_ts, self.last_wall = top, self.clock.wall()
        return out

    def on_upstream(self, items: list[Any]) -> list[Row]:
        """The OEE flow's outputs for this machine (each a list of ``(table, row)``)."""
        if self.engine is None:
            return []  # nothing sampled yet: nothing to judge
        out: list[Row] = []
        for outputs in items:
            out += self.engine.on_facts(outputs)
        return out

    def on_notify(self) -> list[Row]:
        if self.engine is None or self.last_ts < 0:
            return []
        return self.engine.advance(self.clock.event_now(self.last_ts, self.last_wall))

    def notify_at(self) -> datetime | None:
        if self.engine is None or self.last_ts < 0:
            return None
        due = self.engine.next_due()
        return None if due is None else self.clock.datetime_at(due, self.last_ts, self.last_wall)

    def on_eof(self) -> list[Row]:
        return [] if self.engine is None else self.engine.finish()

    def state(self) -> AlertState:
        return AlertState() if self.engine is None else self.engine.state()


def _usable(m: Measurement) -> bool:
    return m.quality != "bad"


def _alert_rows(row: Row) -> list[tuple[str, Row]]:
    return [("alerts", row)]


def alert_spec(config: PlantConfig, clock: EventClock | None = None, *,
               fed: bool = False) -> LogicSpec[AlertState, Row]:
    """The alerts flow's per-machine logic: usable samples of a machine into its :class:`AlertLogic`.

    The OEE and quality rules need OEE facts. Alone, each machine's engine keeps an OEE
    accounting of its own; in the machine engine next to the OEE flow, the variant built with
    ``fed=True`` (the spec's ``fed``) takes that flow's facts instead, the same facts without
    computing them twice. ``clock`` defaults to real time.
    """
    calendar = ShiftCalendar.from_config(config)
    the_clock = clock or EventClock(1.0, time.time)

    def make(machine: str, site: str, line: str) -> AlertEngine:
        return AlertEngine.for_config(config, machine, site, line, calendar, own_oee=not fed)

    def build(state: AlertState | None) -> AlertLogic:
        return AlertLogic(make, the_clock, state)

    return LogicSpec("alerts", ALERTS_CODEC, build, _alert_rows, filters=_usable, timers=True,
                     upstream="oee" if fed else None,
                     fed=None if fed else ("oee", lambda: alert_spec(config, clock, fed=True)))
