# mypy: disable-error-code="arg-type"
# (asyncua annotates NodeId/DataValue fields with its own NewTypes of int, str and datetime)
"""An OPC UA server serving a simulated PLC line (asyncua), at real time or faster.

:class:`PlcOpcUaServer` publishes the tags of a :class:`~simulators.plc.PlcLine`
KEPServerEX-style: one folder per machine under a channel folder, one variable per tag, with
string NodeIds ``ns=<urn:plantstream:plc>;s=Channel1.<machine>.<Tag>`` and browse path
``Objects/Channel1/<machine>/<Tag>``. Every value carries the simulated event time as its
SourceTimestamp, so a client sees exactly the simulator's ``ts``.

Playback: event time advances ``speed`` times faster than the wall clock (``speed=60`` plays an
hour a minute); :meth:`PlcOpcUaServer.play` writes every tag change in order. A ``live`` server
never runs ahead of the wall clock: it plays its history fast up to now, then in real time, as a
real PLC does (a consumer's clock-skew check would dead-letter samples from the future). Each variable
keeps a history of its last ``history`` values (OPC UA HistoryRead), so a client that was
disconnected can read back what it missed (the connector's ``backfill``).

Security: endpoints ``None`` and Basic256Sha256 ``Sign`` / ``SignAndEncrypt`` when a server
certificate and key are given; users from ``users={name: password}`` (anonymous access only
when ``allow_anonymous``).

Examples
--------
>>> import asyncio
>>> from asyncua import Client
>>> async def demo():
...     line = PlcLine(seed=1, machines=1, start_ms=1763791200000)
...     async with PlcOpcUaServer(line, speed=0) as srv:
...         await srv.play(until_ms=1763791200000 + 60_000)
...         async with Client(srv.endpoint) as c:
...             node = c.get_node(srv.node_id("press-01", "PartCountGood"))
...             return await node.read_value() == line.ground_truth().final["press-01"]["good_count"]
>>> asyncio.run(demo())
True
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.history import HistoryDict

from plantstream.connectors.embedded import free_port
from plantstream.schemas.errors import ConnectorError
from plantstream.schemas.tags_config import TagMapping
from plantstream.simulators.plc import TAGS, PlcLine, TagUpdate

log = logging.getLogger(__name__)

NAMESPACE = "urn:plantstream:plc"
"""Namespace URI of the simulator's nodes."""

TAG_TYPES: dict[str, ua.VariantType] = {
    "MachineState": ua.VariantType.Int32,
    "PartCountGood": ua.VariantType.Int64,
    "PartCountReject": ua.VariantType.Int64,
    "CycleCount": ua.VariantType.Int64,
    "CycleTimeActual_ms": ua.VariantType.Int32,
    "CycleTimeTarget_ms": ua.VariantType.Int32,
    "ActiveFaultCode": ua.VariantType.Int32,
    "ReasonCode": ua.VariantType.String,
    "ScrapReason": ua.VariantType.String,
    "PartNumber": ua.VariantType.String,
    "WorkOrder": ua.VariantType.String,
    "ToolID": ua.VariantType.Int32,
    "SpindleSpeed_RPM": ua.VariantType.Int32,
    "Temperature_C": ua.VariantType.Double,
    "Vibration_Velocity_mms": ua.VariantType.Double,
    "AmbientTemperature_C": ua.VariantType.Double,
}
"""OPC UA type of each PLC tag."""

_INITIAL: dict[ua.VariantType, Any] = {
    ua.VariantType.Int32: 0, ua.VariantType.Int64: 0, ua.VariantType.String: "", ua.VariantType.Double: 0.0,
}


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class _Users:
    """asyncua user manager: name/password pairs; anonymous only when allowed."""

    def __init__(self, users: Mapping[str, str], allow_anonymous: bool) -> None:
        self.users = dict(users)
        self.allow_anonymous = allow_anonymous

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is None:
            return User(role=UserRole.User) if self.allow_anonymous else None
        if self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


def plc_tag_dictionary(channel: str = "Channel1", *, line: str = "") -> dict[str, dict[str, Any]]:
    """The ``tags:`` entries mapping this server's tags (and KEPServerEX ones named alike).

    Patterns ``Channel1.{machine}.<Tag>``; ``MachineState`` carries the state-code map
    (including ``5 planned_stop``). ``CycleCount`` maps to ``total_count``. ``ToolID`` has no
    canonical metric (as a number it would be scored as a condition signal): leave it out with
    ``opcua.ignore: ["*.ToolID"]`` (:data:`PLC_IGNORE`).

    >>> d = plc_tag_dictionary()
    >>> d["Channel1.{machine}.PartCountGood"]
    {'machine': '{machine}', 'metric': 'good_count', 'unit': 'count'}
    >>> d["Channel1.{machine}.MachineState"]["states"]["5"]
    'planned_stop'
    """
    from plantstream.simulators.plc import STATE_CODES

    out: dict[str, dict[str, Any]] = {}
    for tag, (metric, unit) in TAGS.items():
        if tag not in _EXTRA_METRICS and metric is None:
            continue
        entry: dict[str, Any] = {"machine": "{machine}", "metric": metric or _EXTRA_METRICS[tag]}
        if unit:
            entry["unit"] = unit
        if line:
            entry["line"] = line
        if tag == "MachineState":
            entry["states"] = {str(v): k for k, v in STATE_CODES.items()}
        out[f"{channel}.{{machine}}.{tag}"] = entry
    return out


_EXTRA_METRICS = {"CycleCount": "total_count"}
_UNITS: dict[str, tuple[int, str, str, float, float]] = {
    # tag: (UNECE common code as UnitId, symbol, description, EURange low, high)
    "Temperature_C": (4399180, "°C", "degree Celsius", 0.0, 150.0),
    "AmbientTemperature_C": (4399180, "°C", "degree Celsius", -20.0, 60.0),
    "Vibration_Velocity_mms": (4403766, "mm/s", "millimetre per second", 0.0, 50.0),
    "SpindleSpeed_RPM": (5395778, "r/min", "revolutions per minute", 0.0, 12000.0),
    "CycleTimeActual_ms": (4403268, "ms", "millisecond", 0.0, 60000.0),
    "CycleTimeTarget_ms": (4403268, "ms", "millisecond", 0.0, 60000.0),
}
"""Engineering units of the analog PLC tags (``EngineeringUnits`` and ``EURange`` properties)."""
PLC_IGNORE = ("*.ToolID",)
"""PLC tags the connector should not subscribe to (no canonical metric)."""


class PlcOpcUaServer:
    """Serve a :class:`PlcLine` over OPC UA (see the module docstring).

    Parameters
    ----------
    line
        The simulator; its current event time is where playback starts.
    host, port
        Where to listen (``port=0``: a free port).
    speed
        Event-time seconds per wall-clock second; ``0`` = as fast as possible (only with
        ``play(until_ms=…)``).
    live
        Never run ahead of the wall clock: history plays at ``speed`` up to now, then real time.
    certificate, private_key
        Server certificate (DER or PEM) and key: enables Basic256Sha256 Sign and
        SignAndEncrypt endpoints. ``security_none=False`` removes the unsecured endpoint.
    users, allow_anonymous
        Username/password pairs; anonymous sessions only when ``allow_anonymous``.
    history
        Values kept per variable for HistoryRead (0 = no history).
    """

    def __init__(self, line: PlcLine, *, host: str = "127.0.0.1", port: int = 0, speed: float = 1.0,
                 live: bool = False,
                 channel: str = "Channel1", certificate: str | Path | None = None,
                 private_key: str | Path | None = None, security_none: bool = True,
                 users: Mapping[str, str] | None = None, allow_anonymous: bool = True,
                 history: int = 100_000, tick_s: float = 0.05) -> None:
        if speed < 0 or math.isnan(speed):
            msg = f"speed must be >= 0 (0 = as fast as possible), got {speed}"
            raise ValueError(msg)
        if (certificate is None) != (private_key is None):
            msg = "give both certificate and private_key (or neither) to enable Basic256Sha256"
            raise ValueError(msg)
        if not security_none and certificate is None:
            msg = "security_none=False needs a certificate and private_key"
            raise ValueError(msg)
        self.line = line
        self.host = host
        self.port = port or free_port()
        self.speed = speed
        self.live = live
        self.channel = channel
        self.certificate = certificate
        self.private_key = private_key
        self.security_none = security_none
        self.users = dict(users or {})
        self.allow_anonymous = allow_anonymous
        self.history = history
        self.tick_s = tick_s
        self.server: Server | None = None
        self.ns = 0
        self.nodes: dict[tuple[str, str], ua.NodeId] = {}
        self.written = 0
        self._internal_items = 0
        self._started = False

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/plantstream/plc"

    def node_id(self, machine: str, tag: str) -> str:
        """The NodeId string of a tag, e.g. ``ns=2;s=Channel1.press-01.MachineState``."""
        return f"ns={self.ns};s={self.channel}.{machine}.{tag}"

    async def start(self) -> PlcOpcUaServer:
        server = Server(user_manager=_Users(self.users, self.allow_anonymous))
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("plantstream PLC line simulator")
        await server.set_application_uri("urn:plantstream:plc-simulator")
        policies = [ua.SecurityPolicyType.NoSecurity] if self.security_none else []
        if self.certificate is not None and self.private_key is not None:
            await server.load_certificate(str(self.certificate))
            await server.load_private_key(str(self.private_key))
            policies += [ua.SecurityPolicyType.Basic256Sha256_Sign,
                         ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        server.set_security_policy(policies)
        # user names only when there are users (asyncua warns of plaintext passwords otherwise)
        tokens: list[type] = [ua.UserNameIdentityToken] if self.users or not self.allow_anonymous else []
        if self.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        self.ns = await server.register_namespace(NAMESPACE)
        if self.history:
            server.iserver.history_manager.set_storage(HistoryDict())
        root = await server.nodes.objects.add_folder(ua.NodeId(self.channel, self.ns),
                                                     f"{self.ns}:{self.channel}")
        hist = []
        t0 = _dt(self.line.now)
        for mid in self.line.machine_ids:
            folder = await root.add_folder(ua.NodeId(f"{self.channel}.{mid}", self.ns), f"{self.ns}:{mid}")
            for tag, vtype in TAG_TYPES.items():
                nid = ua.NodeId(f"{self.channel}.{mid}.{tag}", self.ns)
                var = await folder.add_variable(nid, f"{self.ns}:{tag}", ua.Variant(_INITIAL[vtype], vtype))
                await var.write_value(ua.DataValue(
                    ua.Variant(_INITIAL[vtype], vtype), SourceTimestamp=t0, ServerTimestamp=t0,
                    StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)))
                self.nodes[(mid, tag)] = nid
                await self._describe(var, f"{self.channel}.{mid}.{tag}", tag)
                hist.append(var)
        self.server = server
        for upd in self.line.run_tags(self.line.now + 1):  # the PLC's values at start
            await self.write(upd)
        try:
            await server.start()
        except OSError as exc:
            msg = f"OPC UA simulator cannot listen on {self.endpoint}: {exc}; choose another --port"
            raise ConnectorError(msg) from exc
        if self.history:
            for var in hist:
                await server.historize_node_data_change(var, period=timedelta(days=3650),
                                                        count=self.history)
        self.server = server
        self._internal_items = self.monitored_items()
        self._started = True
        log.info("PLC simulator serving %d machines on %s", len(self.line.machine_ids), self.endpoint)
        return self

    async def _describe(self, var: Any, ident: str, tag: str) -> None:
        """The metadata a real PLC's server gives (what ``plantstream init`` reads): the state
        names of ``MachineState`` (``EnumStrings``, index = PLC value), the fault codes of
        ``ActiveFaultCode`` (``EnumValues``: value, reason, category), and ``EngineeringUnits``
        with ``EURange`` on the analog tags (OPC UA Part 8)."""
        from plantstream.simulators.plc import CODE_STATES, FAULT_CODES

        ns = self.ns
        if tag == "MachineState":
            names = [ua.LocalizedText(CODE_STATES[i]) for i in range(max(CODE_STATES) + 1)]
            await var.add_property(ua.NodeId(f"{ident}.EnumStrings", ns), "0:EnumStrings",
                                   ua.Variant(names, ua.VariantType.LocalizedText))
        elif tag == "ActiveFaultCode":
            values = [ua.EnumValueType(Value=code, DisplayName=ua.LocalizedText(reason),
                                       Description=ua.LocalizedText(category))
                      for code, (reason, category) in sorted(FAULT_CODES.items())]
            await var.add_property(ua.NodeId(f"{ident}.EnumValues", ns), "0:EnumValues",
                                   ua.Variant(values, ua.VariantType.ExtensionObject))
        unit = _UNITS.get(tag)
        if unit is not None:
            code, symbol, text, low, high = unit
            eu = ua.EUInformation(NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact", UnitId=code,
                                  DisplayName=ua.LocalizedText(symbol), Description=ua.LocalizedText(text))
            await var.add_property(ua.NodeId(f"{ident}.EngineeringUnits", ns), "0:EngineeringUnits",
                                   ua.Variant(eu, ua.VariantType.ExtensionObject))
            await var.add_property(ua.NodeId(f"{ident}.EURange", ns), "0:EURange",
                                   ua.Variant(ua.Range(Low=low, High=high), ua.VariantType.ExtensionObject))

    async def stop(self) -> None:
        if self.server is not None and self._started:
            self._started = False
            await self.server.stop()

    async def __aenter__(self) -> PlcOpcUaServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def write(self, upd: TagUpdate) -> None:
        """Write one tag update (value + SourceTimestamp = event time)."""
        assert self.server is not None, "start() the server first"
        nid = self.nodes[(upd.machine, upd.tag)]
        vtype = TAG_TYPES[upd.tag]
        value: Any = float(upd.value) if vtype == ua.VariantType.Double else upd.value
        dv = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=_dt(upd.ts),
                          ServerTimestamp=datetime.now(UTC))
        await self.server.write_attribute_value(nid, dv)
        self.written += 1

    async def write_raw(self, machine: str, tag: str, variant: ua.Variant, ts_ms: int | None,
                        status: ua.StatusCode | None = None) -> None:
        """Write any value (any status, ``ts_ms=None``: no SourceTimestamp) — for fault injection."""
        assert self.server is not None, "start() the server first"
        nid = self.nodes.get((machine, tag)) or ua.NodeId(f"{self.channel}.{machine}.{tag}", self.ns)
        dv = ua.DataValue(variant, StatusCode=status or ua.StatusCode(),
                          SourceTimestamp=_dt(ts_ms) if ts_ms is not None else None,
                          ServerTimestamp=datetime.now(UTC))
        await self.server.write_attribute_value(nid, dv)

    def monitored_items(self) -> int:
        """Monitored items of every client subscription right now."""
        if self.server is None:
            return 0
        subs = self.server.iserver.subscription_service.subscriptions
        return sum(len(getattr(sub.monitored_item_srv, "_monitored_items", {})) for sub in subs.values())

    async def wait_for_subscriber(self, items: int | None = None, *, grace_s: float = 1.0,
                                  stop: asyncio.Event | None = None) -> None:
        """Hold event time until a client monitors ``items`` nodes (default: every machine's
        ``MachineState``), then ``grace_s`` more (for the rest of its monitored items): a run
        that starts its connector later still sees the line from its first sample."""
        want = len(self.line.machine_ids) if items is None else items
        want += self._internal_items  # the server's own (history) subscriptions
        while self.monitored_items() < want:
            if stop is not None and stop.is_set():
                return
            await asyncio.sleep(0.1)
        await asyncio.sleep(grace_s)

    async def play(self, until_ms: int | None = None, stop: asyncio.Event | None = None,
                   pause: asyncio.Event | None = None) -> int:
        """Play the line: event time runs ``speed``× the wall clock until ``until_ms``/``stop``.

        Returns the number of tag writes. ``pause`` (set = paused) freezes event time.
        """
        if self.speed == 0 and until_ms is None:
            msg = "speed=0 (as fast as possible) needs until_ms"
            raise ValueError(msg)
        n0 = self.written
        loop = asyncio.get_running_loop()
        wall0, sim0 = loop.time(), self.line.now
        while True:
            if stop is not None and stop.is_set():
                break
            if pause is not None and pause.is_set():
                await asyncio.sleep(self.tick_s)
                wall0, sim0 = loop.time(), self.line.now
                continue
            if self.speed == 0:
                assert until_ms is not None
                target = min(until_ms, self.line.now + 60_000)
            else:
                target = sim0 + int((loop.time() - wall0) * self.speed * 1000)
                if until_ms is not None:
                    target = min(target, until_ms)
            if self.live:
                target = min(target, int(time.time() * 1000))
            for upd in self.line.run_tags(target):
                await self.write(upd)
            if until_ms is not None and self.line.now >= until_ms:
                break
            caught_up = self.live and self.line.now >= target
            await asyncio.sleep(0 if self.speed == 0 and not caught_up else self.tick_s)
        return self.written - n0


async def serve(line: PlcLine, *, until_ms: int | None = None, stop: asyncio.Event | None = None,
                **kwargs: Any) -> PlcOpcUaServer:
    """Start a server for ``line``, play it to ``until_ms``/``stop``, then stop; returns it."""
    srv = PlcOpcUaServer(line, **kwargs)
    async with srv:
        t = time.monotonic()
        n = await srv.play(until_ms=until_ms, stop=stop)
        log.info("played %d tag writes in %.1f s", n, time.monotonic() - t)
    return srv


def start_plc_pipeline(config: Any, kafka_conf: Mapping[str, Any] | None = None, *, seed: int = 1,
                       speed: float = 60.0,
                       machines: int = 3, start_ms: int | None = None, workdir: str | Path = ".plantstream",
                       truth_path: str | Path | None = None) -> Any:
    """Run PLC simulator → OPC UA server → OPC UA connector → Kafka in a background thread.

    For ``plantstream demo`` and notebooks: the server listens on a free loopback port, the
    connector browses ``Channel1`` with this module's tag dictionary added to the config's.
    Returns ``stop()`` which stops both, writes the ground truth to ``truth_path`` (default
    ``<workdir>/plc-truth.jsonl``) and returns the :class:`PlcLine`.

    ``config`` may also be a started :class:`connectors.embedded.EmbeddedRuntime` (its config
    and Kafka are used): ``stop = start_plc_pipeline(rt, seed=7, speed=60)``.
    """
    import threading

    from plantstream.connectors.opcua import OpcUaConnector
    from plantstream.schemas.config import PlantConfig
    from plantstream.schemas.measurement import now_ms

    if kafka_conf is None:  # an EmbeddedRuntime
        config, kafka_conf = config.config, config.kafka_conf
    assert isinstance(config, PlantConfig) and kafka_conf is not None
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    line = PlcLine(seed=seed, machines=machines, start_ms=start_ms if start_ms is not None else now_ms(),
                   config=config)
    srv = PlcOpcUaServer(line, speed=speed)
    tags = {**plc_tag_dictionary(), **config.tags}
    cfg = config.model_copy(update={
        "tags": {k: config.tags.get(k) or TagMapping.model_validate(v) for k, v in tags.items()},
        "opcua": config.opcua.model_copy(update={
            "endpoint": srv.endpoint, "browse": (f"0:Objects/2:{srv.channel}",), "nodes": (),
            "ignore": (*config.opcua.ignore, *PLC_IGNORE),
            "state_file": str(work / "opcua-demo-state.json")}),
        "producer": config.producer.model_copy(update={"spool_dir": str(work / "opcua-spool")}),
    })
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop_ev: dict[str, asyncio.Event] = {}
    errors: list[BaseException] = []

    async def main() -> None:
        stop = asyncio.Event()
        stop_ev["e"] = stop
        conn_stop = asyncio.Event()
        async with srv:
            conn = OpcUaConnector(cfg, kafka_conf)
            task = asyncio.create_task(conn.run(conn_stop))
            ready.set()
            await srv.play(stop=stop)
            # let the connector take the last publishes before it stops
            deadline = time.monotonic() + 5.0
            last, since = -1, time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - since < 0.5:
                await asyncio.sleep(0.05)
                if conn.stats.received != last:
                    last, since = conn.stats.received, time.monotonic()
            conn_stop.set()
            await task

    def runner() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported by stop()
            errors.append(exc)
            ready.set()

    th = threading.Thread(target=runner, name="plantstream-plc-pipeline", daemon=True)
    th.start()
    ready.wait(30)

    def stop() -> PlcLine:
        ev = stop_ev.get("e")
        if ev is not None:
            loop.call_soon_threadsafe(ev.set)
        th.join(60)
        line.write_ground_truth(truth_path or work / "plc-truth.jsonl")
        if errors:
            raise errors[0]
        return line

    return stop
