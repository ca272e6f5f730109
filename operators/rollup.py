"""Cadence for the cloud: additive facts summed per machine over a longer period before sending.

Executives across plants want hourly OEE, not minute windows. Facts are additive (KPI.md), so
a rollup is a sum: :func:`rollup_rows` groups the facts of one period by their text fields
(site, line, machine, shift …) and sums every numeric field; ratios are computed from the sums
downstream. :func:`rollup` is the thin Bytewax operator (keyed by machine): a period is sent
when a fact of a later period arrives, and at the end of input. A restated fact (same window,
higher ``version``) replaces the one it restates; if its period was already sent and is still
among the last ``restate_buckets`` closed ones, the period is sent again with a higher
``version``. Restatements of older periods are counted in ``too_late`` and not re-sent (the
ClickHouse results are restated regardless).

Examples
--------
>>> facts = [{"machine": "m1", "window_start": 0, "run_s": 50.0, "good": 40, "version": 1},
...          {"machine": "m1", "window_start": 60_000, "run_s": 60.0, "good": 55, "version": 1}]
>>> [row] = rollup_rows(facts, bucket_ms=0, period_ms=3_600_000, version=1)
>>> row["window_end"], row["windows"], row["run_s"], row["good"], row["version"]
(3600000, 2, 110.0, 95, 1)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

Row = dict[str, Any]
NOT_SUMMED = frozenset({"window_start", "window_end", "version", "ts", "stored_at", "rollup_s", "windows"})


def fact_key(fact: Row, time_field: str) -> tuple[Any, ...]:
    """The natural key of a fact: its window start and its text fields.

    >>> fact_key({"machine": "m", "shift": "day", "window_start": 5, "run_s": 1.0}, "window_start")
    (5, ('machine', 'm'), ('shift', 'day'))
    """
    return (fact.get(time_field),
            *sorted((k, v) for k, v in fact.items() if isinstance(v, str)))


def rollup_rows(facts: Iterable[Row], *, bucket_ms: int, period_ms: int, version: int,
                time_field: str = "window_start") -> list[Row]:
    """Sum the facts of one period, one row per distinct set of text fields."""
    groups: dict[tuple[tuple[str, str], ...], Row] = {}
    for fact in facts:
        texts = tuple((k, v) for k, v in fact.items() if isinstance(v, str))
        row = groups.get(texts)
        if row is None:
            row = {**dict(texts), time_field: bucket_ms, "window_end": bucket_ms + period_ms,
                   "rollup_s": period_ms // 1000, "windows": 0}
            groups[texts] = row
        row["windows"] += 1
        for k, v in fact.items():
            if k in NOT_SUMMED or k == time_field or isinstance(v, bool | str) or v is None:
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

    buckets: dict[int, dict[tuple[Any, ...], Row]] = field(default_factory=dict)
    sent: dict[int, int] = field(default_factory=dict)
    """Period start → version of its last sending (closed periods only)."""
    too_late: int = 0


class _RollupLogic(StatefulLogic[Row, Row, RollupState]):
    def __init__(self, state: RollupState, period_ms: int, keep: int, time_field: str) -> None:
        self.state = state
        self._period_ms = period_ms
        self._keep = keep
        self._time_field = time_field

    def _send(self, bucket: int) -> list[Row]:
        st = self.state
        version = st.sent.get(bucket, 0) + 1
        st.sent[bucket] = version
        return rollup_rows(st.buckets[bucket].values(), bucket_ms=bucket, period_ms=self._period_ms,
                           version=version, time_field=self._time_field)

    def _evict(self) -> None:
        st = self.state
        closed = sorted(st.sent)
        for bucket in closed[:max(0, len(closed) - self._keep)]:
            st.sent.pop(bucket, None)
            st.buckets.pop(bucket, None)

    def on_item(self, value: Row) -> tuple[Iterable[Row], bool]:
        st = self.state
        ts = int(value.get(self._time_field) or 0)
        bucket = ts - ts % self._period_ms
        if st.sent and bucket not in st.buckets and bucket < max(st.sent):
            st.too_late += 1  # its period was sent and evicted: ClickHouse still restates it
            return (), False
        facts = st.buckets.setdefault(bucket, {})
        key = fact_key(value, self._time_field)
        old = facts.get(key)
        if old is not None and int(old.get("version", 0)) > int(value.get("version", 0)):
            return (), False  # an older version of a fact we already have
        facts[key] = value
        out: list[Row] = []
        if bucket in st.sent:  # a restatement of a period already sent: send it again
            out.extend(self._send(bucket))
        for earlier in sorted(b for b in st.buckets if b < bucket and b not in st.sent):
            out.extend(self._send(earlier))
        self._evict()
        return out, False

    def on_eof(self) -> tuple[Iterable[Row], bool]:
        out: list[Row] = []
        for bucket in sorted(b for b in self.state.buckets if b not in self.state.sent):
            out.extend(self._send(bucket))
        self._evict()
        return out, False

    def snapshot(self) -> RollupState:
        return copy.deepcopy(self.state)


@operator
def rollup(step_id: str, up: KeyedStream[Row], *, period_s: int, restate_buckets: int = 2,
           time_field: str = "window_start") -> KeyedStream[Row]:
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
    """
    period_ms = period_s * 1000

    def builder(resume: RollupState | None) -> _RollupLogic:
        return _RollupLogic(resume if resume is not None else RollupState(), period_ms,
                            restate_buckets, time_field)

    return op.stateful("sum", up, builder)
