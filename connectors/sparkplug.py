"""Sparkplug B over MQTT: topics, protobuf payloads, births, aliases, deaths and sequence gaps.

The MQTT connector (:mod:`plantstream.connectors.mqtt`) reads ``spBv1.0/#`` with this module:

Topics
    ``spBv1.0/<group>/<NBIRTH|NDATA|NDEATH|NCMD>/<edge node>`` and
    ``spBv1.0/<group>/<DBIRTH|DDATA|DDEATH|DCMD>/<edge node>/<device>``; ``STATE`` and the
    commands (``NCMD``, ``DCMD``, ours or another host's) are not data and are ignored.
Source tags
    ``spBv1.0/<group>/<edge node>#<metric name>`` for node metrics and
    ``spBv1.0/<group>/<edge node>/<device>#<metric name>`` for device metrics: the keys of the
    tag dictionary (``tags:``), exact or with ``{placeholders}`` for the group, node and device
    (a placeholder matches one segment without ``/``, ``.`` or ``#``).
Births and aliases
    ``NBIRTH`` / ``DBIRTH`` name every metric with its alias and data type; the connector keeps
    them per edge node and device and resolves the aliases of later ``NDATA`` / ``DDATA``
    metrics (which usually carry only an alias). A birth's values are samples too. An
    ``NBIRTH`` forgets everything known of the node and its devices (a rebirth).
    Sparkplug's own metrics (``bdSeq``, ``Node Control/…``, ``Device Control/…``,
    ``Properties/…``, ``Node Info/…``) are not mapped.
Deaths
    ``NDEATH`` (the edge node's MQTT will, or its clean goodbye) → ``machine_state`` ``off`` for
    every machine that a metric of the node or of its devices maps to, at the time the death
    was received (a will's own timestamp is when it was registered); only when its ``bdSeq``
    matches the ``NBIRTH``'s (an older session's will that arrives late is ignored).
    ``DDEATH`` → ``off`` for the device's machines, at the payload's timestamp.
Sequence numbers
    Every message of an edge node after its ``NBIRTH`` carries ``seq`` = the previous one + 1,
    wrapping 255 → 0. A gap (lost messages), or data from a node whose birth this connector
    has not seen (it started later), makes the connector publish a **rebirth request** to the
    node: ``NCMD`` with the boolean metric ``Node Control/Rebirth`` = true, at most once per
    ``mqtt.sparkplug.rebirth_interval_s`` until the ``NBIRTH`` arrives. Data received meanwhile
    is used as far as it can be: metrics resolved by name or by an alias of the last birth are
    samples as usual (the gap lost messages, not meaning; cumulative counters make up for
    missing increments); metrics whose alias is unknown are one dead letter per message.
Malformed payloads
    Not protobuf, or not a Sparkplug B payload (a birth without names, a DATA metric without
    name or alias, an unsupported data type such as DataSet or Template): dead letters with
    reasons starting ``sparkplug:``; the message is acknowledged like every MQTT message.

Why protobuf and a schema built here: the payload is the ``Payload`` message of the Sparkplug
B specification (Eclipse Tahu's ``sparkplug_b.proto``). Eclipse Tahu publishes no Python
package, the third-party ones (pysparkplug, mqtt-spb-wrapper, aiospb …) each bring their own
MQTT client, their own pins and generated ``_pb2`` modules tied to the protobuf version they
were generated with, and compiling the ``.proto`` at build time would put ``protoc`` into
every build. Google's ``protobuf`` runtime (maintained, ubiquitous) builds the message
classes from a descriptor declared below, field for field as the specification numbers them,
with no generated code: its ``descriptor_pool`` / ``message_factory`` API is the same across
protobuf 5 to 7. The fields plantstream does not read (metadata, data sets, templates) are
left out; protobuf keeps them as unknown fields.

Examples
--------
>>> p = new_payload(timestamp=1763791200000, seq=0)
>>> m = p.metrics.add(name="Temperature", alias=1, datatype=DATATYPES["Double"], double_value=61.5)
>>> q = decode_payload(p.SerializeToString())
>>> q.seq, q.metrics[0].name, metric_value(q.metrics[0], q.metrics[0].datatype)
(0, 'Temperature', 61.5)
>>> parse_topic("spBv1.0/line-1/DDATA/gw-1/press-01")
Topic(group='line-1', kind='DDATA', node='gw-1', device='press-01')
>>> decode_rebirth(rebirth_request(1763791200000))
True
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from plantstream.schemas.measurement import MAX_TS_MS, MIN_TS_MS

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
NODE_KINDS = frozenset({"NBIRTH", "NDATA", "NDEATH", "NCMD"})
DEVICE_KINDS = frozenset({"DBIRTH", "DDATA", "DDEATH", "DCMD"})
REBIRTH = "Node Control/Rebirth"
SEQ_MODULUS = 256

DATATYPES: dict[str, int] = {
    "Unknown": 0, "Int8": 1, "Int16": 2, "Int32": 3, "Int64": 4, "UInt8": 5, "UInt16": 6, "UInt32": 7,
    "UInt64": 8, "Float": 9, "Double": 10, "Boolean": 11, "String": 12, "DateTime": 13, "Text": 14,
    "UUID": 15, "DataSet": 16, "Bytes": 17, "File": 18, "Template": 19,
}
"""Sparkplug B data type numbers (``Metric.datatype``)."""
_NAMES = {v: k for k, v in DATATYPES.items()}
_SIGNED_BITS = {1: 8, 2: 16, 3: 32, 4: 64}
_CONTROL_PREFIXES = ("Node Control/", "Device Control/", "Properties/", "Node Info/")

# -- the schema ------------------------------------------------------------------------------------

_F = descriptor_pb2.FieldDescriptorProto
_U64, _U32, _STR, _BOOL, _BYTES = _F.TYPE_UINT64, _F.TYPE_UINT32, _F.TYPE_STRING, _F.TYPE_BOOL, _F.TYPE_BYTES
_FLOAT, _DOUBLE, _MSG = _F.TYPE_FLOAT, _F.TYPE_DOUBLE, _F.TYPE_MESSAGE
_PKG = "org.eclipse.tahu.protobuf"

# (message, [(field, number, type, repeated, message type or "", in the oneof "value")])
_SCHEMA: tuple[tuple[str, tuple[tuple[str, int, int, bool, str, bool], ...]], ...] = (
    ("Payload", (
        ("timestamp", 1, _U64, False, "", False),
        ("metrics", 2, _MSG, True, "Payload.Metric", False),
        ("seq", 3, _U64, False, "", False),
        ("uuid", 4, _STR, False, "", False),
        ("body", 5, _BYTES, False, "", False),
    )),
    ("Payload.PropertyValue", (
        ("type", 1, _U32, False, "", False),
        ("is_null", 2, _BOOL, False, "", False),
        ("int_value", 3, _U32, False, "", True),
        ("long_value", 4, _U64, False, "", True),
        ("float_value", 5, _FLOAT, False, "", True),
        ("double_value", 6, _DOUBLE, False, "", True),
        ("boolean_value", 7, _BOOL, False, "", True),
        ("string_value", 8, _STR, False, "", True),
    )),
    ("Payload.PropertySet", (
        ("keys", 1, _STR, True, "", False),
        ("values", 2, _MSG, True, "Payload.PropertyValue", False),
    )),
    ("Payload.Metric", (
        ("name", 1, _STR, False, "", False),
        ("alias", 2, _U64, False, "", False),
        ("timestamp", 3, _U64, False, "", False),
        ("datatype", 4, _U32, False, "", False),
        ("is_historical", 5, _BOOL, False, "", False),
        ("is_transient", 6, _BOOL, False, "", False),
        ("is_null", 7, _BOOL, False, "", False),
        ("properties", 9, _MSG, False, "Payload.PropertySet", False),
        ("int_value", 10, _U32, False, "", True),
        ("long_value", 11, _U64, False, "", True),
        ("float_value", 12, _FLOAT, False, "", True),
        ("double_value", 13, _DOUBLE, False, "", True),
        ("boolean_value", 14, _BOOL, False, "", True),
        ("string_value", 15, _STR, False, "", True),
        ("bytes_value", 16, _BYTES, False, "", True),
    )),
)


def _build_payload_class() -> type[Message]:
    fdp = descriptor_pb2.FileDescriptorProto(name="plantstream/sparkplug_b.proto", package=_PKG,
                                             syntax="proto2")
    payload = fdp.message_type.add(name="Payload")
    nested = {"Payload": payload}
    for name, fields in _SCHEMA:
        msg = nested.get(name)
        if msg is None:
            msg = payload.nested_type.add(name=name.split(".")[-1])
            nested[name] = msg
        oneof = None
        for fname, number, ftype, repeated, type_name, in_oneof in fields:
            f = msg.field.add(name=fname, number=number, type=ftype,
                              label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = f".{_PKG}.{type_name}"
            if in_oneof:
                if oneof is None:
                    msg.oneof_decl.add(name="value")
                    oneof = 0
                f.oneof_index = oneof
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PKG}.Payload"))


Payload = _build_payload_class()
"""The Sparkplug B ``Payload`` message class."""


def new_payload(**fields: Any) -> Any:
    """An empty (or initialised) Sparkplug B payload, e.g. for a publisher in a test."""
    return Payload(**fields)


def decode_payload(data: bytes) -> Any:
    """Parse a Sparkplug B payload; raises :class:`google.protobuf.message.DecodeError`."""
    p = Payload()
    p.ParseFromString(data)
    return p


def rebirth_request(ts_ms: int) -> bytes:
    """The ``NCMD`` payload that asks an edge node to publish its births again."""
    p = Payload(timestamp=ts_ms)
    p.metrics.add(name=REBIRTH, timestamp=ts_ms, datatype=DATATYPES["Boolean"], boolean_value=True)
    return bytes(p.SerializeToString())


def decode_rebirth(data: bytes) -> bool:
    """Whether an ``NCMD`` payload is a rebirth request (what an edge node checks)."""
    p = decode_payload(data)
    return any(m.name == REBIRTH and m.WhichOneof("value") == "boolean_value" and m.boolean_value
               for m in p.metrics)


# -- topics ----------------------------------------------------------------------------------------


class Topic(NamedTuple):
    group: str
    kind: str
    node: str
    device: str | None


def parse_topic(topic: str) -> Topic | str | None:
    """A Sparkplug B topic's parts; None for a topic outside ``spBv1.0/`` or a ``STATE`` topic;
    a reason (str) for a malformed one.

    >>> parse_topic("spBv1.0/g/NBIRTH/n"), parse_topic("plant/x") is None
    (Topic(group='g', kind='NBIRTH', node='n', device=None), True)
    >>> parse_topic("spBv1.0/g/NDATA/n/d")
    "sparkplug: topic 'spBv1.0/g/NDATA/n/d' is not spBv1.0/<group>/NDATA/<edge node>"
    """
    parts = topic.split("/")
    if parts[0] != NAMESPACE or (len(parts) >= 2 and parts[1] == "STATE"):
        return None
    if len(parts) >= 3 and parts[2] in NODE_KINDS:
        if len(parts) == 4 and parts[1] and parts[3]:
            return Topic(parts[1], parts[2], parts[3], None)
        return f"sparkplug: topic {topic!r} is not {NAMESPACE}/<group>/{parts[2]}/<edge node>"
    if len(parts) >= 3 and parts[2] in DEVICE_KINDS:
        if len(parts) == 5 and all(parts[1:]):
            return Topic(parts[1], parts[2], parts[3], parts[4])
        return f"sparkplug: topic {topic!r} is not {NAMESPACE}/<group>/{parts[2]}/<edge node>/<device>"
    return f"sparkplug: topic {topic!r} has no message type (NBIRTH, NDATA, DDATA …) as its third level"


def source_tag(group: str, node: str, device: str | None, metric: str) -> str:
    """The tag dictionary key of a metric.

    >>> source_tag("line-1", "gw-1", "press-01", "Temperature")
    'spBv1.0/line-1/gw-1/press-01#Temperature'
    """
    where = f"{NAMESPACE}/{group}/{node}" + (f"/{device}" if device else "")
    return f"{where}#{metric}"


# -- values ----------------------------------------------------------------------------------------


def metric_value(m: Any, datatype: int) -> Any:
    """A metric's value as plain Python, by its data type (signed integers come as two's
    complement in the unsigned fields); raises ValueError for unsupported types.

    >>> p = new_payload(); m = p.metrics.add(int_value=0xFFFFFFFE)
    >>> metric_value(m, DATATYPES["Int32"]), metric_value(m, DATATYPES["UInt32"])
    (-2, 4294967294)
    >>> m = p.metrics.add(int_value=200); metric_value(m, DATATYPES["Int8"])
    -56
    """
    which = m.WhichOneof("value")
    if which is None:
        if datatype in (16, 17, 18, 19) or datatype not in _NAMES:
            raise ValueError(f"data type {_NAMES.get(datatype, datatype)} is not supported")
        raise ValueError("no value")
    v = getattr(m, which)
    if which in ("int_value", "long_value"):
        bits = _SIGNED_BITS.get(datatype)
        if bits is not None:
            width = 32 if which == "int_value" and bits <= 32 else 64
            if v >= 1 << (width - 1):
                v -= 1 << width
            if bits < width and v >= 1 << (bits - 1):
                v -= 1 << bits  # an Int8/Int16 written without sign extension
        return int(v)
    if which == "bytes_value":
        raise ValueError(f"data type {_NAMES.get(datatype, 'Bytes')} is not supported")
    if which == "float_value":
        return float(v)
    return v


def _quality(m: Any) -> str:
    """``Quality`` property (OPC-style: 192 good, 0 bad, anything else uncertain), else good."""
    if not m.HasField("properties"):
        return "good"
    props = m.properties
    for key, pv in zip(props.keys, props.values, strict=False):
        if key.lower() == "quality" and pv.WhichOneof("value") in ("int_value", "long_value"):
            q = getattr(pv, pv.WhichOneof("value"))
            return "good" if q >= 192 else ("bad" if q < 64 else "uncertain")
    return "good"


# -- the host application's state --------------------------------------------------------------------


@dataclass
class _Device:
    aliases: dict[int, tuple[str, int]] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)


@dataclass
class _Node:
    born: bool = False
    bdseq: int | None = None
    seq: int | None = None
    aliases: dict[int, tuple[str, int]] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    devices: dict[str, _Device] = field(default_factory=dict)
    rebirth_at: float | None = None


Sample = tuple[str, Any, int, str]
"""(source tag, value, ts epoch ms, quality), as :mod:`plantstream.connectors.mqtt` parses them."""


@dataclass
class Decoded:
    """What one Sparkplug B message yields."""

    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    deaths: list[tuple[list[str], int]] = field(default_factory=list)
    """(source tags of what died, death time ms): their machines go ``off``."""
    rebirth: tuple[str, bytes] | None = None
    """(NCMD topic, payload) of a rebirth request to publish."""
    ignored: bool = False


class SparkplugHost:
    """A Sparkplug B host application's memory of the edge nodes: births, aliases, ``bdSeq``,
    sequence numbers. Not thread-safe (the MQTT connector calls it under its lock).

    Parameters
    ----------
    request_rebirth
        Ask nodes for a rebirth on a sequence gap or data before a birth.
    rebirth_interval_s
        At most one rebirth request per node in this many seconds until its ``NBIRTH`` arrives.
    clock
        Monotonic seconds (rate limit of the rebirth requests).
    """

    def __init__(self, *, request_rebirth: bool = True, rebirth_interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.request_rebirth = request_rebirth
        self.rebirth_interval_s = rebirth_interval_s
        self._clock = clock
        self._nodes: dict[tuple[str, str], _Node] = {}
        self.gaps = 0
        self.rebirths_requested = 0

    def handle(self, topic: Topic, data: bytes, received_ms: int) -> Decoded:
        """One message on a Sparkplug topic (see the module docstring)."""
        out = Decoded()
        if topic.kind in ("NCMD", "DCMD"):
            out.ignored = True
            return out
        try:
            p = decode_payload(data)
        except DecodeError as exc:
            out.errors.append(f"sparkplug: {topic.kind} payload is not a Sparkplug B protobuf Payload: {exc}")
            return out
        key = (topic.group, topic.node)
        node = self._nodes.get(key)
        ts = int(p.timestamp) if p.HasField("timestamp") else received_ms
        if topic.kind == "NBIRTH":
            node = self._nodes[key] = _Node(born=True, seq=int(p.seq) if p.HasField("seq") else None)
            for m in p.metrics:
                if m.name == "bdSeq":
                    node.bdseq = int(m.long_value or m.int_value)
            self._birth(topic, p, ts, node.aliases, node.tags, out)
            return out
        if topic.kind == "NDEATH":
            bdseq = next((int(m.long_value or m.int_value) for m in p.metrics if m.name == "bdSeq"), None)
            if node is None or not node.born:
                return out
            if node.bdseq is not None and bdseq is not None and bdseq != node.bdseq:
                log.info("Sparkplug: NDEATH of %s/%s with bdSeq %s does not match its NBIRTH's %s (an "
                         "earlier session's will): ignored", topic.group, topic.node, bdseq, node.bdseq)
                return out
            tags = set(node.tags)
            for dev in node.devices.values():
                tags |= dev.tags
            out.deaths.append((sorted(tags), received_ms))
            self._nodes[key] = _Node(rebirth_at=node.rebirth_at)
            return out
        if node is None:
            node = self._nodes[key] = _Node()
        self._check_seq(topic, p, node, out)
        if topic.kind == "DBIRTH":
            assert topic.device is not None
            dev = node.devices[topic.device] = _Device()
            self._birth(topic, p, ts, dev.aliases, dev.tags, out)
        elif topic.kind == "DDEATH":
            assert topic.device is not None
            dead = node.devices.pop(topic.device, None)
            if dead is not None:
                out.deaths.append((sorted(dead.tags), ts))
        elif topic.kind == "NDATA":
            self._data(topic, p, ts, node.aliases, node.tags, out)
        else:  # DDATA
            assert topic.device is not None
            dev = node.devices.setdefault(topic.device, _Device())
            self._data(topic, p, ts, dev.aliases, dev.tags, out)
        return out

    def _check_seq(self, topic: Topic, p: Any, node: _Node, out: Decoded) -> None:
        seq = int(p.seq) if p.HasField("seq") else None
        if not node.born:
            self._ask_rebirth(topic, out, f"{topic.kind} before the node's NBIRTH")
        elif seq is not None and node.seq is not None and seq != (node.seq + 1) % SEQ_MODULUS:
            self.gaps += 1
            log.warning("Sparkplug: sequence gap from %s/%s: %s after %s", topic.group, topic.node, seq,
                        node.seq)
            self._ask_rebirth(topic, out, f"seq {seq} after {node.seq}")
        if seq is not None:
            node.seq = seq

    def _ask_rebirth(self, topic: Topic, out: Decoded, why: str) -> None:
        if not self.request_rebirth:
            return
        node = self._nodes[(topic.group, topic.node)]
        now = self._clock()
        if node.rebirth_at is not None and now - node.rebirth_at < self.rebirth_interval_s:
            return
        node.rebirth_at = now
        self.rebirths_requested += 1
        log.info("Sparkplug: asking %s/%s for a rebirth (%s)", topic.group, topic.node, why)
        out.rebirth = (f"{NAMESPACE}/{topic.group}/NCMD/{topic.node}",
                       rebirth_request(int(time.time() * 1000)))

    def _birth(self, topic: Topic, p: Any, ts: int, aliases: dict[int, tuple[str, int]], tags: set[str],
               out: Decoded) -> None:
        for i, m in enumerate(p.metrics):
            if not m.name:
                out.errors.append(f"sparkplug: {topic.kind} metric #{i} has no name (a birth names every "
                                  "metric)")
                continue
            if m.HasField("alias"):
                aliases[int(m.alias)] = (m.name, int(m.datatype))
            if m.name == "bdSeq" or m.name.startswith(_CONTROL_PREFIXES):
                continue
            tag = source_tag(topic.group, topic.node, topic.device, m.name)
            tags.add(tag)
            self._sample(topic, m, tag, int(m.datatype), ts, out)

    def _data(self, topic: Topic, p: Any, ts: int, aliases: dict[int, tuple[str, int]], tags: set[str],
              out: Decoded) -> None:
        unknown: list[int] = []
        for i, m in enumerate(p.metrics):
            datatype = int(m.datatype)
            if m.name:
                name = m.name
                if not datatype and m.HasField("alias") and int(m.alias) in aliases:
                    datatype = aliases[int(m.alias)][1]
            elif m.HasField("alias"):
                known = aliases.get(int(m.alias))
                if known is None:
                    unknown.append(int(m.alias))
                    continue
                name, born_type = known
                datatype = datatype or born_type
            else:
                out.errors.append(f"sparkplug: {topic.kind} metric #{i} has neither a name nor an alias")
                continue
            if name == "bdSeq" or name.startswith(_CONTROL_PREFIXES):
                continue
            tag = source_tag(topic.group, topic.node, topic.device, name)
            tags.add(tag)
            self._sample(topic, m, tag, datatype, ts, out)
        if unknown:
            where = f"{topic.group}/{topic.node}" + (f"/{topic.device}" if topic.device else "")
            out.errors.append(f"sparkplug: {topic.kind} of {where} uses aliases {unknown} that no birth "
                              "named (a rebirth is requested)")
            self._ask_rebirth(topic, out, f"unknown aliases {unknown}")

    @staticmethod
    def _sample(topic: Topic, m: Any, tag: str, datatype: int, ts: int, out: Decoded) -> None:
        if m.is_null:
            return  # no value (Sparkplug's explicit null): nothing to measure
        try:
            value = metric_value(m, datatype)
        except ValueError as exc:
            out.errors.append(f"sparkplug: {topic.kind} metric {tag.split('#', 1)[1]!r}: {exc}")
            return
        mts = int(m.timestamp) if m.HasField("timestamp") else ts
        if not MIN_TS_MS <= mts < MAX_TS_MS:
            out.errors.append(f"sparkplug: {topic.kind} metric {tag.split('#', 1)[1]!r}: timestamp {mts} "
                              "is not epoch milliseconds between 2000 and 2100")
            return
        out.samples.append((tag, value, mts, _quality(m)))
