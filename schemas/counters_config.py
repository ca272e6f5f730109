"""Counter semantics (the ``counters:`` config section, per plant and per machine).

A cumulative counter (``good_count``, ``reject_count``, ``total_count``) normally rises. When it
falls, what happened decides what was produced:

- a **wrap**: the counter has a fixed width (``rollover_bits`` 16 or 32, or a modulus
  ``rollover_at``) and went from near the top of its range to near zero; the production is
  ``modulus − last + value``. It is a wrap when that production is at most ``wrap_within`` of
  the modulus (default 10 %: 65,530 → 4 on a 16-bit counter is 10 parts).
- a **reset**: the value fell to ``reset_below`` or less (default 10), or below
  ``reset_fraction`` of the value before (default 0.5: a counter at 9,871 seen next at 120 was
  reset and has counted 120 since); the new value is the production since the reset.
- anything else is a **step back** (4,501 then 4,500: a redelivered older value, a second
  reader a scan behind): it is ignored — the counter keeps its highest value as the baseline, so
  nothing is counted until it rises past it again — and counted in the ``counter_stepbacks``
  column of the machine's OEE facts.

A machine's own ``counters:`` (under its entry in ``lines``) overrides the plant's, field by
field; a machine that sets either rollover key takes both from its own section. Values outside
a counter's range are dead-lettered at decode (``counter out of range``): negative, not a whole
number, 2^63 or more, or at/above the configured modulus.

Examples
--------
>>> CounterConfig().modulus, CounterConfig(rollover_bits=16).modulus, CounterConfig(rollover_at=10**4).modulus
(None, 65536, 10000)
>>> plant = CounterConfig(reset_below=5, rollover_bits=32)
>>> m = plant.merged(CounterConfig.model_validate({"rollover_at": 100_000}))
>>> m.reset_below, m.rollover_bits, m.modulus
(5, None, 100000)
>>> CounterConfig(rollover_bits=16, rollover_at=1000)
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for CounterConfig
  Value error, counters: set rollover_bits or rollover_at, not both; ...
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, model_validator

from plantstream.schemas._base import Frozen

MAX_COUNT: Final = 2**63 - 1
"""The largest value a counter or an increment may have (a signed 64-bit integer)."""

_ROLLOVER: Final = frozenset({"rollover_bits", "rollover_at"})


class CounterConfig(Frozen):
    """When a decrease of a cumulative counter is a wrap, a reset or an ignored step back."""

    reset_below: int = Field(default=10, ge=0)
    """A decrease to this value or less is a reset (the value is the production since)."""
    reset_fraction: float = Field(default=0.5, ge=0, le=1)
    """A decrease to less than this fraction of the value before is a reset too (0 = only
    ``reset_below``; 1 = every decrease is a reset, the behaviour before step backs)."""
    rollover_bits: Literal[16, 32] | None = None
    """The counter wraps at 2^bits (an unsigned 16- or 32-bit PLC counter)."""
    rollover_at: int | None = Field(default=None, ge=2, le=MAX_COUNT)
    """The counter wraps at this value (counts 0 … rollover_at − 1), e.g. 1000000 for a
    six-digit counter."""
    wrap_within: float = Field(default=0.1, gt=0, le=0.5)
    """A decrease is a wrap when the production it implies (modulus − last + value) is at most
    this fraction of the modulus."""

    @model_validator(mode="after")
    def _one_width(self) -> CounterConfig:
        if self.rollover_bits is not None and self.rollover_at is not None:
            msg = ("counters: set rollover_bits or rollover_at, not both; "
                   "rollover_at: 65536 is the same as rollover_bits: 16")
            raise ValueError(msg)
        return self

    @property
    def modulus(self) -> int | None:
        """Where the counter wraps (None: it does not)."""
        if self.rollover_bits is not None:
            return 2 ** self.rollover_bits
        return self.rollover_at

    def merged(self, own: CounterConfig) -> CounterConfig:
        """This (the plant's) section with a machine's ``own`` fields over it."""
        fields = own.model_fields_set
        update = {k: getattr(own, k) for k in fields}
        if fields & _ROLLOVER:
            update |= {k: getattr(own, k) for k in _ROLLOVER}
        return CounterConfig.model_validate(self.model_dump() | update)


def width_reason(metric: str, value: float, modulus: int) -> str | None:
    """The dead-letter reason of a cumulative counter's value at or above its configured
    modulus (None when it is inside).

    >>> print(width_reason("good_count", 70_000, 2**16))  # doctest: +NORMALIZE_WHITESPACE
    counter out of range: good_count must be below its configured rollover 65536 (counters.rollover_bits
    or rollover_at), got 70000
    >>> width_reason("good_count", 65_535, 2**16) is None
    True
    """
    if value < modulus:
        return None
    return (f"counter out of range: {metric} must be below its configured rollover {modulus} "
            f"(counters.rollover_bits or rollover_at), got {value!r}")
