"""MQTT → Kafka: subscribe, decode the payload formats, map tags, produce, then acknowledge.

:class:`MqttConnector` bridges an MQTT broker (KEPServerEX IoT Gateway, Azure IoT Operations
MQ, Mosquitto, sensors) into the Kafka topic ``plantstream.measurements`` with paho-mqtt 2.x:

- MQTT 3.1.1 (``clean_session=False``) or 5 (``clean_start=False`` + session expiry): a
  **persistent session**, so the broker keeps QoS 1 messages for the connector while it is away;
- QoS 1 with **manual acknowledgements**: a message is acknowledged to the broker only after
  Kafka confirmed every record made from it (:class:`~connectors.producer.SpoolingProducer`
  calls back), so a crash of the connector or an outage of Kafka loses nothing — the broker
  redelivers what was not acknowledged;
- TLS (CA, client certificate and key) and username/password; a refused login is a clear
  :class:`~schemas.errors.ConnectorError` at start, never a silent retry loop.

Payload formats (``mqtt.subscriptions[].format``; ``auto`` tells them apart by shape), see
:func:`parse_payload`:

``kepware``  KEPServerEX IoT Gateway JSON ``{"timestamp": ms, "values": [{"id":
             "Channel.Device.Tag", "v": 42, "q": true, "t": ms}]}``; tag = ``id``; ``q: false``
             → quality ``bad``.
``scalar``   one value per topic: a bare JSON scalar, or ``{"timestamp_ms": ms, "value": v}``;
             tag = the topic, except ``kepware/{channel}/{device}/{tag}`` → ``channel.device.tag``
             (so one tag dictionary serves both KEPServerEX publishing modes).
``flat``     a JSON object whose fields are metrics (Azure IoT Operations bakery simulator
             style), tag = ``topic#field``; the timestamp comes from ``timestamp``, ``ts``,
             ``timestamp_ms`` or ``time`` (or ``timestamp_field``), else the receive time.
``sparkplug`` Sparkplug B protobuf on ``spBv1.0/…`` topics (``auto`` picks it by the topic):
             births, aliases, deaths (machines ``off``), sequence gaps (a rebirth request is
             published to the edge node); tag = ``spBv1.0/<group>/<edge node>[/<device>]#<metric
             name>``. See :mod:`plantstream.connectors.sparkplug`.

Every value goes through the tag dictionary (:class:`~connectors.tags.TagMapper`). Bad input —
not JSON, wrong types, unknown tags (reported once), NaN/inf, oversized messages, bad
timestamps — goes to ``plantstream.deadletter`` with a reason; the connector keeps running.

Unit of parallelism: one MQTT client (one ``client_id``) per connector process; run more
connectors with disjoint subscriptions (or MQTT 5 shared subscriptions ``$share/g/…``) to
scale. Delivery guarantee: at-least-once into Kafka, in order per machine; a message redelivered
after a crash becomes duplicate records, which cumulative counters and state records absorb.
"""

from __future__ import annotations

import logging
import math
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plantstream.connectors import sparkplug
from plantstream.connectors.health import HealthServer
from plantstream.connectors.metrics import Metrics, count_reasons
from plantstream.connectors.producer import Record, SpoolingProducer, deadletter_record, measurement_record
from plantstream.connectors.sparkplug import SparkplugHost
from plantstream.connectors.tags import TagMapper
from plantstream.schemas.config import PlantConfig, cleartext_credentials
from plantstream.schemas.errors import ConnectorError
from plantstream.schemas.measurement import (
    MACHINE_STATE,
    MAX_TS_MS,
    MIN_TS_MS,
    DeadLetter,
    Measurement,
    now_ms,
    parse_ts,
)
from plantstream.schemas.redact import warn_once
from plantstream.schemas.tags_config import MqttSubscription

log = logging.getLogger(__name__)

_TS_FIELDS = ("timestamp", "ts", "timestamp_ms", "time")
MAX_DEADLETTERS_PER_MESSAGE = 100
"""One message yields at most this many dead letters (the last one counts the rest)."""

Sample = tuple[str, Any, int, str]
"""(source tag, raw value, ts epoch ms, quality)"""


@dataclass
class Parsed:
    """What one MQTT message holds: samples to map and problems to dead-letter."""

    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _ts(value: Any, what: str) -> int | str:
    ts = parse_ts(value)
    if ts is None or isinstance(value, bool):
        return f"{what} must be epoch milliseconds or an RFC 3339 time, got {value!r}"
    if not MIN_TS_MS <= ts < MAX_TS_MS:
        return f"{what} out of range: {value!r} is not epoch milliseconds between 2000 and 2100"
    return ts


def topic_tag(topic: str) -> str:
    """The source tag of a one-value topic.

    >>> topic_tag("kepware/Line1/Press01/State"), topic_tag("plant/line1/press01/temp")
    ('Line1.Press01.State', 'plant/line1/press01/temp')
    """
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == "kepware" and all(parts[1:]):
        return ".".join(parts[1:])
    return topic


def _finite_scalar(v: Any) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


def parse_payload(topic: str, payload: bytes, fmt: str, received_ms: int,
                  timestamp_field: str | None = None) -> Parsed:
    """Decode one MQTT payload into (tag, value, ts, quality) samples and error reasons.

    Pure: no tag lookup, no I/O. NaN and Infinity (which some gateways write) are accepted by
    the JSON reader here and reported per value by the tag mapper's checks.

    >>> p = parse_payload("iotgateway", b'{"timestamp": 1763791200000, "values": ['
    ...     b'{"id": "L1.Press.State", "v": 1, "q": true, "t": 1763791200001}]}', "auto", 0)
    >>> p.samples
    [('L1.Press.State', 1, 1763791200001, 'good')]
    >>> parse_payload("kepware/L1/Press/Temp", b'{"timestamp_ms": 1763791200000, "value": 61.5}',
    ...               "auto", 0).samples
    [('L1.Press.Temp', 61.5, 1763791200000, 'good')]
    >>> parse_payload("bakery/seattle/fryer", b'{"timestamp": "2025-11-22T06:00:00Z", '
    ...               b'"oil_temp_f": 375.2, "state": 1}', "auto", 0).samples
    [('bakery/seattle/fryer#oil_temp_f', 375.2, 1763791200000, 'good'),
     ('bakery/seattle/fryer#state', 1, 1763791200000, 'good')]
    >>> parse_payload("x", b'{"values": "nope"}', "kepware", 0).errors
    ["KEPServerEX payload: 'values' must be a list of {id, v, q, t} objects, got str"]
    """
    out = Parsed()
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        obj = _lenient_json(payload, exc, out)
        if out.errors:
            return out
    if fmt == "auto":
        if isinstance(obj, dict) and "values" in obj and isinstance(obj.get("values"), list):
            fmt = "kepware"
        elif not isinstance(obj, dict) or "value" in obj:
            fmt = "scalar"
        else:
            fmt = "flat"
    if fmt == "kepware":
        _parse_kepware(obj, received_ms, out)
    elif fmt == "scalar":
        _parse_scalar(topic, obj, received_ms, out)
    else:
        _parse_flat(topic, obj, received_ms, timestamp_field, out)
    return out


def _lenient_json(payload: bytes, exc: orjson.JSONDecodeError, out: Parsed) -> Any:
    """NaN / Infinity are not JSON, but some gateways write them: the standard library reads them.

    What it reads must still be what Kafka records can carry: integers beyond 64 bits, lone
    surrogates and nesting deeper than the JSON reader's limit (``RecursionError``) are
    reported as ``not JSON`` errors of the message (a dead letter), never raised.
    """
    import json

    try:
        obj = json.loads(payload)
        orjson.dumps(obj)  # big integers, lone surrogates: refused here, not when producing
    except (ValueError, RecursionError, TypeError, orjson.JSONEncodeError) as again:
        detail = str(exc) if isinstance(again, ValueError | RecursionError) else f"{exc}; {again}"
        out.errors.append(f"not JSON: {detail}")
        return None
    return obj


def _parse_kepware(obj: Any, received_ms: int, out: Parsed) -> None:
    if not isinstance(obj, dict):
        out.errors.append(f"KEPServerEX payload must be a JSON object, got {type(obj).__name__}")
        return
    values = obj.get("values")
    if not isinstance(values, list):
        out.errors.append("KEPServerEX payload: 'values' must be a list of {id, v, q, t} objects, got "
                          f"{'null' if values is None else type(values).__name__}")
        return
    base: int | str = received_ms
    if "timestamp" in obj:
        base = _ts(obj["timestamp"], "KEPServerEX 'timestamp'")
        if isinstance(base, str):
            out.errors.append(base)
            return
    for i, item in enumerate(values):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            out.errors.append(f"KEPServerEX values[{i}]: needs a non-empty string 'id', got {item!r:.100}")
            continue
        if "v" not in item:
            out.errors.append(f"KEPServerEX values[{i}] ({item['id']}): missing 'v'")
            continue
        ts: int | str = base
        if "t" in item:
            ts = _ts(item["t"], f"KEPServerEX values[{i}] ({item['id']}) 't'")
            if isinstance(ts, str):
                out.errors.append(ts)
                continue
        q = item.get("q", True)
        if not isinstance(q, bool):
            out.errors.append(f"KEPServerEX values[{i}] ({item['id']}): 'q' must be true or false, got {q!r}")
            continue
        out.samples.append((item["id"], item["v"], int(ts), "good" if q else "bad"))


def _parse_scalar(topic: str, obj: Any, received_ms: int, out: Parsed) -> None:
    ts: int | str = received_ms
    if isinstance(obj, dict):
        if "value" not in obj:
            out.errors.append("one-value payload: missing 'value' "
                              "(expected {\"timestamp_ms\": …, \"value\": …})")
            return
        for name in ("timestamp_ms", "timestamp", "ts"):
            if name in obj:
                ts = _ts(obj[name], f"'{name}'")
                break
        if isinstance(ts, str):
            out.errors.append(ts)
            return
        value = obj["value"]
        q = obj.get("quality", "good")
        quality = q if q in ("good", "uncertain", "bad") else "good"
    else:
        value, quality = obj, "good"
    if isinstance(value, dict | list):
        out.errors.append(f"one-value payload: 'value' must be a scalar, got {type(value).__name__}")
        return
    out.samples.append((topic_tag(topic), value, int(ts), quality))


def _parse_flat(topic: str, obj: Any, received_ms: int, timestamp_field: str | None, out: Parsed) -> None:
    if not isinstance(obj, dict):
        out.errors.append(f"flat payload must be a JSON object of metric fields, got {type(obj).__name__}")
        return
    names = (timestamp_field,) if timestamp_field else _TS_FIELDS
    ts: int | str = received_ms
    ts_name = None
    for name in names:
        if name in obj:
            ts_name = name
            ts = _ts(obj[name], f"field '{name}'")
            break
    if isinstance(ts, str):
        out.errors.append(ts)
        return
    if len(obj) == (ts_name is not None):
        out.errors.append("flat payload has no metric fields (only a timestamp); one-value payloads "
                          "need 'value'")
        return
    for name, value in obj.items():
        if name == ts_name:
            continue
        if isinstance(value, dict | list):
            out.errors.append(f"field '{name}' must be a scalar, got {type(value).__name__}")
            continue
        out.samples.append((f"{topic}#{name}", value, int(ts), "good"))


# -- the connector ------------------------------------------------------------------------------


@dataclass
class MqttStats:
    messages: int = 0
    acked: int = 0
    measurements: int = 0
    deadletters: int = 0
    connects: int = 0
    disconnects: int = 0
    last_error: str = ""
    deadletter_reasons: Counter[str] = field(default_factory=Counter)
    """Dead letters by reason kind (``/metrics``)."""
    rebirth_requests: int = 0
    """Sparkplug B rebirth requests sent (NCMD ``Node Control/Rebirth``)."""


def _matching(subs: tuple[MqttSubscription, ...], topic: str) -> MqttSubscription | None:
    for s in subs:
        if paho.topic_matches_sub(s.topic.removeprefix("$share/").split("/", 1)[-1]
                                  if s.topic.startswith("$share/") else s.topic, topic):
            return s
    return None


class MqttConnector:
    """Bridge MQTT subscriptions into Kafka (see the module docstring).

    Parameters
    ----------
    config
        The plant config: ``mqtt:`` (broker, session, TLS, subscriptions), ``tags:`` (the tag
        dictionary), ``producer:`` (spool) and the machines (site/line).
    kafka_conf
        librdkafka settings of the Kafka cluster (``bootstrap.servers`` …).
    producer
        A started :class:`SpoolingProducer` to share; by default the connector owns one.
    clock
        "Now" in epoch ms, the timestamp of payloads that carry none.
    metrics
        The process's :class:`~plantstream.connectors.metrics.Metrics` to add this connector to
        (several components served from one port); by default its own, served at ``/metrics``
        on ``producer.health_port``.
    """

    def __init__(self, config: PlantConfig, kafka_conf: Mapping[str, Any] | None = None, *,
                 producer: SpoolingProducer | None = None, clock: Callable[[], int] = now_ms,
                 tags: TagMapper | None = None, metrics: Metrics | None = None) -> None:
        if producer is None and kafka_conf is None:
            msg = "MqttConnector needs kafka_conf (librdkafka settings) or a started producer"
            raise ConnectorError(msg)
        self.config = config
        self.mqtt = config.mqtt
        self._kafka_conf = dict(kafka_conf or {})
        self._own_producer = producer is None
        self.producer = producer
        self._clock = clock
        self.mapper = tags or TagMapper(config, source=self.mqtt.source)
        self.stats = MqttStats()
        self.metrics = metrics if metrics is not None else Metrics("mqtt")
        self.metrics.watch_mqtt(self)
        self._client: paho.Client | None = None
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self._lock = threading.Lock()
        self._health: HealthServer | None = None
        sp = self.mqtt.sparkplug
        self.sparkplug = SparkplugHost(request_rebirth=sp.request_rebirth,
                                       rebirth_interval_s=sp.rebirth_interval_s)
        self._commands: list[tuple[str, bytes]] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, stop: threading.Event | None = None) -> MqttConnector:
        """Connect (raises ConnectorError on refusal, TLS or network errors), subscribe, run.

        ``stop`` set while it waits for the broker (Ctrl-C, SIGTERM) ends the wait at once: the
        connector is stopped and returned, nothing received.
        """
        m = self.mqtt
        for warning in cleartext_credentials(self.config, ("mqtt", "kafka")):
            warn_once(log, warning)
        if self.producer is None:
            self.producer = SpoolingProducer(self._kafka_conf, self.config.producer, name="mqtt",
                                             deadletter_raw_bytes=self.config.kafka.deadletter_raw_bytes).start()
        v5 = m.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=m.client_id,
            clean_session=None if v5 else False,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            manual_ack=True,
        )
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 30)
        if m.username is not None:
            client.username_pw_set(m.username, m.password.get_secret_value() if m.password else None)
        if m.tls is not None:
            client.tls_set(ca_certs=m.tls.ca_certs, certfile=m.tls.certfile, keyfile=m.tls.keyfile,
                           cert_reqs=ssl.CERT_REQUIRED)
            client.tls_insecure_set(m.tls.insecure)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = m.session_expiry_s
        where = f"MQTT broker {m.host}:{m.port}"
        try:
            client.connect(m.host, m.port, m.keepalive_s, clean_start=False if v5 else 3,
                           properties=props)
        except ssl.SSLError as exc:
            self._abort_start()
            msg = f"TLS handshake with {where} failed: {exc}; check mqtt.tls (ca_certs, certfile, keyfile)"
            raise ConnectorError(msg) from exc
        except OSError as exc:
            self._abort_start()
            msg = f"cannot reach {where}: {exc}; check mqtt.host and mqtt.port"
            raise ConnectorError(msg) from exc
        self._client = client
        client.loop_start()
        deadline = time.monotonic() + m.connect_timeout_s
        # started = subscribed: a message published once start() returns is routed to this session
        while not self._subscribed.is_set() and self._refused is None and time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                self.stop(timeout_s=1.0)
                return self
            self._subscribed.wait(0.05)
        if self._refused is not None or not self._subscribed.is_set():
            reason = self._refused or (
                f"no SUBACK within {m.connect_timeout_s:g}s" if self._connected.is_set() else
                f"no CONNACK within {m.connect_timeout_s:g}s" + (
                    " (an MQTT 3.1.1-only broker such as amqtt? set mqtt.protocol: \"3.1.1\")" if v5 else ""))
            self.stop()
            hint = ("check mqtt.subscriptions and the broker's ACL for mqtt.client_id"
                    if reason.startswith("subscription refused") else
                    "check mqtt.username and mqtt.password" if self._refused and
                    ("password" in reason.lower() or "authori" in reason.lower()) else
                    "check mqtt.host, mqtt.port, mqtt.protocol and mqtt.tls")
            msg = f"{where} refused the connection: {reason}; {hint}"
            raise ConnectorError(msg)
        log.info("MQTT connector %s connected to %s (MQTT %s, persistent session)", m.client_id, where,
                 m.protocol)
        p = self.config.producer
        if p.health_port is not None:
            self._health = HealthServer(p.health_port, self.health, host=p.health_host,
                                        metrics=self.metrics).start()
        return self

    def health(self) -> dict[str, Any]:
        """``live``: the producer thread runs; ``ready``: also connected to the MQTT broker and
        Kafka confirming (what ``/healthz`` and ``/readyz`` answer)."""
        if self.producer is None:
            return {"live": False, "ready": False, "error": "not started"}
        out = self.producer.health(self.config.producer.health_stall_s)
        out["mqtt_connected"] = self._connected.is_set()
        out["ready"] = out["ready"] and out["mqtt_connected"]
        out["mqtt"] = {"messages": self.stats.messages, "acked": self.stats.acked,
                       "deadletters": self.stats.deadletters, "last_error": self.stats.last_error}
        return out

    @property
    def health_port(self) -> int | None:
        """The port ``/healthz`` is served on (None: no endpoint)."""
        return self._health.port if self._health is not None else None

    def _abort_start(self) -> None:
        if self._own_producer and self.producer is not None:
            self.producer.close(timeout_s=1.0)
            self.producer = None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Disconnect, then let the producer confirm (and so acknowledge) what it can. Idempotent.

        Messages whose records Kafka has not confirmed are never acknowledged: the broker keeps
        them in the persistent session and redelivers them at the next start.
        """
        client, self._client = self._client, None
        health, self._health = self._health, None
        if health is not None:
            health.stop()
        if client is not None:
            client.on_message = None  # later messages stay unacknowledged: redelivered next time
        if self.producer is not None and client is not None:
            self.producer.flush(timeout_s)  # acknowledge what Kafka confirms while still connected
        if client is not None:
            client.disconnect()
            client.loop_stop()
        if self._own_producer and self.producer is not None:
            self.producer.close(timeout_s=0.5)
            self.producer = None

    def __enter__(self) -> MqttConnector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_until(self, stop: threading.Event, report_every_s: float = 30.0) -> None:
        """Block until ``stop`` is set, logging stats now and then (the CLI's main loop)."""
        next_report = time.monotonic() + report_every_s
        while not stop.wait(0.5):
            if time.monotonic() >= next_report:
                next_report += report_every_s
                log.info("mqtt: %s; producer: %s", self.stats, self.producer.stats if self.producer else None)

    # -- paho callbacks (network thread) ----------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            self.stats.last_error = f"connection refused: {reason}"
            client.disconnect()  # no reconnect loop against a broker that refuses us
            return
        self.stats.connects += 1
        subs: list[tuple[str, int]] = [(s.topic, s.qos) for s in self.mqtt.subscriptions]
        client.subscribe(subs)
        self._connected.set()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: list[Any],
                      properties: Any) -> None:
        refused = [f"{s.topic} ({r})" for s, r in zip(self.mqtt.subscriptions, reasons, strict=False)
                   if r.is_failure]
        if refused and not self._subscribed.is_set():
            self._refused = f"subscription refused for {', '.join(refused)}"
            self.stats.last_error = self._refused
            return
        if refused:
            log.error("MQTT connector: resubscription refused for %s", ", ".join(refused))
            self.stats.last_error = f"subscription refused: {', '.join(refused)}"
        self._subscribed.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._connected.clear()
        self.stats.disconnects += 1
        if self.stats.connects == 0 and self._refused is None:
            self._refused = ("the broker closed the connection before its CONNACK (a broker that only "
                             "speaks MQTT 3.1.1, such as amqtt? set mqtt.protocol: \"3.1.1\")")
            client.disconnect()
            return
        if reason is not None and getattr(reason, "is_failure", False):
            log.warning("MQTT connector disconnected: %s; reconnecting", reason)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            self.handle(msg.topic, bytes(msg.payload), partial(self._ack, client, msg.mid, msg.qos)
                        if msg.qos > 0 else None)
        except Exception as exc:  # never let one message kill the network thread
            log.exception("MQTT connector: message on %s failed", msg.topic)
            self.stats.last_error = repr(exc)

    def _ack(self, client: paho.Client, mid: int, qos: int) -> None:
        if client.ack(mid, qos) == paho.MQTT_ERR_SUCCESS:
            self.stats.acked += 1

    # -- the work ----------------------------------------------------------------------------------

    def convert(self, topic: str, payload: bytes, received_ms: int | None = None
                ) -> tuple[list[Measurement], list[DeadLetter]]:
        """One MQTT message → Measurements and dead letters (no I/O)."""
        now = self._clock() if received_ms is None else received_ms
        source = f"{self.mqtt.source}:{topic}"
        if len(payload) > self.mqtt.max_payload_bytes:
            reason = (f"oversized: {len(payload)} bytes exceeds mqtt.max_payload_bytes="
                      f"{self.mqtt.max_payload_bytes}")
            return [], [DeadLetter(payload, reason, source, now)]  # its record is bounded
        sub = _matching(self.mqtt.subscriptions, topic)
        fmt = sub.format if sub is not None else "auto"
        sp_topic = sparkplug.parse_topic(topic) if fmt in ("auto", "sparkplug") else None
        if fmt == "sparkplug" and sp_topic is None:
            sp_topic = (f"sparkplug: topic {topic!r} is not a Sparkplug B topic "
                        f"({sparkplug.NAMESPACE}/<group>/<message type>/<edge node>[/<device>])")
        out: list[Measurement] = []
        if sp_topic is not None:
            with self._lock:
                if isinstance(sp_topic, str):
                    parsed, decoded = Parsed(errors=[sp_topic]), None
                else:
                    decoded = self.sparkplug.handle(sp_topic, payload, now)
                    parsed = Parsed(decoded.samples, decoded.errors)
                    out.extend(self._deaths(decoded.deaths))
                    if decoded.rebirth is not None:
                        self._commands.append(decoded.rebirth)
        else:
            parsed = parse_payload(topic, payload, fmt, now, sub.timestamp_field if sub else None)
        dead = [DeadLetter(payload, reason, source, now) for reason in parsed.errors]
        with self._lock:  # the mapper is not thread-safe (tests call convert directly too)
            for tag, value, ts, quality in parsed.samples:
                got = self.mapper.map(tag, value, ts, quality, raw=payload)
                if isinstance(got, Measurement):
                    out.append(got)
                elif got is not None:
                    dead.append(DeadLetter(got.raw, got.reason, source, now))
        if len(dead) > MAX_DEADLETTERS_PER_MESSAGE:
            more = len(dead) - MAX_DEADLETTERS_PER_MESSAGE + 1
            rest = DeadLetter(payload, f"{more} more problems in this message (first: {dead[-more].reason})",
                              source, now)
            dead = [*dead[:MAX_DEADLETTERS_PER_MESSAGE - 1], rest]
        return out, dead

    def _deaths(self, deaths: list[tuple[list[str], int]]) -> list[Measurement]:
        """``machine_state`` ``off`` at the death time for each machine the dead tags map to
        (lock held)."""
        out: list[Measurement] = []
        for tags, ts in deaths:
            machines: dict[str, tuple[str, str]] = {}
            for tag in tags:
                r = self.mapper.lookup(tag)
                if r is None or r.machine in machines:
                    continue
                site, line = r.site, r.line
                if not site or not line:
                    info = self.config.machine(r.machine)
                    site, line = site or info.site, line or info.line
                machines[r.machine] = (site, line)
            for machine, (site, line) in sorted(machines.items()):
                out.append(Measurement(ts, machine, MACHINE_STATE, "off", site, line, "", self.mqtt.source,
                                       "good"))
        return out

    def _publish_commands(self) -> None:
        """Publish the Sparkplug rebirth requests made while converting (QoS 0, not retained)."""
        with self._lock:
            commands, self._commands = self._commands, []
        client = self._client
        for topic, payload in commands:
            if client is None:
                log.warning("Sparkplug: not connected, the rebirth request to %s is not sent", topic)
                continue
            client.publish(topic, payload, qos=0, retain=False)
            self.stats.rebirth_requests += 1

    def handle(self, topic: str, payload: bytes, ack: Callable[[], None] | None) -> None:
        """Convert one message and hand it to the producer; ``ack`` runs once Kafka confirmed it.

        Every message becomes Measurements or dead letters and is acknowledged: a failure of
        the conversion itself, or a value that cannot be encoded, is that message's dead letter.
        """
        assert self.producer is not None
        producer = self.producer
        try:
            ms, dead = self.convert(topic, payload)
        except Exception as exc:  # a bug or a payload nobody thought of: still a dead letter
            log.exception("MQTT connector: converting a message on %s failed", topic)
            self.stats.last_error = repr(exc)
            ms, dead = [], [DeadLetter(payload, f"cannot convert the message: {exc!r}",
                                       f"{self.mqtt.source}:{topic}", self._clock())]
        records: list[Record] = []
        for m in ms:
            try:
                records.append(measurement_record(m, producer.topic))
            except (TypeError, orjson.JSONEncodeError) as exc:  # e.g. a lone surrogate in a string
                dead.append(DeadLetter(payload, f"tag value of {m.metric} on {m.machine} cannot be "
                                       f"encoded: {exc}", f"{self.mqtt.source}:{topic}", self._clock()))
        self.stats.messages += 1
        self.stats.measurements += len(records)
        self.stats.deadletters += len(dead)
        if dead:
            count_reasons(self.stats.deadletter_reasons, (d.reason for d in dead))
        limit = self.config.kafka.deadletter_raw_bytes
        records.extend(deadletter_record(d, limit=limit) for d in dead)
        producer.send(records, ack)
        if self._commands:
            self._publish_commands()
