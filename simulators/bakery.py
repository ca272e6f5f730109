"""The Contoso bakery over MQTT: a deterministic bakery line simulator with exact ground truth.

The bakery of the Azure IoT Operations scenario: plants in Seattle, Mexico City and Miami, each
with a line of five machines — mixer, divider, proofer, fryer, glazer — making donuts, bread
or pastries in three shifts. :class:`BakerySim` simulates them in event time (one-second steps,
from a seed, no sleeping) and produces the MQTT messages the plant would publish: one flat JSON
object per machine and second in which something changed, on topic
``contoso/{plant}/{line}/{machine}`` (the "flat" payload format of ``connectors.mqtt``)::

    {"timestamp": "2025-11-22T06:00:01.000Z", "state": 1, "product": "donuts",
     "good_count": 3, "waste_count": 0, "oil_temp_f": 374.8, "oil_level_pct": 99.9}

Fields (only those that changed, plus condition samples every ``sample_ms``): ``state`` (PLC
integer, :data:`STATE_CODES`), ``lost_time_reason`` (with each stop, :data:`LOST_TIME_REASONS`),
``product`` with its ``work_order`` (``WO-<MACHINE>-0001`` at the start, the next number at
each product changeover), ``waste_reason`` (before the waste it explains: ``Overcooked``, ``Undercooked``,
``Machine Error``), cumulative ``good_count`` / ``waste_count``, and per machine type the
condition signals: fryer ``oil_temp_f`` against ``oil_temp_target_f`` = 375 °F and
``oil_level_pct``; mixer ``dough_temp_f``; divider ``dough_weight_g``; proofer
``proof_temp_f`` and ``proof_humidity_pct``; glazer ``glaze_temp_f``.
:func:`bakery_tags` is the matching tag dictionary (°F → °C by scale/offset) and
:func:`bakery_config` a plant config with machines, ideal cycle times, shifts and the tags.

What happens, per machine
-------------------------
- Shifts A 06–14, B 14–22, C 22–06 UTC, each with a 30-minute ``Sanitation`` planned stop
  (state ``planned_stop``) four hours in; after sanitation the product may change
  (``Product Changeover``, state ``setup``).
- Unplanned stops: ``Machine Error`` faults, ``No Dough`` / ``Staff Shortage`` idles, and
  micro-stops (``No Dough`` idles shorter than 120 s).
- Fryer: the oil level drops while frying; below 60 % an ``Oil Change`` (``setup``) refills it.
  Oil cools while the fryer stands and heats back after a restart: frying in cold oil makes
  ``Undercooked`` waste (start-up rejects). A **thermostat drift** anomaly makes the oil creep
  above target (``Overcooked`` waste) until a ``Machine Error`` fault stops the fryer.

Ground truth (JSONL, :meth:`BakerySim.write_ground_truth`), one object per line with a ``kind``
as in ``simulators/plc.py``: ``meta``; ``state`` (``machine, site, line, start_ms,
end_ms, state, reason, category, microstop, shift`` — intervals ``[start_ms, end_ms)`` in order,
the open ones closed at the end of the run); ``counts`` (``good, reject, total,
rejects_by_reason``); ``anomaly`` (``type, signal, start_ms, end_ms, peak``); ``final`` (the
last emitted ``good_count``, ``reject_count`` and ``machine_state`` per machine).

Examples
--------
>>> sim = BakerySim(seed=3, start_ms=1763791200000, machines=5)  # 2025-11-22 06:00 UTC
>>> msgs = list(sim.messages(1763791200000 + 3600_000))
>>> msgs[0][1]
'contoso/seattle/seattle-line-1/seattle-mixer-1'
>>> truth = sim.ground_truth()
>>> sorted(truth["final"]) == sorted(sim.machine_ids)
True
>>> truth["counts"]["seattle-fryer-1"]["good"] > 2000
True
>>> msgs == list(BakerySim(seed=3, start_ms=1763791200000, machines=5).messages(1763791200000 + 3600_000))
True
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

import orjson

from plantstream.schemas.config import PlantConfig, build_config
from plantstream.schemas.tags_config import TagMapping

log = logging.getLogger(__name__)

PLANTS: Final = ("seattle", "mexico-city", "miami")
MACHINE_TYPES: Final = ("mixer", "divider", "proofer", "fryer", "glazer")
PRODUCTS: Final = ("donuts", "bread", "pastries")
STATE_CODES: Final = {"off": 0, "running": 1, "idle": 2, "fault": 3, "setup": 4, "planned_stop": 5}
CODE_STATES: Final = {v: k for k, v in STATE_CODES.items()}
WASTE_REASONS: Final = ("Overcooked", "Undercooked", "Machine Error")
LOST_TIME_REASONS: Final[dict[str, tuple[str, str]]] = {
    "Machine Error": ("fault", "mechanical"),
    "No Dough": ("idle", "material"),
    "Staff Shortage": ("idle", "operator"),
    "Product Changeover": ("setup", "changeover"),
    "Oil Change": ("setup", "scheduled maintenance"),
    "Sanitation": ("planned_stop", "scheduled maintenance"),
}
"""Lost-time reason → (state, KPI.md downtime category)."""

OIL_TARGET_F: Final = 375.0
MICROSTOP_S: Final = 120
SHIFTS: Final = (("A", 6 * 60), ("B", 14 * 60), ("C", 22 * 60))
"""Shift name and start (minutes after midnight UTC); each lasts 8 h."""
SANITATION_OFFSET_MIN: Final = 4 * 60
SANITATION_MIN: Final = 30

IDEAL_CYCLE_MS: Final[dict[str, dict[str, float]]] = {
    "mixer": {"donuts": 2000.0, "bread": 2500.0, "pastries": 2200.0},
    "divider": {"donuts": 500.0, "bread": 800.0, "pastries": 600.0},
    "proofer": {"donuts": 900.0, "bread": 1200.0, "pastries": 1000.0},
    "fryer": {"donuts": 1000.0, "bread": 1500.0, "pastries": 1200.0},
    "glazer": {"donuts": 800.0, "bread": 1000.0, "pastries": 900.0},
}
"""Ideal cycle time (ms per unit) per machine type and product."""

_CONDITIONS: Final[dict[str, tuple[tuple[str, float, float], ...]]] = {
    "mixer": (("dough_temp_f", 78.0, 0.6),),
    "divider": (("dough_weight_g", 60.0, 0.4),),
    "proofer": (("proof_temp_f", 95.0, 0.5), ("proof_humidity_pct", 85.0, 1.0)),
    "glazer": (("glaze_temp_f", 110.0, 0.8),),
    "fryer": (),
}
"""Condition signal name, nominal value and noise σ per machine type (fryer oil is modelled)."""


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shift_at(ts_ms: int) -> str:
    """The shift (A, B, C) at an instant.

    >>> shift_at(1763791200000), shift_at(1763791200000 - 1)  # 06:00 UTC is the start of A
    ('A', 'C')
    """
    minute = (ts_ms // 60_000) % (24 * 60)
    name = SHIFTS[-1][0]
    for n, start in SHIFTS:
        if minute >= start:
            name = n
    return name


def in_sanitation(ts_ms: int) -> bool:
    minute = (ts_ms // 60_000) % (24 * 60)
    for _, start in SHIFTS:
        s = (start + SANITATION_OFFSET_MIN) % (24 * 60)
        if s <= minute < s + SANITATION_MIN:
            return True
    return False


@dataclass
class StateInterval:
    machine: str
    site: str
    line: str
    start_ms: int
    end_ms: int
    state: str
    reason: str
    category: str
    microstop: bool
    shift: str


@dataclass
class Anomaly:
    machine: str
    type: str
    signal: str
    start_ms: int
    end_ms: int
    peak: float


@dataclass
class _Machine:
    id: str
    type: str
    site: str
    line: str
    rng: random.Random
    product: str
    state: str = "running"
    reason: str = ""
    until_ms: int = 0
    good: int = 0
    reject: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    progress: float = 0.0
    oil_base_f: float = OIL_TARGET_F
    oil_level: float = 100.0
    drift_f: float = 0.0
    drift_since: int | None = None
    drift_peak: float = 0.0
    interval_start: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    order_seq: int = 1

    @property
    def work_order(self) -> str:
        """The work order the machine runs: one per product run, numbered per machine."""
        return f"WO-{self.id.upper()}-{self.order_seq:04d}"


class BakerySim:
    """The Contoso bakery in event time (see the module docstring).

    Parameters
    ----------
    seed
        Everything follows from it: same seed, same messages, same ground truth.
    start_ms
        Event time of the first step (epoch ms, UTC).
    machines
        How many machines, plant by plant (5 per plant line; more than 15 adds lines).
    sample_ms
        Period of the condition samples.
    """

    def __init__(self, seed: int = 1, start_ms: int = 1763791200000, machines: int = 15,
                 sample_ms: int = 10_000) -> None:
        if machines < 1:
            msg = f"machines must be at least 1, got {machines}"
            raise ValueError(msg)
        self.seed = seed
        self.start_ms = start_ms - start_ms % 1000
        self.sample_ms = sample_ms
        self.now_ms = self.start_ms
        self._machines: list[_Machine] = []
        for i in range(machines):
            line_no, rest = divmod(i, len(PLANTS) * len(MACHINE_TYPES))
            plant = PLANTS[rest // len(MACHINE_TYPES)]
            mtype = MACHINE_TYPES[rest % len(MACHINE_TYPES)]
            rng = random.Random(seed * 7919 + i)
            product = PRODUCTS[(seed + rest // len(MACHINE_TYPES)) % len(PRODUCTS)]
            self._machines.append(_Machine(
                id=f"{plant}-{mtype}-{line_no + 1}", type=mtype, site=plant,
                line=f"{plant}-line-{line_no + 1}", rng=rng, product=product,
                interval_start=self.start_ms))
        self.states: list[StateInterval] = []
        self.anomalies: list[Anomaly] = []
        self._started = False

    @property
    def machine_ids(self) -> list[str]:
        return [m.id for m in self._machines]

    def topic(self, m: _Machine) -> str:
        return f"contoso/{m.site}/{m.line}/{m.id}"

    # -- the simulation ---------------------------------------------------------------------------

    def messages(self, end_ms: int | None = None) -> Iterator[tuple[int, str, bytes]]:
        """(ts, topic, payload) in event-time order up to ``end_ms`` (exclusive; None = endless).

        May be called again with a later ``end_ms`` to continue.
        """
        if not self._started:
            self._started = True
            for m in self._machines:
                if in_sanitation(self.now_ms):
                    m.state, m.reason = "planned_stop", "Sanitation"
                fields = {"state": STATE_CODES[m.state], "product": m.product,
                          "work_order": m.work_order, "good_count": 0, "waste_count": 0}
                if m.type == "fryer":
                    fields["oil_temp_target_f"] = OIL_TARGET_F
                fields.update(self._conditions(m, self.now_ms, force=True))
                m.last.update(fields)
                yield self.now_ms, self.topic(m), self._payload(self.now_ms, fields)
            self.now_ms += 1000
        while end_ms is None or self.now_ms < end_ms:
            t = self.now_ms
            for m in self._machines:
                fields = self._step(m, t)
                if fields:
                    m.last.update(fields)
                    yield t, self.topic(m), self._payload(t, fields)
            self.now_ms += 1000

    def _payload(self, ts: int, fields: Mapping[str, Any]) -> bytes:
        return orjson.dumps({"timestamp": _iso(ts), **fields})

    def _set_state(self, m: _Machine, t: int, state: str, reason: str, fields: dict[str, Any],
                   duration_ms: int = 0) -> None:
        self._close_interval(m, t)
        m.state, m.reason, m.interval_start = state, reason, t
        m.until_ms = t + duration_ms
        fields["state"] = STATE_CODES[state]
        if reason and state != "running":
            fields["lost_time_reason"] = reason

    def _close_interval(self, m: _Machine, t: int) -> None:
        if t <= m.interval_start:
            return
        _, category = LOST_TIME_REASONS.get(m.reason, ("", ""))
        if m.state == "idle" and not m.reason:
            category = "unassigned"
        self.states.append(StateInterval(
            m.id, m.site, m.line, m.interval_start, t, m.state, m.reason if m.state != "running" else "",
            category if m.state != "running" else "",
            m.state == "idle" and t - m.interval_start < MICROSTOP_S * 1000, shift_at(m.interval_start)))

    def _stop(self, m: _Machine, t: int, reason: str, fields: dict[str, Any], lo_s: int, hi_s: int) -> None:
        state = LOST_TIME_REASONS[reason][0]
        self._set_state(m, t, state, reason, fields, m.rng.randint(lo_s, hi_s) * 1000)

    def _step(self, m: _Machine, t: int) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        rng = m.rng
        san = in_sanitation(t)
        if san and m.state != "planned_stop":
            self._set_state(m, t, "planned_stop", "Sanitation", fields)
        elif not san and m.state == "planned_stop":
            if rng.random() < 0.4:
                m.product = rng.choice([p for p in PRODUCTS if p != m.product])
                m.order_seq += 1
                fields["product"] = m.product
                fields["work_order"] = m.work_order
                self._stop(m, t, "Product Changeover", fields, 8 * 60, 15 * 60)
            else:
                self._set_state(m, t, "running", "", fields)
        elif m.state not in ("running", "planned_stop") and t >= m.until_ms:
            if m.reason == "Oil Change":
                m.oil_level = 100.0
            self._set_state(m, t, "running", "", fields)
        elif m.state == "running":
            if m.type == "fryer" and m.drift_f >= 25.0:
                self._end_drift(m, t)
                self._stop(m, t, "Machine Error", fields, 10 * 60, 20 * 60)
            elif m.type == "fryer" and m.oil_level < 60.0:
                self._stop(m, t, "Oil Change", fields, 10 * 60, 14 * 60)
            else:
                r = rng.random()
                if r < 1 / 5400:
                    self._stop(m, t, "Machine Error", fields, 3 * 60, 20 * 60)
                elif r < 1 / 5400 + 1 / 3600:
                    self._stop(m, t, rng.choice(("No Dough", "Staff Shortage")), fields, 3 * 60, 10 * 60)
                elif r < 1 / 5400 + 1 / 3600 + 1 / 1200:
                    self._stop(m, t, "No Dough", fields, 15, 100)  # a micro-stop
        if m.type == "fryer":
            self._fryer_physics(m, t)
        if m.state == "running":
            self._produce(m, t, fields)
        fields.update(self._conditions(m, t))
        return fields

    def _fryer_physics(self, m: _Machine, t: int) -> None:
        rng = m.rng
        if m.state == "running":
            m.oil_base_f += (OIL_TARGET_F - m.oil_base_f) / 120.0
            m.oil_level -= 0.004
            if m.drift_since is None and rng.random() < 1 / (3 * 3600):
                m.drift_since = t
                m.drift_peak = 0.0
            if m.drift_since is not None:
                m.drift_f += 0.02
        else:
            m.oil_base_f += (300.0 - m.oil_base_f) / 900.0

    def _end_drift(self, m: _Machine, t: int) -> None:
        if m.drift_since is not None:
            self.anomalies.append(Anomaly(m.id, "thermostat_drift", "oil_temperature_c", m.drift_since, t,
                                          round(m.drift_peak, 1)))
        m.drift_since = None
        m.drift_f = 0.0

    def _oil_temp(self, m: _Machine) -> float:
        return m.oil_base_f + m.drift_f

    def _produce(self, m: _Machine, t: int, fields: dict[str, Any]) -> None:
        rng = m.rng
        m.progress += 1000.0 / IDEAL_CYCLE_MS[m.type][m.product] * rng.uniform(0.85, 1.0)
        units = int(m.progress)
        m.progress -= units
        if not units:
            return
        good = 0
        waste: dict[str, int] = {}
        temp = self._oil_temp(m) if m.type == "fryer" else 0.0
        for _ in range(units):
            reason = None
            if m.type == "fryer":
                if temp > OIL_TARGET_F + 10 and rng.random() < 0.3:
                    reason = "Overcooked"
                elif temp < OIL_TARGET_F - 10 and rng.random() < 0.3:
                    reason = "Undercooked"
                elif rng.random() < 0.004:
                    reason = rng.choice(("Overcooked", "Undercooked"))
            if reason is None and rng.random() < 0.003:
                reason = "Machine Error"
            if reason is None:
                good += 1
            else:
                waste[reason] = waste.get(reason, 0) + 1
        if good:
            m.good += good
            fields["good_count"] = m.good
        # one waste reason per message, before the waste it explains: the waste of one second
        # is attributed to its most frequent reason (the ground truth counts it the same way)
        if waste:
            reason = max(waste, key=lambda r: (waste[r], r))
            n = sum(waste.values())
            fields["waste_reason"] = reason
            m.reject += n
            m.by_reason[reason] = m.by_reason.get(reason, 0) + n
            fields["waste_count"] = m.reject

    def _conditions(self, m: _Machine, t: int, force: bool = False) -> dict[str, Any]:
        if not force and (t - self.start_ms) % self.sample_ms:
            return {}
        rng = m.rng
        out: dict[str, Any] = {}
        if m.type == "fryer":
            temp = self._oil_temp(m) + rng.gauss(0, 0.8)
            out["oil_temp_f"] = round(temp, 1)
            out["oil_level_pct"] = round(m.oil_level, 1)
            if m.drift_since is not None:
                m.drift_peak = max(m.drift_peak, temp - OIL_TARGET_F)
        for name, nominal, sigma in _CONDITIONS[m.type]:
            out[name] = round(nominal + rng.gauss(0, sigma), 2)
        return out

    # -- ground truth -----------------------------------------------------------------------------

    def ground_truth(self, end_ms: int | None = None) -> dict[str, Any]:
        """The truth so far, open intervals closed at ``end_ms`` (default: the current time)."""
        end = self.now_ms if end_ms is None else end_ms
        states = list(self.states)
        anomalies = list(self.anomalies)
        final: dict[str, dict[str, Any]] = {}
        counts: dict[str, dict[str, Any]] = {}
        for m in self._machines:
            if end > m.interval_start:
                _, cat = LOST_TIME_REASONS.get(m.reason, ("", ""))
                running = m.state == "running"
                states.append(StateInterval(m.id, m.site, m.line, m.interval_start, end, m.state,
                                            "" if running else m.reason, "" if running else cat,
                                            False, shift_at(m.interval_start)))
            if m.drift_since is not None:
                anomalies.append(Anomaly(m.id, "thermostat_drift", "oil_temperature_c", m.drift_since, end,
                                         round(m.drift_peak, 1)))
            counts[m.id] = {"good": m.good, "reject": m.reject, "total": m.good + m.reject,
                            "rejects_by_reason": dict(sorted(m.by_reason.items()))}
            final[m.id] = {"good_count": m.last.get("good_count", 0),
                           "reject_count": m.last.get("waste_count", 0),
                           "machine_state": CODE_STATES[m.last.get("state", 1)]}
        states.sort(key=lambda s: (s.machine, s.start_ms))
        return {
            "meta": {"seed": self.seed, "start_ms": self.start_ms, "end_ms": end,
                     "machines": self.machine_ids, "microstop_threshold_s": MICROSTOP_S,
                     "state_codes": STATE_CODES, "lost_time_reasons": LOST_TIME_REASONS,
                     "oil_temperature_target_f": OIL_TARGET_F},
            "states": states, "anomalies": anomalies, "counts": counts, "final": final,
        }

    def write_ground_truth(self, path: str | Path, end_ms: int | None = None) -> Path:
        """Write the ground truth as JSONL (one ``kind`` per line); returns the path."""
        truth = self.ground_truth(end_ms)
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            f.write(orjson.dumps({"kind": "meta", **truth["meta"]}) + b"\n")
            for s in truth["states"]:
                f.write(orjson.dumps({"kind": "state", **asdict(s)}) + b"\n")
            for machine, c in truth["counts"].items():
                f.write(orjson.dumps({"kind": "counts", "machine": machine, **c}) + b"\n")
            for a in truth["anomalies"]:
                f.write(orjson.dumps({"kind": "anomaly", **asdict(a)}) + b"\n")
            for machine, fin in truth["final"].items():
                f.write(orjson.dumps({"kind": "final", "machine": machine, **fin}) + b"\n")
        return p


# -- tag dictionary and plant config -------------------------------------------------------------

_F_TO_C: Final = {"scale": 5 / 9, "offset": -160 / 9, "unit": "degC"}


def bakery_tags(prefix: str = "contoso") -> dict[str, TagMapping]:
    """The tag dictionary of the bakery topics (``{prefix}/{site}/{line}/{machine}#field``).

    >>> tags = bakery_tags()
    >>> tags["contoso/{site}/{line}/{machine}#oil_temp_f"].metric
    'oil_temperature_c'
    """
    base = f"{prefix}/{{site}}/{{line}}/{{machine}}#"
    common = {"machine": "{machine}", "site": "{site}", "line": "{line}"}
    fields: dict[str, dict[str, Any]] = {
        "state": {"metric": "machine_state", "states": {str(v): k for k, v in STATE_CODES.items()}},
        "lost_time_reason": {"metric": "reason_code"},
        "product": {"metric": "part_number"},
        "work_order": {"metric": "work_order"},
        "waste_reason": {"metric": "scrap_reason"},
        "good_count": {"metric": "good_count", "unit": "count"},
        "waste_count": {"metric": "reject_count", "unit": "count"},
        "oil_temp_f": {"metric": "oil_temperature_c", **_F_TO_C},
        "oil_temp_target_f": {"metric": "oil_temperature_target_c", **_F_TO_C},
        "oil_level_pct": {"metric": "oil_level_pct", "unit": "%"},
        "dough_temp_f": {"metric": "dough_temperature_c", **_F_TO_C},
        "dough_weight_g": {"metric": "dough_weight_g", "unit": "g"},
        "proof_temp_f": {"metric": "proof_temperature_c", **_F_TO_C},
        "proof_humidity_pct": {"metric": "proof_humidity_pct", "unit": "%"},
        "glaze_temp_f": {"metric": "glaze_temperature_c", **_F_TO_C},
    }
    return {base + name: TagMapping.model_validate({**common, **spec}) for name, spec in fields.items()}


def bakery_config(machines: int = 15, *, mqtt: Mapping[str, Any] | None = None,
                  producer: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
                  ) -> PlantConfig:
    """A plant config for the simulated bakery: lines, machines, ideal cycle times, shifts, tags.

    >>> cfg = bakery_config(5)
    >>> cfg.machine("seattle-fryer-1").line, cfg.mqtt.subscriptions[0].topic
    ('seattle-line-1', 'contoso/#')
    """
    sim = BakerySim(machines=machines)
    lines: dict[str, list[dict[str, Any]]] = {}
    for m in sim._machines:
        lines.setdefault(m.line, []).append({
            "id": m.id, "type": m.type, "ideal_cycle_time_ms": IDEAL_CYCLE_MS[m.type]["donuts"],
            "ideal_cycle_time_ms_by_part": IDEAL_CYCLE_MS[m.type]})
    shifts = [{"name": name, "start": f"{start // 60:02d}:00", "end": f"{(start // 60 + 8) % 24:02d}:00",
               "breaks": [{"start": f"{(start + SANITATION_OFFSET_MIN) // 60 % 24:02d}:00",
                           "minutes": SANITATION_MIN}]} for name, start in SHIFTS]
    data: dict[str, Any] = {
        "site": "contoso-bakery", "timezone": "UTC", "shifts": shifts,
        "microstop_threshold_s": MICROSTOP_S,
        "lines": [{"id": lid, "machines": ms} for lid, ms in lines.items()],
        "tags": {k: v.model_dump() for k, v in bakery_tags().items()},
        "mqtt": {"client_id": "plantstream-bakery",
                 "subscriptions": [{"topic": "contoso/#", "format": "flat"}], **(mqtt or {})},
    }
    if producer:
        data["producer"] = dict(producer)
    return build_config(data, {} if environ is None else environ)


# -- publishing over MQTT ------------------------------------------------------------------------


def _at_least(get: Callable[[], int], n: int) -> bool:
    return get() >= n


def publish(sim: BakerySim, host: str, port: int, *, end_ms: int | None = None, speed: float = 0.0,
            stop: threading.Event | None = None, client_id: str = "contoso-bakery-sim",
            username: str | None = None, password: str | None = None, tls: Mapping[str, Any] | None = None,
            on_message: Callable[[int, str, bytes], None] | None = None, timeout_s: float = 60.0,
            protocol: str = "3.1.1", live: bool = False) -> int:
    """Publish the simulation's messages with QoS 1; returns how many the broker acknowledged.

    ``speed`` is event time per wall time (``60`` = an hour a minute); ``0`` = as fast as the
    broker takes them. ``live``: never publish a message before the wall clock reaches its time
    (history plays at ``speed`` up to now, then real time, as a real line does). Returns after
    ``end_ms`` or when ``stop`` is set, once the broker has acknowledged every message published
    (or ``timeout_s`` passed). ``protocol``: ``"3.1.1"``
    (any broker, amqtt included) or ``"5"``. A refused connection raises ``ConnectionError``.
    """
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    version = MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(**tls)
    acked = 0
    lock = threading.Lock()
    done = threading.Condition(lock)

    def on_publish(c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        nonlocal acked
        with done:
            acked += 1
            done.notify_all()

    connected = threading.Event()
    refused: list[str] = []

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client.on_publish = on_publish
    client.on_connect = on_connect
    client.connect(host, port, 30)
    client.loop_start()
    if not connected.wait(timeout_s) or refused:
        client.disconnect()
        client.loop_stop()
        msg = f"MQTT broker {host}:{port} refused the simulator: {refused[0] if refused else 'no CONNACK'}"
        raise ConnectionError(msg)
    sent = 0
    wall0 = time.monotonic()
    try:
        for ts, topic, payload in sim.messages(end_ms):
            if stop is not None and stop.is_set():
                break
            if speed > 0 or live:
                lag = (ts - sim.start_ms) / speed / 1000.0 - (time.monotonic() - wall0) if speed > 0 else 0.0
                if live:
                    lag = max(lag, (ts - time.time() * 1000) / 1000.0)
                if lag > 0:
                    if stop is not None:
                        if stop.wait(lag):
                            break
                    else:
                        time.sleep(lag)
            client.publish(topic, payload, qos=1)
            sent += 1
            if on_message is not None:
                on_message(ts, topic, payload)
            if sent % 5000 == 0:
                with done:  # keep paho's queue bounded
                    done.wait_for(partial(_at_least, lambda: acked, sent - 5000), timeout=timeout_s)
        with done:
            done.wait_for(lambda: acked >= sent, timeout=timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return acked


def start_bakery_pipeline(kafka_conf: Mapping[str, Any], mqtt_host: str, mqtt_port: int, *, seed: int = 1,
                          speed: float = 60.0, machines: int = 15, workdir: str | Path = ".plantstream",
                          start_ms: int | None = None, protocol: str = "3.1.1") -> Callable[[], Path]:
    """Run the bakery simulator publishing to MQTT and the MQTT connector into Kafka, in threads.

    The demo's entry point: returns ``stop()``, which stops both, writes the ground truth to
    ``workdir/bakery-ground-truth.jsonl`` and returns that path.
    """
    from plantstream.connectors.mqtt import MqttConnector

    workdir = Path(workdir)
    cfg = bakery_config(machines, mqtt={"host": mqtt_host, "port": mqtt_port, "protocol": protocol},
                        producer={"spool_dir": str(workdir / "spool")})
    connector = MqttConnector(cfg, kafka_conf).start()
    now = int(time.time() * 1000) if start_ms is None else start_ms
    sim = BakerySim(seed=seed, start_ms=now, machines=machines)
    stop_ev = threading.Event()
    thread = threading.Thread(target=publish, args=(sim, mqtt_host, mqtt_port),
                              kwargs={"speed": speed, "stop": stop_ev, "protocol": protocol},
                              name="bakery-sim", daemon=True)
    thread.start()

    def stop() -> Path:
        stop_ev.set()
        thread.join(timeout=30)
        connector.stop()
        return sim.write_ground_truth(workdir / "bakery-ground-truth.jsonl")

    return stop
