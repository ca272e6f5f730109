"""Scoring anomaly detections against labels: NAB window score, point-wise and episode metrics.

NAB (Numenta Anomaly Benchmark, ``nab/sweeper.py``) scoring, implemented faithfully:

- The first ``probation`` rows are not scored: ``min(floor(0.15 × rows), 0.15 × 5000)``.
- A detection inside a labelled window scores ``A_TP × σs(p) / σs(−1)`` where ``p`` is the
  relative position ``−(right − i + 1) / width`` (−1 at the left edge) and the scaled sigmoid is
  ``σs(p) = 2 / (1 + e^{5p}) − 1`` (``−1`` when ``p ≥ 3``); only the best (earliest) detection of
  a window counts. A window with no detection scores ``−A_FN``.
- A detection outside every window scores ``A_FP × σs(p)`` with ``p`` the distance past the
  previous window's right edge in window widths (``p = 3`` — the full ``−A_FP`` — before the first
  window). Every such detection counts.
- Standard profile: A_TP = 1, A_FP = 0.11 (a false positive costs up to −0.11), A_FN = 1.
  The normalised score is ``100 × (raw − null) / (perfect − null)`` with null = every window
  missed (−A_FN per window) and perfect = every window hit at its left edge (+A_TP each).

A streaming detector that raises an alert once per episode is scored on the episode onsets
(the alerts), as NAB intends ("a detection"), not on every point of an episode.

Examples
--------
>>> ts = list(range(100))
>>> round(nab_score(ts, [60], [(50, 59)], probation=10).raw, 4)   # missed, 1 FP just after
-1.0298
>>> round(nab_score(ts, [50], [(50, 59)], probation=10).normalized, 1)   # left edge: perfect
100.0
>>> nab_score(ts, [], [(50, 59)], probation=10).normalized
0.0
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

STANDARD_PROFILE: Final = {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0}


def scaled_sigmoid(position: float) -> float:
    """NAB's scaled sigmoid of a relative position (−1 window left edge, 0 right edge).

    >>> [round(scaled_sigmoid(p), 5) for p in (-1.0, -0.5, 0.0, 1.0, 3.0)]
    [0.98661, 0.84828, 0.0, -0.98661, -1.0]
    """
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_rows(n_rows: int, percent: float = 0.15) -> int:
    """NAB probationary length: ``min(floor(percent × rows), percent × 5000)``.

    >>> probation_rows(22695), probation_rows(1000)
    (750, 150)
    """
    return int(min(math.floor(percent * n_rows), percent * 5000))


@dataclass(frozen=True)
class NabResult:
    raw: float
    normalized: float
    windows_hit: int
    windows: int
    false_positives: int
    """Scored detections outside every window (after probation)."""


def nab_score(timestamps: Sequence[int], detections: Sequence[int],
              windows: Sequence[tuple[int, int]], *, probation: int | None = None,
              profile: dict[str, float] | None = None) -> NabResult:
    """NAB score of ``detections`` (timestamps of alerts) over a file's ``timestamps``.

    ``windows`` are (first, last) timestamps, inclusive; they are mapped onto row indices.
    """
    prof = profile or STANDARD_PROFILE
    tp_w, fp_w, fn_w = prof["tpWeight"], prof["fpWeight"], prof["fnWeight"]
    n = len(timestamps)
    prob = probation_rows(n) if probation is None else probation
    spans = []
    for a, b in windows:
        lo = bisect.bisect_left(timestamps, a)
        hi = bisect.bisect_right(timestamps, b) - 1
        if lo <= hi:
            spans.append((lo, hi))
    spans.sort()
    flagged = sorted({bisect.bisect_left(timestamps, d) for d in detections} - {n})
    max_tp = scaled_sigmoid(-1.0)
    best: dict[int, float] = {}
    scored_windows = {w for w, (lo, hi) in enumerate(spans) if hi >= prob}
    fp_total, fps = 0.0, 0
    for i in flagged:
        if i < prob:
            continue
        w = next((k for k, (lo, hi) in enumerate(spans) if lo <= i <= hi), None)
        if w is not None:
            lo, hi = spans[w]
            width = hi - lo + 1
            s = scaled_sigmoid(-(hi - i + 1) / width) * tp_w / max_tp
            best[w] = max(best.get(w, -math.inf), s)
            continue
        prev = [k for k, (lo, hi) in enumerate(spans) if hi < i]
        if not prev:
            pos = 3.0
        else:
            lo, hi = spans[prev[-1]]
            pos = abs(hi - i) / float(hi - lo + 1 - 1)
        fp_total += scaled_sigmoid(pos) * fp_w
        fps += 1
    raw = fp_total + sum(best.get(w, -fn_w) for w in scored_windows)
    null, perfect = -fn_w * len(scored_windows), tp_w * len(scored_windows)
    norm = 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0
    return NabResult(raw, norm, sum(1 for w in scored_windows if w in best), len(scored_windows), fps)


@dataclass(frozen=True)
class PointMetrics:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def false_alarm_rate(self) -> float:
        """FP / (FP + TN): the share of normal points flagged."""
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def missed_alarm_rate(self) -> float:
        """FN / (TP + FN): the share of anomalous points not flagged."""
        return self.fn / (self.tp + self.fn) if self.tp + self.fn else 0.0


def point_metrics(labels: Sequence[int], predicted: Sequence[int], skip: int = 0) -> PointMetrics:
    """Point-wise confusion counts, the first ``skip`` rows (training) not scored.

    >>> m = point_metrics([0, 0, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0], skip=0)
    >>> (m.tp, m.fp, m.fn, m.tn, round(m.f1, 2))
    (1, 1, 1, 3, 0.5)
    """
    tp = fp = tn = fn = 0
    for y, p in zip(labels[skip:], predicted[skip:], strict=True):
        if y and p:
            tp += 1
        elif p:
            fp += 1
        elif y:
            fn += 1
        else:
            tn += 1
    return PointMetrics(tp, fp, tn, fn)


def predicted_points(timestamps: Sequence[int], episodes: Sequence[tuple[int, int]]) -> list[int]:
    """0/1 per timestamp: 1 when it falls inside a detected episode [start, end].

    >>> predicted_points([0, 1, 2, 3, 4], [(1, 2)])
    [0, 1, 1, 0, 0]
    """
    out = [0] * len(timestamps)
    for a, b in episodes:
        for i in range(bisect.bisect_left(timestamps, a), bisect.bisect_right(timestamps, b)):
            out[i] = 1
    return out


def label_intervals(timestamps: Sequence[int], labels: Sequence[int]) -> list[tuple[int, int]]:
    """Runs of label 1 as (first, last) timestamps.

    >>> label_intervals([0, 1, 2, 3, 4, 5], [0, 1, 1, 0, 1, 0])
    [(1, 2), (4, 4)]
    """
    out: list[tuple[int, int]] = []
    start: int | None = None
    prev = 0
    for t, y in zip(timestamps, labels, strict=True):
        if y and start is None:
            start = t
        elif not y and start is not None:
            out.append((start, prev))
            start = None
        prev = t
    if start is not None:
        out.append((start, prev))
    return out


@dataclass
class EpisodeMetrics:
    """Per labelled interval: detected or not, and the delay of the first alert."""

    intervals: int = 0
    detected: int = 0
    episodes: int = 0
    true_episodes: int = 0
    false_episodes: int = 0
    delays_ms: list[int] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.detected / self.intervals if self.intervals else 0.0

    @property
    def precision(self) -> float:
        return self.true_episodes / self.episodes if self.episodes else 0.0

    @property
    def median_delay_ms(self) -> float | None:
        if not self.delays_ms:
            return None
        d = sorted(self.delays_ms)
        mid = len(d) // 2
        return float(d[mid]) if len(d) % 2 else (d[mid - 1] + d[mid]) / 2.0


def episode_metrics(intervals: Sequence[tuple[int, int]], episodes: Sequence[tuple[int, int]],
                    *, scored_from: int = -(2**62), tolerance_ms: int = 0) -> EpisodeMetrics:
    """Match detected episodes to labelled intervals (overlap, ``tolerance_ms`` slack after).

    An interval is detected when an episode overlaps it; the detection delay is the first
    overlapping episode's start minus the interval start (0 when it started before). An
    episode starting at or after ``scored_from`` that overlaps no interval is a false alarm.

    >>> m = episode_metrics([(10, 20), (50, 60)], [(12, 15), (30, 31), (58, 70)])
    >>> (m.detected, m.false_episodes, m.delays_ms, round(m.precision, 2))
    (2, 1, [2, 8], 0.67)
    """
    m = EpisodeMetrics(intervals=len(intervals))
    for a, b in intervals:
        hits = [s for s, e in episodes if s <= b + tolerance_ms and e >= a]
        if hits:
            m.detected += 1
            m.delays_ms.append(max(0, min(hits) - a))
    for s, e in episodes:
        if s < scored_from:
            continue
        m.episodes += 1
        if any(s <= b + tolerance_ms and e >= a for a, b in intervals):
            m.true_episodes += 1
        else:
            m.false_episodes += 1
    return m
