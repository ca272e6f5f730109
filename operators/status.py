"""The machine digital twin: what each machine is doing now, kept current from its samples.

A twin folds every usable Measurement of one machine into one small record: the state and since
when, the stop in progress (open downtime), the current part number, work order, operator,
fault and reason code (an operator's split of the open stop names the reason from its point on),
and the last value of every numeric signal. :func:`apply` is the pure
fold; :func:`twin_row` is the ``machine_status`` row; :class:`StatusLogic` (built by
:func:`status_spec`, run by the machine engine) emits a row when the twin changed, at most one
per machine per ``throttle_s`` seconds of event time, a heartbeat row every ``heartbeat_s`` of
event time without change, a pending change after ``throttle_s`` of wall time without new
samples, and every pending change at the end of input. Its state (:class:`StatusState`) is
encoded by :data:`STATUS_CODEC`.

The twin is "now", not history: a sample older than the value it would replace is ignored
(history is in ``measurements`` and the event tables). Open downtime is derived simply from the
state: a stop opens when the machine enters ``fault``, ``idle`` or ``setup`` and closes when it
leaves those; the downtime flow owns downtime *events* and their reasons.

Examples
--------
>>> t = MachineTwin("press-01", "plant-a", "line-1")
>>> apply(t, Measurement(1_000, "press-01", "machine_state", "running"))
True
>>> apply(t, Measurement(5_000, "press-01", "machine_state", "fault"))
True
>>> apply(t, Measurement(6_000, "press-01", "machine_state", "idle"))
True
>>> (t.state, t.state_since, t.down_since, t.down_state)
('idle', 6000, 5000, 'fault')
>>> apply(t, Measurement(2_000, "press-01", "machine_state", "running"))  # older: ignored
False
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from plantstream.operators.logic import LogicSpec, MachineLogic, Row
from plantstream.operators.state import StateCodec
from plantstream.schemas.measurement import (
    FAULT_CODE,
    MACHINE_STATE,
    OPERATOR_ID,
    PART_NUMBER,
    REASON_CODE,
    REASON_SPLIT,
    SCRAP_REASON,
    WORK_ORDER,
    Measurement,
)

DOWN_STATES = frozenset({"fault", "idle", "setup"})
"""States during which a stop is open (KPI.md defaults: unplanned stops and setup)."""

PLC_STATES: dict[int, str] = {0: "off", 1: "running", 2: "idle", 3: "fault", 4: "setup", 5: "planned_stop"}
"""Default mapping of integer PLC state codes when the source did not map them."""

_TEXT_FIELDS = {
    FAULT_CODE: "fault_code", REASON_CODE: "reason_code", PART_NUMBER: "part_number",
    WORK_ORDER: "work_order", OPERATOR_ID: "operator_id",
}


_NOT_SIGNALS = frozenset({MACHINE_STATE, SCRAP_REASON, REASON_SPLIT, *_TEXT_FIELDS})
"""Metrics :func:`apply` does not keep as a signal's last value."""


def state_name(value: Any) -> str:
    """The canonical state of a ``machine_state`` value (PLC integers mapped by default).

    >>> state_name("Running"), state_name(3), state_name(9), state_name(1.0)
    ('running', 'fault', 'code:9', 'running')
    """
    if isinstance(value, bool):
        return "running" if value else "off"
    if isinstance(value, int | float):
        code = int(value)
        return PLC_STATES.get(code, f"code:{code}")
    return str(value).strip().lower()


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return "" if text in {"", "0", "None"} else text


@dataclass
class MachineTwin:
    """The current picture of one machine; small and picklable (it is Bytewax state)."""

    machine: str
    site: str = ""
    line: str = ""
    state: str = ""
    state_since: int = 0
    state_ts: int = 0
    down_since: int | None = None
    down_state: str = ""
    fault_code: str = ""
    reason_code: str = ""
    part_number: str = ""
    work_order: str = ""
    operator_id: str = ""
    signals: dict[str, float] = field(default_factory=dict)
    signals_ts: dict[str, int] = field(default_factory=dict)
    text_ts: dict[str, int] = field(default_factory=dict)
    last_seen: int = 0
    samples: int = 0


MAX_SIGNALS = 128
"""Default of ``state.max_signals_per_machine``: signals a twin keeps the last value of."""


_SPLIT = "reason_split"
"""The ``text_ts`` key of the latest split point of the open stop (absent while it is not split)."""


def _on_split(twin: MachineTwin, ts: int, reason: str) -> bool:
    """An operator's split of the open stop: from its point on the stop's reason is ``reason``.

    The twin shows the reason of the part the machine is in now, so only a split of the open stop
    at or after its latest split point counts; a removed split point (empty reason) leaves the
    reason as it is until the next entry (the twin does not keep the earlier parts).

    >>> t = MachineTwin("m1")
    >>> _ = apply(t, Measurement(1_000, "m1", "machine_state", "fault"))
    >>> _ = apply(t, Measurement(2_000, "m1", "reason_code", "jam"))
    >>> apply(t, Measurement(5_000, "m1", "reason_split", "waiting for material")), t.reason_code
    (True, 'waiting for material')
    >>> apply(t, Measurement(9_000, "m1", "reason_code", "hopper empty")), t.reason_code  # the first part's
    (False, 'waiting for material')
    >>> _ = apply(t, Measurement(10_000, "m1", "machine_state", "running"))
    >>> apply(t, Measurement(4_000, "m1", "reason_split", "late"))  # no stop open
    False
    """
    if not reason or twin.down_since is None or ts <= twin.down_since or ts < twin.text_ts.get(_SPLIT, 0):
        return False
    twin.text_ts[_SPLIT] = ts
    if twin.reason_code == reason:
        return False
    twin.reason_code = reason
    return True


def apply(twin: MachineTwin, m: Measurement, max_signals: int = MAX_SIGNALS) -> bool:
    """Fold one sample into the twin; return True when what the twin shows changed.

    Bad-quality samples and samples older than the value they would replace are ignored.
    ``scrap_reason`` and string values of numeric metrics do not belong to the twin. A twin
    keeps at most ``max_signals`` signals: a further metric name is ignored (it is archived).
    This is the one fold of the twin: the status logic (:class:`StatusLogic`) calls it for
    every sample.

    >>> t = MachineTwin("m1")
    >>> [apply(t, Measurement(1, "m1", f"sensor_{i}", 1.0), max_signals=2) for i in range(3)]
    [True, True, False]
    >>> sorted(t.signals)
    ['sensor_0', 'sensor_1']
    """
    metric, ts = m.metric, m.ts
    value = m.value
    site, line = m.site, m.line
    if (metric not in _NOT_SIGNALS and type(value) is not str and m.quality != "bad" and twin.machine
            and (not site or site == twin.site) and (not line or line == twin.line)):
        # the common case first: a signal's value, of a twin that knows its machine
        signals_ts = twin.signals_ts
        seen = signals_ts.get(metric)
        if seen is None:
            if len(signals_ts) >= max_signals:
                return False
        elif ts < seen:
            return False
        number = float(value)
        signals_ts[metric] = ts
        twin.samples += 1
        if ts > twin.last_seen:
            twin.last_seen = ts
        if twin.signals.get(metric) != number:
            twin.signals[metric] = number
            return True
        return False
    if m.quality == "bad":
        return False
    changed = False
    if not twin.machine:
        twin.machine = m.machine
    if site and site != twin.site:
        twin.site, changed = site, True
    if line and line != twin.line:
        twin.line, changed = line, True
    if metric == MACHINE_STATE:
        if ts < twin.state_ts:
            return changed
        twin.state_ts = ts
        state = state_name(value)
        if state != twin.state:
            twin.state, twin.state_since = state, ts
            if state in DOWN_STATES:
                if twin.down_since is None:
                    twin.down_since, twin.down_state = ts, state
                    twin.reason_code = ""  # a new stop: the reason of the last one is history
                    twin.text_ts.pop(_SPLIT, None)
            else:
                twin.down_since, twin.down_state = None, ""
            changed = True
    elif metric == REASON_SPLIT:
        changed = _on_split(twin, ts, _text(value)) or changed
    elif metric in _TEXT_FIELDS:
        name = _TEXT_FIELDS[metric]
        if name == "reason_code" and _SPLIT in twin.text_ts:
            return changed  # names the first part of the split open stop, not what it is now
        if ts < twin.text_ts.get(name, 0):
            return changed
        twin.text_ts[name] = ts
        text = _text(value)
        if getattr(twin, name) != text:
            setattr(twin, name, text)
            changed = True
    elif metric == SCRAP_REASON or isinstance(value, str):
        return changed
    else:
        seen = twin.signals_ts.get(metric)
        if (seen is None and len(twin.signals_ts) >= max_signals) or (seen is not None and ts < seen):
            return changed
        number = float(value)
        twin.signals_ts[metric] = ts
        if twin.signals.get(metric) != number:
            twin.signals[metric] = number
            changed = True
    twin.samples += 1
    twin.last_seen = max(twin.last_seen, ts)
    return changed


def twin_row(twin: MachineTwin) -> dict[str, Any]:
    """The ``machine_status`` row of a twin (timestamps epoch ms; version = ``last_seen``).

    >>> t = MachineTwin("m1", "s", "l")
    >>> _ = apply(t, Measurement(7_000, "m1", "temperature_c", 41.5))
    >>> r = twin_row(t)
    >>> r["signals"], r["version"], r["downtime_open"]
    ({'temperature_c': 41.5}, 7000, False)
    """
    return {
        "site": twin.site, "line": twin.line, "machine": twin.machine,
        "state": twin.state, "state_since": twin.state_since,
        "downtime_open": twin.down_since is not None, "downtime_since": twin.down_since,
        "downtime_state": twin.down_state,
        "fault_code": twin.fault_code, "reason_code": twin.reason_code,
        "part_number": twin.part_number, "work_order": twin.work_order,
        "operator_id": twin.operator_id,
        "signals": dict(twin.signals), "signals_ts": dict(twin.signals_ts),
        "last_seen": twin.last_seen, "samples": twin.samples, "version": twin.last_seen,
    }


@dataclass
class StatusState:
    """The state of one machine's status logic: the twin and the emission bookkeeping."""

    twin: MachineTwin
    emitted_ts: int | None = None
    """Event time (``last_seen``) of the last emitted row."""
    dirty: bool = False
    due: datetime | None = None
    """Wall time at which a pending change is emitted even without new samples."""


def _dump_status(st: StatusState) -> dict[str, Any]:
    t = st.twin
    return {
        "twin": {f.name: getattr(t, f.name) for f in fields(MachineTwin)},
        "emitted_ts": st.emitted_ts, "dirty": st.dirty,
        "due_us": None if st.due is None else round(st.due.timestamp() * 1_000_000),
    }


def _load_status(p: dict[str, Any]) -> StatusState:
    twin = dict(p["twin"])
    for name in ("signals", "signals_ts", "text_ts"):
        twin[name] = dict(twin[name])
    due = p["due_us"]
    return StatusState(MachineTwin(**twin), p["emitted_ts"], p["dirty"],
                       None if due is None else datetime.fromtimestamp(due / 1_000_000, UTC))


STATUS_CODEC: StateCodec[StatusState] = StateCodec("status", 1, StatusState, _dump_status, _load_status)
"""Format 1: ``{"twin": {MachineTwin fields}, "emitted_ts", "dirty", "due_us"}`` (the pending
change's timer as epoch microseconds)."""

Now = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class StatusLogic(MachineLogic[StatusState, Row]):
    """One machine's twin: emits its ``machine_status`` row when it changed, at most once per
    ``throttle`` of event time, a heartbeat every ``heartbeat`` of event time without change, a
    pending change after ``throttle`` of wall time without new samples (timer), and what is
    pending at the end of input. The builder does not get the key: the twin learns its machine
    from its first sample."""

    def __init__(self, state: StatusState | None, throttle_ms: int, heartbeat_ms: int, now: Now,
                 max_signals: int = MAX_SIGNALS) -> None:
        self.s = state if state is not None else StatusState(MachineTwin(""))
        self._throttle_ms = throttle_ms
        self._heartbeat_ms = heartbeat_ms
        self._now = now
        self._max_signals = max_signals

    def _emit(self) -> Row:
        st = self.s
        st.emitted_ts, st.dirty, st.due = st.twin.last_seen, False, None
        return twin_row(st.twin)

    def on_batch(self, samples: list[Measurement]) -> list[Row]:
        out: list[Row] = []
        st, twin = self.s, self.s.twin
        throttle_ms, heartbeat_ms, cap = self._throttle_ms, self._heartbeat_ms, self._max_signals
        for m in samples:
            if apply(twin, m, cap):
                st.dirty = True
            emitted = st.emitted_ts
            if emitted is None:
                if st.dirty:
                    out.append(self._emit())
                continue
            since = twin.last_seen - emitted
            if (st.dirty and since >= throttle_ms) or since >= heartbeat_ms:
                out.append(self._emit())
        if st.dirty and st.due is None:
            st.due = self._now() + timedelta(milliseconds=throttle_ms)
        return out

    def on_notify(self) -> list[Row]:
        if self.s.dirty:
            return [self._emit()]
        self.s.due = None
        return []

    def on_eof(self) -> list[Row]:
        return [self._emit()] if self.s.dirty else []

    def notify_at(self) -> datetime | None:
        return self.s.due if self.s.dirty else None

    def state(self) -> StatusState:
        return self.s


def _status_rows(row: Row) -> list[tuple[str, Row]]:
    return [("machine_status", row)]


def status_spec(throttle_s: float = 5.0, heartbeat_s: float = 60.0,
                now: Now = _utc_now, max_signals: int = MAX_SIGNALS) -> LogicSpec[StatusState, Row]:
    """The status flow's per-machine logic: every sample of a machine into its :class:`StatusLogic`.

    Parameters
    ----------
    throttle_s
        At most one row per machine per this many seconds of event time; a change that waits
        longer than this in wall time (no newer samples) is emitted by a timer.
    heartbeat_s
        A row every this many seconds of event time even when nothing changed, so
        ``last_seen`` stays fresh.
    now
        The wall clock (injected for tests, e.g. :class:`~plantstream.operators.logic.ManualClock`).
    max_signals
        Signals a twin keeps (``state.max_signals_per_machine``); further metric names of the
        machine are not in its ``machine_status`` row.
    """
    throttle_ms = int(throttle_s * 1000)
    heartbeat_ms = int(heartbeat_s * 1000)

    def build(state: StatusState | None) -> StatusLogic:
        return StatusLogic(state, throttle_ms, heartbeat_ms, now, max_signals)

    return LogicSpec("status", STATUS_CODEC, build, _status_rows, timers=True)
