"""Cadence for the cloud: additive facts summed per machine over a longer period before sending.

Executives across plants want hourly OEE, not minute windows. Facts are additive (KPI.md), so
a rollup is a sum: :func:`rollup_rows` groups the facts of one period by their text fields
(site, line, machine, shift …) and sums every numeric field; ratios are computed from the sums
downstream. Text and date fields, and timestamps named ``*_start``/``*_end`` (``shift_start``),
are group keys, never summed. :func:`rollup` is the thin Bytewax operator (keyed by machine): a
period is sent when a fact of a later period arrives, and at the end of input.

Both Bytewax steps keep small dataclass states (:class:`RollupState`, :class:`CoalesceState`) and
hand out recovery snapshots as plain data behind a kind and format version
(:data:`ROLLUP_STATE`, :data:`COALESCE_STATE`, see :mod:`plantstream.operators.state`).

Restatements follow ``oee_facts``: a window restated with a higher ``version`` replaces *all*
the rows of that window (time may move to another shift, part or work order); rows of the same
version add up; lower versions are ignored. If the period was already sent and is among the
last ``restate_buckets`` closed ones, it is sent again with the next rollup ``version``, so a
consumer keeps, per (site, machine, window_start), the rows of the highest version. Older
periods are counted in ``too_late`` and not re-sent (ClickHouse is restated regardless).

Examples
--------
>>> facts = [{"machine": "m1", "window_start": 0, "run_s": 50.0, "good": 40, "version": 1},
...          {"machine": "m1", "window_start": 60_000, "run_s": 60.0, "good": 55, "version": 1}]
>>> [row] = rollup_rows(facts, bucket_ms=0, period_ms=3_600_000, version=1)
>>> row["window_end"], row["windows"], row["run_s"], row["good"], row["version"]
(3600000, 2, 110.0, 95, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from plantstream.operators.state import StateCodec

Row = dict[str, Any]
NOT_SUMMED = frozenset({"window_start", "window_end", "version", "ts", "stored_at", "rollup_s", "windows",
                        "deleted"})


def is_group_field(name: str, value: Any, time_field: str = "window_start") -> bool:
    """Whether a fact field names a group (text, date, a ``*_start``/``*_end`` timestamp).

    >>> [is_group_field(k, v) for k, v in {"shift": "day", "shift_start": 5, "run_s": 1.0}.items()]
    [True, True, False]
    """
    if name in NOT_SUMMED or name == time_field:
        return False
    return isinstance(value, str | date) or name.endswith(("_start", "_end"))


def group_key(fact: Row, time_field: str = "window_start") -> tuple[tuple[str, Any], ...]:
    """The group fields of a fact, in a stable order.

    >>> group_key({"machine": "m", "shift": "day", "window_start": 5, "run_s": 1.0})
    (('machine', 'm'), ('shift', 'day'))
    """
    return tuple(sorted((k, v) for k, v in fact.items() if is_group_field(k, v, time_field)))


def rollup_rows(facts: Iterable[Row], *, bucket_ms: int, period_ms: int, version: int,
                time_field: str = "window_start") -> list[Row]:
    """Sum the facts of one period, one row per distinct set of text fields."""
    groups: dict[tuple[tuple[str, Any], ...], Row] = {}
    for fact in facts:
        texts = group_key(fact, time_field)
        row = groups.get(texts)
        if row is None:
            row = {**dict(texts), time_field: bucket_ms, "window_end": bucket_ms + period_ms,
                   "rollup_s": period_ms // 1000, "windows": 0}
            groups[texts] = row
        row["windows"] += 1
        for k, v in fact.items():
            if k in NOT_SUMMED or k == time_field or isinstance(v, bool) or is_group_field(k, v, time_field):
                continue
            if isinstance(v, int | float):
                row[k] = row.get(k, 0) + v
    out = []
    for row in groups.values():
        row["version"] = version
        out.append(row)
    return out


@dataclass
class RollupState:
    """Facts of the open and the recently closed periods of one machine, by natural key."""

    buckets: dict[int, dict[int, tuple[int, dict[tuple[Any, ...], Row]]]] = field(default_factory=dict)
    """Period start → window start → (version, group key → fact) of the latest version."""
    sent: dict[int, int] = field(default_factory=dict)
    """Period start → version of its last sending (closed periods only)."""
    too_late: int = 0
    dirty: set[int] = field(default_factory=set)
    """Sent periods with restated facts, to be sent again once the restatement moved on."""
    due: datetime | None = None


# -- plain payloads -------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _dump_due(due: datetime | None) -> int | None:
    """A timer's wall time as epoch microseconds (exact integer arithmetic)."""
    return None if due is None else (due - _EPOCH) // _US


def _load_due(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + us * _US


def _dump_row(row: Row) -> tuple[Row, dict[str, str]]:
    """A row as plain data: its fields in their order, dates and datetimes as ISO text, and the
    names of those fields with their type (``date`` or ``datetime``)."""
    fields: Row = {}
    typed: dict[str, str] = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            fields[k], typed[k] = v.isoformat(), "datetime"
        elif isinstance(v, date):
            fields[k], typed[k] = v.isoformat(), "date"
        else:
            fields[k] = v
    return fields, typed


def _load_row(p: tuple[Row, dict[str, str]]) -> Row:
    fields, typed = p
    row = dict(fields)
    for k, kind in typed.items():
        row[k] = datetime.fromisoformat(row[k]) if kind == "datetime" else date.fromisoformat(row[k])
    return row


def _dump_facts(facts: dict[tuple[Any, ...], Row]) -> list[tuple[list[str], tuple[Row, dict[str, str]]]]:
    """A window's facts as ``(group field names, row)``: a group key's values are its fact's."""
    return [([k for k, _ in key], _dump_row(fact)) for key, fact in facts.items()]


def _dump_rollup(st: RollupState) -> dict[str, Any]:
    return {
        "buckets": [(bucket, [(ts, version, _dump_facts(facts)) for ts, (version, facts) in windows.items()])
                    for bucket, windows in st.buckets.items()],
        "sent": dict(st.sent), "too_late": st.too_late, "dirty": sorted(st.dirty),
        "due_us": _dump_due(st.due),
    }


def _load_facts(facts: list[tuple[list[str], tuple[Row, dict[str, str]]]]) -> dict[tuple[Any, ...], Row]:
    out: dict[tuple[Any, ...], Row] = {}
    for names, p in facts:
        fact = _load_row(p)
        out[tuple((k, fact[k]) for k in names)] = fact  # the group key's values are the fact's
    return out


def _load_rollup(p: dict[str, Any]) -> RollupState:
    return RollupState(
        buckets={int(bucket): {int(ts): (int(version), _load_facts(facts)) for ts, version, facts in windows}
                 for bucket, windows in p["buckets"]},
        sent={int(b): int(v) for b, v in p["sent"].items()}, too_late=int(p["too_late"]),
        dirty={int(b) for b in p["dirty"]}, due=_load_due(p["due_us"]))


ROLLUP_STATE: StateCodec[RollupState] = StateCodec("cloud_rollup", 1, RollupState, _dump_rollup, _load_rollup)
"""The versioned codec of a machine's :class:`RollupState` (kind ``cloud_rollup``, format 1):
``buckets`` as ``(period start, [(window start, version, [(group field names, row)])])`` in
arrival order, a row as ``(fields, {date field: "date" | "datetime"})`` with those fields as ISO
text, ``sent`` period start → version, ``too_late``, ``dirty`` sorted, ``due_us`` the re-send
timer in epoch microseconds or None."""


Now = Callable[[], datetime]
RESEND_AFTER = timedelta(seconds=2)
"""A restated period is sent again when facts of another period arrive, at the end of input, or
this long (wall time) after its first restated fact: one re-send per restatement, not per fact."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RollupLogic(StatefulLogic[Row, Row, bytes]):
    """The Bytewax step of one key (machine): its :class:`RollupState`, decoded from ``resume``;
    the snapshot is the state encoded by :data:`ROLLUP_STATE`."""

    def __init__(self, period_ms: int, keep: int, time_field: str, now: Now,
                 resume: bytes | None = None) -> None:
        self.state = ROLLUP_STATE.decode(resume) if resume is not None else RollupState()
        self._period_ms = period_ms
        self._keep = keep
        self._time_field = time_field
        self._now = now

    def _send(self, bucket: int) -> list[Row]:
        st = self.state
        st.dirty.discard(bucket)
        version = st.sent.get(bucket, 0) + 1
        st.sent[bucket] = version
        facts = [f for _, rows in st.buckets[bucket].values() for f in rows.values()]
        return rollup_rows(facts, bucket_ms=bucket, period_ms=self._period_ms,
                           version=version, time_field=self._time_field)

    def _evict(self) -> None:
        st = self.state
        closed = sorted(st.sent)
        for bucket in closed[:max(0, len(closed) - self._keep)]:
            if bucket in st.dirty:
                continue
            st.sent.pop(bucket, None)
            st.buckets.pop(bucket, None)

    def on_item(self, value: Row) -> tuple[Iterable[Row], bool]:
        st = self.state
        ts = int(value.get(self._time_field) or 0)
        bucket = ts - ts % self._period_ms
        if st.sent and bucket not in st.buckets and bucket < max(st.sent):
            st.too_late += 1  # its period was sent and evicted: ClickHouse still restates it
            return (), False
        windows = st.buckets.setdefault(bucket, {})
        version = int(value.get("version") or 0)
        held = windows.get(ts)
        if held is None or version > held[0]:
            held = (version, {})  # a newer version of the window replaces all its rows
            windows[ts] = held
        elif version < held[0]:
            return (), False  # an older version of a window we already have
        held[1][group_key(value, self._time_field)] = value
        out: list[Row] = []
        for other in sorted(st.dirty - {bucket}):  # a restatement moved on: send those again
            out.extend(self._send(other))
        if bucket in st.sent:  # a restatement of a period already sent: send it again later
            if not st.dirty:
                st.due = self._now() + RESEND_AFTER
            st.dirty.add(bucket)
        for earlier in sorted(b for b in st.buckets if b < bucket and b not in st.sent):
            out.extend(self._send(earlier))
        self._evict()
        return out, False

    def on_notify(self) -> tuple[Iterable[Row], bool]:
        out: list[Row] = []
        for bucket in sorted(self.state.dirty):
            out.extend(self._send(bucket))
        self.state.due = None
        self._evict()
        return out, False

    def on_eof(self) -> tuple[Iterable[Row], bool]:
        st = self.state
        out: list[Row] = []
        for bucket in sorted(b for b in st.buckets if b not in st.sent or b in st.dirty):
            out.extend(self._send(bucket))
        st.due = None
        self._evict()
        return out, False

    def notify_at(self) -> datetime | None:
        return self.state.due if self.state.dirty else None

    def snapshot(self) -> bytes:
        return ROLLUP_STATE.encode(self.state)


@operator
def rollup(step_id: str, up: KeyedStream[Row], *, period_s: int, restate_buckets: int = 2,
           time_field: str = "window_start", now: Now = _utc_now) -> KeyedStream[Row]:
    """Sum additive facts per key (machine) over ``period_s`` periods of ``time_field``.

    Parameters
    ----------
    step_id
        Unique step id.
    up
        Fact rows keyed by machine (or site/machine).
    period_s
        Length of a period in seconds (3600 = hourly).
    restate_buckets
        Closed periods kept to be sent again when one of their facts is restated.
    time_field
        The fact's window start (epoch ms).
    now
        The wall clock of the re-send timer (injected for tests).
    """
    period_ms = period_s * 1000

    def builder(resume: bytes | None) -> RollupLogic:
        return RollupLogic(period_ms, restate_buckets, time_field, now, resume)

    return op.stateful("sum", up, builder)


# -- coalescing events --------------------------------------------------------------------------

EVENT_ID_FIELDS = ("id", "event_id", "start", "window_start", "ts")
"""The first of these a row has (with ``machine``) identifies the event it updates."""
EVENT_SCOPE_FIELDS = ("model", "scope", "key", "rule")
"""Fields that tell apart events of one machine starting at the same time (anomaly models …)."""


def event_key(row: Row) -> tuple[Any, ...]:
    """The natural key of an event row: machine, its scope fields, and its id, start or time.

    >>> event_key({"machine": "m", "start": 5, "end": None, "version": 2})
    ('m', (), 'start', 5)
    >>> event_key({"machine": "m", "model": "vibration", "start": 5})
    ('m', ('vibration',), 'start', 5)
    """
    scope = tuple(row[f] for f in EVENT_SCOPE_FIELDS if f in row)
    for name in EVENT_ID_FIELDS:
        if name in row:
            return (row.get("machine"), scope, name, row[name])
    return (row.get("machine"), scope, "",
            tuple(sorted((k, str(v)) for k, v in row.items() if k != "version")))


@dataclass
class CoalesceState:
    """Rows waiting to be sent: the latest version of each event."""

    pending: dict[tuple[Any, ...], Row] = field(default_factory=dict)
    due: datetime | None = None


def _dump_coalesce(st: CoalesceState) -> dict[str, Any]:
    return {"pending": [_dump_row(row) for row in st.pending.values()], "due_us": _dump_due(st.due)}


def _load_coalesce(p: dict[str, Any]) -> CoalesceState:
    rows = [_load_row(r) for r in p["pending"]]
    return CoalesceState({event_key(row): row for row in rows}, _load_due(p["due_us"]))


COALESCE_STATE: StateCodec[CoalesceState] = StateCodec("cloud_coalesce", 1, CoalesceState, _dump_coalesce,
                                                       _load_coalesce)
"""The versioned codec of a key's :class:`CoalesceState` (kind ``cloud_coalesce``, format 1):
``pending`` the waiting rows in arrival order, each as ``(fields, {date field: type})`` like a
rollup's (their keys are :func:`event_key` of the row), ``due_us`` the sending timer in epoch
microseconds or None."""


class CoalesceLogic(StatefulLogic[Row, Row, bytes]):
    """The Bytewax step of one key: its :class:`CoalesceState`, decoded from ``resume``; the
    snapshot is the state encoded by :data:`COALESCE_STATE`."""

    def __init__(self, every: timedelta, now: Now, resume: bytes | None = None) -> None:
        self.state = COALESCE_STATE.decode(resume) if resume is not None else CoalesceState()
        self._every = every
        self._now = now

    def _flush(self) -> tuple[Iterable[Row], bool]:
        out = list(self.state.pending.values())
        self.state.pending.clear()
        self.state.due = None
        return out, False

    def on_item(self, value: Row) -> tuple[Iterable[Row], bool]:
        st = self.state
        key = event_key(value)
        old = st.pending.get(key)
        if old is None or int(value.get("version") or 0) >= int(old.get("version") or 0):
            st.pending[key] = value
        if st.due is None:
            st.due = self._now() + self._every
        return (), False

    def on_notify(self) -> tuple[Iterable[Row], bool]:
        return self._flush()

    def on_eof(self) -> tuple[Iterable[Row], bool]:
        return self._flush()

    def notify_at(self) -> datetime | None:
        return self.state.due

    def snapshot(self) -> bytes:
        return COALESCE_STATE.encode(self.state)


@operator
def coalesce(step_id: str, up: KeyedStream[Row], *, every_s: float,
             now: Now = _utc_now) -> KeyedStream[Row]:
    """Send each event's latest version at most every ``every_s`` seconds (wall time), and at
    the end of input: an open stop updated every minute leaves as one record per period.

    Parameters
    ----------
    step_id
        Unique step id.
    up
        Event rows keyed by machine.
    every_s
        Seconds between sendings of one key's pending events.
    now
        The wall clock (injected for tests).
    """
    every = timedelta(seconds=every_s)

    def builder(resume: bytes | None) -> CoalesceLogic:
        return CoalesceLogic(every, now, resume)

    return op.stateful("latest", up, builder)
