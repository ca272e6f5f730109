"""The event-time ledger of one machine: watermark, buffer, journal, restatement and versions.

OEE accounting and scrap are *folds*: given a machine's samples in event-time order they
compute their rows. The ledger decides when a sample is applied, what is final, what is
restated and what is beyond the horizon; the folds know nothing of arrival order.

Per machine the ledger keeps

- the **watermark**: the largest sample time seen (``max_ts``) minus the allowed lateness;
- the **buffer**: samples newer than the fold's position, waiting for the watermark (sorted by
  time, then arrival). Samples up to the watermark are applied in time order, so any arrival
  order within the allowed lateness gives the same rows without restating anything;
- the **journal** of the restatement horizon: the applied samples, in segments of at most
  :attr:`Ledger.CHECKPOINT_MS` of event time, each starting with a checkpoint of the fold's
  state. The first segment starts from the fold's empty state (the *origin*), so a sample
  earlier than the first one seen of a machine is placed like any other. Closed segments are
  compressed bytes; segments wholly older than the horizon are dropped;
- the **version** of the rows it emits: every emission gets a higher one (a fold's group of
  rows — the facts of one window — shares one).

A sample older than the fold's position but within the horizon (``max_ts −
restatement_horizon_s``) **restates**: the fold is restored from the last checkpoint before it,
the journal since then is applied again with the sample in its place, and every row whose
content changed is emitted again with a higher version; rows that no longer exist get the fold's
*tombstone* (a downtime event ``deleted = 1``, a scrap event of quantity 0). Samples that
arrive together (one ``ingest`` call, e.g. one Kafka poll of a machine) restate once.

Clocks (:class:`ClockPolicy`, config section ``clock``; ``docs/oee.md``, "Clocks"):

- a sample more than ``max_ahead`` ahead of the wall clock at arrival (``now_ms``, given by the
  caller) is dead-lettered ``clock_skew`` and moves nothing;
- a sample older than the horizon is dead-lettered ``late`` when it is within ``max_behind``
  of the machine's newest sample; beyond that it is a wrong clock: **held** (a bounded list,
  part of the state). A sample that fits the machine's timeline rejects the held ones
  (``clock_skew`` dead letters); held samples that span ``rebase_after`` of their own time (or
  reach ``rebase_after_samples``) **re-base** the machine: its timeline is finished (every
  buffered sample applied, the fold's open rows closed as at the end of input), the ledger
  starts again (same versions on) from the fold's context (``Fold.carry``, applied at the first
  held sample's time: the new timeline's origin), and the held samples are its input;
- a step never accounts a gap longer than ``max_gap``: when the next sample (or the watermark)
  is further than that from the fold's position, the timeline is finished the same way and the
  fold restarts from its empty state at the new time, like a new machine (the gap is
  unmonitored: no rows; parts counted across it are not attributed to any window). The
  timeline before the jump is kept until the new one has gone on for ``rebase_after``: held
  samples that continue it re-base the machine onto it (a single sample far ahead that the
  wall clock allowed costs its own rows only);
- a sample equal to one already buffered, applied (in the horizon) or held — same time, metric
  and value — is a redelivery: absorbed (applied once), counted (``counts["duplicates"]``) and
  written as a ``duplicate`` dead letter. Only samples of the same time are compared.

State is plain data (:meth:`Ledger.ledger_payload`), encoded with the fold's state by the
owner's :class:`operators.state.StateCodec`. The journal is kept compact, in memory and in
snapshots: a closed segment is one zlib blob of its checkpoint and its samples *by column*
(:func:`pack_events`: time and arrival deltas as packed int64, metric codes, integer values as
deltas per metric), about 2 bytes a sample instead of 8; the open segment's samples are packed
the same way once enough of them gathered (:data:`Ledger.PACK_EVERY`), so a snapshot re-encodes
only the last few. :func:`upgrade_ledger_v1` turns a format-1 ledger payload (segments of
pickled sample tuples) into this one.

Examples
--------
A fold that counts samples per minute (a window closes when event time passes its end):

>>> class PerMinute:
...     def __init__(self): self.reset()
...     def reset(self): self.n, self.cursor, self.out = {}, -1, []
...     def apply(self, ev):
...         self.advance(ev[0]); self.n[ev[0] // 60_000] = self.n.get(ev[0] // 60_000, 0) + 1
...     def advance(self, t):
...         self.cursor = max(self.cursor, t)
...         for m in sorted(m for m in self.n if (m + 1) * 60_000 <= t):
...             self.out.append(("counts", m, [{"minute": m, "n": self.n.pop(m)}]))
...     def finish(self): self.advance(10**15)
...     def take(self): out, self.out = self.out, []; return out
...     def dump_state(self): return {"n": dict(self.n), "cursor": self.cursor}
...     def load_state(self, p): self.n, self.cursor, self.out = dict(p["n"]), p["cursor"], []
...     def tombstone(self, table, key, rows): return []
>>> led = Ledger(PerMinute(), lateness_ms=0, horizon_ms=3_600_000, late_row=lambda ev, raw: {})
>>> led.ingest([(10_000, "x", 1), (70_000, "x", 1), (130_000, "x", 1)])
>>> [(r["minute"], r["n"], r["version"]) for _, r in led.take()]
[(0, 1, 1), (1, 1, 2)]
>>> led.ingest([(5_000, "x", 1)])   # late, within the horizon: minute 0 restated
>>> [(r["minute"], r["n"], r["version"]) for _, r in led.take()]
[(0, 2, 3)]
>>> led.ingest([(130_000 - 3_600_001, "x", 1)])   # beyond the horizon
>>> [(t, r["reason"]) for t, r in led.take()]
[('deadletter', 'late')]
>>> led.ingest([(5_000, "x", 1)])   # the same sample again: absorbed
>>> [(t, r["reason"][:9]) for t, r in led.take()], led.counts["duplicates"]
([('deadletter', 'duplicate')], 1)
>>> led.ingest([(10**13, "x", 1)], now_ms=130_000)   # 317 years ahead of the wall clock
>>> [r["reason"][:30] for _, r in led.take()], led.max_ts
(['clock_skew: 9999999870 s ahead'], 130000)
"""

from __future__ import annotations

import bisect
import math
import pickle
import zlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from plantstream.schemas.config import PlantConfig

Event = tuple[int, int, str, Any]
"""(ts, arrival sequence, metric, value): one sample as the ledger journals it."""
Emitted = tuple[str, Hashable, list[dict[str, Any]]]
"""(table, natural key, rows): what a fold emits; rows of one key share a version."""
Output = tuple[str, dict[str, Any]]
"""(table, row) with its ``version``, or ``("deadletter", row)``."""

ORIGIN = -(2**62)
"""The ``from`` time of the first segment: the fold's empty state, valid before any sample."""


class Fold(Protocol):
    """A per-machine computation over samples in event-time order (see the module docstring).

    The fold owns its state; the ledger only asks for a plain copy of it (``dump_state``) at
    checkpoints and restores it (``load_state``, ``reset`` for the origin). Optionally a fold has
    ``carry() -> list[(metric, value)]``: its context as samples (state, part number, the last
    value of each cumulative counter …), which a re-base applies to the reset fold at the start
    of the new timeline, so the machine goes on as it was (only its clock changed).
    """

    def reset(self) -> None: ...
    def apply(self, ev: Event) -> None: ...
    def advance(self, t: int) -> None: ...
    def finish(self) -> None: ...
    def take(self) -> list[Emitted]: ...
    def dump_state(self) -> Any: ...
    def load_state(self, payload: Any) -> None: ...
    def tombstone(self, table: str, key: Hashable, rows: list[dict[str, Any]]) -> list[dict[str, Any]]: ...


_RANK = {"scrap_reason": 0, "good_count": 1, "reject_count": 1, "total_count": 1, "good_parts": 1,
         "reject_parts": 1, "part_number": 2, "work_order": 3, "operator_id": 3, "ideal_cycle_time_ms": 4,
         "machine_state": 6, "reason_code": 7, "reason_split": 7}
_CUMULATIVE = frozenset({"good_count", "reject_count", "total_count"})


def order_key(ev: Event) -> tuple[int, int, float, int]:
    """Where a sample goes in event-time order: by time, then samples of the same instant in a
    fixed order of their metrics, whatever order they arrived in.

    At one instant: a ``scrap_reason`` (it explains the rejects counted with it), the counters
    (a cumulative counter's higher value first: a value and a reset to 0 at the same instant are
    the last count, then the reset), the context (part number, then work order, then ideal cycle
    time — a new part number clears the ideal sent for the old one; a part counted at the
    instant the order changes belongs to the order it was made in), a
    non-zero ``fault_code`` (it names the stop that starts with it), ``machine_state``, then a
    ``reason_code`` or ``reason_split`` (an operator's entries, in arrival order), a cleared
    ``fault_code`` and every other metric; same metric and value in arrival order.

    >>> evs = [(5, 1, "machine_state", "fault"), (5, 2, "good_count", 0), (5, 3, "fault_code", 17),
    ...        (5, 4, "good_count", 90), (5, 5, "part_number", "P-2"), (5, 6, "scrap_reason", "burr")]
    >>> for _, _, m, v in sorted(evs, key=order_key):
    ...     print(m, v)
    scrap_reason burr
    good_count 90
    good_count 0
    part_number P-2
    fault_code 17
    machine_state fault
    """
    ts, seq, metric, value = ev
    rank = _RANK.get(metric)
    if rank is None:
        rank = 5 if metric == "fault_code" and value not in (0, "", "0", None, False) else 8
    tie = 0.0
    if metric in _CUMULATIVE and isinstance(value, int | float) and not isinstance(value, bool):
        tie = -float(value)
    return ts, rank, tie, seq


# -- the journal's columns ---------------------------------------------------------------------

_INT, _FLOAT, _WHOLE, _OTHER = 0, 1, 2, 3
_INT_LIMIT = 2**62


def pack_ints(values: Any) -> bytes:
    """int64 values as bytes that compress well: zigzag (small magnitudes, either sign, small
    numbers), the narrowest of 1, 2, 4 or 8 bytes that holds them all, byte planes one after
    the other (all low bytes, then all next bytes …); the first byte is the width.

    >>> unpack_ints(pack_ints([0, 1, -1, 1_300, -70_000, 2**62])).tolist()
    [0, 1, -1, 1300, -70000, 4611686018427387904]
    """
    a = np.asarray(values, dtype=np.int64)
    if not a.size:
        return b""
    z = (a.astype(np.uint64) << np.uint64(1)) ^ (a >> np.int64(63)).astype(np.uint64)
    top = int(z.max())
    width = 1 if top < 2**8 else 2 if top < 2**16 else 4 if top < 2**32 else 8
    planes = z.astype(f"<u{width}").view(np.uint8).reshape(-1, width).T
    return bytes([width]) + planes.tobytes()


def unpack_ints(blob: bytes) -> Any:
    """The int64 array of :func:`pack_ints`."""
    if not blob:
        return np.zeros(0, dtype=np.int64)
    width = blob[0]
    planes = np.frombuffer(blob, dtype=np.uint8, offset=1).reshape(width, -1)
    z = np.ascontiguousarray(planes.T).view(f"<u{width}").reshape(-1).astype(np.uint64)
    return ((z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))).astype(np.int64)


def pack_events(events: Sequence[Event]) -> tuple[Any, ...]:
    """Samples as plain columns: ``(metric names, ts deltas, seq deltas, metric codes, value
    kinds, int deltas, floats, other values)``. Times and arrival numbers are deltas
    (:func:`pack_ints`); integer values — and floats that are whole numbers, as OPC UA counters
    often are — are int64 deltas from the previous one of the same metric, so a counter that
    rises by one costs a byte after compression; other floats are float64; strings, bools
    and the rest stay values. :func:`unpack_events` gives back the same samples, types and all.

    >>> evs = [(1_000, 1, "good_count", 7), (1_900, 2, "good_count", 8), (1_900, 3, "part_number", "P-1"),
    ...        (2_500, 5, "temperature_c", 41.25), (2_600, 4, "good_count", 9.0), (2_700, 6, "flag", True)]
    >>> unpack_events(pack_events(evs)) == evs
    True
    >>> [type(e[3]).__name__ for e in unpack_events(pack_events(evs))]
    ['int', 'int', 'str', 'float', 'float', 'bool']
    """
    if not events:
        return ((), (0, b""), b"", b"", b"", b"", b"", [])
    ts, seq, metrics, values = zip(*events, strict=True)
    names = list(dict.fromkeys(metrics))
    index = {m: i for i, m in enumerate(names)}
    codes = [index[m] for m in metrics]
    kinds = bytearray()
    ints: list[int] = []
    floats: list[float] = []
    other: list[Any] = []
    last: dict[int, int] = {}
    for code, v in zip(codes, values, strict=True):
        t = type(v)
        if t is int and -_INT_LIMIT < v < _INT_LIMIT:
            kinds.append(_INT)
        elif t is float and v.is_integer() and abs(v) < 2**53 and math.copysign(1.0, v) > 0:
            kinds.append(_WHOLE)
            v = int(v)
        elif t is float:
            kinds.append(_FLOAT)
            floats.append(v)
            continue
        else:
            kinds.append(_OTHER)
            other.append(v)
            continue
        ints.append(v - last.get(code, 0))
        last[code] = v
    code_bytes = bytes(codes) if len(names) < 256 else np.array(codes, dtype=np.uint16).tobytes()
    ts_d = pack_ints(np.diff(np.array(ts, dtype=np.int64)))
    seq_d = pack_ints(np.diff(np.array(seq, dtype=np.int64), prepend=0))
    floats_b = np.array(floats, dtype=np.float64).tobytes()
    return (tuple(names), (ts[0], ts_d), seq_d, code_bytes, bytes(kinds), pack_ints(ints), floats_b, other)


def unpack_events(cols: Sequence[Any]) -> list[Event]:
    """The samples of :func:`pack_events`' columns, in their order."""
    names, ts_b, seq_b, code_b, kinds, ints_b, floats_b, other = cols
    if not kinds:
        return []
    first, ts_b = ts_b
    ts = [first, *(first + np.cumsum(unpack_ints(ts_b))).tolist()]
    seq = np.cumsum(unpack_ints(seq_b)).tolist()
    codes = list(code_b) if len(names) < 256 else np.frombuffer(code_b, dtype=np.uint16).tolist()
    ints = iter(unpack_ints(ints_b).tolist())
    floats = iter(np.frombuffer(floats_b, dtype=np.float64).tolist())
    others = iter(other)
    last: dict[int, int] = {}
    values: list[Any] = []
    for code, kind in zip(codes, kinds, strict=True):
        if kind == _FLOAT:
            values.append(next(floats))
        elif kind == _OTHER:
            values.append(next(others))
        else:
            v = last[code] = last.get(code, 0) + next(ints)
            values.append(v if kind == _INT else float(v))
    return [(t, q, names[c], v) for t, q, c, v in zip(ts, seq, codes, values, strict=True)]


def pack_segment(checkpoint: Any, events: Sequence[Event]) -> bytes:
    """A closed journal segment: its checkpoint (the fold's plain state) and samples, compressed."""
    return zlib.compress(pickle.dumps((checkpoint, pack_events(events)), pickle.HIGHEST_PROTOCOL), 6)


def unpack_segment(blob: bytes) -> tuple[Any, list[Event]]:
    checkpoint, cols = pickle.loads(zlib.decompress(blob))  # our own journal
    return checkpoint, unpack_events(cols)


def upgrade_ledger_v1(p: dict[str, Any]) -> dict[str, Any]:
    """A ledger payload of format 1 (segments of pickled sample tuples, the open segment's
    samples as a list) in today's form: segments packed by column, ``recent`` unchanged (a
    list of samples, packed at the next snapshot), no packed prefix."""
    out = dict(p)
    segments = []
    for start, blob in p["segments"]:
        checkpoint, events = pickle.loads(zlib.decompress(blob))  # format 1: our own journal
        segments.append((start, pack_segment(checkpoint, [tuple(e) for e in events])))
    out["segments"] = segments
    out["recent_packed"] = None
    return out


def upgrade_state_v1(p: dict[str, Any]) -> dict[str, Any]:
    """A fold's state payload of format 1 (OEE, scrap) in format 2: only its ledger changed."""
    return p | {"ledger": upgrade_ledger_v1(p["ledger"])}


@dataclass(frozen=True)
class ClockPolicy:
    """What a machine's sample times may do (milliseconds; see the module docstring).

    >>> ClockPolicy().behind_ms(86_400_000) == 7 * 86_400_000
    True
    """

    max_ahead_ms: int | None = 300_000
    """Ahead of the wall clock at arrival: ``clock_skew`` (None: no check)."""
    max_behind_ms: int | None = None
    """Behind the machine's newest sample, beyond the horizon: ``late`` within, held beyond
    (None: the larger of 7 days and the horizon)."""
    max_gap_ms: int = 86_400_000
    """A gap longer than this is not accounted: the timeline restarts after it."""
    rebase_after_ms: int = 300_000
    """Held samples spanning this much of their own time re-base the machine …"""
    rebase_after_samples: int = 1_000
    """… or this many of them (the bound of the held list)."""

    def behind_ms(self, horizon_ms: int) -> int:
        return self.max_behind_ms if self.max_behind_ms is not None else max(7 * 86_400_000, horizon_ms)

    @classmethod
    def of(cls, config: PlantConfig) -> ClockPolicy:
        """The policy of a plant config's ``clock`` section (its documented defaults)."""
        c, horizon_s = config.clock, config.lateness.restatement_horizon_s
        return cls(None if c.max_ahead_s is None else round(c.max_ahead_s * 1000),
                   round(c.behind_s(horizon_s) * 1000), round(c.gap_s(config.window_s) * 1000),
                   round(c.rebase_after_s * 1000), c.rebase_after_samples)


def _ts(ev: Event) -> int:
    return ev[0]


def _same(a: Event, b: Event) -> bool:
    """The same sample (time, metric and value of the same type): a redelivery."""
    return a[0] == b[0] and a[2] == b[2] and type(a[3]) is type(b[3]) and a[3] == b[3]


def _secs(ms: int) -> str:
    return f"{ms / 1000:.0f} s"


class Ledger:
    """One machine's event-time ledger around a :class:`Fold`.

    ``late_row(event, raw)`` makes the dead-letter row of a sample the ledger does not apply
    (``raw`` is what the caller passed with the sample, e.g. the Measurement); the ledger sets
    its ``reason`` (``late``, ``clock_skew: …``, ``duplicate: …``). ``clock`` is the
    :class:`ClockPolicy` (default: its defaults).
    """

    CHECKPOINT_MS = 600_000
    """A segment of the journal covers at most this much event time (one checkpoint each)."""

    PACK_EVERY = 64
    """The open segment's samples are packed again for a snapshot once this many are not yet
    (a snapshot encodes the packed ones as they were, and at most this many as tuples)."""

    def __init__(self, fold: Fold, lateness_ms: int, horizon_ms: int,
                 late_row: Callable[[Event, Any], dict[str, Any]], clock: ClockPolicy | None = None) -> None:
        self.fold = fold
        self.lateness_ms = lateness_ms
        self.horizon_ms = horizon_ms
        self.late_row = late_row
        self.clock = clock = clock or ClockPolicy()
        self.max_behind_ms = clock.behind_ms(horizon_ms)
        self.held: list[Event] = []
        """Samples beyond ``max_behind`` of the machine's time, waiting for a re-base (arrival order)."""
        self.held_span: tuple[int, int] | None = None
        """(first, last) of the held samples' and behind ticks' own time."""
        self._held_raw: dict[int, Any] = {}
        self._rebasing = False
        self._stash: tuple[int, bytes] | None = None
        """(jump time, the timeline before the last jump): see :meth:`_jump`."""
        self.counts: dict[str, int] = {"duplicates": 0, "clock_skew": 0, "jumps": 0, "rebases": 0}
        """Per machine: redeliveries absorbed, ``clock_skew`` dead letters, gaps not accounted
        (timeline restarted), re-bases onto a held timeline."""
        self.max_ts = -1
        self.seq = 0
        self.version = 0
        self.pos = -1
        """Event time up to which the fold has applied samples and advanced."""
        self.last_key: tuple[int, int, float, int] | None = None
        """:func:`order_key` of the last sample applied (one of the same instant that goes
        before it is late)."""
        self.buffer: list[Event] = []
        self.segments: list[tuple[int, bytes]] = []
        """Closed journal segments: (from, :func:`pack_segment` of checkpoint and samples)."""
        self.open_from: int | None = None
        self.open_since = 0
        self.open_state: Any = None
        self.recent: list[Event] = []
        self._packed: tuple[bytes, int] | None = None
        """The first n samples of ``recent``, packed (zlib of :func:`pack_events`), and n."""
        self._out: list[Output] = []

    # -- state ---------------------------------------------------------------------------------
    def _fields(self) -> dict[str, Any]:
        p = {"max_ts": self.max_ts, "seq": self.seq, "version": self.version, "pos": self.pos,
             "last_key": self.last_key, "buffer": list(self.buffer), "segments": list(self.segments),
             "open_from": self.open_from, "open_since": self.open_since,
             "open_state": self.open_state}
        # the clock's keys are optional (read with defaults): only written when they hold something
        if self.held:
            p["held"] = list(self.held)
            p["held_span"] = self.held_span
        if any(self.counts.values()):
            p["clock_counts"] = dict(self.counts)
        if self._stash is not None:
            p["stash"] = self._stash
        return p

    def ledger_payload(self) -> dict[str, Any]:
        """The ledger's own state as plain data (the fold's is the owner's to add).

        ``recent_packed`` is the open segment's first samples packed by column (or None) and
        ``recent`` the rest of them as ``(ts, seq, metric, value)`` tuples.
        """
        recent, packed = self.recent, self._packed
        done = 0 if packed is None else packed[1]
        if len(recent) - done >= self.PACK_EVERY:
            blob = zlib.compress(pickle.dumps(pack_events(recent), pickle.HIGHEST_PROTOCOL), 6)
            packed = self._packed = (blob, len(recent))
            done = len(recent)
        p = self._fields()
        p["recent_packed"] = None if packed is None else packed[0]
        p["recent"] = recent[done:]
        return p

    def load_ledger(self, p: dict[str, Any]) -> None:
        self.max_ts, self.seq, self.version, self.pos = p["max_ts"], p["seq"], p["version"], p["pos"]
        self.last_key = None if p["last_key"] is None else tuple(p["last_key"])
        self.buffer = [tuple(e) for e in p["buffer"]]
        self.segments = [tuple(s) for s in p["segments"]]
        self.open_from, self.open_since = p["open_from"], p["open_since"]
        self.open_state = p["open_state"]
        blob = p["recent_packed"]
        head = [] if blob is None else unpack_events(pickle.loads(zlib.decompress(blob)))
        self._packed = None if blob is None else (blob, len(head))
        self.recent = head + [tuple(e) for e in p["recent"]]
        self.held = [tuple(e) for e in p.get("held", ())]
        span = p.get("held_span")
        self.held_span = None if span is None else (span[0], span[1])
        self._held_raw = {}
        stash = p.get("stash")
        self._stash = None if stash is None else (stash[0], stash[1])
        counts = {"duplicates": 0, "clock_skew": 0, "jumps": 0, "rebases": 0}
        self.counts = counts | dict(p.get("clock_counts", {}))
        self._out = []

    @property
    def watermark(self) -> int:
        return self.max_ts - self.lateness_ms

    # -- input ---------------------------------------------------------------------------------
    def take(self) -> list[Output]:
        out, self._out = self._out, []
        return out

    def ingest(self, samples: Iterable[tuple[int, str, Any]], raws: Iterable[Any] | None = None,
               now_ms: int | None = None) -> None:
        """Samples ``(ts, metric, value)`` in arrival order (``raws``: what a dead letter keeps;
        ``now_ms``: the wall clock at arrival, for ``clock.max_ahead_ms``; None: no check)."""
        late: list[Event] = []
        raw_iter = iter(raws) if raws is not None else None
        ahead = self.clock.max_ahead_ms
        limit = None if now_ms is None or ahead is None else now_ms + ahead
        for ts, metric, value in samples:
            raw = next(raw_iter) if raw_iter is not None else None
            self.seq += 1
            ev: Event = (ts, self.seq, metric, value)
            if limit is not None and ts > limit:
                assert now_ms is not None
                self._dead(ev, raw, f"clock_skew: {_secs(ts - now_ms)} ahead of the wall clock "
                                    f"(clock.max_ahead_s {_secs(ahead or 0)})")
                continue
            if self.max_ts >= 0 and ts < self.max_ts - self.horizon_ms:
                if ts >= self.max_ts - self.max_behind_ms:
                    self._reject_held()
                    self._dead(ev, raw, "late")
                elif self._rebasing:  # held, but not on the timeline they re-based onto
                    self._dead(ev, raw, self._behind(ts))
                elif any(_same(h, ev) for h in self.held if h[0] == ts):
                    self._absorbed(ev, raw)
                else:
                    self._hold(ev, raw, ts)
                    if self._rebase_due():
                        if late:
                            self._restate(late)
                            late = []
                        self._rebase()
                continue
            if self._rebasing and self.max_ts >= 0 and ts > self.max_ts + self.clock.max_gap_ms:
                self._dead(ev, raw, f"clock_skew: {_secs(ts - self.max_ts)} ahead of the machine's "
                                    "time (held, not on the timeline it re-based onto)")
                continue
            if self.held:
                self._reject_held()
            buf = self.buffer
            if ((buf and ts <= buf[-1][0]) or late or ts <= self.pos) and self._duplicate(ev, late):
                self._absorbed(ev, raw)
                continue
            if ts < self.pos or (self.last_key is not None and order_key(ev) < self.last_key):
                late.append(ev)
            else:
                bisect.insort(self.buffer, ev, key=order_key)
            if ts > self.max_ts:
                self.max_ts = ts
        if late:
            self._restate(late)
        self._drain(self.watermark)
        if self._stash is not None and self.max_ts - self._stash[0] >= self.clock.rebase_after_ms:
            self._stash = None  # the timeline after the jump goes on: it is the machine's

    def on_sample(self, ts: int, metric: str, value: Any, raw: Any = None) -> None:
        """One sample (see :meth:`ingest`)."""
        self.ingest(((ts, metric, value),), (raw,))

    def tick(self, ts: int, now_ms: int | None = None) -> None:
        """Another metric of the machine was measured at ``ts``: event time moved on (never
        late). A tick ahead of the wall clock is ignored; one beyond ``max_behind`` while
        samples are held counts towards their re-base."""
        if self.max_ts < 0:
            return
        ahead = self.clock.max_ahead_ms
        if now_ms is not None and ahead is not None and ts > now_ms + ahead:
            return
        if self.held and ts < self.max_ts - self.max_behind_ms:
            self._extend_run(ts)
            if self._rebase_due():
                self._rebase()
            return
        if ts <= self.max_ts:
            return
        self.max_ts = ts
        self._drain(self.watermark)

    # -- clocks and redeliveries -----------------------------------------------------------------
    def _dead(self, ev: Event, raw: Any, reason: str) -> None:
        row = self.late_row(ev, raw)
        row["reason"] = reason
        if reason.startswith("clock_skew"):
            self.counts["clock_skew"] += 1
        self._out.append(("deadletter", row))

    def _behind(self, ts: int) -> str:
        return (f"clock_skew: {_secs(self.max_ts - ts)} behind the machine's time "
                f"(clock.max_behind_s {_secs(self.max_behind_ms)})")

    def _absorbed(self, ev: Event, raw: Any) -> None:
        self.counts["duplicates"] += 1
        self._dead(ev, raw, f"duplicate: the same sample (time, metric, value) was taken already; "
                            f"{self.counts['duplicates']} absorbed for this machine")

    def _duplicate(self, ev: Event, late: list[Event]) -> bool:
        """``ev`` equals a sample of the same time that is buffered, among this call's late ones,
        or applied in the open journal segment (older ones: :meth:`_restate`)."""
        ts = ev[0]
        buf = self.buffer
        if buf and ts <= buf[-1][0]:
            i = bisect.bisect_left(buf, ts, key=_ts)
            while i < len(buf) and buf[i][0] == ts:
                if _same(buf[i], ev):
                    return True
                i += 1
        if late and any(_same(e, ev) for e in late):
            return True
        recent = self.recent
        if recent and ts <= self.pos and ts >= recent[0][0]:
            i = bisect.bisect_left(recent, ts, key=_ts)
            while i < len(recent) and recent[i][0] == ts:
                if _same(recent[i], ev):
                    return True
                i += 1
        return False

    def _hold(self, ev: Event, raw: Any, ts: int) -> None:
        self.held.append(ev)
        if raw is not None:
            self._held_raw[ev[1]] = raw
        self._extend_run(ts)

    def _extend_run(self, ts: int) -> None:
        """``held_span`` is the run of held times that fit together (each within ``max_gap`` of
        it): a time far from it starts a new run, so stray wrong times never add up."""
        span, gap = self.held_span, self.clock.max_gap_ms
        if span is None or not span[0] - gap <= ts <= span[1] + gap:
            self.held_span = (ts, ts)
        else:
            self.held_span = (min(span[0], ts), max(span[1], ts))

    def _rebase_due(self) -> bool:
        span = self.held_span
        return bool(self.held) and (len(self.held) >= self.clock.rebase_after_samples or (
            span is not None and span[1] - span[0] >= self.clock.rebase_after_ms))

    def _reject_held(self) -> None:
        """The machine's timeline goes on: the held samples were a wrong clock."""
        held, raws = self.held, self._held_raw
        self.held, self._held_raw, self.held_span = [], {}, None
        for ev in held:
            self._dead(ev, raws.get(ev[1]), self._behind(ev[0]))

    def _finish_timeline(self) -> None:
        """Apply everything buffered and let the fold close what is open (as at the end of input)."""
        if self.max_ts >= 0 and self.buffer:
            self._drain(self.max_ts)
        self.fold.finish()
        self._emit(self.fold.take())

    def _rebase(self) -> None:
        """Take the held samples' timeline: the old one finished, the ledger empty, then them."""
        held, raws = self.held, self._held_raw
        span = self.held_span
        self.held, self._held_raw, self.held_span = [], {}, None
        if span is not None:  # the run first (it sets the timeline), strays after (dead letters)
            gap = self.clock.max_gap_ms
            held = sorted(held, key=lambda ev: not span[0] - gap <= ev[0] <= span[1] + gap)
        stash, self._stash = self._stash, None
        if stash is not None and span is not None:
            fields, recent, fold = pickle.loads(stash[1])  # our own state
            if fields["max_ts"] - self.horizon_ms <= span[0] <= fields["max_ts"] + self.clock.max_gap_ms:
                # the held samples continue the timeline before the last jump: take it up again
                self._finish_timeline()
                version, seq, counts, out = self.version, self.seq, self.counts, self._out
                self.load_ledger(fields | {"recent_packed": None, "recent": recent})
                self.fold.load_state(fold)
                self.version, self.seq, self.counts, self._out = version, seq, counts, out
                self.counts["rebases"] += 1
                self._apply_held(held, raws)
                return
        self._finish_timeline()
        carry = getattr(self.fold, "carry", None)
        carried: list[tuple[str, Any]] = carry() if carry is not None else []
        self.fold.reset()
        start = span[0] if span is not None else min(ev[0] for ev in held)
        for metric, value in carried:  # the machine's context at the start of the new timeline
            self.seq += 1
            self.fold.apply((start, self.seq, metric, value))
        self._emit(self.fold.take())
        # the new timeline's origin is the fold with its context: restating starts from there
        self.max_ts, self.pos, self.last_key, self.buffer = -1, start if carried else -1, None, []
        self.segments, self.open_from, self.open_since = [], ORIGIN, start
        self.open_state = self.fold.dump_state()
        self.recent, self._packed = [], None
        self.counts["rebases"] += 1
        self._apply_held(held, raws)

    def _apply_held(self, held: list[Event], raws: dict[int, Any]) -> None:
        """Ingest the held samples onto the (re-based) timeline, as one arrival."""
        self._rebasing = True
        try:
            self.ingest([(ev[0], ev[2], ev[3]) for ev in held], [raws.get(ev[1]) for ev in held])
        finally:
            self._rebasing = False

    def _jump(self, t: int) -> None:
        """A gap longer than ``max_gap``: finish the timeline, restart the fold empty at ``t``.

        The timeline before the jump is kept (``stash``) until the new one has gone on for
        ``rebase_after``: when samples that continue it come back instead (the jump was a
        sample from a wrong clock that the wall clock allowed), a re-base takes it up again.
        """
        if self._stash is None:
            fields = self._fields() | {"max_ts": self.pos, "buffer": [], "held": [], "held_span": None}
            fields.pop("stash", None)
            self._stash = (t, pickle.dumps((fields, self.recent, self.fold.dump_state()),
                                           pickle.HIGHEST_PROTOCOL))
        self.fold.finish()
        self._emit(self.fold.take())
        self.fold.reset()
        self.segments, self.open_from, self.open_since = [], ORIGIN, t
        self.open_state = self.fold.dump_state()
        self.recent, self._packed, self.last_key = [], None, None
        self.pos = t
        self.counts["jumps"] += 1

    def flush(self) -> None:
        """Apply every buffered sample now (the machine went quiet); later samples for an
        earlier time restate, so the final rows are those without the flush."""
        if self.buffer:
            self._drain(self.max_ts)

    def finish(self) -> None:
        """End of input: apply everything and let the fold close what is open, provisionally.

        The state is left as it was (only the version moves on), so more input later continues
        it and restates these rows.
        """
        if self.max_ts < 0:
            return
        keep = pickle.dumps((self._fields(), self.recent, self.fold.dump_state()),
                            protocol=pickle.HIGHEST_PROTOCOL)
        packed, held_raw = self._packed, self._held_raw
        for ev in self.held:  # undecided at the end of input: dead letters, provisionally
            row = self.late_row(ev, held_raw.get(ev[1]))
            row["reason"] = self._behind(ev[0]) + ", held at the end of input"
            self._out.append(("deadletter", row))
        self._drain(self.max_ts)
        self.fold.finish()
        self._emit(self.fold.take())
        version, out = self.version, self._out
        ledger, recent, fold = pickle.loads(keep)
        self.load_ledger(ledger | {"recent_packed": None, "recent": recent})
        self._packed, self._held_raw = packed, held_raw
        self.fold.load_state(fold)
        self.version, self._out = version, out

    # -- ordering, journal, restatement --------------------------------------------------------
    def _emit(self, emitted: list[Emitted]) -> None:
        for table, _, rows in emitted:
            if table == "deadletter":  # a sample the fold refused: a dead letter has no version
                self._out.extend((table, row) for row in rows)
                continue
            self.version += 1
            for row in rows:
                row["version"] = self.version
                self._out.append((table, row))

    def _drain(self, upto: int) -> None:
        buf = self.buffer
        gap = self.clock.max_gap_ms
        i = 0
        while i < len(buf) and buf[i][0] <= upto:
            ev = buf[i]
            if 0 <= self.pos < ev[0] - gap:
                self._jump(ev[0])
            self._apply_logged(ev)
            i += 1
        if i:
            del buf[:i]
        if upto > self.pos:
            if 0 <= self.pos < upto - gap:
                self._jump(upto)
            else:
                self.fold.advance(upto)
            self.pos = upto
        self._emit(self.fold.take())

    def _apply_logged(self, ev: Event) -> None:
        if self.open_from is None:
            self.open_from, self.open_since = ORIGIN, ev[0]
            self.open_state = self.fold.dump_state()
        elif ev[0] - self.open_since >= self.CHECKPOINT_MS:
            self._close_segment(ev[0])
        self.recent.append(ev)
        self.fold.apply(ev)
        self.last_key = order_key(ev)
        if ev[0] > self.pos:
            self.pos = ev[0]

    def _close_segment(self, ts: int) -> None:
        assert self.open_from is not None
        self.segments.append((self.open_from, pack_segment(self.open_state, self.recent)))
        self.open_from, self.open_since = self.pos, ts
        self.open_state = self.fold.dump_state()
        self.recent, self._packed = [], None
        floor = self.max_ts - self.horizon_ms
        segs = self.segments
        drop = 0
        while drop < len(segs) and (segs[drop + 1][0] if drop + 1 < len(segs) else self.open_from) < floor:
            drop += 1
        if drop:
            del segs[:drop]

    def _restate(self, late: list[Event]) -> None:
        t0 = min(ev[0] for ev in late)
        froms = [s[0] for s in self.segments]
        if self.open_from is not None:
            froms.append(self.open_from)
        idx = bisect.bisect_left(froms, t0) - 1  # strictly before: same-instant samples may reorder
        if idx < 0:  # not placeable (the journal starts later): beyond the horizon in effect
            for ev in late:
                self._out.append(("deadletter", self.late_row(ev, None)))
            return
        state: Any = None
        events: list[Event] = []
        for i in range(idx, len(self.segments)):
            ck, evs = unpack_segment(self.segments[i][1])
            if i == idx:
                state = ck
            events.extend(evs)
        if idx == len(self.segments):
            state = self.open_state
        events.extend(self.recent)
        at = {ev[0] for ev in late}
        applied = [e for e in events if e[0] in at]
        fresh = [ev for ev in late if not any(_same(e, ev) for e in applied)]
        if len(fresh) < len(late):  # redeliveries of applied samples: absorbed, not applied again
            for ev in late:
                if not any(_same(e, ev) for e in applied):
                    continue
                self._absorbed(ev, None)
            if not fresh:
                return
            late = fresh
        pos = self.pos
        self._emit(self.fold.take())
        # what the rows were: the fold again from the checkpoint over the journal as it was
        self.fold.load_state(state)
        for ev in events:
            self.fold.apply(ev)
        self.fold.advance(pos)
        before = _last_per_key(self.fold.take())
        # what they are now: from the same checkpoint with the late samples in their places,
        # journalled again
        start = froms[idx]
        del self.segments[idx:]
        self.fold.load_state(state)
        self.open_from, self.open_state, self.recent, self._packed = start, state, [], None
        self.open_since = events[0][0] if events else late[0][0]
        self.pos = start if start != ORIGIN else -1
        self.last_key = None
        for ev in sorted(events + late, key=order_key):
            self._apply_logged(ev)
        if pos > self.pos:
            self.fold.advance(pos)
            self.pos = pos
        after = _last_per_key(self.fold.take())
        changed: list[Emitted] = [(t, k, rows) for (t, k), rows in after.items()
                                  if before.get((t, k)) != rows]
        for (t, k), rows in before.items():
            if (t, k) not in after:
                gone = self.fold.tombstone(t, k, rows)
                if gone:
                    changed.append((t, k, gone))
        self._emit(changed)


def _last_per_key(emitted: list[Emitted]) -> dict[tuple[str, Hashable], list[dict[str, Any]]]:
    """The last rows emitted for each (table, key), in the order keys were first emitted."""
    last: dict[tuple[str, Hashable], list[dict[str, Any]]] = {}
    for table, key, rows in emitted:
        last[(table, key)] = rows
    return last
