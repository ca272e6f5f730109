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
features; ``ilof``: River LocalOutlierFactor; ``ocsvm``: River OneClassSVM on scaled features."""


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
    warmup: int = Field(default=288, ge=1)
    """Samples learned before a model may raise anomalies (288 = one day at 5-minute samples)."""
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
    period, on the mean of the period's samples, when the period ends. A 1 Hz sensor then costs
    what a 0.1 Hz one does, and the sample counts below mean the same whatever the source's
    rate (for sources slower than the period nothing changes). 0 scores every sample."""
    iso10816: bool = True
    """Rule-based ISO 10816 vibration zones on ``vibration_rms_mms`` (C: warning, D: critical)."""
    seed: int = 42
    """Seed of the River detectors (deterministic replays and resumes)."""

    @model_validator(mode="after")
    def _unique_names(self) -> AnomalyConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            msg = f"anomaly model names must be unique, got {names}; rename the duplicates"
            raise ValueError(msg)
        return self
