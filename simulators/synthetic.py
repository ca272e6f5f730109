"""A small deterministic synthetic Measurement stream: states, counters and condition signals.

Used by ``plantstream demo`` until the OPC UA and MQTT line simulators are running, and by
tests that need plausible data without a protocol in between.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from plantstream.schemas.measurement import Measurement


@dataclass
class _Machine:
    id: str
    line: str
    state: str = "running"
    good: int = 0
    reject: int = 0
    temp: float = 60.0
    vib: float = 2.0
    until_ms: int = 0
    rng: random.Random = field(default_factory=random.Random)


def synthetic_stream(start_ms: int, *, machines: int = 3, step_ms: int = 1000, seed: int = 7,
                     site: str = "plant-a") -> Iterator[Measurement]:
    """An endless, reproducible stream: one tick per ``step_ms`` of event time per machine.

    >>> s = synthetic_stream(1763791200000, machines=1)
    >>> [next(s).metric for _ in range(2)]
    ['machine_state', 'part_number']
    """
    ms = [
        _Machine(f"m-{i + 1:02d}", f"line-{i // 5 + 1}", rng=random.Random(seed * 1000 + i))
        for i in range(machines)
    ]
    now = start_ms
    for m in ms:
        yield Measurement(now, m.id, "machine_state", m.state, site, m.line, "", "synthetic")
        yield Measurement(now, m.id, "part_number", "P-100", site, m.line, "", "synthetic")
    while True:
        now += step_ms
        for m in ms:
            rng = m.rng
            if now >= m.until_ms:
                if m.state == "running" and rng.random() < 0.01:
                    m.state = rng.choice(["fault", "idle", "setup"])
                    m.until_ms = now + rng.randint(30, 600) * 1000
                    yield Measurement(now, m.id, "machine_state", m.state, site, m.line, "", "synthetic")
                elif m.state != "running":
                    m.state = "running"
                    yield Measurement(now, m.id, "machine_state", m.state, site, m.line, "", "synthetic")
            if m.state == "running":
                if rng.random() < 0.03:
                    m.reject += 1
                    yield Measurement(now, m.id, "reject_count", m.reject, site, m.line, "count",
                                      "synthetic")
                else:
                    m.good += 1
                    yield Measurement(now, m.id, "good_count", m.good, site, m.line, "count", "synthetic")
            m.temp += (62.0 - m.temp) * 0.05 + rng.gauss(0, 0.3)
            m.vib = max(0.1, m.vib + (2.0 - m.vib) * 0.1 + rng.gauss(0, 0.1))
            yield Measurement(now, m.id, "temperature_c", round(m.temp, 3), site, m.line, "C", "synthetic")
            yield Measurement(now, m.id, "vibration_rms_mms", round(m.vib, 3), site, m.line, "mm/s",
                              "synthetic")
