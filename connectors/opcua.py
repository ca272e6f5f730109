# mypy: disable-error-code="arg-type"
# (asyncua annotates NodeId/DataValue fields with its own NewTypes of int, str and datetime)
"""OPC UA → Kafka: subscribe to PLC tags with asyncua and produce canonical Measurements.

:class:`OpcUaConnector` connects to one OPC UA server (``opcua:`` section of the plant config),
resolves the configured nodes (by NodeId or browse path) and discovers the variables under the
``browse`` folders, then subscribes to all of them (sampling interval, queue size, optional
absolute deadband on Float/Double nodes). Every data change becomes one Measurement through the
tag dictionary (:class:`connectors.tags.TagMapper`) and goes to Kafka through the spooling
producer (:class:`connectors.producer.SpoolingProducer`); values that cannot be used (unknown
tags, wrong types, NaN/inf, unmapped state codes) go to ``plantstream.deadletter`` with the
reason. The connector never stops on bad data.

- **Source tag** of a node: the ``tag`` given in config, else its string NodeId identifier
  (KEPServerEX: ``Channel1.Device1.Tag`` — the same id its IoT Gateway sends over MQTT, so one
  tag dictionary serves both), else the browse names from the browsed folder joined by ``.``.
- **Time**: the value's SourceTimestamp, else its ServerTimestamp, else the receive time.
- **Quality**: StatusCode Good → ``good``, Uncertain → ``uncertain``, Bad → ``bad``. A node with
  no value yet (BadWaitingForInitialData, empty value) is skipped.
- **Order**: the notifications of each publish are put in (source time, server time) order
  before they are produced, so one machine's records reach Kafka in the order the PLC wrote
  them (Kafka key = machine id).
- **Reconnect**: a watchdog checks the session every ``watchdog_s``; a lost connection is
  re-established with exponential backoff (``reconnect_initial_s`` … ``reconnect_max_s``) and the
  subscription re-created. With ``backfill`` (default) the values each node had while the
  connector was away are read back with HistoryRead (from the last value time recorded in
  ``state_file``, which also survives restarts); values already delivered are recognised by
  their time and value and not sent again.
- **Security**: ``None``, or Basic256Sha256 ``Sign`` / ``SignAndEncrypt`` with the client
  certificate and key; username/password. The server's certificate must be in the trust list
  (``security.trust``, ``security.server_certificate``) or, by explicit opt-in, pinned on first
  use (:func:`check_server_certificate`). Rejected credentials or certificates raise
  :class:`~schemas.errors.ConnectorError` at once (no retry loop). A user name over
  SecurityPolicy None logs a warning at start.

Delivery guarantee: at-least-once per value the server delivered or kept in history, in order
per machine; duplicates (after a crash) are harmless for cumulative counters and states.
Unit of parallelism: one connector per OPC UA server (one asyncio task, one producer).

Examples
--------
>>> from plantstream.schemas.config import PlantConfig, cleartext_credentials
>>> OpcUaConnector(PlantConfig(), {"bootstrap.servers": "127.0.0.1:1"}).stats.received
0
>>> quality_of(ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue))
'uncertain'
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plantstream.connectors.health import HealthServer
from plantstream.connectors.metrics import Metrics, count_reasons
from plantstream.connectors.producer import SpoolingProducer
from plantstream.connectors.tags import TagMapper
from plantstream.schemas.config import PlantConfig, cleartext_credentials
from plantstream.schemas.errors import ConnectorError
from plantstream.schemas.measurement import DeadLetter, Measurement, now_ms
from plantstream.schemas.opcua_config import OpcUaConfig, OpcUaSecurity
from plantstream.schemas.redact import warn_once

log = logging.getLogger(__name__)

_FATAL_STATUS = {
    "BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected", "BadCertificateInvalid",
    "BadSecurityChecksFailed", "BadCertificateUntrusted", "BadCertificateUriInvalid",
    "BadSecurityPolicyRejected", "BadSecurityModeRejected", "BadUserSignatureInvalid",
    "BadCertificateHostNameInvalid", "BadCertificateTimeInvalid", "BadCertificateRevoked",
}
_SKIP_STATUS = {"BadWaitingForInitialData"}

SESSION_TIMEOUT_MS = 600_000
"""The session lifetime the connector asks for: how long a server keeps the session (and its
subscription) across a broken connection. 10 minutes, the most many servers grant (asyncua's own
server among them), so the usual answer is no revision (asyncua asks for an hour and logs a
warning each time it is cut down)."""


def quality_of(status: ua.StatusCode | None) -> str:
    """OPC UA StatusCode → Measurement quality (``good``, ``uncertain``, ``bad``)."""
    if status is None:
        return "good"
    if status.is_good():
        return "good"
    if status.is_uncertain():
        return "uncertain"
    return "bad"


def _ms(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


@dataclass
class OpcUaStats:
    """Counters of an :class:`OpcUaConnector`."""

    received: int = 0
    produced: int = 0
    deadlettered: int = 0
    skipped: int = 0
    """Notifications without a value yet, or already delivered (backfill/re-subscribe overlap)."""
    backfilled: int = 0
    connects: int = 0
    reconnects: int = 0
    nodes: int = 0
    last_error: str = ""
    connected: bool = False
    deadletter_reasons: Counter[str] = field(default_factory=Counter)
    """Dead letters by reason kind (``/metrics``)."""


@dataclass(slots=True)
class _Item:
    src_ms: int
    srv_ms: int
    seq: int
    tag: str
    node: str
    value: Any
    status: ua.StatusCode | None


@dataclass
class _Sub:
    """Subscription handler: collects notifications (called in publish order)."""

    connector: OpcUaConnector
    tags: dict[str, tuple[str, str]] = field(default_factory=dict)

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        dv = data.monitored_item.Value
        key = node.nodeid.to_string()
        tag = self.tags.get(key, (key, key))[0]
        self.connector._collect(tag, key, dv)

    def status_change_notification(self, status: Any) -> None:
        log.warning("OPC UA subscription status change: %s", status)
        self.connector._lost.set()


class OpcUaConnector:
    """Bridge one OPC UA server into Kafka (see the module docstring).

    Parameters
    ----------
    config
        The plant config (``opcua:``, ``tags:``, ``producer:``).
    kafka_conf
        librdkafka settings of the cluster (``bootstrap.servers`` …).
    producer
        A started :class:`SpoolingProducer` to share (default: one owned by the connector).
    clock
        Wall-clock epoch ms (receive time when a value has no timestamp).
    """

    def __init__(self, config: PlantConfig, kafka_conf: Mapping[str, Any], *,
                 producer: SpoolingProducer | None = None, clock: Callable[[], int] = now_ms,
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.oc: OpcUaConfig = config.opcua
        self.kafka_conf = dict(kafka_conf)
        self.mapper = TagMapper(config, source=self.oc.source)
        self._producer = producer
        self._own_producer = producer is None
        self.clock = clock
        self.stats = OpcUaStats()
        self.metrics = metrics if metrics is not None else Metrics("opcua")
        """Its Prometheus metrics (served at ``/metrics`` on ``producer.health_port``); pass a
        shared one to serve several components from one process."""
        self.metrics.watch_opcua(self)
        self._buffer: list[_Item] = []
        self._seq = 0
        self._last: dict[str, tuple[int, Any]] = {}
        self._hwm: int | None = None
        self._first_live: dict[str, int] = {}
        """Latest source time delivered: every publish is a cut, so all earlier values are in."""
        self._state_dirty = False
        self._lost = asyncio.Event()
        self._client: Client | None = None
        self._tags: dict[str, tuple[str, str]] = {}
        self._load_state()

    # -- state (last delivered value per node) ------------------------------------------------

    def _load_state(self) -> None:
        p = Path(self.oc.state_file)
        if not self.oc.backfill or not p.is_file():
            return
        try:
            data = orjson.loads(p.read_bytes())
            self._last = {k: (int(v[0]), v[1]) for k, v in data.get("nodes", {}).items()}
            hwm = data.get("hwm")
            self._hwm = int(hwm) if hwm is not None else None
        except (orjson.JSONDecodeError, OSError, TypeError, ValueError, IndexError) as exc:
            log.warning("OPC UA state file %s unreadable (%s); starting without backfill", p, exc)

    def _save_state(self) -> None:
        if not self.oc.backfill or not self._state_dirty:
            return
        p = Path(self.oc.state_file)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"endpoint": self.oc.endpoint, "hwm": self._hwm,
                                      "nodes": {k: [t, _jsonable(v)] for k, (t, v) in self._last.items()}}))
        tmp.replace(p)
        self._state_dirty = False

    # -- values -------------------------------------------------------------------------------

    def _collect(self, tag: str, node: str, dv: ua.DataValue, live: bool = True) -> None:
        self.stats.received += 1
        src = _ms(dv.SourceTimestamp)
        srv = _ms(dv.ServerTimestamp)
        recv = self.clock()
        if live and node not in self._first_live:
            self._first_live[node] = src if src is not None else recv
        self._seq += 1
        value = dv.Value.Value if dv.Value is not None else None
        self._buffer.append(_Item(src if src is not None else (srv if srv is not None else recv),
                                  srv if srv is not None else recv, self._seq, tag, node, value,
                                  dv.StatusCode))

    def _flush(self) -> int:
        """Map and hand the collected values to the producer, in (source, server) time order."""
        if not self._buffer:
            return 0
        items = sorted(self._buffer, key=lambda i: (i.src_ms, i.srv_ms, i.seq))
        self._buffer = []
        ms: list[Measurement] = []
        dls: list[DeadLetter] = []
        for it in items:
            status = it.status
            if (status is not None and status.name in _SKIP_STATUS) or (
                    it.value is None and (status is None or status.is_good())):
                self.stats.skipped += 1
                continue
            last = self._last.get(it.node)
            if last is not None and it.src_ms == last[0] and _jsonable(it.value) == last[1]:
                self.stats.skipped += 1
                continue
            self._last[it.node] = (it.src_ms, _jsonable(it.value))
            if self._hwm is None or it.src_ms > self._hwm:
                self._hwm = it.src_ms
            self._state_dirty = True
            if it.value is None:
                name = status.name if status is not None else "?"
                dls.append(DeadLetter(f"{it.tag}=None status={name}".encode(),
                                      f"tag {it.tag!r}: no value (status {name})",
                                      f"{self.oc.source}:{it.tag}", it.src_ms))
                continue
            out = self.mapper.map(it.tag, it.value, it.src_ms, quality_of(status))
            if out is None:
                self.stats.skipped += 1
            elif isinstance(out, DeadLetter):
                dls.append(out)
            else:
                ms.append(out)
        if ms or dls:
            assert self._producer is not None
            self._producer.send_measurements(ms, deadletters=dls)
            self.stats.produced += len(ms)
            self.stats.deadlettered += len(dls)
            if dls:
                count_reasons(self.stats.deadletter_reasons, (d.reason for d in dls))
        return len(ms) + len(dls)

    # -- connection ---------------------------------------------------------------------------

    async def _connect(self) -> Client:
        oc = self.oc
        client = Client(oc.endpoint, timeout=oc.connect_timeout_s)
        client.session_timeout = SESSION_TIMEOUT_MS
        client.application_uri = oc.security.application_uri
        client.name = "plantstream OPC UA connector"
        if oc.username is not None:
            client.set_user(oc.username)
        if oc.password is not None:
            client.set_password(oc.password.get_secret_value())
        sec = oc.security
        if sec.policy == "Basic256Sha256":
            assert sec.certificate is not None and sec.private_key is not None
            for what, path in (("certificate", sec.certificate), ("private_key", sec.private_key)):
                if not Path(path).is_file():
                    msg = f"opcua.security.{what}: file {path!r} does not exist"
                    raise ConnectorError(msg)
            mode = (ua.MessageSecurityMode.Sign if sec.mode == "Sign"
                    else ua.MessageSecurityMode.SignAndEncrypt)
            pw = sec.private_key_password.get_secret_value() if sec.private_key_password else None
            server_der = await self._trusted_server_certificate(mode)
            try:
                await client.set_security(SecurityPolicyBasic256Sha256, sec.certificate, sec.private_key,
                                          pw, server_der, mode)
            except (TimeoutError, OSError):
                raise
            except Exception as exc:
                msg = (f"opcua.security: cannot use the client certificate/key with {oc.endpoint} "
                       f"({type(exc).__name__}: {exc}); check that the certificate's URI is "
                       f"{sec.application_uri!r}, the key matches, and the server offers "
                       f"Basic256Sha256 {sec.mode}")
                raise ConnectorError(msg) from exc
        try:
            await client.connect()
        except ua.UaStatusCodeError as exc:
            name = ua.StatusCode(exc.code).name
            with contextlib.suppress(Exception):
                await client.disconnect()
            if name in _FATAL_STATUS:
                who = f"user {oc.username!r}" if oc.username else "anonymous access"
                msg = (f"OPC UA server {oc.endpoint} refused the session ({name}): check "
                       f"opcua.username/opcua.password ({who}) and opcua.security")
                raise ConnectorError(msg) from exc
            raise
        except ua.UaError as exc:
            with contextlib.suppress(Exception):
                await client.disconnect()
            if "endpoint" in str(exc).lower():
                msg = (f"OPC UA server {oc.endpoint} offers no endpoint for opcua.security policy "
                       f"{sec.policy!r} mode {sec.mode!r} ({exc}); use one the server offers")
                raise ConnectorError(msg) from exc
            raise
        return client

    async def _trusted_server_certificate(self, mode: ua.MessageSecurityMode) -> bytes:
        """The server's certificate (DER) for the secure channel, once it is known to be trusted.

        The endpoint description (read over an unsecured channel, as every UA client does) only
        says which certificate the server claims; it is used only when it is in the trust list,
        the pinned ``server_certificate``, or (opt-in) pinned on first use. The secure channel
        then proves the server holds its key.
        """
        oc, sec = self.oc, self.oc.security
        probe = Client(oc.endpoint, timeout=oc.connect_timeout_s)
        try:
            endpoints = await probe.connect_and_get_server_endpoints()
        except ua.UaStatusCodeError:
            raise
        try:
            endpoint = Client.find_endpoint(endpoints, mode, SecurityPolicyBasic256Sha256.URI)
        except ua.UaError as exc:
            msg = (f"OPC UA server {oc.endpoint} offers no endpoint for opcua.security policy "
                   f"{sec.policy!r} mode {sec.mode!r} ({exc}); use one the server offers")
            raise ConnectorError(msg) from exc
        der = first_certificate(bytes(endpoint.ServerCertificate or b""))
        if not der:
            msg = f"OPC UA server {oc.endpoint} presents no certificate for Basic256Sha256"
            raise ConnectorError(msg)
        check_server_certificate(der, sec, oc.endpoint)
        return der

    async def _resolve(self, client: Client) -> list[tuple[Node, str]]:
        """The nodes to subscribe, with their source tag names."""
        oc = self.oc
        out: dict[str, tuple[Node, str]] = {}
        for spec in oc.nodes:
            if spec.node_id is not None:
                node = client.get_node(spec.node_id)
            else:
                assert spec.browse_path is not None
                parts = [p for p in spec.browse_path.split("/") if p]
                if parts and parts[0] in ("Objects", "0:Objects"):
                    parts = parts[1:]
                try:
                    node = await client.nodes.objects.get_child(parts)
                except ua.UaStatusCodeError as exc:
                    msg = f"opcua.nodes: browse path {spec.browse_path!r} not found on {oc.endpoint}: {exc}"
                    raise ConnectorError(msg) from exc
            key = node.nodeid.to_string()
            out[key] = (node, spec.tag or _tag_name(node.nodeid, []))
        for folder in oc.browse:
            if folder.startswith(("ns=", "i=", "s=", "g=", "b=")):
                root = client.get_node(folder)
            else:
                parts = [p for p in folder.split("/") if p]
                if parts and parts[0] in ("Objects", "0:Objects"):
                    parts = parts[1:]
                try:
                    root = await client.nodes.objects.get_child(parts) if parts else client.nodes.objects
                except ua.UaStatusCodeError as exc:
                    msg = f"opcua.browse: folder {folder!r} not found on {oc.endpoint}: {exc}"
                    raise ConnectorError(msg) from exc
            try:
                name = (await root.read_browse_name()).Name
            except ua.UaStatusCodeError as exc:
                msg = f"opcua.browse: folder {folder!r} not found on {oc.endpoint}: {exc}"
                raise ConnectorError(msg) from exc
            await self._browse(root, [name], oc.browse_depth, out)
        if not out:
            msg = "opcua: no nodes to subscribe; list opcua.nodes or opcua.browse folders"
            raise ConnectorError(msg)
        return list(out.values())

    async def _browse(self, node: Node, path: list[str], depth: int,
                      out: dict[str, tuple[Node, str]]) -> None:
        for child in await node.get_children(refs=ua.ObjectIds.HierarchicalReferences):
            cls = await child.read_node_class()
            name = (await child.read_browse_name()).Name
            if cls == ua.NodeClass.Variable:
                key = child.nodeid.to_string()
                tag = _tag_name(child.nodeid, [*path, name])
                if not any(fnmatch.fnmatchcase(tag, pat) for pat in self.oc.ignore):
                    out.setdefault(key, (child, tag))
            elif cls == ua.NodeClass.Object and depth > 1:
                await self._browse(child, [*path, name], depth - 1, out)

    async def _backfill(self, nodes: list[tuple[Node, str]]) -> None:
        """Read what each node had while we were away (HistoryRead).

        Runs after the subscription exists: history and the first live values meet in the
        buffer, are put in time order, and overlaps are dropped as exact duplicates.
        """
        if self._hwm is None:
            return
        hwm = self._hwm
        # each node's first live value bounds its history: later values come live, in order
        deadline = time.monotonic() + 5.0
        while len(self._first_live) < len(nodes) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        start = datetime.fromtimestamp(hwm / 1000, UTC)
        end = datetime.now(UTC) + timedelta(days=3650)
        n = 0
        for node, tag in nodes:
            key = node.nodeid.to_string()
            try:
                values = await node.read_raw_history(start, end)
            except ua.UaStatusCodeError as exc:
                log.info("no history for %s (%s); values missed while disconnected are lost", tag, exc)
                continue
            for dv in values:
                src = _ms(dv.SourceTimestamp)
                if src is not None and src < hwm:  # delivered before: publishes are cuts
                    continue
                cap = self._first_live.get(key)
                if cap is not None and src is not None and src > cap:
                    continue
                self._collect(tag, key, dv, live=False)
                n += 1
        self.stats.backfilled += n
        self._flush()

    async def _session(self, stop: asyncio.Event) -> None:
        oc = self.oc
        client = await self._connect()
        self._client = client
        try:
            self.stats.connects += 1
            self.stats.connected = True
            nodes = await self._resolve(client)
            self.stats.nodes = len(nodes)
            self._tags = {n.nodeid.to_string(): (tag, tag) for n, tag in nodes}
            handler = _Sub(self, self._tags)
            sub = await client.create_subscription(oc.publishing_interval_ms, handler)
            dtypes: dict[str, bool] = {}
            if oc.deadband is not None:
                for n, _ in nodes:
                    try:
                        vt = await n.read_data_type_as_variant_type()
                    except (ua.UaError, ValueError):
                        vt = None
                    dtypes[n.nodeid.to_string()] = vt in (ua.VariantType.Float, ua.VariantType.Double)
            requests = []
            for i, (n, _) in enumerate(nodes):
                rp = ua.MonitoringParameters()
                rp.ClientHandle = 1000 + i
                rp.SamplingInterval = oc.sampling_interval_ms
                rp.QueueSize = oc.queue_size
                rp.DiscardOldest = True
                if oc.deadband is not None and dtypes.get(n.nodeid.to_string()):
                    flt = ua.DataChangeFilter()
                    flt.Trigger = ua.DataChangeTrigger.StatusValue
                    flt.DeadbandType = ua.DeadbandType.Absolute
                    flt.DeadbandValue = oc.deadband
                    rp.Filter = flt
                rv = ua.ReadValueId()
                rv.NodeId = n.nodeid
                rv.AttributeId = ua.AttributeIds.Value
                req = ua.MonitoredItemCreateRequest()
                req.ItemToMonitor = rv
                req.MonitoringMode = ua.MonitoringMode.Reporting
                req.RequestedParameters = rp
                requests.append(req)
            self._first_live = {}
            results = await sub.create_monitored_items(requests)
            if oc.backfill:  # after subscribing, so nothing falls between history and live values
                await self._backfill(nodes)
            bad = [(tag, r) for (_, tag), r in zip(nodes, results, strict=True)
                   if isinstance(r, ua.StatusCode)]
            for tag, r in bad:
                log.warning("OPC UA: cannot subscribe to %s: %s", tag, r)
            log.info("OPC UA connector subscribed to %d nodes on %s", len(nodes) - len(bad), oc.endpoint)
            self._lost.clear()
            last_check = time.monotonic()
            last_save = time.monotonic()
            while not stop.is_set() and not self._lost.is_set():
                await asyncio.sleep(0.02)
                self._flush()
                now = time.monotonic()
                if now - last_save > 1.0:
                    self._save_state()
                    last_save = now
                if now - last_check > oc.watchdog_s:
                    last_check = now
                    try:
                        limit = max(5.0, 2 * oc.watchdog_s)
                        await asyncio.wait_for(client.check_connection(), timeout=limit)
                        await asyncio.wait_for(client.nodes.server_state.read_value(), timeout=limit)
                    except Exception as exc:  # any failure means the session is gone
                        self.stats.last_error = f"{type(exc).__name__}: {exc}"
                        log.warning("OPC UA connection to %s lost (%s); reconnecting", oc.endpoint,
                                    self.stats.last_error)
                        break
            self._flush()
        finally:
            self.stats.connected = False
            self._client = None
            self._save_state()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), timeout=2.0)

    async def run(self, stop: asyncio.Event | None = None) -> OpcUaStats:
        """Bridge until ``stop`` is set: connect, subscribe, reconnect with backoff on loss.

        Raises :class:`ConnectorError` for configuration and authentication problems.
        """
        stop = stop or asyncio.Event()
        for warning in cleartext_credentials(self.config, ("opcua", "kafka")):
            warn_once(log, warning)
        if self._producer is None:
            self._producer = SpoolingProducer(self.kafka_conf, self.config.producer, name="opcua").start()
        p = self.config.producer
        health = HealthServer(p.health_port, self.health, host=p.health_host, metrics=self.metrics).start() \
            if p.health_port is not None else None
        delay = self.oc.reconnect_initial_s
        try:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    await self._session(stop)
                except ConnectorError:
                    raise
                except (TimeoutError, OSError, ua.UaError, ConnectionError) as exc:
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("OPC UA %s unavailable (%s); retrying in %.1f s", self.oc.endpoint,
                                self.stats.last_error, delay)
                if stop.is_set():
                    break
                self.stats.reconnects += 1
                if time.monotonic() - t0 > 10 * delay:
                    delay = self.oc.reconnect_initial_s
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, self.oc.reconnect_max_s)
        finally:
            if health is not None:
                health.stop()
            self._flush()
            self._save_state()
            if self._own_producer and self._producer is not None:
                await asyncio.to_thread(self._producer.close)
                self._producer = None
        return self.stats

    @property
    def producer(self) -> SpoolingProducer | None:
        return self._producer

    def health(self) -> dict[str, Any]:
        """``live``: the producer thread runs; ``ready``: Kafka confirms within
        ``producer.health_stall_s`` (what ``/healthz`` and ``/readyz`` answer)."""
        if self._producer is None:
            return {"live": False, "ready": False, "error": "not started"}
        out = self._producer.health(self.config.producer.health_stall_s)
        out["opcua"] = {"reconnects": self.stats.reconnects, "last_error": self.stats.last_error}
        return out


# -- server certificate trust ------------------------------------------------------------------

_CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")


def first_certificate(chain: bytes) -> bytes:
    """The first DER certificate of a concatenated chain (a ServerCertificate may carry one).

    >>> first_certificate(bytes([0x30, 0x02, 1, 2, 0x30, 0x01, 9]))
    b'0\\x02\\x01\\x02'
    """
    if len(chain) < 2 or chain[0] != 0x30:
        return chain
    n = chain[1]
    if n < 0x80:
        return chain[:2 + n]
    k = n & 0x7F
    return chain[:2 + k + int.from_bytes(chain[2:2 + k], "big")]


def _der_of(path: Path) -> bytes:
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    return first_certificate(data)


def fingerprint(der: bytes) -> str:
    """SHA-256 fingerprint of a DER certificate, as ``AB:CD:…``."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def trusted_certificates(sec: OpcUaSecurity) -> dict[str, Path]:
    """Fingerprint → file of every certificate in ``trust`` (files and folders) and ``server_certificate``."""
    out: dict[str, Path] = {}
    entries = [*sec.trust, *([sec.server_certificate] if sec.server_certificate else [])]
    for entry in entries:
        p = Path(entry)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in _CERT_SUFFIXES and f.is_file())
        elif p.is_file():
            files = [p]
        else:
            msg = (f"opcua.security.trust: {entry!r} is neither a certificate file nor a folder; give "
                   "the server certificate (DER/PEM) or a folder of them")
            raise ConnectorError(msg)
        for f in files:
            try:
                out[fingerprint(_der_of(f))] = f
            except (ValueError, OSError) as exc:
                msg = f"opcua.security.trust: {str(f)!r} is not a certificate ({exc})"
                raise ConnectorError(msg) from exc
    return out


def check_server_certificate(der: bytes, sec: OpcUaSecurity, endpoint: str,
                             now: datetime | None = None) -> str:
    """Refuse a server certificate that is not trusted or not valid now; return how it was trusted.

    Trusted = in the trust list (or the pinned ``server_certificate``); else, only with
    ``trust_on_first_use``, equal to the certificate pinned in ``pinned_certificate_file`` (the
    first one seen is pinned there). Raises :class:`ConnectorError` naming the fingerprint and
    the field to change.
    """
    fp = fingerprint(der)
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        msg = f"OPC UA server {endpoint} presents a certificate that cannot be read ({exc})"
        raise ConnectorError(msg) from exc
    subject = cert.subject.rfc4514_string()
    when = now or datetime.now(UTC)
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        msg = (f"OPC UA server {endpoint} presents a certificate ({subject}) valid only from "
               f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}; "
               "renew it on the server")
        raise ConnectorError(msg)
    trusted = trusted_certificates(sec)
    if trusted or not sec.trust_on_first_use:
        if fp in trusted:
            return f"trusted ({trusted[fp]})"
        msg = (f"OPC UA server {endpoint} presents a certificate that is not trusted ({subject}, SHA-256 "
               f"{fp}); if this is your server, add its certificate to opcua.security.trust")
        raise ConnectorError(msg)
    pinned = Path(sec.pinned_certificate_file)
    if pinned.is_file():
        if fingerprint(first_certificate(pinned.read_bytes())) == fp:
            return f"pinned on first use ({pinned})"
        msg = (f"OPC UA server {endpoint} presents a different certificate ({subject}, SHA-256 {fp}) from "
               f"the one pinned on first use in {str(pinned)!r}; if the server's certificate was "
               "renewed on purpose, delete that file to pin the new one")
        raise ConnectorError(msg)
    pinned.parent.mkdir(parents=True, exist_ok=True)
    tmp = pinned.with_suffix(pinned.suffix + ".tmp")
    tmp.write_bytes(der)
    tmp.replace(pinned)
    log.warning("OPC UA: trust on first use: pinned the certificate of %s (%s, SHA-256 %s) in %s",
                endpoint, subject, fp, pinned)
    return f"pinned now ({pinned})"


def _tag_name(nid: ua.NodeId, path: list[str]) -> str:
    if nid.NodeIdType == ua.NodeIdType.String and isinstance(nid.Identifier, str):
        return nid.Identifier
    return ".".join(path) if path else nid.to_string()


def _jsonable(v: Any) -> Any:
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return repr(v)
