"""The machine digital twin: what each machine is doing now, kept current from its samples.

A twin folds every usable Measurement of one machine into one small record: the state and since
when, the stop in progress (open downtime), the current part number, work order, operator,
fault and reason code, and the last value of every numeric signal. :func:`apply` is the pure
fold; :func:`twin_row` is the ``machine_status`` row; :func:`machine_status` is the thin
Bytewax operator (one ``op.stateful`` keyed by machine) that emits a row when the twin changed,
at most one per machine per ``throttle_s`` seconds of event time, a heartbeat row every
``heartbeat_s`` of event time without change, a pending change after ``throttle_s`` of wall
time without new samples, and every pending change at the end of input.

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

import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from plantstream.schemas.measurement import (
    FAULT_CODE,
    MACHINE_STATE,
    OPERATOR_ID,
    PART_NUMBER,
    REASON_CODE,
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


_NOT_SIGNALS = frozenset({MACHINE_STATE, SCRAP_REASON, *_TEXT_FIELDS})
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


def apply(twin: MachineTwin, m: Measurement) -> bool:
    """Fold one sample into the twin; return True when what the twin shows changed.

    Bad-quality samples and samples older than the value they would replace are ignored.
    ``scrap_reason`` and string values of numeric metrics do not belong to the twin.
    """
    if not m.usable:
        return False
    ts = m.ts
    changed = False
    if not twin.machine:
        twin.machine = m.machine
    if m.site and m.site != twin.site:
        twin.site, changed = m.site, True
    if m.line and m.line != twin.line:
        twin.line, changed = m.line, True
    metric = m.metric
    if metric == MACHINE_STATE:
        if ts < twin.state_ts:
            return changed
        twin.state_ts = ts
        state = state_name(m.value)
        if state != twin.state:
            twin.state, twin.state_since = state, ts
            if state in DOWN_STATES:
                if twin.down_since is None:
                    twin.down_since, twin.down_state = ts, state
                    twin.reason_code = ""  # a new stop: the reason of the last one is history
            else:
                twin.down_since, twin.down_state = None, ""
            changed = True
    elif metric in _TEXT_FIELDS:
        name = _TEXT_FIELDS[metric]
        if ts < twin.text_ts.get(name, 0):
            return changed
        twin.text_ts[name] = ts
        text = _text(m.value)
        if getattr(twin, name) != text:
            setattr(twin, name, text)
            changed = True
    elif metric == SCRAP_REASON or isinstance(m.value, str):
        return changed
    else:
        if ts < twin.signals_ts.get(metric, 0):
            return changed
        value = float(m.value)
        twin.signals_ts[metric] = ts
        if twin.signals.get(metric) != value:
            twin.signals[metric] = value
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
    """Bytewax state of one machine: the twin and the emission bookkeeping."""

    twin: MachineTwin
    emitted_ts: int | None = None
    """Event time (``last_seen``) of the last emitted row."""
    dirty: bool = False
    due: datetime | None = None
    """Wall time at which a pending change is emitted even without new samples."""


Now = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _StatusLogic(StatefulLogic[Measurement, dict[str, Any], bytes]):
    def __init__(self, state: StatusState, throttle_ms: int, heartbeat_ms: int, now: Now) -> None:
        self.state = state
        self._throttle_ms = throttle_ms
        self._heartbeat_ms = heartbeat_ms
        self._now = now

    def _emit(self) -> list[dict[str, Any]]:
        st = self.state
        st.emitted_ts, st.dirty, st.due = st.twin.last_seen, False, None
        return [twin_row(st.twin)]

    def on_item(self, value: Measurement) -> tuple[Iterable[dict[str, Any]], bool]:
        st = self.state
        if apply(st.twin, value):
            st.dirty = True
        if st.emitted_ts is None:
            return (self._emit() if st.dirty else ()), False
        since = st.twin.last_seen - st.emitted_ts
        if (st.dirty and since >= self._throttle_ms) or since >= self._heartbeat_ms:
            return self._emit(), False
        if st.dirty and st.due is None:
            st.due = self._now() + timedelta(milliseconds=self._throttle_ms)
        return (), False

    def on_items(self, values: list[Measurement]) -> tuple[list[dict[str, Any]], bool]:
        """:meth:`on_item` for a machine's samples of one batch, in order (the engine's path)."""
        out: list[dict[str, Any]] = []
        st, twin = self.state, self.state.twin
        throttle_ms, heartbeat_ms = self._throttle_ms, self._heartbeat_ms
        signals, signals_ts = twin.signals, twin.signals_ts
        for value in values:
            metric, v, ts = value.metric, value.value, value.ts
            if (metric in _NOT_SIGNALS or type(v) is str or value.quality == "bad" or not twin.machine
                    or (value.site and value.site != twin.site) or (value.line and value.line != twin.line)):
                if apply(twin, value):
                    st.dirty = True
            elif ts >= signals_ts.get(metric, 0):  # a signal's new value: apply(), inlined
                number = float(v)
                signals_ts[metric] = ts
                if signals.get(metric) != number:
                    signals[metric] = number
                    st.dirty = True
                twin.samples += 1
                if ts > twin.last_seen:
                    twin.last_seen = ts
            if st.emitted_ts is None:
                if st.dirty:
                    out += self._emit()
                continue
            since = twin.last_seen - st.emitted_ts
            if (st.dirty and since >= throttle_ms) or since >= heartbeat_ms:
                out += self._emit()
        if st.dirty and st.due is None:
            st.due = self._now() + timedelta(milliseconds=throttle_ms)
        return out, False

    def on_notify(self) -> tuple[Iterable[dict[str, Any]], bool]:
        if self.state.dirty:
            return self._emit(), False
        self.state.due = None
        return (), False

    def on_eof(self) -> tuple[Iterable[dict[str, Any]], bool]:
        if self.state.dirty:
            return self._emit(), False
        return (), False

    def notify_at(self) -> datetime | None:
        return self.state.due if self.state.dirty else None

    def snapshot(self) -> bytes:
        # A pickle is a deep copy that Bytewax copies again for free (bytes are immutable).
        return pickle.dumps(self.state, pickle.HIGHEST_PROTOCOL)


StatusBuilder = Callable[[bytes | None], StatefulLogic[Measurement, dict[str, Any], bytes]]


def status_builder(throttle_s: float = 5.0, heartbeat_s: float = 60.0,
                   now: Now = _utc_now) -> StatusBuilder:
    """The Bytewax builder of one machine's twin logic (from its snapshot, or new)."""
    throttle_ms = int(throttle_s * 1000)
    heartbeat_ms = int(heartbeat_s * 1000)

    def builder(resume: bytes | None) -> _StatusLogic:
        # The builder does not get the key: the twin learns its machine from its first sample.
        state = pickle.loads(resume) if resume else StatusState(MachineTwin(""))
        return _StatusLogic(state, throttle_ms, heartbeat_ms, now)

    return builder


@operator
def machine_status(step_id: str, up: KeyedStream[Measurement], *, throttle_s: float = 5.0,
                   heartbeat_s: float = 60.0, now: Now = _utc_now) -> KeyedStream[dict[str, Any]]:
    """Keep one twin per machine (the stream's key) and emit its ``machine_status`` rows.

    Parameters
    ----------
    step_id
        Unique step id.
    up
        Measurements keyed by machine id.
    throttle_s
        At most one row per machine per this many seconds of event time; a change that waits
        longer than this in wall time (no newer samples) is emitted by a timer.
    heartbeat_s
        A row every this many seconds of event time even when nothing changed, so
        ``last_seen`` stays fresh.
    now
        The wall clock (injected for tests).
    """
    return op.stateful("twin", up, status_builder(throttle_s, heartbeat_s, now))
