"""Counter semantics shared by the OEE accounting and scrap: deltas that match PLCs, and any two of
good, reject and total giving the third.

:class:`Counter` turns one cumulative counter's values, in event-time order, into production:
the first value is the baseline; a rise is production; a decrease is a *wrap* or a *reset* only
when it looks like one (:class:`~plantstream.schemas.counters_config.CounterConfig`), and any
other decrease is a *step back*, ignored (the baseline stays at the highest value) and reported
to the caller, who counts it. A value sent twice (a redelivered message) is a rise of 0.

:class:`Balance` completes the counts of a machine that reports two of good, reject and total
(cumulative counters or increments): good + reject → total = good + reject; good + total →
reject = total − good; total + reject → good = total − reject; total alone → every part good.
With all three, good and reject are taken as sent (total only drives the ideal time, in the
OEE accounting). A derived count is settled per instant — once every count of that instant is
in — and never negative: when total runs behind the other count for a moment (a tag read a
scan later), the difference is owed and settled against the next parts, so over time the
derived count is exactly total − good (or total − reject).

Examples
--------
>>> from plantstream.schemas.counters_config import CounterConfig
>>> c, rules = Counter(), CounterRules.of(CounterConfig())
>>> [c.step(v, rules) for v in (4500, 4501, 4500, 4502)]
[0, 1, None, 1]
>>> c = Counter()
>>> [c.step(v, rules) for v in (9_860, 9_871, 3, 8)]
[0, 11, 3, 5]
>>> c, wrap16 = Counter(), CounterRules.of(CounterConfig(rollover_bits=16))
>>> [c.step(v, wrap16) for v in (65_520, 65_530, 4)]
[0, 10, 10]
"""

from __future__ import annotations

from dataclasses import dataclass

from plantstream.schemas.counters_config import CounterConfig
from plantstream.schemas.measurement import (
    GOOD_COUNT,
    GOOD_PARTS,
    REJECT_COUNT,
    REJECT_PARTS,
    TOTAL_COUNT,
)

GOOD, REJECT, TOTAL = "good", "reject", "total"
SIDE = {GOOD_COUNT: GOOD, GOOD_PARTS: GOOD, REJECT_COUNT: REJECT, REJECT_PARTS: REJECT, TOTAL_COUNT: TOTAL}
"""Which of good, reject and total a count metric reports."""


@dataclass(frozen=True, slots=True)
class CounterRules:
    """The numbers of a :class:`CounterConfig` a :class:`Counter` needs (hashable, cheap)."""

    reset_below: float = 10
    reset_fraction: float = 0.5
    modulus: int | None = None
    wrap_within: float = 0.1

    @classmethod
    def of(cls, cfg: CounterConfig) -> CounterRules:
        return cls(cfg.reset_below, cfg.reset_fraction, cfg.modulus, cfg.wrap_within)


DEFAULT_RULES = CounterRules()


@dataclass
class Counter:
    """Delta of a cumulative counter: its baseline ``last`` is the highest value since the last
    reset or wrap (a step back leaves it where it is)."""

    last: float | None = None

    def step(self, value: float, rules: CounterRules = DEFAULT_RULES) -> float | None:
        """Production since the baseline, or None for a step back (ignored: count it).

        >>> c = Counter(100)
        >>> c.step(130), c.step(130), c.step(129), c.step(131), c.step(5), c.step(9)
        (30, 0, None, 1, 5, 4)
        >>> Counter(10_000).step(4_000)   # below half of the value before: a reset
        4000
        """
        last = self.last
        if last is None:
            self.last = value
            return 0
        if value >= last:
            self.last = value
            return value - last
        m = rules.modulus
        if m is not None and m - last + value <= rules.wrap_within * m:
            self.last = value
            return m - last + value
        if value <= rules.reset_below or value < rules.reset_fraction * last:
            self.last = value
            return value
        return None

    def delta(self, value: float, rules: CounterRules = DEFAULT_RULES) -> float:
        """Production since the baseline; 0 for a step back (:meth:`step` tells it apart).

        >>> c = Counter(); c.delta(4500), c.delta(4501), c.delta(4500), c.delta(4502)
        (0, 1, 0, 1)
        """
        d = self.step(value, rules)
        return 0 if d is None else d


@dataclass
class Balance:
    """Which of good, reject and total a machine reports, and the derived count owed.

    ``owed`` is the derived count of the instant ``owed_ts`` not yet settled (positive), or the
    credit carried (negative) when total ran behind; :meth:`settle` hands out what is due.

    >>> b = Balance()
    >>> b.see(TOTAL), b.see(GOOD)      # a machine with total_count and good_count
    (True, True)
    >>> b.derived
    'reject'
    >>> b.count(1_000, TOTAL, 10); b.count(1_000, GOOD, 9); b.settle(2_000)
    (1000, 1.0)
    >>> b.count(2_000, GOOD, 3); b.settle(3_000)      # total a scan late: owed, not negative
    >>> b.count(3_000, TOTAL, 3); b.count(3_000, TOTAL, 2); b.count(3_000, GOOD, 1); b.settle(4_000)
    (3000, 1.0)
    """

    good: bool = False
    reject: bool = False
    total: bool = False
    owed: float = 0.0
    owed_ts: int = -1

    @property
    def derived(self) -> str | None:
        """The count derived from the others: ``reject`` (good + total), ``good`` (total, with
        or without reject), or None (good and/or reject without total, or all three)."""
        if not self.total:
            return None
        if not self.good:
            return GOOD
        return None if self.reject else REJECT

    def see(self, side: str) -> bool:
        """A count of ``side`` was seen; True when that is news (the derivation starts over)."""
        if getattr(self, side):
            return False
        setattr(self, side, True)
        self.owed, self.owed_ts = 0.0, -1
        return True

    def count(self, ts: int, side: str, qty: float) -> None:
        """``qty`` parts of ``side`` counted at ``ts`` (after :meth:`settle` of earlier instants)."""
        derived = self.derived
        if derived is None or not qty:
            return
        if side == TOTAL:
            self.owed += qty
        elif side != derived:
            self.owed -= qty
        else:
            return
        self.owed_ts = ts

    def settle(self, before: int | None = None) -> tuple[int, float] | None:
        """``(ts, quantity)`` of the derived count due, once event time is past ``owed_ts``
        (``before``: the next sample's time; None: settle now)."""
        if self.owed <= 0 or (before is not None and before <= self.owed_ts):
            return None
        due = (self.owed_ts, self.owed)
        self.owed = 0.0
        return due
