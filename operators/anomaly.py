"""Condition monitoring: per-machine anomaly models over condition signals, one logic per machine.

Every numeric condition signal (``is_condition_metric``) of a machine is monitored with no
configuration: each signal gets its own model, built lazily on its first sample; the plant
config (``anomaly:``, :class:`schemas.anomaly_config.AnomalyConfig`) may group signals into
multivariate models, choose detectors and thresholds, or exclude signals.

Per sample of a model's signal, in order:

1. **Features** from the domain: temperature is compared after removing the ambient baseline
   (``temperature_c − ambient_temperature_c`` when the machine reports both); vibration RMS
   becomes peak (RMS × √2); every signal adds its rolling mean over ``window`` samples; thermal
   signals add their rolling max and, on machines that report their state, the **excess** over
   a learned first-order thermal model of the running machine (:class:`ThermalFit`), which
   explains heating after a start and cooling in a stop, so an overheating stands out however
   often the machine stops.
2. **State gating**: only while the machine runs (a machine that never reported
   ``machine_state`` counts as running); other states neither score nor learn.
3. **Score, then learn.** Each feature has an EWMA normal band (mean, variance; memory
   ``half_life``); the z-scores name the signals that deviate. The detector's score is in
   [0, 1] (``zscore``: erf(|z|max/√2), the two-sided Gaussian probability of the largest
   excursion). The first ``warmup`` samples only learn.
4. **Adaptive threshold**: a point is anomalous when its score exceeds the running
   ``quantile`` of the model's past scores (a two-float stochastic-approximation estimate in
   z units, each episode counted once), and never below the score of a ``min_z`` σ excursion
   — no per-plant tuning.
5. **Protect the detector**: anomalous points are not learned, so an anomaly never becomes the
   normal band; an episode longer than ``adapt_after`` samples is accepted as the new normal
   (it closes and the model relearns from scratch, warm-up included).
6. **Episodes**: consecutive anomalous points (allowing ``episode_gap`` normal samples inside)
   form one episode, reported once it was anomalous without a break for ``min_duration_s`` of
   event time and ``min_points`` samples (shorter excursions, also at the end of input, are
   none; the start stays the onset); a row is
   emitted when it opens and when it closes (``is_open`` false), with start, end, max score,
   threshold, severity, the deviating signals' z-scores and a likely-cause hypothesis. The
   end of the input closes open episodes.

Plus the rule-based ISO 10816 zones on ``vibration_rms_mms`` (mm/s RMS): zone C (7.1–18) is a
warning episode, zone D (> 18) critical.

Examples
--------
>>> from plantstream.schemas.anomaly_config import AnomalyConfig
>>> det = MachineMonitor.new("m1")
>>> cfg = AnomalyConfig(warmup=50)
>>> rows = []
>>> for i in range(300):
...     v = 60.0 + (i % 7) * 0.1 + (25.0 if 200 <= i < 210 else 0.0)
...     rows += det.process(Measurement(i * 60_000, "m1", "temperature_c", v), cfg)
>>> rows += det.close(cfg)
>>> [(r["model"], r["start"] // 60_000, r["is_open"], r["hypothesis"][:20]) for r in rows]
[('temperature_c', 200, True, 'temperature high: co'), ('temperature_c', 200, False, 'temperature high: co')]
"""

from __future__ import annotations

import math
import pickle
from collections import deque
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Final

from plantstream.operators.logic import LogicSpec, MachineLogic
from plantstream.operators.state import StateCodec
from plantstream.schemas.anomaly_config import AnomalyConfig, AnomalyModelConfig
from plantstream.schemas.measurement import MACHINE_STATE, Measurement, is_condition_metric

Row = dict[str, Any]

AMBIENT: Final = "ambient_temperature_c"
VIBRATION_RMS: Final = "vibration_rms_mms"
SQRT2: Final = math.sqrt(2.0)
ISO10816_ZONES: Final = ((2.8, "A"), (7.1, "B"), (18.0, "C"), (math.inf, "D"))
"""ISO 10816 velocity RMS zone upper bounds (mm/s): A < 2.8, B < 7.1, C < 18 (alarm), D ≥ 18."""
ISO_MODEL: Final = "iso10816"
_NORMAL: Final = NormalDist()


def score_to_z(score: float) -> float:
    """Inverse of :func:`z_to_score` (capped at 38 σ).

    >>> round(score_to_z(z_to_score(3.0)), 6)
    3.0
    """
    p = (1.0 + max(score, 1e-12)) / 2.0
    if p >= 1.0:
        return 38.0
    return min(38.0, _NORMAL.inv_cdf(p))


def z_to_score(z: float) -> float:
    """Score in [0, 1] of a |z| excursion: the two-sided Gaussian probability erf(|z|/√2).

    >>> round(z_to_score(0.0), 3), round(z_to_score(3.0), 4), z_to_score(40.0)
    (0.0, 0.9973, 1.0)
    """
    return math.erf(abs(z) / SQRT2)


def iso10816_zone(rms_mms: float) -> str:
    """The ISO 10816 zone of a vibration velocity RMS (mm/s).

    >>> [iso10816_zone(v) for v in (1.0, 2.8, 7.0, 7.1, 17.9, 18.0)]
    ['A', 'B', 'B', 'C', 'C', 'D']
    """
    for bound, zone in ISO10816_ZONES:
        if rms_mms < bound:
            return zone
    return "D"


def feature_value(signal: str, value: float, ambient: float | None) -> tuple[str, float]:
    """The domain feature of a raw signal value: ambient-adjusted temperature, vibration peak.

    >>> feature_value("temperature_c", 70.0, 25.0)
    ('temperature_c-ambient', 45.0)
    >>> feature_value("temperature_c", 70.0, None)
    ('temperature_c', 70.0)
    >>> feature_value("vibration_rms_mms", 2.0, None)
    ('vibration_peak_mms', 2.828...)
    """
    if signal.startswith("temperature") and signal.endswith("_c") and ambient is not None:
        return f"{signal}-ambient", value - ambient
    if signal == VIBRATION_RMS:
        return "vibration_peak_mms", value * SQRT2
    return signal, value


_CAUSES: Final = (
    ("vibration", "bearing wear, imbalance or looseness", "sensor fault or machine slowing down"),
    ("temperature", "cooling failure, friction or overload", "heating loss, stop or sensor fault"),
    ("oil_temperature", "cooling failure, friction or overload", "heating loss or sensor fault"),
    ("cycle_time", "material or tool wear", "material or tool change"),
    ("pressure", "blockage or valve fault", "leak or pump wear"),
    ("power", "overload or mechanical binding", "load loss or drive fault"),
    ("spindle_speed", "control fault", "overload, slipping belt or tool wear"),
    ("current", "overload or mechanical binding", "load loss or drive fault"),
    ("oil_level", "overfill or sensor fault", "leak or consumption"),
    ("flow", "valve opened, leak downstream or pump overspeed", "valve closing, blockage or pump wear"),
    ("voltage", "supply fault", "supply fault or overload"),
)


def hypothesis(signals: dict[str, float]) -> str:
    """Likely cause from the most deviating signal and its direction (KPI.md).

    >>> hypothesis({"vibration_peak_mms": 7.5, "temperature_c": 1.0})
    'vibration high: bearing wear, imbalance or looseness'
    >>> hypothesis({"temperature_c-ambient.mean": -6.0})
    'temperature low: heating loss, stop or sensor fault'
    """
    if not signals:
        return "unusual condition"
    name, z = max(signals.items(), key=lambda kv: abs(kv[1]))
    base = name.split(".")[0].split("-")[0]
    for prefix, high, low in _CAUSES:
        if base.startswith(prefix):
            word = prefix.replace("_", " ")
            return f"{word} high: {high}" if z > 0 else f"{word} low: {low}"
    return f"{base} {'high' if z > 0 else 'low'}: unusual condition"


# -- normal bands and rolling statistics (pure, tiny, picklable) -----------------------------


@dataclass(slots=True)
class Band:
    """EWMA normal band of one feature: mean and variance, Welford until 1/alpha samples."""

    mean: float = 0.0
    var: float = 0.0
    n: int = 0

    def z(self, x: float) -> float:
        """Signed z-score of ``x`` against the band (0 before two samples)."""
        if self.n < 2:
            return 0.0
        sd = max(math.sqrt(self.var), 1e-9, 1e-4 * abs(self.mean))
        return (x - self.mean) / sd

    def learn(self, x: float, alpha_min: float, clip: float = 3.0) -> None:
        """Fold ``x`` in; after 30 samples a deviation counts at most ``clip`` σ (robust EWMA)."""
        self.n += 1
        alpha = max(1.0 / self.n, alpha_min)
        d = x - self.mean
        if self.n > 30 and clip > 0:
            lim = clip * max(math.sqrt(self.var), 1e-9)
            if abs(d) > lim:  # an outlier moves the mean a bounded step and not the variance
                self.mean += alpha * math.copysign(lim, d)
                return
        self.mean += alpha * d
        self.var = (1.0 - alpha) * (self.var + alpha * d * d)


@dataclass(slots=True)
class AdaptiveQuantile:
    """Running ``tau`` quantile of z-equivalent scores by stochastic approximation (2 floats).

    Each value above the estimate raises it by ``eta × tau``, each one below lowers it by
    ``eta × (1 − tau)``: it settles where a share ``1 − tau`` of the values exceed it.
    """

    value: float
    tau: float
    eta: float = 0.05

    def update(self, x: float) -> None:
        if x > self.value:
            self.value += self.eta * self.tau
        else:
            self.value -= self.eta * (1.0 - self.tau)


@dataclass(slots=True)
class Rolling:
    """The last ``window`` feature values (rolling mean and standard deviation)."""

    values: deque[float] = field(default_factory=deque)

    def push(self, x: float, window: int) -> None:
        self.values.append(x)
        while len(self.values) > window:
            self.values.popleft()

    def stats(self) -> tuple[float, float]:
        n = len(self.values)
        mean = sum(self.values) / n
        var = sum((v - mean) ** 2 for v in self.values) / n
        return mean, math.sqrt(var)


@dataclass(slots=True)
class ThermalFit:
    """First-order thermal model of a running machine, learned online (6 floats + a window).

    A motor's temperature rise over ambient follows ``y' = (y_ss − y)/τ`` while it runs: from
    one sample to the next ``y_t = a·y_{t−1} + b`` with ``a = e^{−Δt/τ}`` and ``b = (1 − a)·y_ss``.
    ``a`` and ``b`` are the EWMA least-squares fit of consecutive running samples (a thermal
    image, as in motor protection relays); the **excess** is the rolling mean of the one-step
    residual ``y_t − (a·y_{t−1} + b)``: heat the operating state does not explain. Heating after
    a start and cooling in a stop are explained, so the excess stays near 0 however often the
    machine stops; an overheating adds ``(1 − a)·ΔT`` plus its ramp rate to every step.
    Pairs that straddle a stop are not used (the state changed between the samples).

    >>> fit, y, a = ThermalFit(), 5.0, math.exp(-10 / 600)   # 10 s samples, τ = 10 min
    >>> for i in range(400):
    ...     y_next = a * y + (1 - a) * 24.0 + (0.05 if i % 2 else -0.05)
    ...     fit.pending = (y, y_next); fit.learn(1e-3); y = y_next
    >>> tau = -10 / math.log(fit.cxy / fit.cxx)
    >>> round(tau, -1), round(fit.predict(24.0), 1)           # time constant, steady state
    (600.0, 24.0)
    """

    n: int = 0
    mx: float = 0.0
    my: float = 0.0
    cxx: float = 0.0
    cxy: float = 0.0
    rvar: float = 0.0
    prev: float | None = None
    prev_run: int = -1
    pending: tuple[float, float] | None = None
    resid: Rolling = field(default_factory=Rolling)

    def predict(self, x: float) -> float:
        a = self.cxy / self.cxx if self.cxx > 1e-12 else 1.0
        return self.my + a * (x - self.mx)

    def learn(self, alpha_min: float) -> None:
        if self.pending is None:
            return
        x, y = self.pending
        self.pending = None
        self.n += 1
        alpha = max(1.0 / self.n, alpha_min)
        r = y - self.predict(x)
        if self.n > 30:  # robust: a jump (a sensor step, a heat source switched off) moves the
            lim = 3.0 * max(math.sqrt(self.rvar), 1e-6)  # fit a bounded step, never the noise level
            if abs(r) > lim:
                y -= r - math.copysign(lim, r)
                r = math.copysign(lim, r)
            else:
                self.rvar = (1.0 - alpha) * (self.rvar + alpha * r * r)
        else:
            self.rvar = (1.0 - alpha) * (self.rvar + alpha * r * r)
        dx, dy = x - self.mx, y - self.my
        self.mx += alpha * dx
        self.my += alpha * dy
        self.cxx = (1.0 - alpha) * (self.cxx + alpha * dx * dx)
        self.cxy = (1.0 - alpha) * (self.cxy + alpha * dx * dy)


# -- the multivariate process model (incremental PCA, Hotelling T² and SPE/Q) ----------------


def wilson_hilferty(x: float, k: float) -> float:
    """The standard-normal equivalent of ``x`` under a χ² law with ``k`` degrees of freedom
    (Wilson–Hilferty cube-root transform; ``k`` need not be an integer).

    >>> round(wilson_hilferty(11.07, 5), 2), round(wilson_hilferty(38.59, 5), 1)  # χ²₅ 95 %, 5 σ quantiles
    (1.65, 4.8)
    """
    k = max(k, 1e-9)
    c = 2.0 / (9.0 * k)
    return ((max(x, 0.0) / k) ** (1.0 / 3.0) - (1.0 - c)) / math.sqrt(c)


CONTRIB_Z: Final = 2.326
"""The standard-normal quantile (99 %) of the control limits that weigh T² against SPE in the
contributions (:meth:`Pca.score`)."""


def chi2_quantile(k: float, z: float) -> float:
    """The χ²ₖ quantile at the standard-normal quantile ``z`` (inverse Wilson–Hilferty; χ²₅ at
    95 % is 11.07).

    >>> round(chi2_quantile(5, 1.645), 1), round(wilson_hilferty(chi2_quantile(3.3, 2.326), 3.3), 3)
    (11.0, 2.326)
    """
    k = max(k, 1e-9)
    c = 2.0 / (9.0 * k)
    return k * max(1.0 - c + z * math.sqrt(c), 0.0) ** 3


def paulson(f: float, d1: float, d2: float) -> float:
    """The standard-normal equivalent of ``f`` under an F(d1, d2) law (Paulson's cube-root
    approximation).

    >>> round(paulson(2.449, 5, 40), 2), round(paulson(12.34, 5, 40), 1)   # F(5, 40) 95 %, 5 σ quantiles
    (1.65, 4.9)
    """
    a, b = 2.0 / (9.0 * d1), 2.0 / (9.0 * d2)
    c = max(f, 0.0) ** (1.0 / 3.0)
    return ((1.0 - b) * c - (1.0 - a)) / math.sqrt(a + c * c * b)


@dataclass(slots=True)
class Pca:
    """Incremental PCA of a machine's standardised signals, scored by Hotelling T² and SPE/Q.

    The learned state is the robust EWMA mean and covariance of the signal vector (Welford
    weights until the memory is full; a deviation beyond 3 σ moves them a bounded step, as the
    per-signal bands do). Scoring a vector ``x``: standardise ``z = (x − μ)/σ``, take the
    eigenvectors of the correlation matrix ``R``, keep the ``k`` leading ones that explain
    ``variance`` of it (``1 ≤ k < d``), then

    - **T²** ``= Σ tₐ²/λₐ`` over the scores ``t = Pₖᵀz``: a move inside the usual correlation
      structure. Its law with a mean and covariance estimated from ``n`` samples is
      ``k(n² − 1)/(n(n − k)) · F(k, n − k)`` (the F-distribution control limit), read as a
      standard-normal equivalent with Paulson's approximation;
    - **SPE/Q** ``= ‖z − PₖPₖᵀz‖²``: a break of the correlation structure. Its law is ``g·χ²ₕ``
      with ``g = θ₂/θ₁``, ``h = θ₁²/θ₂``, ``θⱼ = Σ λᵢʲ`` over the residual eigenvalues (Box;
      Jackson–Mudholkar), read with Wilson–Hilferty.

    The score is the larger of the two equivalents (z units); the **contributions** say which
    signals make it: each signal's share of the combined index ``φ = T²/τ² + SPE/δ²`` (Yue and
    Qin), ``cᵢ = zᵢ·(Φz)ᵢ`` with ``Φ = PₖΛₖ⁻¹Pₖᵀ/τ² + (I − PₖPₖᵀ)/δ²`` and ``τ²``, ``δ²`` the
    99 % limits of T² (χ²ₖ) and SPE (``g·χ²ₕ``) — they sum to ``φ``, whichever statistic fired.
    (The squared residuals ``rᵢ²``, the classic SPE contributions, name nothing when the residual
    subspace has one or two dimensions: then ``r`` is the residual direction times a number, and
    ``rᵢ²`` is the same profile whatever moved.)

    >>> import random
    >>> rnd, pca = random.Random(1), Pca(["flow", "pressure", "voltage"])
    >>> for _ in range(300):
    ...     f = rnd.gauss(32, 0.3)
    ...     pca.learn([f, 0.1 * f + rnd.gauss(0, 0.02), rnd.gauss(230, 1)], 1e-3)
    >>> z, share = pca.score([29.0, 2.9, 230.0], 0.95, 300)   # flow and pressure drop together
    >>> z > 5, max(share, key=lambda k: abs(share[k])), round(pca.score([32.0, 3.2, 230.5], 0.95, 300)[0]) < 3
    (True, 'flow', True)
    """

    dims: list[str]
    n: int = 0
    mean: list[float] = field(default_factory=list)
    cov: list[float] = field(default_factory=list)
    """Row-major d × d covariance."""
    x: dict[str, float] = field(default_factory=dict)
    """The latest value of every signal (held between samples, as a PLC tag is)."""
    tick: int | None = None
    """The scoring period (or sample time) of the vector being filled; None: none."""
    tick_start: int = 0
    tick_end: int = 0

    def learn(self, x: list[float], alpha_min: float, clip: float = 3.0) -> None:
        import numpy as np

        d = len(x)
        if len(self.mean) != d:
            self.n, self.mean, self.cov = 0, [0.0] * d, [0.0] * (d * d)
        self.n += 1
        alpha = max(1.0 / self.n, alpha_min)
        mu, cov = np.asarray(self.mean), np.asarray(self.cov).reshape(d, d)
        dx = np.asarray(x) - mu
        if self.n > 30 and clip > 0:
            lim = clip * np.sqrt(np.maximum(np.diag(cov), 1e-18))
            dx = np.clip(dx, -lim, lim)
        mu = mu + alpha * dx
        cov = (1.0 - alpha) * (cov + alpha * np.outer(dx, dx))
        self.mean, self.cov = mu.tolist(), cov.ravel().tolist()

    def score(self, x: list[float], variance: float, n_eff: int) -> tuple[float, dict[str, float]]:
        """(z-equivalent of the larger of T² and SPE, signal → signed share of it)."""
        import numpy as np

        d = len(x)
        mu, cov = np.asarray(self.mean), np.asarray(self.cov).reshape(d, d)
        floor = np.maximum(1e-9, 1e-4 * np.abs(mu))
        sd = np.maximum(np.sqrt(np.maximum(np.diag(cov), 0.0)), floor)
        z = (np.asarray(x) - mu) / sd
        r = cov / np.outer(sd, sd)
        lam, vec = np.linalg.eigh(r)
        lam, vec = lam[::-1], vec[:, ::-1]
        lam = np.maximum(lam, 1e-6 * max(float(lam.sum()), 1e-9))
        share = np.cumsum(lam) / lam.sum()
        k = min(int(np.searchsorted(share, variance)) + 1, d - 1)
        t = vec[:, :k].T @ z
        t2 = float((t * t / lam[:k]).sum())
        resid = z - vec[:, :k] @ t
        spe = float(resid @ resid)
        n = max(n_eff, k + 2)
        z_t2 = paulson(t2 * n * (n - k) / (k * (n * n - 1.0)), k, n - k)
        th = lam[k:]
        th1, th2 = float(th.sum()), float((th * th).sum())
        z_spe = wilson_hilferty(spe * th1 / th2, th1 * th1 / th2)
        # contributions to the combined index T²/τ² + SPE/δ² (each statistic over its 99 % limit):
        # zᵢ·(Φz)ᵢ, Φ = PΛ⁻¹Pᵀ/τ² + (I − PPᵀ)/δ²; they sum to the index
        tau2 = chi2_quantile(k, CONTRIB_Z)
        delta2 = th2 / th1 * chi2_quantile(th1 * th1 / th2, CONTRIB_Z)
        contrib = z * (vec[:, :k] @ (t / lam[:k])) / tau2 + z * resid / delta2
        contrib = np.maximum(contrib, 0.0)
        total = float(contrib.sum()) or 1.0
        shares = {name: math.copysign(float(c) / total, float(zi))
                  for name, c, zi in zip(self.dims, contrib, z, strict=True)}
        return max(z_t2, z_spe), shares


# -- River detectors (built lazily, fixed seed) -----------------------------------------------


def build_river(detector: str, seed: int) -> Any:
    """A River detector for non-default models (``gaussian`` is per feature, see ``Model``)."""
    from river import anomaly, compose, preprocessing

    if detector == "hst":
        return compose.Pipeline(preprocessing.MinMaxScaler(),
                                anomaly.HalfSpaceTrees(n_trees=10, height=6, window_size=250, seed=seed))
    if detector == "ilof":
        return compose.Pipeline(preprocessing.StandardScaler(), anomaly.LocalOutlierFactor(n_neighbors=10))
    if detector == "ocsvm":
        return compose.Pipeline(preprocessing.StandardScaler(), anomaly.OneClassSVM(nu=0.2))
    msg = f"unknown anomaly detector {detector!r}; choose zscore, gaussian, hst, ilof or ocsvm"
    raise ValueError(msg)


def _squash(raw: float) -> float:
    """Unbounded non-negative detector output → [0, 1)."""
    return 1.0 - math.exp(-max(raw, 0.0))


@dataclass(slots=True)
class Episode:
    start: int
    end: int
    score: float
    threshold: float
    signals: dict[str, float]
    points: int = 1
    normal_run: int = 0
    severity: str = "warning"


@dataclass(slots=True)
class Model:
    """One anomaly model of one machine: bands, optional River detector, threshold, episode."""

    name: str
    detector: str
    signals: tuple[str, ...]
    fixed_threshold: float | None = None
    bands: dict[str, Band] = field(default_factory=dict)
    rolling: dict[str, Rolling] = field(default_factory=dict)
    latest: dict[str, float] = field(default_factory=dict)
    river: Any = None
    gauss: dict[str, Any] = field(default_factory=dict)
    quantile: AdaptiveQuantile | None = None
    seen: int = 0
    episode: Episode | None = None
    fits: dict[str, ThermalFit] = field(default_factory=dict)
    born_ms: int = 0
    """The machine's running time (:attr:`MachineMonitor.run_ms`) when the model was built or
    last relearned: its warm-up counts from there."""
    pca: Pca | None = None
    """The process model's PCA (detector ``pca``)."""

    def features(self, signal: str, value: float, ambient: float | None,
                 cfg: AnomalyConfig, run: int = -1) -> dict[str, float]:
        """Update the rolling window of ``signal`` and return its features.

        Thermal signals (``cfg.thermal``) use the thermal profile: their value and the rolling
        max over ``thermal_window`` samples — the thermal envelope, which short stops (the motor
        cools) do not pull down but an overheating lifts. Other signals use ``features`` over
        ``window`` samples.
        """
        fname, fx = feature_value(signal, value, ambient)
        thermal = signal.startswith(cfg.thermal)
        names, window = (cfg.thermal_features, cfg.thermal_window) if thermal else (cfg.features, cfg.window)
        roll = self.rolling.get(signal)
        if roll is None:
            roll = self.rolling[signal] = Rolling()
        roll.push(fx, window)
        feats: dict[str, float] = {}
        if "value" in names:
            feats[fname] = fx
        if "mean" in names or "std" in names:
            mean, sd = roll.stats()
            if "mean" in names:
                feats[f"{fname}.mean"] = mean
            if "std" in names:
                feats[f"{fname}.std"] = sd
        if "max" in names:
            feats[f"{fname}.max"] = max(roll.values)
        if "min" in names:
            feats[f"{fname}.min"] = min(roll.values)
        if "excess" in names:
            excess = self._excess(signal, fx, window, run)
            if excess is None:
                self.latest.pop(f"{fname}.excess", None)
            else:
                feats[f"{fname}.excess"] = excess
        return feats

    def _excess(self, signal: str, fx: float, window: int, run: int) -> float | None:
        """Rolling mean of the thermal model's one-step residual (``run`` < 0: no machine state,
        no operating-state model, no excess)."""
        if run < 2:  # no stop yet: no transients to explain (and no state: no operating model)
            return None
        fit = self.fits.get(signal)
        if fit is None:
            fit = self.fits[signal] = ThermalFit()
        prev, same_run = fit.prev, fit.prev_run == run
        fit.prev, fit.prev_run, fit.pending = fx, run, None
        if prev is None or not same_run:
            return None
        fit.pending = (prev, fx)
        if fit.n < window:
            return None
        fit.resid.push(fx - fit.predict(prev), window)
        if len(fit.resid.values) < window:
            return None
        return fit.resid.stats()[0]

    def reset(self) -> None:
        """Forget the learned normal (bands, detector, threshold); the warm-up starts again."""
        self.bands, self.gauss, self.river, self.quantile = {}, {}, None, None
        self.seen, self.episode = 0, None
        if self.pca is not None:
            self.pca.n, self.pca.mean, self.pca.cov = 0, [], []

    def threshold(self, cfg: AnomalyConfig) -> float:
        if self.fixed_threshold is not None:
            return self.fixed_threshold
        floor = self.floor_z(cfg)
        if self.quantile is None:
            return z_to_score(floor)
        return z_to_score(max(floor, self.quantile.value))

    def floor_z(self, cfg: AnomalyConfig) -> float:
        """Threshold floor (z-equivalent): ``min_z`` for the calibrated detectors (z-scores,
        Gaussian, the process model's F/χ² equivalents); the other detectors' scores have no
        absolute meaning, so only their quantile counts."""
        return cfg.min_z if self.detector in ("zscore", "gaussian", "pca") else 0.0

    def score(self, x: dict[str, float], zs: dict[str, float], cfg: AnomalyConfig) -> float:
        if self.detector == "zscore":
            return z_to_score(max((abs(z) for z in zs.values()), default=0.0))
        if self.detector == "gaussian":
            best = 0.0
            for k, v in x.items():
                g = self.gauss.get(k)
                if g is not None:
                    best = max(best, float(g.score_one(None, v)))
            return best
        if self.river is None:
            self.river = build_river(self.detector, cfg.seed)
        raw = float(self.river.score_one(x))
        return raw if self.detector == "hst" else _squash(raw)

    def learn(self, x: dict[str, float], own: dict[str, float], cfg: AnomalyConfig) -> None:
        alpha = 1.0 - 0.5 ** (1.0 / cfg.half_life)
        for fit in self.fits.values():
            fit.learn(alpha)
        for k in own:
            band = self.bands.get(k)
            if band is None:
                band = self.bands[k] = Band()
            band.learn(own[k], alpha)
        if self.detector == "gaussian":
            from river import anomaly

            for k in own:
                g = self.gauss.get(k)
                if g is None:
                    g = self.gauss[k] = anomaly.GaussianScorer(window_size=None,
                                                               grace_period=cfg.warm_samples)
                g.learn_one(None, own[k])
        elif self.detector != "zscore":
            if self.river is None:
                self.river = build_river(self.detector, cfg.seed)
            self.river.learn_one(x)


def _severity(zs: dict[str, float], score: float) -> str:
    zmax = max((abs(z) for z in zs.values()), default=0.0)
    return "critical" if zmax >= 10.0 or score >= 1.0 - 1e-12 else "warning"


def _row(machine: str, site: str, line: str, model: str, detector: str, ep: Episode,
         is_open: bool) -> Row:
    signals = {k: round(v, 3) for k, v in ep.signals.items()}
    if model == ISO_MODEL:
        zone = iso10816_zone(ep.signals.get(VIBRATION_RMS, 0.0))
        cause = f"vibration in ISO 10816 zone {zone}: bearing wear, imbalance or looseness"
    else:
        cause = hypothesis(ep.signals)
    return {
        "ts": ep.start, "site": site, "line": line, "machine": machine, "model": model,
        "detector": detector, "start": ep.start, "end": ep.end, "score": ep.score,
        "threshold": ep.threshold, "severity": ep.severity, "signals": signals,
        "hypothesis": cause, "points": ep.points, "is_open": is_open,
        "version": ep.end * 2 + (0 if is_open else 1),
    }


def _is_running(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "running"
    if isinstance(value, bool):
        return value
    return isinstance(value, int | float) and value == 1


@dataclass(slots=True)
class MachineMonitor:
    """All anomaly state of one machine (the keyed Bytewax state)."""

    machine: str
    site: str = ""
    line: str = ""
    running: bool = True
    run: int = -1
    """Count of starts (transitions to running); −1 while the machine never reported a state."""
    ambient: float | None = None
    models: dict[str, Model] = field(default_factory=dict)
    iso: Episode | None = None
    pending: dict[str, list[float]] = field(default_factory=dict)
    """Signal → [period, sum, count, last ts, min, max, first ts] of the samples not scored yet
    (``sample_s``)."""
    ambient_closed: tuple[float, float] | None = None
    """(period, mean) of the last closed ambient period: the baseline of signals scored late."""
    run_ms: int = 0
    """Running event time seen (ms): the sum of the steps between scored samples while running."""
    last_ts: int | None = None
    """The latest scored sample time of the current run (None after a stop)."""
    proc: Model | None = None
    """The multivariate process model (``anomaly.process``)."""
    max_signals: int = 128
    """Models and open scoring periods the monitor keeps at most (``state.max_signals_per_machine``):
    a further signal of the machine is not monitored (it is archived). Not part of the state."""

    @classmethod
    def new(cls, machine: str) -> MachineMonitor:
        return cls(machine)

    # -- routing ---------------------------------------------------------------------------

    def _model_for(self, signal: str, cfg: AnomalyConfig) -> Model | None:
        for mc in cfg.models:
            if signal in mc.signals and (not mc.machines or self.machine in mc.machines):
                return self._ensure(mc.name, mc.detector or cfg.detector, mc.signals, mc)
        if signal in cfg.exclude:
            return None
        if self._process_watches(signal, cfg):
            return None
        return self._ensure(signal, cfg.detector, (signal,), None)

    def _process_watches(self, signal: str, cfg: AnomalyConfig) -> bool:
        """True when the process model watches ``signal`` instead of a per-signal chart."""
        proc = self.proc
        return (proc is not None and proc.pca is not None and signal in proc.pca.x
                and len(proc.pca.dims) >= cfg.process_min_signals)

    def _ensure(self, name: str, detector: str, signals: tuple[str, ...],
                mc: AnomalyModelConfig | None) -> Model | None:
        model = self.models.get(name)
        if model is None:
            if len(self.models) >= self.max_signals:
                return None  # bounded: a machine sending ever new metric names
            model = self.models[name] = Model(name, detector, signals,
                                              mc.threshold if mc is not None else None, born_ms=self.run_ms)
        return model

    # -- processing ------------------------------------------------------------------------

    def process(self, m: Measurement, cfg: AnomalyConfig) -> list[Row]:
        """Fold one Measurement in (a batch of one, :meth:`fold`); return the rows it opens or closes."""
        return self.fold([m], cfg)

    def fold(self, samples: list[Measurement], cfg: AnomalyConfig) -> list[Row]:
        """Fold a machine's samples in, in order; return the anomaly rows they open or close.

        A sample that only adds to its signal's open scoring period (most of them: a
        usable, finite number of a running machine's signal in the same ``sample_s`` period)
        is added here; every other sample goes through :meth:`_one`.
        """
        if not cfg.enabled:
            return []
        pending = self.pending
        period_ms = round(cfg.sample_s * 1000)
        out: list[Row] = []
        for m in samples:
            acc = pending.get(m.metric)  # a pending period exists only for condition signals
            if acc is not None and self.running and m.quality != "bad":
                v: Any = m.value  # a number when the checks below pass
                kind = type(v)
                if kind is int or (kind is float and -math.inf < v < math.inf):
                    ts = m.ts
                    if acc[0] == ts // period_ms:
                        if m.metric == AMBIENT:
                            self.ambient = float(v)
                        acc[1] += v
                        acc[2] += 1
                        if ts > acc[3]:
                            acc[3] = ts
                        if v < acc[4]:
                            acc[4] = v
                        elif v > acc[5]:
                            acc[5] = v
                        continue
            rows = self._one(m, cfg)
            if rows:
                out += rows
        return out

    def _one(self, m: Measurement, cfg: AnomalyConfig) -> list[Row]:
        """A sample :meth:`fold` does not simply add to an open period."""
        if not m.usable:
            return []
        self.machine, self.site, self.line = m.machine, m.site or self.site, m.line or self.line
        if m.metric == MACHINE_STATE:
            out = self.flush(cfg)  # what was sampled while running is scored as such
            running = _is_running(m.value)
            if not running:
                self.last_ts = None  # stopped time is not running time
            if running and (not self.running or self.run < 0):
                self.run += 1
                if self.run == 0:
                    self.run = 1
            self.running = running
            return out
        metric, raw = m.metric, m.value
        kind = type(raw)
        if (kind is not float and kind is not int) or not is_condition_metric(metric):
            return []  # strings, bools and production metrics are not condition signals
        value = float(raw)
        if not math.isfinite(value):
            return []
        if metric == AMBIENT:
            self.ambient = value
        if not self.running:
            return []
        if cfg.sample_s <= 0:
            return self._score(metric, m.ts, value, cfg, self.ambient)
        ts = m.ts
        period = ts // round(cfg.sample_s * 1000)
        acc = self.pending.get(metric)
        if acc is None:
            if len(self.pending) >= self.max_signals:
                return []  # bounded, like the models
            self.pending[metric] = [period, value, 1, ts, value, value, ts]
            return []
        # a new period (fold adds to an open one): score the closed period's mean and extremes
        mean = acc[1] / acc[2]
        if metric == AMBIENT:
            self.ambient_closed = (acc[0], mean)
        out = self._score(metric, int(acc[3]), mean, cfg, self._ambient_in(acc[0]), acc)
        acc[:] = [period, value, 1, ts, value, value, ts]
        return out

    def _ambient_in(self, period: float) -> float | None:
        """The ambient mean of ``period`` (a signal is scored against its own period's
        baseline, not the newer one that arrived meanwhile); the latest ambient otherwise."""
        acc = self.pending.get(AMBIENT)
        if acc is not None and acc[0] == period:
            return acc[1] / acc[2]
        if self.ambient_closed is not None and self.ambient_closed[0] == period:
            return self.ambient_closed[1]
        return self.ambient

    def flush(self, cfg: AnomalyConfig) -> list[Row]:
        """Score the periods still open (before a state change, at the end of input)."""
        out: list[Row] = []
        ambient = {acc[0]: acc[1] / acc[2] for signal, acc in self.pending.items() if signal == AMBIENT}
        pending = dict(self.pending)
        self.pending.clear()  # in place: fold() holds the dict
        for signal, acc in pending.items():
            base = ambient.get(acc[0], self.ambient)
            out += self._score(signal, int(acc[3]), acc[1] / acc[2], cfg, base, acc)
        if self.proc is not None:
            out += self._process_tick(self.proc, cfg)
        return out

    def _score(self, signal: str, ts: int, value: float, cfg: AnomalyConfig,
               ambient: float | None, period: list[float] | None = None) -> list[Row]:
        """Score a signal's sample (``sample_s`` 0) or closed period (``period``: its pending
        accumulator, for the extremes and the first sample time)."""
        out: list[Row] = []
        if self.last_ts is not None and ts > self.last_ts:
            self.run_ms += ts - self.last_ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        start = ts if period is None else int(period[6])
        if cfg.iso10816 and signal == VIBRATION_RMS:
            peak = value if period is None else max(value, period[5])
            out += self._iso(ts, peak, cfg)
        model = self._model_for(signal, cfg)
        if model is not None:
            out += self._score_learn(model, signal, ts, value, cfg, ambient, start, period)
        if cfg.process and signal not in cfg.exclude:
            fx = feature_value(signal, value, None if signal == AMBIENT else ambient)[1]
            key = ts if period is None else int(period[0])
            out += self._observe_process(signal, key, start, ts, fx, cfg)
        return out

    def _score_learn(self, model: Model, signal: str, ts: int, value: float,
                     cfg: AnomalyConfig, ambient: float | None, start: int,
                     period: list[float] | None) -> list[Row]:
        if signal == AMBIENT:
            ambient = None
        own = model.features(signal, value, ambient, cfg, self.run)
        fname = feature_value(signal, value, ambient)[0]
        if period is not None and period[2] > 1 and not signal.startswith(cfg.thermal):
            # thinning keeps the extremes: the period's max and min have bands of their own
            own[f"{fname}.hi"] = feature_value(signal, period[5], ambient)[1]
            own[f"{fname}.lo"] = feature_value(signal, period[4], ambient)[1]
        else:
            model.latest.pop(f"{fname}.hi", None)
            model.latest.pop(f"{fname}.lo", None)
        model.latest.update(own)
        x = dict(model.latest)
        for k in [k for k in x if k.endswith(".excess")]:
            band = model.bands.get(k)
            if band is None or band.n < self._warm_count(cfg):  # the thermal model is still learning
                del x[k]
        zs = {k: model.bands[k].z(v) for k, v in x.items() if k in model.bands}
        for k in zs:
            if k.endswith(".excess"):  # one-sided: unexplained heat, not unexplained cooling
                zs[k] = max(zs[k], 0.0)
        warm = self._warm(model, cfg) and len(x) == len(zs)
        out: list[Row] = []
        anomalous = False
        if warm:
            score = model.score(x, zs, cfg)
            threshold = model.threshold(cfg)
            anomalous = score > threshold
            if model.quantile is None:
                model.quantile = AdaptiveQuantile(max(model.floor_z(cfg), score_to_z(score)), cfg.quantile)
            if not (anomalous and model.episode is not None):
                # an episode counts once: a long anomaly must not raise the threshold over itself
                model.quantile.update(score_to_z(score))
            out += self._episode(model, ts, anomalous, score, threshold, zs, cfg, start)
        ep = self._adapt(model, cfg, out)
        protect = anomalous or (ep is not None and ep.normal_run == 0)
        if not protect:
            model.learn(x, own, cfg)
        else:
            for fit in model.fits.values():
                fit.pending = None
        model.seen += 1
        return out

    def _warm(self, model: Model, cfg: AnomalyConfig, samples: int = 0) -> bool:
        """Past its warm-up: ``warmup_s`` of running time since it was built or relearned, and
        ``warmup_samples`` (at least ``samples``) scored samples."""
        return (self.run_ms - model.born_ms >= cfg.warm_ms
                and model.seen >= max(cfg.warm_samples, samples))

    @staticmethod
    def _warm_count(cfg: AnomalyConfig) -> int:
        """The warm-up in scored samples (the thermal model's excess band waits this long)."""
        if cfg.sample_s > 0:
            return max(cfg.warm_samples, math.ceil(cfg.warm_ms / (cfg.sample_s * 1000)))
        return cfg.warm_samples

    # -- the process model --------------------------------------------------------------------

    def _observe_process(self, signal: str, key: int, start: int, ts: int, value: float,
                         cfg: AnomalyConfig) -> list[Row]:
        """Add a scored value to the process model's vector of period ``key``; a value of a later
        period completes the vector (scored, then learned)."""
        model = self.proc
        if model is None:
            model = self.proc = Model("process", "pca", (), born_ms=self.run_ms,
                                      pca=Pca([]))
        pca = model.pca
        assert pca is not None
        out: list[Row] = []
        if pca.tick is not None and key != pca.tick:
            out += self._process_tick(model, cfg)
        if signal not in pca.x:
            if len(pca.dims) >= cfg.process_max_signals:
                return out
            pca.dims.append(signal)  # a new signal: the model relearns with it
            model.signals = tuple(pca.dims)
            model.reset()
            model.born_ms = self.run_ms
            pca.x[signal] = value
            if len(pca.dims) >= cfg.process_min_signals:  # the process model takes over
                for name in [k for k in self.models if k in pca.x]:
                    del self.models[name]
        pca.x[signal] = value
        if pca.tick is None:
            pca.tick, pca.tick_start, pca.tick_end = key, start, ts
        else:
            pca.tick_start, pca.tick_end = min(pca.tick_start, start), max(pca.tick_end, ts)
        return out

    def _process_tick(self, model: Model, cfg: AnomalyConfig) -> list[Row]:
        """Score, then learn, the process model's completed vector."""
        pca = model.pca
        if pca is None or pca.tick is None:
            return []
        pca.tick = None
        d = len(pca.dims)
        if d < cfg.process_min_signals:
            return []
        x = [pca.x[k] for k in pca.dims]
        alpha = 1.0 - 0.5 ** (1.0 / cfg.half_life)
        out: list[Row] = []
        anomalous = False
        if self._warm(model, cfg, 2 * d):
            z, shares = pca.score(x, cfg.process_variance, min(pca.n, round(2.0 / alpha) - 1))
            score = z_to_score(z)
            threshold = model.threshold(cfg)
            anomalous = score > threshold
            if model.quantile is None:
                model.quantile = AdaptiveQuantile(max(model.floor_z(cfg), z), cfg.quantile)
            if not (anomalous and model.episode is not None):
                model.quantile.update(z)
            top = max(abs(v) for v in shares.values())
            named = {k: v for k, v in shares.items() if abs(v) >= min(0.1, top)}
            out += self._episode(model, pca.tick_end, anomalous, score, threshold, {"process": z}, cfg,
                                 pca.tick_start, named)
        ep = self._adapt(model, cfg, out)
        if not (anomalous or (ep is not None and ep.normal_run == 0)):
            pca.learn(x, alpha)
        model.seen += 1
        return out

    def _adapt(self, model: Model, cfg: AnomalyConfig, out: list[Row]) -> Episode | None:
        """The model's open episode; one that has lasted ``adapt_after`` points is the new normal:
        it closes (its row goes to ``out``) and the model relearns from scratch (None)."""
        ep = model.episode
        if ep is not None and ep.points >= max(cfg.adapt_after, cfg.min_points):
            out.append(_row(self.machine, self.site, self.line, model.name, model.detector, ep, False))
            model.reset()
            model.born_ms = self.run_ms
            return None
        return ep

    def _episode(self, model: Model, ts: int, anomalous: bool, score: float, threshold: float,
                 zs: dict[str, float], cfg: AnomalyConfig, start: int | None = None,
                 named: dict[str, float] | None = None) -> list[Row]:
        """Open, extend or close ``model``'s episode; ``start`` is when the scored period began,
        ``named`` the signals the episode names (default: the features beyond 3 σ)."""
        ep = model.episode
        if anomalous:
            deviating = named if named is not None else (
                {k: z for k, z in zs.items() if abs(z) >= min(cfg.min_z, 3.0)} or zs)
            was = False
            if ep is None:
                ep = model.episode = Episode(ts if start is None else start, ts, score, threshold, deviating,
                                             severity=_severity(zs, score))
            else:
                was = _reported(ep, cfg)
                ep.end, ep.points, ep.normal_run = ts, ep.points + 1, 0
                if score > ep.score or (score == ep.score and _zmax(zs) > _zmax(ep.signals)):
                    ep.score, ep.threshold, ep.signals = score, threshold, deviating
                    ep.severity = max(ep.severity, _severity(zs, score), key=_SEVERITY_RANK.__getitem__)
            if not was and _reported(ep, cfg):  # persistent enough: the episode is reported
                return [_row(self.machine, self.site, self.line, model.name, model.detector, ep, True)]
            return []
        if ep is None:
            return []
        if not _reported(ep, cfg):  # a blip shorter than the persistence rule: never reported
            model.episode = None
            return []
        ep.normal_run += 1
        if ep.normal_run > cfg.episode_gap:
            model.episode = None
            return [_row(self.machine, self.site, self.line, model.name, model.detector, ep, False)]
        return []

    def _iso(self, ts: int, rms: float, cfg: AnomalyConfig) -> list[Row]:
        zone = iso10816_zone(rms)
        score = min(1.0, rms / 18.0)
        ep = self.iso
        if zone in ("C", "D"):
            sev = "critical" if zone == "D" else "warning"
            if ep is None:
                self.iso = Episode(ts, ts, score, 7.1 / 18.0, {VIBRATION_RMS: rms}, severity=sev)
                return [_row(self.machine, self.site, self.line, ISO_MODEL, "rule", self.iso, True)]
            ep.end, ep.points, ep.normal_run = ts, ep.points + 1, 0
            if score > ep.score:
                ep.score, ep.signals = score, {VIBRATION_RMS: rms}
                ep.severity = max(ep.severity, sev, key=_SEVERITY_RANK.__getitem__)
            return []
        if ep is None:
            return []
        ep.normal_run += 1
        if ep.normal_run > cfg.episode_gap:
            self.iso = None
            return [_row(self.machine, self.site, self.line, ISO_MODEL, "rule", ep, False)]
        return []

    def close(self, cfg: AnomalyConfig) -> list[Row]:
        """Close every open episode (end of input: replay semantics)."""
        out: list[Row] = self.flush(cfg) if self.running else []
        models = list(self.models.values()) + ([self.proc] if self.proc is not None else [])
        for model in models:
            if model.episode is not None and _reported(model.episode, cfg):
                out.append(_row(self.machine, self.site, self.line, model.name, model.detector,
                                model.episode, False))
            model.episode = None
        if self.iso is not None:
            out.append(_row(self.machine, self.site, self.line, ISO_MODEL, "rule", self.iso, False))
            self.iso = None
        return out


_SEVERITY_RANK: Final = {"info": 0, "warning": 1, "critical": 2}


def episode_span_ms(ep: Episode, cfg: AnomalyConfig) -> int:
    """How long an episode has been anomalous (ms): from the start of its first anomalous
    scoring period to the end of its latest (``sample_s`` 0: from its first to its latest
    anomalous sample).

    >>> from plantstream.schemas.anomaly_config import AnomalyConfig
    >>> episode_span_ms(Episode(0, 29_000, 1.0, 0.9, {}, points=3), AnomalyConfig())   # 3 periods of 10 s
    30000
    """
    period = round(cfg.sample_s * 1000)
    end = (ep.end // period + 1) * period if period > 0 else ep.end
    return end - ep.start


def _reported(ep: Episode, cfg: AnomalyConfig) -> bool:
    """The persistence rule: an episode is reported (and is an episode at all) once it has been
    anomalous for ``min_points`` consecutive scored samples spanning ``min_duration_s``; before
    that, one normal sample drops it, and the end of the input drops it."""
    return ep.points >= cfg.min_points and episode_span_ms(ep, cfg) >= cfg.min_duration_ms


def _zmax(zs: dict[str, float]) -> float:
    return max((abs(z) for z in zs.values()), default=0.0)


# -- the machine logic and its state ----------------------------------------------------------


def _dump_episode(ep: Episode | None) -> Any:
    if ep is None:
        return None
    return (ep.start, ep.end, ep.score, ep.threshold, dict(ep.signals), ep.points, ep.normal_run, ep.severity)


def _load_episode(p: Any) -> Episode | None:
    if p is None:
        return None
    start, end, score, threshold, signals, points, normal_run, severity = p
    return Episode(start, end, score, threshold, dict(signals), points, normal_run, severity)


def _dump_fit(f: ThermalFit) -> Any:
    return (f.n, f.mx, f.my, f.cxx, f.cxy, f.rvar, f.prev, f.prev_run, f.pending, list(f.resid.values))


def _load_fit(p: Any) -> ThermalFit:
    n, mx, my, cxx, cxy, rvar, prev, prev_run, pending, resid = p
    return ThermalFit(n, mx, my, cxx, cxy, rvar, prev, prev_run,
                      None if pending is None else (pending[0], pending[1]), Rolling(deque(resid)))


def _river_bytes(model: Any) -> bytes | None:
    return None if model is None else pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def _river_model(blob: bytes | None) -> Any:
    return None if blob is None else pickle.loads(blob)  # our own recovery store; river is pinned


def _dump_model(m: Model) -> dict[str, Any]:
    return {
        "name": m.name, "detector": m.detector, "signals": m.signals, "fixed_threshold": m.fixed_threshold,
        "bands": {k: (b.mean, b.var, b.n) for k, b in m.bands.items()},
        "rolling": {k: list(r.values) for k, r in m.rolling.items()},
        "latest": dict(m.latest),
        "river": _river_bytes(m.river),
        "gauss": {k: _river_bytes(g) for k, g in m.gauss.items()},
        "quantile": None if m.quantile is None else (m.quantile.value, m.quantile.tau, m.quantile.eta),
        "seen": m.seen, "episode": _dump_episode(m.episode),
        "fits": {k: _dump_fit(f) for k, f in m.fits.items()},
        "born_ms": m.born_ms, "pca": _dump_pca(m.pca),
    }


def _dump_pca(p: Pca | None) -> Any:
    if p is None:
        return None
    return {"dims": list(p.dims), "n": p.n, "mean": list(p.mean), "cov": list(p.cov), "x": dict(p.x),
            "tick": p.tick, "tick_start": p.tick_start, "tick_end": p.tick_end}


def _load_pca(p: Any) -> Pca | None:
    if p is None:
        return None
    return Pca(list(p["dims"]), p["n"], list(p["mean"]), list(p["cov"]), dict(p["x"]), p["tick"],
               p["tick_start"], p["tick_end"])


def _load_model(p: dict[str, Any]) -> Model:
    q = p["quantile"]
    return Model(
        p["name"], p["detector"], tuple(p["signals"]), p["fixed_threshold"],
        bands={k: Band(*b) for k, b in p["bands"].items()},
        rolling={k: Rolling(deque(v)) for k, v in p["rolling"].items()},
        latest=dict(p["latest"]), river=_river_model(p["river"]),
        gauss={k: _river_model(g) for k, g in p["gauss"].items()},
        quantile=None if q is None else AdaptiveQuantile(*q), seen=p["seen"],
        episode=_load_episode(p["episode"]), fits={k: _load_fit(f) for k, f in p["fits"].items()},
        born_ms=p["born_ms"], pca=_load_pca(p["pca"]),
    )


def _dump_monitor(mon: MachineMonitor) -> dict[str, Any]:
    return {
        "machine": mon.machine, "site": mon.site, "line": mon.line, "running": mon.running, "run": mon.run,
        "ambient": mon.ambient, "models": {k: _dump_model(m) for k, m in mon.models.items()},
        "iso": _dump_episode(mon.iso), "pending": {k: list(v) for k, v in mon.pending.items()},
        "ambient_closed": mon.ambient_closed, "run_ms": mon.run_ms, "last_ts": mon.last_ts,
        "proc": None if mon.proc is None else _dump_model(mon.proc),
    }


def _load_monitor(p: dict[str, Any]) -> MachineMonitor:
    closed = p["ambient_closed"]
    return MachineMonitor(
        p["machine"], p["site"], p["line"], p["running"], p["run"], p["ambient"],
        models={k: _load_model(m) for k, m in p["models"].items()}, iso=_load_episode(p["iso"]),
        pending={k: list(v) for k, v in p["pending"].items()},
        ambient_closed=None if closed is None else (closed[0], closed[1]),
        run_ms=p["run_ms"], last_ts=p["last_ts"],
        proc=None if p["proc"] is None else _load_model(p["proc"]),
    )


LONG_AGO: Final = -(2**53)
"""``born_ms`` of a model upgraded from format 1: its warm-up time is long past (format 1
counted the warm-up in samples, which ``seen`` still holds)."""


def _upgrade_1(p: dict[str, Any]) -> dict[str, Any]:
    """Format 1 → 2: pending periods gain [min, max, first ts] (the mean and the last time stand
    for them), models a birth time long ago and no PCA, the monitor its running time and no
    process model."""
    out = dict(p)
    out["pending"] = {k: [*v, v[1] / v[2], v[1] / v[2], v[3]] for k, v in p["pending"].items()}
    out["models"] = {k: {**m, "born_ms": LONG_AGO, "pca": None} for k, m in p["models"].items()}
    out["run_ms"], out["last_ts"], out["proc"] = 0, None, None
    return out


ANOMALY_CODEC: StateCodec[MachineMonitor] = StateCodec("anomaly", 2, MachineMonitor, _dump_monitor,
                                                        _load_monitor, upgrades={1: _upgrade_1})
"""Format 2 of a machine's monitor: machine, site, line, running, run, ambient, pending periods
(signal → [period, sum, count, last ts, min, max, first ts]), ambient_closed, running time
(``run_ms``, ``last_ts``), the process model (a model as below, or None), the ISO 10816
episode and per model its
name, detector, signals, fixed threshold, bands (mean, var, n), rolling windows (lists), latest
features, adaptive quantile (value, tau, eta), samples seen, open episode (start, end, score,
threshold, signals, points, normal_run, severity) and thermal fits (n, mx, my, cxx, cxy, rvar,
prev, prev_run, pending, residual window), birth time (``born_ms``) and PCA (None, or dims,
n, mean, row-major covariance, latest values, tick, tick start and end). Format 1 (no extremes,
no running time, no PCA) upgrades (:func:`_upgrade_1`). River estimators (``river`` of the ``hst``, ``ilof``,
``ocsvm`` detectors; ``gauss`` scorers of ``gaussian``) are stored as bytes inside the plain
payload: each the pickle of the River object. River is pinned (pyproject), so those bytes read
back in the same release; raise the format version with an upgrade when the pin moves."""


def snapshot_bytes(monitor: MachineMonitor) -> bytes:
    """A machine's monitor as its recovery snapshot (:data:`ANOMALY_CODEC`)."""
    return ANOMALY_CODEC.encode(monitor)


def state_size(monitor: MachineMonitor) -> int:
    """Bytes of a machine's snapshot (models included)."""
    return len(snapshot_bytes(monitor))


class AnomalyLogic(MachineLogic[MachineMonitor, Row]):
    """One machine's monitor (:meth:`MachineMonitor.fold`); the end of input closes episodes."""

    def __init__(self, monitor: MachineMonitor | None, cfg: AnomalyConfig, max_signals: int = 128) -> None:
        self.monitor = monitor if monitor is not None else MachineMonitor.new("")
        self.monitor.max_signals = max_signals
        self.cfg = cfg

    def on_batch(self, samples: list[Measurement]) -> list[Row]:
        return self.monitor.fold(samples, self.cfg)

    def on_eof(self) -> list[Row]:
        return self.monitor.close(self.cfg)

    def state(self) -> MachineMonitor:
        return self.monitor


def _anomaly_rows(row: Row) -> list[tuple[str, Row]]:
    return [("anomalies", row)]


def anomaly_spec(cfg: AnomalyConfig, max_signals: int = 128) -> LogicSpec[MachineMonitor, Row]:
    """The anomaly flow's per-machine logic. Every sample reaches the monitor, which skips what
    is not a usable number of a condition signal or a state change itself (cheaper than a
    filter call per sample); no timers. A machine gets at most ``max_signals`` models
    (``state.max_signals_per_machine``)."""

    def build(state: MachineMonitor | None) -> AnomalyLogic:
        return AnomalyLogic(state, cfg, max_signals)

    return LogicSpec("anomaly", ANOMALY_CODEC, build, _anomaly_rows)
