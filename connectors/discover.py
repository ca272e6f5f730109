# mypy: disable-error-code="arg-type"
"""What a live plant offers, for ``plantstream init``: the OPC UA address space, MQTT topics.

:func:`browse_opcua` walks an OPC UA server's ``Objects`` folder (asyncua) and returns every
variable with its folder path, the source tag the OPC UA connector will give it, its data
type and the OPC UA Part 8 metadata a PLC's server usually carries: ``EngineeringUnits``,
``EURange``, and the names of a multi-state variable (``EnumStrings``, ``EnumValues``).
:func:`sample_mqtt` subscribes to a topic filter for a while and returns the messages per topic;
on Sparkplug B topics (``spBv1.0/…``) it asks every edge node seen sending data without its
``NBIRTH`` for a rebirth (``NCMD`` ``Node Control/Rebirth``, the one thing it ever publishes), so
the births, which name the metrics and their data types, arrive within the listening time.
:func:`read_sparkplug` turns the sampled births and data into the edge nodes and devices with
their metrics (decoded with :mod:`plantstream.connectors.sparkplug`).
Nothing else is written; what to make of it is :mod:`plantstream.cli.init`'s job.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from asyncua import Client, Node, ua
from google.protobuf.message import DecodeError

from plantstream.connectors import sparkplug as sp
from plantstream.connectors.opcua import SESSION_TIMEOUT_MS
from plantstream.schemas.errors import ConnectorError


@dataclass
class UaVariable:
    """One OPC UA variable as ``init`` sees it."""

    path: list[tuple[int, str]]
    """(namespace index, browse name) of each folder from ``Objects`` (excluded) to the variable."""
    node_id: str
    tag: str
    """The source tag the OPC UA connector gives it (string NodeId identifier, else the path)."""
    data_type: str
    """The VariantType name (``Int32``, ``Double``, ``String``, ``Boolean`` …)."""
    unit: str = ""
    unit_description: str = ""
    eu_range: tuple[float, float] | None = None
    enum_strings: list[str] | None = None
    enum_values: dict[int, tuple[str, str]] | None = None
    """value → (display name, description)."""
    value: Any = None

    @property
    def name(self) -> str:
        return self.path[-1][1]

    @property
    def folders(self) -> list[str]:
        return [n for _, n in self.path[:-1]]


def _text(lt: Any) -> str:
    return str(getattr(lt, "Text", lt) or "")


async def _describe(node: Node, var: UaVariable) -> None:
    for prop in await node.get_properties():
        name = (await prop.read_browse_name()).Name
        try:
            value = await prop.read_value()
        except (ua.UaError, OSError, TimeoutError):
            continue
        if name == "EngineeringUnits" and value is not None:
            var.unit = _text(getattr(value, "DisplayName", None))
            var.unit_description = _text(getattr(value, "Description", None))
        elif name == "EURange" and value is not None:
            var.eu_range = (float(value.Low), float(value.High))
        elif name == "EnumStrings" and value:
            var.enum_strings = [_text(v) for v in value]
        elif name == "EnumValues" and value:
            var.enum_values = {int(v.Value): (_text(v.DisplayName), _text(v.Description)) for v in value}


async def _walk(node: Node, path: list[tuple[int, str]], depth: int, out: list[UaVariable]) -> None:
    for child in await node.get_children(refs=ua.ObjectIds.HierarchicalReferences):
        nid = child.nodeid
        if nid.NamespaceIndex == 0:
            continue  # the Server object and other standard nodes
        cls = await child.read_node_class()
        bname = await child.read_browse_name()
        here = [*path, (bname.NamespaceIndex, bname.Name)]
        if cls == ua.NodeClass.Variable:
            try:
                vtype = await child.read_data_type_as_variant_type()
                type_name = vtype.name
            except (ua.UaError, ValueError, KeyError):
                type_name = "Unknown"
            tag = nid.Identifier if nid.NodeIdType == ua.NodeIdType.String else ".".join(n for _, n in here)
            var = UaVariable(here, nid.to_string(), str(tag), type_name)
            try:
                var.value = await child.read_value()
            except (ua.UaError, OSError):
                var.value = None
            await _describe(child, var)
            out.append(var)
        elif cls == ua.NodeClass.Object and depth > 1:
            await _walk(child, here, depth - 1, out)


async def _browse(
    endpoint: str, depth: int, timeout_s: float, username: str | None, password: str | None
) -> list[UaVariable]:
    client = Client(endpoint, timeout=timeout_s)
    client.session_timeout = SESSION_TIMEOUT_MS
    if username:
        client.set_user(username)
        client.set_password(password or "")
    try:
        await asyncio.wait_for(client.connect(), timeout_s)
    except (OSError, TimeoutError, ua.UaError) as exc:
        msg = f"cannot connect to the OPC UA server {endpoint}: {exc}; check the endpoint (opc.tcp://host:port/path)"
        raise ConnectorError(msg) from None
    try:
        out: list[UaVariable] = []
        await _walk(client.nodes.objects, [], depth, out)
        return out
    finally:
        await client.disconnect()


def browse_opcua(
    endpoint: str,
    *,
    depth: int = 6,
    timeout_s: float = 15.0,
    username: str | None = None,
    password: str | None = None,
) -> list[UaVariable]:
    """Every variable under ``Objects`` (``depth`` folders deep), with its metadata."""
    return asyncio.run(_browse(endpoint, depth, timeout_s, username, password))


@dataclass
class TopicSample:
    """The messages seen on one MQTT topic while listening."""

    topic: str
    payloads: list[bytes] = field(default_factory=list)
    """The last ``keep`` payloads."""
    count: int = 0
    telling: list[bytes] = field(default_factory=list)
    """Earlier payloads that showed a JSON field, or a text value of a field, not seen before on
    the topic (up to ``keep`` × 4): a flat payload carries only what changed, so the state, the
    reasons and the product appear in few messages, and the last ``keep`` would miss them."""
    _seen: set[tuple[str, str | None]] = field(default_factory=set, repr=False)

    def add(self, payload: bytes, keep: int) -> None:
        """Record one message: kept among the last ``keep``, and as telling if it shows something new."""
        self.count += 1
        self.payloads.append(payload)
        if len(self.payloads) > keep:
            dropped = self.payloads.pop(0)
            if len(self.telling) < keep * 4 and self._news(dropped):
                self.telling.append(dropped)

    def _news(self, payload: bytes) -> bool:
        import orjson

        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(obj, dict):
            return False
        shown = {(k, None) for k in obj} | {
            (k, v) for k, v in obj.items() if isinstance(v, str) and len(v) <= 64
        }
        shown -= {(k, v) for k, v in shown if k in ("timestamp", "ts", "time")}
        if shown <= self._seen:
            return False
        self._seen |= shown
        return True

    @property
    def sampled(self) -> list[bytes]:
        """The telling payloads, then the last ones (in arrival order)."""
        return [*self.telling, *self.payloads]


class MqttSamples(dict[str, TopicSample]):
    """The sampled topics (topic → :class:`TopicSample`), and the Sparkplug B edge nodes asked for a
    rebirth while listening (``group/node``)."""

    def __init__(self) -> None:
        super().__init__()
        self.rebirths_requested: list[str] = []
        self.mqtt5: bool | None = None
        """Whether the broker accepted an MQTT 5 connection (None: not asked)."""


def speaks_mqtt5(host: str, port: int, *, username: str | None = None, password: str | None = None,
                 timeout_s: float = 5.0) -> bool:
    """Whether the broker accepts an MQTT 5 connection (the connector's default protocol).

    A broker that speaks only MQTT 3.1.1 (amqtt, older ones) refuses it or never answers; then the
    config ``init`` writes says ``protocol: "3.1.1"``.
    """
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    answered = threading.Event()
    ok: list[bool] = []

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        ok.append(not getattr(reason, "is_failure", False))
        answered.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"plantstream-init-v5-{int(time.time())}",
                         protocol=paho.MQTTv5)
    if username:
        client.username_pw_set(username, password)
    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return False
    client.loop_start()
    try:
        answered.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return bool(ok and ok[0])


def sample_mqtt(
    host: str,
    port: int,
    topic: str = "#",
    listen_s: float = 30.0,
    *,
    username: str | None = None,
    password: str | None = None,
    keep: int = 50,
    request_rebirth: bool = True,
) -> MqttSamples:
    """Subscribe to ``topic`` for ``listen_s`` seconds; the last ``keep`` payloads per topic.

    A Sparkplug B edge node seen sending ``NDATA``/``DDATA``/``DBIRTH`` without its ``NBIRTH``
    (it was born before we listened) is sent one rebirth request (``request_rebirth``); commands
    (``NCMD``/``DCMD``, ours included) are not sampled.
    """
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    seen = MqttSamples()
    lock = threading.Lock()
    connected = threading.Event()
    failure: list[str] = []
    born: set[tuple[str, str]] = set()
    asked: set[tuple[str, str]] = set()

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            failure.append(str(reason))
        else:
            c.subscribe(topic, qos=0)
        connected.set()

    def on_message(c: Any, u: Any, msg: Any) -> None:
        t = sp.parse_topic(msg.topic)
        if isinstance(t, sp.Topic):
            if t.kind in ("NCMD", "DCMD"):
                return
            node = (t.group, t.node)
            if t.kind == "NBIRTH":
                born.add(node)
            elif t.kind != "NDEATH" and node not in born and node not in asked and request_rebirth:
                asked.add(node)
                seen.rebirths_requested.append(f"{t.group}/{t.node}")
                ask = sp.rebirth_request(int(time.time() * 1000))
                c.publish(f"{sp.NAMESPACE}/{t.group}/NCMD/{t.node}", ask)
        with lock:
            seen.setdefault(msg.topic, TopicSample(msg.topic)).add(bytes(msg.payload), keep)

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"plantstream-init-{int(time.time())}", clean_session=True
    )
    if username:
        client.username_pw_set(username, password)
    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        msg = f"cannot reach the MQTT broker {host}:{port}: {exc}; check --mqtt HOST:PORT"
        raise ConnectorError(msg) from None
    client.loop_start()
    try:
        if not connected.wait(15) or failure:
            why = failure[0] if failure else "no answer"
            msg = f"the MQTT broker {host}:{port} refused the connection: {why}"
            raise ConnectorError(msg)
        time.sleep(listen_s)
    finally:
        client.disconnect()
        client.loop_stop()
    seen.mqtt5 = speaks_mqtt5(host, port, username=username, password=password)
    return seen


# -- Sparkplug B --------------------------------------------------------------------------------------


@dataclass
class SpMetric:
    """One Sparkplug B metric of an edge node or device, as its birth (or its data) showed it."""

    name: str
    data_type: str
    """The Sparkplug data type name (``Int32``, ``Double``, ``String``, ``Boolean`` …)."""
    values: list[Any] = field(default_factory=list)
    """The values seen (birth and data), in arrival order per topic; nulls left out."""


@dataclass
class SpThing:
    """A Sparkplug B edge node (``device`` None: its node-level metrics) or one of its devices."""

    group: str
    node: str
    device: str | None
    born: bool = False
    """A birth (``NBIRTH``/``DBIRTH``) was seen: the metrics carry their names and data types."""
    metrics: dict[str, SpMetric] = field(default_factory=dict)
    unknown_aliases: set[int] = field(default_factory=set)
    """Aliases of data messages that no seen birth named."""
    errors: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{sp.NAMESPACE}/{self.group}/{self.node}" + (f"/{self.device}" if self.device else "")


_SP_NAMES = {v: k for k, v in sp.DATATYPES.items()}
_SP_CONTROL = ("Node Control/", "Device Control/", "Properties/", "Node Info/")


def _sp_control(name: str) -> bool:
    return name == "bdSeq" or name.startswith(_SP_CONTROL)


def _sp_value(m: Any, datatype: int) -> tuple[bool, Any]:
    if m.is_null:
        return False, None
    try:
        return True, sp.metric_value(m, datatype)
    except ValueError:
        return False, None


def read_sparkplug(samples: dict[str, TopicSample]) -> list[SpThing]:
    """The edge nodes and devices of the sampled Sparkplug B topics, with their metrics.

    A birth names each metric with its alias and data type (its last birth counts); data
    messages add the values they carry, resolved by name or by an alias of that birth.
    Sparkplug's own metrics (``bdSeq``, ``Node Control/…``, ``Device Control/…``,
    ``Properties/…``, ``Node Info/…``) are left out. Data of a node or device whose birth was
    not seen keeps its named metrics (without a data type unless the metric says it) and the
    aliases it could not resolve.

    >>> p = sp.new_payload(timestamp=1763791200000, seq=0)
    >>> _ = p.metrics.add(name="State", alias=2, datatype=sp.DATATYPES["Int32"], int_value=1)
    >>> d = sp.new_payload(timestamp=1763791201000, seq=1)
    >>> _ = d.metrics.add(alias=2, int_value=3)
    >>> s = {"spBv1.0/g/DBIRTH/n/press": TopicSample("spBv1.0/g/DBIRTH/n/press")}
    >>> s["spBv1.0/g/DBIRTH/n/press"].add(p.SerializeToString(), 5)
    >>> s["spBv1.0/g/DDATA/n/press"] = TopicSample("spBv1.0/g/DDATA/n/press")
    >>> s["spBv1.0/g/DDATA/n/press"].add(d.SerializeToString(), 5)
    >>> [(t.where, t.born, {k: (m.data_type, m.values) for k, m in t.metrics.items()})
    ...  for t in read_sparkplug(s)]
    [('spBv1.0/g/n/press', True, {'State': ('Int32', [1, 3])})]
    """
    things: dict[tuple[str, str, str | None], SpThing] = {}
    aliases: dict[tuple[str, str, str | None], dict[int, tuple[str, int]]] = {}
    topics = [(t, sp.parse_topic(t)) for t in samples]
    births = [(t, pt) for t, pt in topics if isinstance(pt, sp.Topic) and pt.kind in ("NBIRTH", "DBIRTH")]
    data = [(t, pt) for t, pt in topics if isinstance(pt, sp.Topic) and pt.kind in ("NDATA", "DDATA")]
    for t, pt in births + data:  # births first: they name the aliases data messages use
        key = (pt.group, pt.node, pt.device)
        thing = things.setdefault(key, SpThing(pt.group, pt.node, pt.device))
        known = aliases.setdefault(key, {})
        birth = pt.kind.endswith("BIRTH")
        payloads = samples[t].sampled[-1:] if birth else samples[t].sampled
        for raw in payloads:
            try:
                p = sp.decode_payload(raw)
            except DecodeError as exc:
                thing.errors.append(f"{pt.kind} is not a Sparkplug B payload: {exc}")
                continue
            if birth:
                thing.born = True
            for m in p.metrics:
                datatype = int(m.datatype)
                if m.name:
                    name = m.name
                    if m.HasField("alias") and birth:
                        known[int(m.alias)] = (name, datatype)
                elif m.HasField("alias") and int(m.alias) in known:
                    name, born_type = known[int(m.alias)]
                    datatype = datatype or born_type
                elif m.HasField("alias"):
                    thing.unknown_aliases.add(int(m.alias))
                    continue
                else:
                    continue
                if _sp_control(name):
                    continue
                metric = thing.metrics.get(name)
                if metric is None:
                    metric = thing.metrics[name] = SpMetric(name, _SP_NAMES.get(datatype, "Unknown"))
                elif metric.data_type == "Unknown" and datatype:
                    metric.data_type = _SP_NAMES.get(datatype, "Unknown")
                ok, value = _sp_value(m, datatype or sp.DATATYPES.get(metric.data_type, 0))
                if ok:
                    metric.values.append(value)
    return sorted(things.values(), key=lambda x: (x.group, x.node, x.device or ""))
