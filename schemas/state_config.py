"""The ``state:`` section of the plant config: how much per-machine state the flows may keep.

The machine engine (:mod:`plantstream.flows.engine`) keeps, per machine, the live logic of
every per-machine flow (status, OEE, scrap, anomaly, alerts) and its encoded state for the
recovery snapshot. These limits keep that bounded whatever arrives on the input topic:

- a machine idle for ``idle_evict_s`` (wall time, no sample) leaves live memory; its state stays
  in the snapshot as its compact encoded bytes and is decoded again when it returns;
- a machine that is not in the plant config (``lines[].machines``) is an *unconfigured*
  machine: at most ``max_unconfigured_machines`` of them get per-machine state; beyond that
  they are archived only (``measurements``), and the cap is reported once;
- a machine keeps metric-keyed state (the twin's last value, an anomaly model, a silence
  watch) for at most ``max_signals_per_machine`` signals; further metric names of that
  machine are archived only.

Examples
--------
>>> StateConfig().idle_evict_s, StateConfig().max_unconfigured_machines, StateConfig().max_signals_per_machine
(3600.0, 1000, 128)
>>> try:
...     StateConfig(max_signals_per_machine=0)
... except ValueError as exc:
...     print("greater than or equal to 1" in str(exc))
True
"""

from __future__ import annotations

from pydantic import Field

from plantstream.schemas._base import Frozen


class StateConfig(Frozen):
    """Bounds of the per-machine state of the flows (see the module docstring, docs/reliability.md)."""

    idle_evict_s: float = Field(default=3600.0, ge=0)
    """A machine without a sample for this long (wall time) leaves live memory; its state is
    kept encoded (inside the recovery snapshot) and restored when it sends again. 0: never."""
    max_unconfigured_machines: int = Field(default=1000, ge=0)
    """Machines not in ``lines[].machines`` that get per-machine state (status, OEE
    availability and quality, scrap, anomalies, alerts). Counted per engine shard (this / 32,
    rounded up, each); beyond it an unconfigured machine is archived only. 0: archived only."""
    max_signals_per_machine: int = Field(default=128, ge=1)
    """Distinct metric names per machine that get metric-keyed state (twin signals, anomaly
    models, silence watches); further names of the machine are archived only."""
