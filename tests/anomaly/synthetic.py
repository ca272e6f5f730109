"""A small labelled condition-signal generator for the anomaly tests (ground truth known).

Each machine runs with a daily-ish temperature cycle around its own level, ambient temperature
that drifts, vibration RMS with noise; anomalies are injected at known sample intervals:
``overheat`` (motor temperature +12 °C over ambient-adjusted normal) and ``bearing`` (vibration
RMS rising to 3× its level). Stops (state idle) can be inserted, during which the signals fall.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from plantstream.schemas.measurement import Measurement

STEP_MS = 60_000
T0 = 1_763_791_200_000  # 2025-11-22T06:00:00Z


@dataclass
class Plan:
    machine: str
    samples: int
    anomalies: list[tuple[int, int, str]] = field(default_factory=list)
    """(first sample, last sample, kind) — kind 'overheat' or 'bearing'."""
    stops: list[tuple[int, int]] = field(default_factory=list)
    ambient_swings: list[tuple[int, int, float]] = field(default_factory=list)
    """(first, last, °C): the ambient (and so the motor) temperature shifts, not an anomaly."""
    seed: int = 1


def generate(plan: Plan) -> list[Measurement]:
    rnd = random.Random(plan.seed)
    level = 45.0 + rnd.random() * 10
    vib = 1.2 + rnd.random()
    out: list[Measurement] = []
    running = True
    for i in range(plan.samples):
        ts = T0 + i * STEP_MS
        stopped = any(a <= i <= b for a, b in plan.stops)
        if stopped == running:
            running = not stopped
            out.append(Measurement(ts, plan.machine, "machine_state", "running" if running else "idle"))
        ambient = 22.0 + 2.0 * math.sin(i / 180.0) + rnd.gauss(0, 0.2)
        ambient += sum(d for a, b, d in plan.ambient_swings if a <= i <= b)
        temp = ambient + level + 1.5 * math.sin(i / 45.0) + rnd.gauss(0, 0.5)
        rms = vib * (1 + 0.05 * math.sin(i / 30.0)) + abs(rnd.gauss(0, 0.08))
        for a, b, kind in plan.anomalies:
            if a <= i <= b:
                ramp = min(1.0, (i - a + 1) / 5.0)
                if kind == "overheat":
                    temp += 12.0 * ramp
                elif kind == "bearing":
                    rms *= 1.0 + 2.0 * ramp
        if stopped:
            temp = ambient + 5.0 + rnd.gauss(0, 0.5)
            rms = 0.05 + abs(rnd.gauss(0, 0.01))
        out.append(Measurement(ts, plan.machine, "ambient_temperature_c", round(ambient, 3)))
        out.append(Measurement(ts, plan.machine, "temperature_c", round(temp, 3)))
        out.append(Measurement(ts, plan.machine, "vibration_rms_mms", round(rms, 4)))
    return out


def truth_ms(plan: Plan) -> list[tuple[int, int]]:
    return [(T0 + a * STEP_MS, T0 + b * STEP_MS) for a, b, _ in plan.anomalies]
