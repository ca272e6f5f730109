"""Loss classification and downtime reasons as configuration (the ``losses:`` config section).

Which machine state counts as which loss is a plant decision. The defaults are the ones in
KPI.md: ``running`` is run time; ``fault`` and ``idle`` are unplanned stops, and an ``idle``
stop shorter than ``microstop_threshold_s`` is a small stop (a performance loss, inside run
time); ``setup`` is a planned stop that is an availability loss (Vorne counts changeovers);
``planned_stop`` is excluded from planned production time; ``off`` is not scheduled.
A sub-state (``fault_hydraulic``) inherits its parent's bucket unless it is listed itself.

Fault codes map to a reason and a category; an operator ``reason_code`` overrides the mapped
reason (and its category when the code is in ``reason_codes``).

Examples
--------
>>> losses = LossConfig.model_validate({"parents": {"fault_hydraulic": "fault"}})
>>> losses.bucket("fault_hydraulic"), losses.bucket("idle"), losses.bucket("mystery")
('unplanned_stop', 'unplanned_stop', 'unplanned_stop')
>>> losses.state_name(3), losses.state_name("1"), losses.state_name("Setup")
('fault', 'running', 'setup')
>>> losses.reason_for("E42")
('unassigned', 'unassigned')
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from plantstream.schemas._base import Frozen

Bucket = Literal["run", "unplanned_stop", "setup", "small_stop", "excluded", "not_scheduled"]
"""Where time in a state goes: run time; an availability loss (``unplanned_stop``, ``setup``);
a performance loss inside run time (``small_stop``); scheduled but not planned production
time (``excluded``); or not scheduled at all."""

CATEGORIES: tuple[str, ...] = (
    "mechanical", "electrical", "tooling", "material", "operator", "quality hold", "changeover",
    "scheduled maintenance", "no demand", "unassigned",
)
"""Downtime reason categories (KPI.md)."""

DEFAULT_BUCKETS: dict[str, Bucket] = {
    "running": "run",
    "fault": "unplanned_stop",
    "idle": "unplanned_stop",
    "setup": "setup",
    "planned_stop": "excluded",
    "off": "not_scheduled",
}

DEFAULT_STATE_CODES: dict[int, str] = {0: "off", 1: "running", 2: "idle", 3: "fault", 4: "setup",
                                       5: "planned_stop"}


class Reason(Frozen):
    """A downtime reason and its category."""

    reason: str = Field(min_length=1)
    category: str = "unassigned"

    @field_validator("category")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in CATEGORIES:
            msg = f"unknown downtime category {v!r}; use one of {list(CATEGORIES)}"
            raise ValueError(msg)
        return v


class LossConfig(Frozen):
    """State → loss bucket, sub-states, small stops, and the downtime reason maps."""

    buckets: dict[str, Bucket] = Field(default_factory=lambda: dict(DEFAULT_BUCKETS))
    """State → bucket; states not listed (and without a listed parent) are unplanned stops."""
    parents: dict[str, str] = Field(default_factory=dict)
    """Sub-state → parent state, e.g. ``fault_hydraulic: fault``."""
    small_stop_states: tuple[str, ...] = ("idle",)
    """Stop states that become small stops (performance loss) when shorter than the threshold."""
    state_codes: dict[int, str] = Field(default_factory=lambda: dict(DEFAULT_STATE_CODES))
    """PLC integer → state name for ``machine_state`` sent as a number."""
    fault_codes: dict[str, Reason] = Field(default_factory=dict)
    """Fault code → reason and category."""
    reason_codes: dict[str, Reason] = Field(default_factory=dict)
    """Operator reason code → reason text and category (codes not listed keep the code as the
    reason and the mapped category)."""
    state_categories: dict[str, str] = Field(default_factory=lambda: {
        "setup": "changeover", "planned_stop": "scheduled maintenance"})
    """Category of stops in a state that has no fault code (e.g. setup → changeover)."""

    @model_validator(mode="after")
    def _check(self) -> LossConfig:
        for child in self.parents:
            seen = {child}
            node = child
            while node in self.parents:
                node = self.parents[node]
                if node in seen:
                    msg = f"losses.parents has a cycle through {child!r}; a sub-state needs one parent"
                    raise ValueError(msg)
                seen.add(node)
        for state, cat in self.state_categories.items():
            if cat not in CATEGORIES:
                msg = f"losses.state_categories[{state!r}] = {cat!r}; use one of {list(CATEGORIES)}"
                raise ValueError(msg)
        return self

    def root(self, state: str) -> str:
        """The first ancestor of ``state`` (itself included) that has a bucket."""
        node = state
        while node not in self.buckets and node in self.parents:
            node = self.parents[node]
        return node

    def bucket(self, state: str) -> Bucket:
        """The loss bucket of a state (sub-states inherit their parent's)."""
        return self.buckets.get(self.root(state), "unplanned_stop")

    def small_stop_eligible(self, state: str) -> bool:
        node: str | None = state
        while node is not None:
            if node in self.small_stop_states:
                return True
            node = self.parents.get(node)
        return False

    def state_name(self, value: object) -> str:
        """A ``machine_state`` value as a state name (PLC integers mapped, strings lower-cased)."""
        if isinstance(value, bool):
            return "running" if value else "idle"
        if isinstance(value, int | float) and float(value).is_integer():
            return self.state_codes.get(int(value), f"code_{int(value)}")
        text = str(value).strip().lower()
        if text.isdigit():
            return self.state_codes.get(int(text), f"code_{int(text)}")
        return text

    def reason_for(self, fault_code: str) -> tuple[str, str]:
        """Reason and category of a fault code (``unassigned`` when not mapped)."""
        r = self.fault_codes.get(fault_code)
        if r is None:
            return "unassigned", "unassigned"
        return r.reason, r.category

    def state_category(self, state: str) -> str:
        node: str | None = state
        while node is not None:
            if node in self.state_categories:
                return self.state_categories[node]
            node = self.parents.get(node)
        return "unassigned"
