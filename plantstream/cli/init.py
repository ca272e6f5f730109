"""``plantstream init`` (a starter plant config from a live plant) and ``plantstream config check``.

``init --opcua ENDPOINT`` browses the server (:func:`~plantstream.connectors.discover.browse_opcua`):
a folder whose variables look like a machine's becomes a machine, the folder above it a line;
each variable's canonical metric is guessed from its name, data type and engineering units
(:func:`guess_metric`); a multi-state variable's ``EnumStrings``/``EnumValues`` become the
state map, and a fault-code variable's ``EnumValues`` the ``losses.fault_codes``. ``init --mqtt
HOST:PORT --topic '#' --listen 30`` samples the broker
(:func:`~plantstream.connectors.discover.sample_mqtt`): the payload format of each topic, its
fields, and machines and lines from the topic levels. Whatever cannot be placed is written
commented out with the reason (and left out of the subscription), so the file passes ``config
check`` and runs with ``plantstream run`` as it is.

``config check FILE`` validates a config (every error names the field and the fix) and prints
its sources, its machines, and what each source tag maps to.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer

from plantstream.cli.common import stderr, stdout
from plantstream.cli.output import emit
from plantstream.schemas.config import load_config, load_config_text
from plantstream.schemas.errors import ConfigError
from plantstream.schemas.measurement import STATES
from plantstream.schemas.oee_config import CATEGORIES

# -- names, units and states -------------------------------------------------------------------

_F_TO_C = {"scale": 5 / 9, "offset": -160 / 9}
_STATE_WORDS: dict[str, tuple[str, ...]] = {
    "running": (
        "running",
        "run",
        "production",
        "producing",
        "execute",
        "executing",
        "auto",
        "automatic",
        "working",
        "operating",
        "cycling",
    ),
    "idle": ("idle", "waiting", "starved", "blocked", "ready", "standby", "hold"),
    "fault": ("fault", "faulted", "error", "alarm", "down", "failure", "breakdown", "aborted", "emergency"),
    "setup": ("setup", "set_up", "changeover", "tooling", "adjusting"),
    "planned_stop": ("planned_stop", "planned", "break", "maintenance", "sanitation", "cleaning", "pause"),
    "off": ("off", "power_off", "poweroff", "shutdown", "stopped", "not_scheduled", "offline"),
}
COMMON_STATE_CODES = {
    "0": "off",
    "1": "running",
    "2": "idle",
    "3": "fault",
    "4": "setup",
    "5": "planned_stop",
}
"""The integer convention assumed for a state tag whose server names no states (check it)."""


def snake(name: str) -> str:
    """A tag or field name as snake case.

    >>> snake("PartCountGood"), snake("Vibration_Velocity_mms"), snake("oil-temp F")
    ('part_count_good', 'vibration_velocity_mms', 'oil_temp_f')
    """
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


def slug(name: str) -> str:
    """A machine or line id from a folder or topic level.

    >>> slug("Press 01"), slug("Channel1"), slug("seattle-fryer-1")
    ('press-01', 'channel1', 'seattle-fryer-1')
    """
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unnamed"


def state_of(name: str) -> str | None:
    """The canonical state a state's name means, or None.

    >>> state_of("Running"), state_of("Changeover"), state_of("E-Stop active")
    ('running', 'setup', None)
    """
    s = snake(name)
    if s in STATES:
        return s
    for state, words in _STATE_WORDS.items():
        if s in words or any(part in words for part in s.split("_") if len(s.split("_")) <= 2):
            return state
    return None


_UNIT_WORDS = {
    "c": "degC",
    "degc": "degC",
    "°c": "degC",
    "celsius": "degC",
    "f": "degF",
    "degf": "degF",
    "°f": "degF",
    "fahrenheit": "degF",
    "mm/s": "mm/s",
    "mms": "mm/s",
    "rpm": "rpm",
    "r/min": "rpm",
    "ms": "ms",
    "s": "s",
    "bar": "bar",
    "psi": "psi",
    "kw": "kW",
    "w": "W",
    "%": "%",
    "pct": "%",
    "g": "g",
    "kg": "kg",
    "count": "count",
}


def unit_of(unit: str, name: str) -> str:
    """The unit from the engineering units, else from the name's last word.

    >>> unit_of("°C", "Temperature"), unit_of("", "oil_temp_f"), unit_of("", "Vibration_Velocity_mms")
    ('degC', 'degF', 'mm/s')
    """
    u = unit.strip().lower()
    if u in _UNIT_WORDS:
        return _UNIT_WORDS[u]
    if u:
        return unit.strip()
    last = snake(name).rsplit("_", 1)[-1]
    return _UNIT_WORDS.get(last, "") if "_" in snake(name) else ""


_STRIP = re.compile(r"_(c|f|degc|degf|mms|rpm|ms|s|pct|bar|psi|kw|w|g|kg|x10)$")


@dataclass
class Guess:
    """A proposed tag mapping (``metric`` None: not placed, ``reason`` says why)."""

    metric: str | None
    unit: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    note: str = ""


def _has(s: str, *words: str) -> bool:
    parts = s.split("_")
    return any(w in parts or (len(w) > 4 and w in s) for w in words)


def guess_metric(name: str, unit: str = "", data_type: str = "", sample: Any = None) -> Guess:
    """The canonical metric a tag probably is, from its name, engineering unit and data type.

    >>> guess_metric("PartCountGood", "", "Int64").metric, guess_metric("MachineState", "", "Int32").metric
    ('good_count', 'machine_state')
    >>> g = guess_metric("oil_temp_f", "", "Double"); g.metric, round(g.extra["scale"], 4)
    ('oil_temperature_c', 0.5556)
    >>> guess_metric("ToolID", "", "Int32").reason
    "no canonical metric for 'ToolID' (an identifier or setting, not a signal); map it by hand if it matters"
    """
    s = snake(name)
    u = unit_of(unit, name)
    numeric = data_type in (
        "Double",
        "Float",
        "Int16",
        "Int32",
        "Int64",
        "UInt16",
        "UInt32",
        "UInt64",
        "Byte",
        "SByte",
        "number",
    ) or (isinstance(sample, int | float) and not isinstance(sample, bool))
    if _has(s, "reason"):
        return Guess("scrap_reason" if _has(s, "scrap", "waste", "reject") else "reason_code")
    if _has(s, "fault", "alarm", "error") and not _has(s, "count"):
        return Guess("fault_code")
    if _has(s, "state", "status", "mode"):
        return Guess("machine_state")
    if _has(s, "part_number", "partnumber", "product", "article", "sku") or s in ("part", "part_no"):
        return Guess("part_number")
    if _has(s, "work_order", "workorder", "order"):
        return Guess("work_order")
    if _has(s, "operator"):
        return Guess("operator_id")
    if _has(s, "good") and numeric:
        return Guess("good_count", "count")
    if _has(s, "reject", "scrap", "waste", "bad", "nok") and numeric:
        return Guess("reject_count", "count")
    if _has(s, "cycle") and _has(s, "time"):
        scale = {"s": 1000.0}.get(u)
        extra = {"scale": scale} if scale else {}
        if _has(s, "target", "ideal", "nominal", "set", "setpoint", "standard"):
            return Guess("ideal_cycle_time_ms", "ms", extra)
        return Guess("cycle_time_ms", "ms", extra)
    if _has(s, "cycle", "total", "counter") and _has(s, "count", "counter") and numeric:
        return Guess("total_count", "count")
    if not numeric:
        return Guess(
            None,
            reason=f"no canonical metric for {name!r} (a {data_type or 'non-numeric'} value "
            "that is neither state, reason, part nor order); map it by hand if it matters",
        )
    if _has(s, "id", "identifier", "number", "no", "serial", "index") and u == "":
        return Guess(
            None,
            reason=f"no canonical metric for {name!r} (an identifier or setting, not a signal); "
            "map it by hand if it matters",
        )
    base = _STRIP.sub("", s)
    if _has(s, "temp", "temperature"):
        extra = dict(_F_TO_C) if u == "degF" else {}
        note = "converted from °F" if u == "degF" else ""
        if _has(s, "ambient"):
            return Guess("ambient_temperature_c", "degC", extra, note=note)
        if _has(s, "oil"):
            metric = (
                "oil_temperature_target_c" if _has(s, "target", "setpoint", "set") else "oil_temperature_c"
            )
            return Guess(metric, "degC", extra, note=note)
        prefix = re.sub(r"_?(temp|temperature)(_.*)?$", "", base)
        return Guess(f"{prefix}_temperature_c" if prefix else "temperature_c", "degC", extra, note=note)
    if _has(s, "vibration", "vib"):
        return Guess("vibration_rms_mms", "mm/s")
    if _has(s, "spindle") and (_has(s, "speed", "rpm") or u == "rpm"):
        return Guess("spindle_speed_rpm", "rpm")
    if _has(s, "pressure"):
        extra = {"scale": 0.0689476} if u == "psi" else {"scale": 0.1} if s.endswith("_x10") else {}
        return Guess(
            "pressure_bar"
            if base == "pressure"
            else f"{base.replace('pressure', '').strip('_')}_pressure_bar"
            if base.replace("pressure", "").strip("_")
            else "pressure_bar",
            "bar",
            extra,
        )
    if _has(s, "power") or u in ("kW", "W"):
        return Guess("power_kw", "kW", {"scale": 0.001} if u == "W" else {})
    suffix = {
        "%": "pct",
        "rpm": "rpm",
        "degC": "c",
        "mm/s": "mms",
        "bar": "bar",
        "g": "g",
        "kg": "kg",
        "ms": "ms",
        "s": "s",
    }.get(u, "")
    metric = f"{base}_{suffix}" if suffix and not base.endswith(suffix) else base
    return Guess(metric, u, note="a condition signal (monitored for anomalies while the machine runs)")


# -- the proposal --------------------------------------------------------------------------------


@dataclass
class Proposal:
    """What ``init`` writes: machines per line, tag mappings, unplaced tags, fault codes, sources."""

    site: str
    lines: dict[str, list[str]] = field(default_factory=dict)
    tags: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    unplaced: dict[str, str] = field(default_factory=dict)
    """source tag → why it was not placed."""
    fault_codes: dict[str, dict[str, str]] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    covers: dict[str, set[str]] = field(default_factory=dict)
    """machine → the canonical metrics its mapped tags give."""
    unplaced_of: dict[str, str] = field(default_factory=dict)
    """unplaced source tag → the machine it belongs to, where known."""
    pattern_only: dict[str, dict[str, str]] = field(default_factory=dict)
    """machine → {metric: tag pattern}: a pattern maps it, but the machine did not send the field
    while ``init`` listened."""

    def machine(self, line: str, machine: str) -> None:
        ms = self.lines.setdefault(line, [])
        if machine not in ms:
            ms.append(machine)

    def cover(self, machine: str, metric: str) -> None:
        """Note that a mapped tag gives ``machine`` the canonical ``metric``."""
        self.covers.setdefault(machine, set()).add(metric)

    def stateless(self) -> dict[str, str]:
        """Machines no tag gives a ``machine_state`` → what to map (no availability, so no OEE)."""
        out = {}
        for machines in self.lines.values():
            for m in machines:
                if "machine_state" in self.covers.get(m, set()):
                    continue
                candidates = [t for t, owner in self.unplaced_of.items() if owner == m]
                pattern = self.pattern_only.get(m, {}).get("machine_state")
                if pattern is not None:
                    out[m] = (
                        f"no machine_state seen from machine {m!r} while init listened: {pattern} maps "
                        "it when it comes (a flat payload sends what changed; listen longer with --listen "
                        "to check); if it never sends one, plantstream cannot tell when it runs, so it "
                        "gets no availability and no OEE"
                    )
                    continue
                out[m] = (
                    f"no machine_state tag for machine {m!r}: plantstream cannot tell when it runs, "
                    "so it gets no availability and no OEE (its counts and signals are kept); map the "
                    "tag that says whether it runs (a state or status code, a running flag) as "
                    "metric: machine_state with states: for its codes"
                    + (f" — not placed, maybe one of: {', '.join(candidates[:5])}" if candidates else "")
                )
        return out


def _states_from_names(names: Mapping[str, str], tag: str, proposal: Proposal) -> dict[str, str]:
    states: dict[str, str] = {}
    unknown = []
    for raw, name in names.items():
        st = state_of(name)
        if st is None:
            unknown.append(f"{raw}={name}")
        else:
            states[raw] = st
    if unknown:
        proposal.notes[tag] = (
            f"state names not understood: {', '.join(unknown)} (dead-lettered as unmapped "
            "until you add them to states)"
        )
    else:
        proposal.notes[tag] = "states from the server's state names"
    return states


def propose_opcua(variables: list[Any], endpoint: str, *, site: str = "plant") -> Proposal:
    """Machines, lines, tags and fault codes from a browsed OPC UA server (see the module doc)."""
    p = Proposal(site=site)
    tops: dict[str, int] = {}
    ignore: list[str] = []
    depth = 1
    for v in variables:
        folders = v.folders
        if not folders:
            p.unplaced[v.tag] = "a variable directly under Objects, not in a machine's folder"
            ignore.append(v.tag)
            continue
        machine = slug(folders[-1])
        line = slug(folders[-2]) if len(folders) >= 2 else "line-1"
        tops.setdefault(v.path[0][1], v.path[0][0])
        depth = max(depth, len(v.path))
        g = guess_metric(v.name, v.unit, v.data_type, v.value)
        if g.metric is None:
            p.unplaced[v.tag] = g.reason
            p.unplaced_of[v.tag] = machine
            ignore.append(v.tag)
            continue
        p.machine(line, machine)
        p.cover(machine, g.metric)
        entry: dict[str, Any] = {"machine": machine, "metric": g.metric}
        if g.unit:
            entry["unit"] = g.unit
        entry.update(g.extra)
        if g.note:
            p.notes[v.tag] = g.note
        if v.eu_range is not None and g.metric not in ("machine_state",):
            p.notes[v.tag] = (
                p.notes.get(v.tag, "")
                + f"; EURange {v.eu_range[0]:g}..{v.eu_range[1]:g}"
                + (f" {v.unit}" if v.unit else "")
            ).lstrip("; ")
        if g.metric == "machine_state":
            if v.enum_strings:
                entry["states"] = _states_from_names(
                    {str(i): n for i, n in enumerate(v.enum_strings) if n}, v.tag, p
                )
            elif v.enum_values:
                entry["states"] = _states_from_names(
                    {str(k): n for k, (n, _) in v.enum_values.items()}, v.tag, p
                )
            elif v.data_type not in ("String",):
                entry["states"] = dict(COMMON_STATE_CODES)
                p.notes[v.tag] = (
                    "the server names no states: assumed 0 off, 1 running, 2 idle, 3 fault, 4 setup, "
                    "5 planned_stop; check against the PLC's documentation"
                )
        if g.metric == "fault_code" and v.enum_values:
            for code, (name, desc) in v.enum_values.items():
                if code == 0:
                    continue
                p.fault_codes[str(code)] = {
                    "reason": snake(name) or str(code),
                    "category": desc if desc in CATEGORIES else "unassigned",
                }
        p.tags[v.tag] = entry
    browse = [f"0:Objects/{ns}:{name}" for name, ns in tops.items()]
    host = urlparse(endpoint).hostname or "opcua"
    p.sources.append(
        {
            "name": f"opcua-{slug(host)}",
            "opcua": {
                "endpoint": endpoint,
                "browse": browse,
                "browse_depth": max(2, depth),
                "ignore": ignore,
            },
        }
    )
    p.header.append(
        f"browsed {endpoint}: {len(variables)} variables, "
        f"{sum(len(m) for m in p.lines.values())} machines on {len(p.lines)} lines"
    )
    return p


def propose_mqtt(
    samples: Mapping[str, Any], host: str, port: int, topic: str, *, site: str = "plant"
) -> Proposal:
    """Machines, lines and tags from sampled MQTT topics (see the module doc).

    A topic whose payload is a JSON object of fields (``flat``) gives one machine (its last
    level) on a line (the level above); the tag dictionary gets one pattern per field with
    ``{machine}`` and ``{line}`` placeholders when the topics have the same depth. KEPServerEX
    IoT Gateway messages (``kepware``) and one-value topics (``scalar``) give a tag per id or
    topic, the machine from the id's or topic's second-to-last part.
    """
    from plantstream.connectors.discover import read_sparkplug
    from plantstream.connectors.mqtt import parse_payload
    from plantstream.connectors.sparkplug import NAMESPACE

    p = Proposal(site=site)
    formats: Counter[str] = Counter()
    fields: dict[str, dict[str, Any]] = {}  # field -> sample value
    flat_topics: list[list[str]] = []
    fields_of: dict[tuple[str, ...], set[str]] = {}  # flat topic levels -> the fields it sent
    spb = {t: s for t, s in samples.items() if t.startswith(f"{NAMESPACE}/")}
    if spb:
        formats["sparkplug"] = len(spb)
        _propose_sparkplug(read_sparkplug(spb), p, list(getattr(samples, "rebirths_requested", [])))
    for t, sample in sorted(samples.items()):
        if t in spb:
            continue
        payloads = sample.payloads
        if not payloads:
            continue
        fmt = _format_of(payloads[-1])
        if fmt is None:
            p.unplaced[t] = "payload is neither JSON nor a number"
            continue
        formats[fmt] += 1
        levels = t.split("/")
        if fmt == "flat":
            flat_topics.append(levels)
            for raw in sample.sampled:  # the telling earlier payloads too: flat sends what changed
                parsed = parse_payload(t, raw, "flat", 0)
                for tag, value, _, _ in parsed.samples:
                    fields_of.setdefault(tuple(levels), set()).add(tag.split("#", 1)[1])
                    fields.setdefault(tag.split("#", 1)[1], {"values": set()})["values"].add(
                        value if isinstance(value, int | float | str | bool) else str(value)
                    )
        else:
            for raw in payloads[-1:]:
                for tag, value, _, _ in parse_payload(t, raw, fmt, 0).samples:
                    parts = re.split(r"[./]", tag)
                    if len(parts) < 2:
                        p.unplaced[tag] = "a tag without a machine level (Device.Tag)"
                        continue
                    machine, line = slug(parts[-2]), slug(parts[-3]) if len(parts) >= 3 else "line-1"
                    g = guess_metric(parts[-1], "", "", value)
                    if g.metric is None:
                        p.unplaced[tag] = g.reason
                        p.unplaced_of[tag] = machine
                        continue
                    p.machine(line, machine)
                    p.cover(machine, g.metric)
                    p.tags[tag] = _entry(machine, g, tag, p, {value})
    if flat_topics:
        depths = Counter(len(levels) for levels in flat_topics)
        depth = depths.most_common(1)[0][0]
        same = [lv for lv in flat_topics if len(lv) == depth]
        for levels in same:
            p.machine(slug(levels[-2]) if depth >= 2 else "line-1", slug(levels[-1]))
        fixed = [i for i in range(depth) if len({lv[i] for lv in same}) == 1]
        pattern_levels = []
        for i in range(depth):
            if i == depth - 1:
                pattern_levels.append("{machine}")
            elif i == depth - 2:
                pattern_levels.append("{line}")
            elif i in fixed:
                pattern_levels.append(same[0][i])
            else:
                pattern_levels.append(f"{{level{i}}}")
        base = "/".join(pattern_levels)
        for name, info in sorted(fields.items()):
            key = f"{base}#{name}"
            values = info["values"]
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            g = guess_metric(name, "", "number" if numeric else "String", next(iter(values), None))
            if g.metric is None:
                p.unplaced[key] = g.reason
                continue
            entry = _entry("{machine}", g, key, p, values)
            entry["line"] = "{line}"
            p.tags[key] = entry
            for levels in same:
                if name in fields_of.get(tuple(levels), set()):
                    p.cover(slug(levels[-1]), g.metric)
                else:  # flat payloads send what changed: the field may just not have come yet
                    p.pattern_only.setdefault(slug(levels[-1]), {}).setdefault(g.metric, key)
        for levels in flat_topics:
            if len(levels) != depth:
                p.unplaced["/".join(levels)] = f"topic depth {len(levels)} differs from the common {depth}"
    if set(formats) == {"sparkplug"} and not topic.startswith(f"{NAMESPACE}/"):
        topic = f"{NAMESPACE}/#"  # only Sparkplug B seen: subscribe to it alone
    subs = [{"topic": topic, "format": formats.most_common(1)[0][0] if len(formats) == 1 else "auto"}]
    mqtt: dict[str, Any] = {"host": host, "port": port, "subscriptions": subs}
    if getattr(samples, "mqtt5", None) is False:
        mqtt["protocol"] = "3.1.1"  # the broker refused MQTT 5, the connector's default
    p.sources.append({"name": f"mqtt-{slug(host)}", "mqtt": mqtt})
    p.header.append(
        f"sampled mqtt://{host}:{port} topic {topic!r}: {len(samples)} topics "
        f"({', '.join(f'{n} {f}' for f, n in formats.items()) or 'none'}), "
        f"{sum(len(m) for m in p.lines.values())} machines on {len(p.lines)} lines"
    )
    return p


_SP_NUMERIC = frozenset(
    {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float", "Double"}
)
_SP_TEXT = frozenset({"String", "Text", "UUID"})


def _sp_guess(name: str, data_type: str, values: list[Any]) -> Guess:
    """The canonical metric of a Sparkplug B metric, from its name and birth data type."""
    sample = next(iter(values), None)
    if data_type == "Boolean":
        if state_of(name.rsplit("/", 1)[-1]) == "running":
            return Guess(
                "machine_state",
                extra={"states": {"1": "running", "0": "idle"}},
                note="a running flag: false is counted as idle (an unplanned stop); "
                "say off or planned_stop under states if false means switched off",
            )
        return Guess(
            None,
            reason=f"a Boolean metric {name!r} (no canonical metric is a flag); map it by hand, e.g. "
            'as machine_state with states {"1": "running", "0": "idle"} if it tells the machine runs',
        )
    if data_type in _SP_NUMERIC:
        return guess_metric(name, "", "number", sample)
    if data_type in _SP_TEXT:
        return guess_metric(name, "", "String", sample)
    if data_type == "Unknown":  # named data of a node whose birth was not seen
        return guess_metric(name, "", "", sample)
    return Guess(
        None,
        reason=f"a {data_type} metric {name!r}: plantstream measures numbers and texts; map a "
        "numeric or text metric instead",
    )


def _sp_safe(name: str) -> bool:
    """A Sparkplug id a ``{placeholder}`` matches and that is already a machine/line id."""
    return slug(name) == name


def _propose_sparkplug(things: list[Any], p: Proposal, rebirths: list[str]) -> None:
    """Machines and tags from Sparkplug B births (:func:`~plantstream.connectors.discover.read_sparkplug`).

    Each device is a machine on the line named by its edge node; an edge node's own metrics
    (``NBIRTH``) make the node a machine on the line named by its group. Metric names and
    data types come from the births, and the canonical metric from the same rules as every
    other source (:func:`guess_metric`). When every group is one and the node and device ids
    are already ids, the tags are patterns (``spBv1.0/<group>/{line}/{machine}#<metric>``)
    shared by the devices that send that metric; otherwise one exact key per device and metric.
    """
    from plantstream.connectors.sparkplug import NAMESPACE

    groups = {t.group for t in things}
    one_group = next(iter(groups)) if len(groups) == 1 else None
    shared: dict[tuple[str, str], list[tuple[Any, Any]]] = {}  # (pattern base, metric name) → uses
    for t in things:
        if not t.metrics and not t.unknown_aliases:
            continue
        machine = slug(t.device or t.node)
        line = slug(t.node if t.device else t.group)
        if t.unknown_aliases or not t.born:
            why = (
                "data without a birth: the edge node did not answer the rebirth request while init listened"
                if f"{t.group}/{t.node}" in rebirths
                else "data without a birth"
            )
            p.unplaced[t.where] = (
                f"{why}; metrics known by alias only: {', '.join(map(str, sorted(t.unknown_aliases)))} "
                "(listen longer, or restart the edge node, so that its birth names them)"
                if t.unknown_aliases
                else f"{why}; its named metrics are proposed from their values"
            )
        if not t.metrics:
            continue
        pattern = (
            one_group is not None
            and _sp_safe(machine if t.device else t.node)
            and (t.device is None or _sp_safe(t.node))
            and (t.device is None or _sp_safe(t.device))
        )
        if pattern:
            base = f"{NAMESPACE}/{one_group}/" + ("{line}/{machine}" if t.device else "{machine}")
            for name, m in t.metrics.items():
                shared.setdefault((base, name), []).append((t, m))
            continue
        for name, m in t.metrics.items():
            key = f"{t.where}#{name}"
            g = _sp_guess(name, m.data_type, m.values)
            if g.metric is None:
                p.unplaced[key] = g.reason
                p.unplaced_of[key] = machine
                continue
            p.machine(line, machine)
            p.cover(machine, g.metric)
            p.tags[key] = {**_entry(machine, g, key, p, m.values), "line": line}
    for (base, name), uses in shared.items():
        key = f"{base}#{name}"
        data_type = next((m.data_type for _, m in uses if m.data_type != "Unknown"), "Unknown")
        values = [v for _, m in uses for v in m.values]
        g = _sp_guess(name, data_type, values)
        if g.metric is None:
            p.unplaced[key] = g.reason
            continue
        for t, _ in uses:
            p.machine(slug(t.node if t.device else t.group), slug(t.device or t.node))
            p.cover(slug(t.device or t.node), g.metric)
        entry = _entry("{machine}", g, key, p, values)
        entry["line"] = "{line}" if "{line}" in base else slug(one_group or "")
        p.tags[key] = entry
    nodes = {(t.group, t.node) for t in things}
    devices = [t for t in things if t.device]
    p.header.append(
        f"Sparkplug B: {len(nodes)} edge nodes, {len(devices)} devices, births seen for "
        f"{sum(t.born for t in things)} of {len(things)}"
        + (f"; asked {', '.join(rebirths)} for a rebirth" if rebirths else "")
    )


def _entry(machine: str, g: Any, key: str, p: Proposal, values: Iterable[Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"machine": machine, "metric": g.metric}
    if g.unit:
        entry["unit"] = g.unit
    entry.update(g.extra)
    if g.note:
        p.notes[key] = g.note
    if g.metric == "machine_state" and "states" not in entry:
        seen = sorted({str(v) for v in values})
        if seen and not all(v.lstrip("-").isdigit() for v in seen):
            entry["states"] = _states_from_names({v: v for v in seen}, key, p)
        else:
            entry["states"] = dict(COMMON_STATE_CODES)
            p.notes[key] = (
                f"integer states (seen {', '.join(seen) or 'none'}): assumed 0 off, 1 running, 2 idle, "
                "3 fault, 4 setup, 5 planned_stop; check against the source's documentation"
            )
    return entry


def _format_of(payload: bytes) -> str | None:
    import orjson

    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        if isinstance(obj.get("values"), list):
            return "kepware"
        if "value" in obj and len(obj) <= 3:
            return "scalar"
        return "flat"
    return "scalar"


def render(p: Proposal) -> str:
    """The proposal as plant-config YAML, with comments (JSON flow mappings are YAML)."""
    out = [
        "# plantstream plant config written by `plantstream init` — review, then:",
        "#   plantstream config check plant.yaml && plantstream run --config plant.yaml",
        *(f"# {h}" for h in p.header),
        f"site: {json.dumps(p.site)}",
        "timezone: UTC",
        '# shifts: [{name: day, start: "06:00", end: "14:00", breaks: [{start: "10:00", minutes: 30}]}]',
        "#   without shifts every hour is scheduled (see docs/oee.md)",
        "lines:",
    ]
    stateless = p.stateless()
    if stateless:
        out.insert(
            3 + len(p.header),
            f"# WARNING: {len(stateless)} machines without a machine_state seen (no OEE for them): "
            f"{', '.join(stateless)}; see the WARNING at each",
        )
    for line, machines in p.lines.items():
        out.append(f"  - id: {json.dumps(line)}")
        out.append("    machines:")
        for m in machines:
            if m in stateless:
                out.append(f"      # WARNING: {stateless[m]}")
            out.append(
                f"      - {{id: {json.dumps(m)}}}   # ideal_cycle_time_ms: set it unless a tag sends it"
            )
    if not p.lines:
        out[-1] = "lines: []"
    if p.fault_codes:
        out += [
            "losses:",
            "  fault_codes:   # from the server's fault-code names (reason) and descriptions (category)",
        ]
        out += [f"    {json.dumps(code)}: {json.dumps(v)}" for code, v in p.fault_codes.items()]
    out.append("tags:" if p.tags else "tags: {}")
    for tag, entry in p.tags.items():
        note = p.notes.get(tag)
        out.append(f"  {json.dumps(tag)}: {json.dumps(entry)}" + (f"   # {note}" if note else ""))
    if p.unplaced:
        out.append("  # not placed (left out of the subscription; map them by hand to use them):")
        out += [f"  # {json.dumps(tag)}: {{}}   # {why}" for tag, why in p.unplaced.items()]
    if len(p.sources) == 1:  # the single form: plantstream run and the Helm chart's connectors read it
        kind = "opcua" if "opcua" in p.sources[0] else "mqtt"
        out.append("# the source (add more OPC UA servers and MQTT brokers as a sources: list, docs/cli.md)")
        out.append(f"{kind}: {json.dumps(p.sources[0][kind])}")
    else:
        out.append("sources:")
        out += [f"  - {json.dumps(src)}" for src in p.sources]
    return "\n".join(out) + "\n"


# -- commands --------------------------------------------------------------------------------------


def init(
    opcua: Annotated[
        str | None, typer.Option("--opcua", help="Browse this OPC UA endpoint (opc.tcp://…).")
    ] = None,
    mqtt: Annotated[str | None, typer.Option("--mqtt", help="Sample this MQTT broker, HOST:PORT.")] = None,
    topic: Annotated[str, typer.Option("--topic", help="MQTT topic filter to sample.")] = "#",
    listen: Annotated[float, typer.Option("--listen", help="Seconds to sample MQTT.", min=1.0)] = 30.0,
    site: Annotated[str, typer.Option("--site", help="The site name to write.")] = "plant",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: standard output).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --output if it exists.")] = False,
) -> None:
    """Write a starter plant config from a live OPC UA server or MQTT broker."""
    from plantstream.connectors.discover import browse_opcua, sample_mqtt

    if (opcua is None) == (mqtt is None):
        msg = "--opcua ENDPOINT or --mqtt HOST:PORT: give exactly one"
        raise typer.BadParameter(msg)
    if output is not None and output.exists() and not force:
        msg = f"--output {output} exists; pass --force to overwrite it"
        raise ConfigError(msg)
    err = stderr()
    if opcua is not None:
        err.print(f"browsing {opcua} …")
        proposal = propose_opcua(browse_opcua(opcua), opcua, site=site)
    else:
        assert mqtt is not None
        host, _, port_text = mqtt.rpartition(":")
        if not host or not port_text.isdigit():
            msg = f"--mqtt {mqtt!r}: give HOST:PORT, e.g. broker.plant.local:1883"
            raise typer.BadParameter(msg)
        err.print(f"listening to mqtt://{host}:{port_text} {topic!r} for {listen:g}s …")
        samples = sample_mqtt(host, int(port_text), topic, listen)
        proposal = propose_mqtt(samples, host, int(port_text), topic, site=site)
    text = render(proposal)
    load_config_text(text)  # what init writes must load as it is
    if output is None:
        stdout().out(text, end="", highlight=False)
    else:
        output.write_text(text, encoding="utf-8")
    for line in proposal.header:
        err.print(line)
    for why in proposal.stateless().values():
        err.print(f"warning: {why}", markup=False, highlight=False)
    err.print(
        f"{len(proposal.tags)} tags mapped, {len(proposal.unplaced)} not placed (commented out)"
        + (f"; written to {output}" if output else "")
    )


def config_check(
    file: Annotated[Path, typer.Argument(help="The plant config YAML to check.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")] = "table",
) -> None:
    """Validate a plant config and print its sources, machines and what each source tag maps to."""
    from plantstream.cli.output import check_format
    from plantstream.flows.registry import check_config, select

    check_format(fmt)
    cfg = load_config(file)
    check_config(cfg, select(None))  # each flow's own section
    out = stdout()
    sources = cfg.source_list()
    if fmt == "table":
        out.print(
            f"{file}: valid — site {cfg.site}, {len(cfg.lines)} lines, "
            f"{sum(len(ln.machines) for ln in cfg.lines)} machines, {len(sources)} sources, "
            f"{len(cfg.tags)} tag entries",
            markup=False,
            highlight=False,
        )
        for s in sources:
            out.print(f"source {s.name}: {s.kind} {s.describe()}", markup=False, highlight=False)
    rows = []
    machines = {m.id for ln in cfg.lines for m in ln.machines}
    for tag, t in cfg.tags.items():
        conv = []
        if t.scaled:
            conv.append(f"x{t.scale:g}{t.offset:+g}")
        if t.metric == "machine_state":
            conv.append(" ".join(f"{k}={v}" for k, v in t.state_map().items()))
        known = "{" in t.machine or t.machine in machines
        rows.append(
            [
                tag,
                t.machine,
                t.line or "",
                t.metric,
                t.unit,
                "; ".join(conv),
                "" if known else "machine not in lines: (unconfigured)",
            ]
        )
    emit(["source tag", "machine", "line", "metric", "unit", "conversion", "warning"], rows, fmt)
