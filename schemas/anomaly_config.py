"""The ``anomaly:`` section of the plant config: condition monitoring without tuning.

With no ``anomaly:`` section every numeric condition signal of every running machine is
monitored by its own model (the default detector, an adaptive threshold, a warm-up). The
section can group signals into multivariate models, choose detectors and thresholds, or
exclude signals.

Examples
--------
>>> cfg = AnomalyConfig.model_validate({"models": [{"name": "spindle",
...     "signals": ["vibration_rms_mms", "temperature_c"], "detector": "hst"}]})
>>> cfg.models[0].detector, cfg.detector
('hst', 'zscore')
>>> try:
...     AnomalyConfig.model_validate({"detector": "magic"})
... except Exception as exc:
...     print("detector" in str(exc))
True
>>> old = AnomalyConfig(warmup=380)                    # the deprecated sample count
>>> AnomalyConfig(warmup_s=400).warm_ms, old.warm_ms, old.warm_samples
(400000, 0, 380)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from plantstream.schemas._base import Frozen

Feature = Literal["value", "mean", "std", "max", "min", "excess"]
"""Per-signal features: the (domain-adjusted) value and rolling mean, std, max, min; ``excess``
(thermal signals of machines that report their state): the rolling mean of the residual of a
learned first-order thermal model of the running machine — heat its operating history does not
explain."""

Detector = Literal["zscore", "gaussian", "hst", "ilof", "ocsvm"]
"""``zscore``: EWMA control chart (robust z-scores of value and rolling mean) — the default;
``gaussian``: River GaussianScorer per feature; ``hst``: River HalfSpaceTrees on min-max scaled
features; ``ilof``: River LocalOutlierFactor; ``ocsvm``: River OneClassSVM on scaled features.
The multivariate process model (detector ``pca`` in the rows) is not chosen here: see ``process``."""


class AnomalyModelConfig(Frozen):
    """A named model over a group of signals (multivariate when it has several)."""

    name: str = Field(min_length=1)
    signals: tuple[str, ...] = Field(min_length=1)
    detector: Detector | None = None
    """Detector of this model; unset = the section's ``detector``."""
    threshold: float | None = Field(default=None, gt=0, lt=1)
    """Fixed score threshold in (0, 1); unset = adaptive (quantile of past scores, floor ``min_z``)."""
    machines: tuple[str, ...] = ()
    """Machines this model applies to; empty = every machine that reports its signals."""


class AnomalyConfig(Frozen):
    """Condition monitoring defaults (sample counts are per model, in samples of its signals)."""

    enabled: bool = True
    detector: Detector = "zscore"
    """Detector of the automatic one-signal models."""
    warmup_s: float = Field(default=2880.0, ge=0)
    """Seconds of running event time during which a model only learns (from its first sample, or
    from a relearn): 2,880 s = 48 min, what 288 scoring periods of 10 s were. A model also needs
    ``warmup_samples`` scored samples before it may alert (its statistics need them)."""
    warmup_samples: int = Field(default=30, ge=2)
    """Fewest scored samples a model learns before it may alert, however long the warm-up time;
    the process model needs at least twice its signal count as well."""
    warmup: int | None = Field(default=None, ge=1)
    """Deprecated (samples, the former way to state the warm-up): when set and ``warmup_s`` is
    not, a model learns exactly ``warmup`` samples (no time condition), as before. Prefer
    ``warmup_s``."""
    window: int = Field(default=12, ge=2, le=1024)
    """Length (samples) of the rolling statistics (rolling mean and standard deviation)."""
    features: tuple[Feature, ...] = ("value", "mean")
    """Features of each signal: its (domain-adjusted) value, rolling mean, rolling std."""
    thermal: tuple[str, ...] = ("temperature", "oil_temperature")
    """Signals (name prefixes) with the thermal profile: slow, cooled by every stop, bounded
    above by the running steady state."""
    thermal_features: tuple[Feature, ...] = ("value", "max", "excess")
    """Features of thermal signals: the value, the rolling max (thermal envelope) and the excess
    over the learned thermal model (one-sided; only for machines that report their state)."""
    thermal_window: int = Field(default=60, ge=2, le=1024)
    """Length (samples) of the thermal signals' rolling statistics."""
    half_life: int = Field(default=2016, ge=2)
    """Memory of the normal band (samples): the EWMA weight halves after this many samples."""
    quantile: float = Field(default=0.995, gt=0.5, lt=1)
    """Adaptive threshold: this quantile of the model's past scores …"""
    min_z: float = Field(default=5.0, gt=0)
    """… but never below the score of a ``min_z`` standard-deviation excursion."""
    min_points: int = Field(default=2, ge=1)
    """Consecutive anomalous samples before an episode is reported (single blips are not)."""
    min_duration_s: float = Field(default=30.0, ge=0)
    """Persistence in time: an episode is reported once it has been anomalous (without a normal
    sample in between) for this many seconds of event time, from the start of its first scored
    period to the end of its latest, as well as ``min_points`` samples. Shorter excursions are
    never episodes; an episode still shorter at the end of the input is none either. The
    episode's ``start`` stays its onset: the cost is the delay of the alert."""
    episode_gap: int = Field(default=12, ge=0)
    """Normal samples tolerated inside an episode before it closes (debounce)."""
    adapt_after: int = Field(default=576, ge=1)
    """An episode longer than this (samples) is taken as the new normal: learning resumes."""
    exclude: tuple[str, ...] = ("ambient_temperature_c", "oil_temperature_target_c")
    """Signals never monitored on their own: ambient is a baseline and a target is a setpoint,
    not a machine condition."""
    models: tuple[AnomalyModelConfig, ...] = ()
    """Grouped models; a signal in a group is not monitored on its own as well."""
    sample_s: float = Field(default=10.0, ge=0)
    """Scoring period (seconds of event time): each signal of a machine is scored once per
    period, when the period ends, on the period's mean **and its extremes** (a signal whose
    period held several samples gets its period max and min as features ``.hi`` and ``.lo``
    with their own bands, so thinning never hides a short excursion); an episode covers the
    whole period it was scored on. A 1 Hz sensor then costs what a 0.1 Hz one does, and the
    sample counts mean the same whatever the source's rate (for sources slower than the period
    nothing changes). 0 scores every sample."""
    process: bool = True
    """The multivariate process model: per machine one model (``process``, detector ``pca``) over
    all its monitored signals — incremental PCA of the standardised signals, Hotelling T² on the
    principal components and the squared prediction error (SPE/Q) off them, with per-signal
    contributions. On a machine with at least ``process_min_signals`` signals it watches them
    instead of the per-signal charts (grouped ``models`` and the ISO 10816 rule stay)."""
    process_min_signals: int = Field(default=4, ge=2, le=64)
    """Fewest monitored signals for the process model: a process rig with many coupled signals.
    Machines with fewer (a motor's temperature, vibration and speed) keep the per-signal charts
    with their domain features (thermal model, extremes)."""
    process_max_signals: int = Field(default=16, ge=2, le=64)
    """Most signals in the process model (the first that arrived); its state grows with the square."""
    process_variance: float = Field(default=0.95, gt=0.5, lt=1)
    """Share of the standardised signals' variance the principal components keep (T² on them);
    the rest is the residual subspace (SPE)."""
    iso10816: bool = True
    """Rule-based ISO 10816 vibration zones on ``vibration_rms_mms`` (C: warning, D: critical)."""
    seed: int = 42
    """Seed of the River detectors (deterministic replays and resumes)."""

    @property
    def warm_ms(self) -> int:
        """Running event time (ms) a model learns before it may alert (0 under the deprecated
        ``warmup`` sample count, unless ``warmup_s`` is set too)."""
        if self.warmup is not None and "warmup_s" not in self.model_fields_set:
            return 0
        return round(self.warmup_s * 1000)

    @property
    def min_duration_ms(self) -> int:
        """``min_duration_s`` in ms."""
        return round(self.min_duration_s * 1000)

    @property
    def warm_samples(self) -> int:
        """Scored samples a model learns before it may alert (``warmup`` when set)."""
        return self.warmup if self.warmup is not None else self.warmup_samples

    @model_validator(mode="after")
    def _unique_names(self) -> AnomalyConfig:
        if self.process_max_signals < self.process_min_signals:
            msg = (f"anomaly.process_max_signals ({self.process_max_signals}) is below process_min_signals "
                   f"({self.process_min_signals}); raise it")
            raise ValueError(msg)
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            msg = f"anomaly model names must be unique, got {names}; rename the duplicates"
            raise ValueError(msg)
        return self
