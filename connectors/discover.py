# mypy: disable-error-code="arg-type"
"""What a live plant offers, for ``plantstream init``: the OPC UA address space, MQTT topics.

:func:`browse_opcua` walks an OPC UA server's ``Objects`` folder (asyncua) and returns every
variable with its folder path, the source tag the OPC UA connector will give it, its data
type and the OPC UA Part 8 metadata a PLC's server usually carries: ``EngineeringUnits``,
``EURange``, and the names of a multi-state variable (``EnumStrings``, ``EnumValues``).
:func:`sample_mqtt` subscribes to a topic filter for a while and returns the messages per topic.
Both only read; what to make of it is :mod:`plantstream.cli.init`'s job.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from asyncua import Client, Node, ua

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


def sample_mqtt(
    host: str,
    port: int,
    topic: str = "#",
    listen_s: float = 30.0,
    *,
    username: str | None = None,
    password: str | None = None,
    keep: int = 50,
) -> dict[str, TopicSample]:
    """Subscribe to ``topic`` for ``listen_s`` seconds; the last ``keep`` payloads per topic."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    seen: dict[str, TopicSample] = {}
    lock = threading.Lock()
    connected = threading.Event()
    failure: list[str] = []

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            failure.append(str(reason))
        else:
            c.subscribe(topic, qos=0)
        connected.set()

    def on_message(c: Any, u: Any, msg: Any) -> None:
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
    return seen
