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
   form one episode, reported once ``min_points`` consecutive points were anomalous; a row is
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
        if run < 0:
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

    def threshold(self, cfg: AnomalyConfig) -> float:
        if self.fixed_threshold is not None:
            return self.fixed_threshold
        floor = self.floor_z(cfg)
        if self.quantile is None:
            return z_to_score(floor)
        return z_to_score(max(floor, self.quantile.value))

    def floor_z(self, cfg: AnomalyConfig) -> float:
        """Threshold floor (z-equivalent): ``min_z`` for the Gaussian-calibrated detectors;
        the other detectors' scores have no absolute meaning, so only their quantile counts."""
        return cfg.min_z if self.detector in ("zscore", "gaussian") else 0.0

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
                    g = self.gauss[k] = anomaly.GaussianScorer(window_size=None, grace_period=cfg.warmup)
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
    """Signal → [period, sum, count, last ts] of the samples not scored yet (``sample_s``)."""
    ambient_closed: tuple[float, float] | None = None
    """(period, mean) of the last closed ambient period: the baseline of signals scored late."""
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
        return self._ensure(signal, cfg.detector, (signal,), None)

    def _ensure(self, name: str, detector: str, signals: tuple[str, ...],
                mc: AnomalyModelConfig | None) -> Model | None:
        model = self.models.get(name)
        if model is None:
            if len(self.models) >= self.max_signals:
                return None  # bounded: a machine sending ever new metric names
            model = self.models[name] = Model(name, detector, signals,
                                              mc.threshold if mc is not None else None)
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
            self.pending[metric] = [period, value, 1, ts]
            return []
        # a new period (fold adds to an open one): score the closed period's mean
        mean = acc[1] / acc[2]
        if metric == AMBIENT:
            self.ambient_closed = (acc[0], mean)
        out = self._score(metric, int(acc[3]), mean, cfg, self._ambient_in(acc[0]))
        acc[0], acc[1], acc[2], acc[3] = period, value, 1, ts
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
        ambient = {p: total / n for signal, (p, total, n, _) in self.pending.items() if signal == AMBIENT}
        pending = dict(self.pending)
        self.pending.clear()  # in place: fold() holds the dict
        for signal, (period, total, n, ts) in pending.items():
            out += self._score(signal, int(ts), total / n, cfg, ambient.get(period, self.ambient))
        return out

    def _score(self, signal: str, ts: int, value: float, cfg: AnomalyConfig,
               ambient: float | None) -> list[Row]:
        out: list[Row] = []
        if cfg.iso10816 and signal == VIBRATION_RMS:
            out += self._iso(ts, value, cfg)
        model = self._model_for(signal, cfg)
        if model is not None:
            out += self._score_learn(model, signal, ts, value, cfg, ambient)
        return out

    def _score_learn(self, model: Model, signal: str, ts: int, value: float,
                     cfg: AnomalyConfig, ambient: float | None) -> list[Row]:
        if signal == AMBIENT:
            ambient = None
        own = model.features(signal, value, ambient, cfg, self.run)
        model.latest.update(own)
        x = dict(model.latest)
        for k in [k for k in x if k.endswith(".excess")]:
            band = model.bands.get(k)
            if band is None or band.n < cfg.warmup:  # the thermal model is still learning
                del x[k]
        zs = {k: model.bands[k].z(v) for k, v in x.items() if k in model.bands}
        for k in zs:
            if k.endswith(".excess"):  # one-sided: unexplained heat, not unexplained cooling
                zs[k] = max(zs[k], 0.0)
        warm = model.seen >= cfg.warmup and len(x) == len(zs)
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
            out += self._episode(model, ts, anomalous, score, threshold, zs, cfg)
        ep = model.episode
        if ep is not None and ep.points >= max(cfg.adapt_after, cfg.min_points):
            # The anomaly has lasted long enough to be the new normal: close it and relearn.
            out.append(_row(self.machine, self.site, self.line, model.name, model.detector, ep, False))
            model.reset()
            ep = None
        protect = anomalous or (ep is not None and ep.normal_run == 0)
        if not protect:
            model.learn(x, own, cfg)
        else:
            for fit in model.fits.values():
                fit.pending = None
        model.seen += 1
        return out

    def _episode(self, model: Model, ts: int, anomalous: bool, score: float, threshold: float,
                 zs: dict[str, float], cfg: AnomalyConfig) -> list[Row]:
        ep = model.episode
        if anomalous:
            deviating = {k: z for k, z in zs.items() if abs(z) >= min(cfg.min_z, 3.0)} or zs
            if ep is None:
                ep = model.episode = Episode(ts, ts, score, threshold, deviating,
                                             severity=_severity(zs, score))
            else:
                ep.end, ep.points, ep.normal_run = ts, ep.points + 1, 0
                if score > ep.score or (score == ep.score and _zmax(zs) > _zmax(ep.signals)):
                    ep.score, ep.threshold, ep.signals = score, threshold, deviating
                    ep.severity = max(ep.severity, _severity(zs, score), key=_SEVERITY_RANK.__getitem__)
            if ep.points == cfg.min_points:  # persistent enough: the episode is reported
                return [_row(self.machine, self.site, self.line, model.name, model.detector, ep, True)]
            return []
        if ep is None:
            return []
        if ep.points < cfg.min_points:  # a blip shorter than min_points: never reported
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
        for model in self.models.values():
            if model.episode is not None and model.episode.points >= cfg.min_points:
                out.append(_row(self.machine, self.site, self.line, model.name, model.detector,
                                model.episode, False))
            model.episode = None
        if self.iso is not None:
            out.append(_row(self.machine, self.site, self.line, ISO_MODEL, "rule", self.iso, False))
            self.iso = None
        return out


_SEVERITY_RANK: Final = {"info": 0, "warning": 1, "critical": 2}


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
    }


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
    )


def _dump_monitor(mon: MachineMonitor) -> dict[str, Any]:
    return {
        "machine": mon.machine, "site": mon.site, "line": mon.line, "running": mon.running, "run": mon.run,
        "ambient": mon.ambient, "models": {k: _dump_model(m) for k, m in mon.models.items()},
        "iso": _dump_episode(mon.iso), "pending": {k: list(v) for k, v in mon.pending.items()},
        "ambient_closed": mon.ambient_closed,
    }


def _load_monitor(p: dict[str, Any]) -> MachineMonitor:
    closed = p["ambient_closed"]
    return MachineMonitor(
        p["machine"], p["site"], p["line"], p["running"], p["run"], p["ambient"],
        models={k: _load_model(m) for k, m in p["models"].items()}, iso=_load_episode(p["iso"]),
        pending={k: list(v) for k, v in p["pending"].items()},
        ambient_closed=None if closed is None else (closed[0], closed[1]),
    )


ANOMALY_CODEC: StateCodec[MachineMonitor] = StateCodec("anomaly", 1, MachineMonitor, _dump_monitor,
                                                        _load_monitor)
"""Format 1 of a machine's monitor: machine, site, line, running, run, ambient, pending periods
(signal → [period, sum, count, last ts]), ambient_closed, the ISO 10816 episode and per model its
name, detector, signals, fixed threshold, bands (mean, var, n), rolling windows (lists), latest
features, adaptive quantile (value, tau, eta), samples seen, open episode (start, end, score,
threshold, signals, points, normal_run, severity) and thermal fits (n, mx, my, cxx, cxy, rvar,
prev, prev_run, pending, residual window). River estimators (``river`` of the ``hst``, ``ilof``,
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
