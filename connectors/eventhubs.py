"""The cloud export's connection: Event Hubs settings, the record format, the bandwidth meter.

Event Hubs speaks the Kafka protocol on port 9093. From a connection string
``Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=…``
:func:`eventhubs_client_config` builds exactly the librdkafka settings Microsoft documents
(``bootstrap.servers=NS.servicebus.windows.net:9093``, ``security.protocol=SASL_SSL``,
``sasl.mechanism=PLAIN``, ``sasl.username=$ConnectionString``, ``sasl.password=`` the whole
connection string) and the topic is the event hub (``EntityPath``). The same sink works against
any Kafka cluster (``eventhubs.bootstrap_servers`` + ``topic``).

What is sent, summed or coalesced is the cloud export's business
(:mod:`plantstream.flows.cloud`, from the flows' declared cloud policy); sending is the cloud
outbox worker's (:class:`plantstream.connectors.outbox.CloudDelivery`), which reads the records
from the local topic ``plantstream.outbox.cloud``. Each record's key is ``site/machine`` (so one
machine's records stay in one partition, in order), its value the row as JSON with a ``type``
field naming the table (:func:`record_value`), and a ``plantstream-table`` header.
:class:`BandwidthMeter` counts the bytes sent against the bytes of raw measurements read.

Examples
--------
>>> cs = ("Endpoint=sb://plant-hub.servicebus.windows.net/;SharedAccessKeyName=send;"
...       "SharedAccessKey=abc=;EntityPath=plantstream-kpis")
>>> conf = eventhubs_client_config(cs)
>>> conf["bootstrap.servers"], conf["sasl.username"], conf["sasl.password"] == cs
('plant-hub.servicebus.windows.net:9093', '$ConnectionString', True)
>>> parse_connection_string(cs).entity_path
'plantstream-kpis'
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import orjson

from plantstream.connectors import kafka
from plantstream.schemas.errors import ConfigError
from plantstream.schemas.redact import mask_settings, reveal_settings, secret_keys_of
from plantstream.schemas.sinks_config import CONNECTION_STRING_ENV, EventHubsConfig

log = logging.getLogger(__name__)

EVENTHUBS_PORT = 9093
TABLE_HEADER = "plantstream-table"
DEMO_TOPIC = "plantstream.cloud"
"""Where the demo sends the cloud records when no Event Hubs is configured (embedded broker)."""

Row = dict[str, Any]


# -- connection string -----------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionString:
    """The parts of an Event Hubs connection string (the key itself is never printed)."""

    endpoint: str
    namespace_host: str
    key_name: str
    key: str
    entity_path: str | None

    def __repr__(self) -> str:
        return (f"ConnectionString(namespace_host={self.namespace_host!r}, "
                f"key_name={self.key_name!r}, entity_path={self.entity_path!r})")


_REQUIRED = ("Endpoint", "SharedAccessKeyName", "SharedAccessKey")
_KNOWN = (*_REQUIRED, "EntityPath")


def parse_connection_string(text: str) -> ConnectionString:
    """Parse ``Endpoint=sb://…/;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=…]`` strictly.

    Errors name the missing or malformed part. Keys are matched case-insensitively (as the
    Azure SDKs do); values may contain ``=`` (base64 keys end with it).

    >>> parse_connection_string("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=x")
    Traceback (most recent call last):
    ...
    plantstream.schemas.errors.ConfigError: Event Hubs connection string has no SharedAccessKeyName=…; ...
    """
    parts: dict[str, str] = {}
    canonical = {k.lower(): k for k in _KNOWN}
    for raw in text.strip().split(";"):
        if not raw.strip():
            continue
        name, sep, value = raw.partition("=")
        name = name.strip()
        if not sep or not name:
            msg = (f"Event Hubs connection string part {name or raw!r} is not Name=value; copy the "
                   "whole string from the portal (Shared access policies → connection string)")
            raise ConfigError(msg)
        key = canonical.get(name.lower())
        if key is None:
            if name.lower() == "sharedaccesssignature":
                msg = ("Event Hubs connection strings with SharedAccessSignature are not supported; "
                       "use a shared access policy's SharedAccessKeyName and SharedAccessKey")
                raise ConfigError(msg)
            continue  # other parts (e.g. UseDevelopmentEmulator) do not change the Kafka settings
        if key in parts:
            msg = f"Event Hubs connection string names {key} twice; keep one"
            raise ConfigError(msg)
        parts[key] = value.strip()
    for key in _REQUIRED:
        if not parts.get(key):
            msg = (f"Event Hubs connection string has no {key}=…; it must look like "
                   "Endpoint=sb://NAMESPACE.servicebus.windows.net/;SharedAccessKeyName=NAME;"
                   "SharedAccessKey=KEY;EntityPath=EVENTHUB")
            raise ConfigError(msg)
    endpoint = parts["Endpoint"]
    url = urlparse(endpoint)
    if url.scheme != "sb" or not url.hostname:
        msg = (f"Event Hubs connection string Endpoint {endpoint!r} must be "
               "sb://NAMESPACE.servicebus.windows.net/")
        raise ConfigError(msg)
    entity = parts.get("EntityPath") or None
    return ConnectionString(endpoint, url.hostname, parts["SharedAccessKeyName"],
                            parts["SharedAccessKey"], entity)


def eventhubs_client_config(connection_string: str) -> dict[str, str]:
    """The librdkafka settings Microsoft documents for the Event Hubs Kafka endpoint."""
    cs = parse_connection_string(connection_string)
    return {
        "bootstrap.servers": f"{cs.namespace_host}:{EVENTHUBS_PORT}",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "$ConnectionString",
        "sasl.password": connection_string.strip(),
    }


EVENTHUBS_TUNING: dict[str, Any] = {
    # Microsoft's recommendations for Kafka clients on Event Hubs: the service closes idle
    # connections after 240 s and enforces a 1 MB request size.
    "socket.keepalive.enable": True,
    "metadata.max.age.ms": 180_000,
    "connections.max.idle.ms": 180_000,
    "request.timeout.ms": 60_000,
    "message.max.bytes": 1_000_000,
}


@dataclass(frozen=True)
class Target:
    """Where the cloud records go: librdkafka settings and the topic (event hub).

    ``secret_keys`` names the settings that came from a secret (the connection string, secret
    ``extra`` settings); :meth:`masked` hides those and every setting named like a secret.

    >>> t = Target({"sasl.oauthbearer.client.secret": "x", "ssl.key.pem": "-----BEGIN", "custom": "y",
    ...             "linger.ms": 5}, "kpis", eventhubs=False, secret_keys=frozenset({"custom"}))
    >>> t.masked()
    {'sasl.oauthbearer.client.secret': '***', 'ssl.key.pem': '***', 'custom': '***', 'linger.ms': 5}
    """

    conf: dict[str, Any]
    topic: str
    eventhubs: bool
    secret_keys: frozenset[str] = frozenset()

    def masked(self) -> dict[str, Any]:
        """The settings as they may be printed or logged."""
        return mask_settings(self.conf, self.secret_keys)

    def __repr__(self) -> str:  # never print a secret
        return f"Target(topic={self.topic!r}, eventhubs={self.eventhubs}, conf={self.masked()})"


def target_from_config(cfg: EventHubsConfig, environ: Mapping[str, str] | None = None) -> Target | None:
    """The cloud target of the ``eventhubs:`` section (or the environment), or None when unset."""
    env = os.environ if environ is None else environ
    secret = cfg.connection_string.get_secret_value() if cfg.connection_string else None
    if secret is None and not cfg.bootstrap_servers:
        secret = env.get(CONNECTION_STRING_ENV) or None
    if secret is not None:
        cs = parse_connection_string(secret)
        topic = cfg.topic or cs.entity_path
        if not topic:
            msg = ("Event Hubs connection string has no EntityPath=…: append ;EntityPath=EVENTHUB "
                   "(the event hub to write) or set eventhubs.topic")
            raise ConfigError(msg)
        conf: dict[str, Any] = {**EVENTHUBS_TUNING, **eventhubs_client_config(secret),
                                **reveal_settings(cfg.extra)}
        return Target(conf, topic, eventhubs=True,
                      secret_keys=secret_keys_of(cfg.extra) | {"sasl.password"})
    if cfg.bootstrap_servers:
        assert cfg.topic is not None  # validated by EventHubsConfig
        return Target({"bootstrap.servers": cfg.bootstrap_servers, **reveal_settings(cfg.extra)}, cfg.topic,
                      eventhubs=False, secret_keys=secret_keys_of(cfg.extra))
    return None


# -- bytes saved -------------------------------------------------------------------------------


class BandwidthMeter:
    """Bytes of raw measurements read vs bytes sent to the cloud (shared by every partition).

    >>> m = BandwidthMeter()
    >>> m.add_raw(1000); m.add_raw(1000); m.add_sent(20)
    >>> m.ratio, round(m.saved_fraction, 3)
    (100.0, 0.99)
    >>> m.summary()
    'cloud sink: 1 records, 20 B sent for 2,000 B of raw measurements (2 records): 100.0x less, 99.0% saved'
    """

    def __init__(self) -> None:
        self.raw_bytes = 0
        self.raw_records = 0
        self.sent_bytes = 0
        self.sent_records = 0
        self._lock = threading.Lock()

    def add_raw(self, n: int, records: int = 1) -> None:
        with self._lock:
            self.raw_bytes += n
            self.raw_records += records

    def add_sent(self, n: int) -> None:
        with self._lock:
            self.sent_bytes += n
            self.sent_records += 1

    @property
    def ratio(self) -> float:
        """Raw bytes per byte sent (``inf`` when nothing was sent)."""
        return self.raw_bytes / self.sent_bytes if self.sent_bytes else float("inf")

    @property
    def saved_fraction(self) -> float:
        """Share of the raw bytes that did not leave the plant (0..1)."""
        return 1.0 - self.sent_bytes / self.raw_bytes if self.raw_bytes else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"raw_bytes": self.raw_bytes, "raw_records": self.raw_records,
                "sent_bytes": self.sent_bytes, "sent_records": self.sent_records,
                "ratio": round(self.ratio, 1) if self.sent_bytes else None,
                "saved_fraction": round(self.saved_fraction, 4)}

    def summary(self) -> str:
        """One line for the demo and replay summaries."""
        ratio = f"{self.ratio:.1f}x less" if self.sent_bytes else "nothing sent"
        return (f"cloud sink: {self.sent_records:,} records, {self.sent_bytes:,} B sent for "
                f"{self.raw_bytes:,} B of raw measurements ({self.raw_records:,} records): "
                f"{ratio}, {self.saved_fraction:.1%} saved")


# -- the records ---------------------------------------------------------------------------------


def record_key(row: Row) -> bytes:
    """The partition key of a record: ``site/machine``.

    >>> record_key({"site": "plant-a", "machine": "press-01"})
    b'plant-a/press-01'
    """
    return f"{row.get('site', '')}/{row.get('machine', '')}".encode()


def _default(obj: Any) -> Any:
    if isinstance(obj, float):
        return None  # NaN / inf
    raise TypeError


def record_value(table: str, row: Row) -> bytes:
    """The record's JSON value: the row plus ``type`` (its table); NaN becomes null.

    >>> record_value("alerts", {"machine": "m", "score": 1.5})
    b'{"type":"alerts","machine":"m","score":1.5}'
    """
    return orjson.dumps({"type": table, **row}, option=orjson.OPT_SERIALIZE_NUMPY, default=_default)


def demo_target(kafka_conf: Mapping[str, Any], cfg: EventHubsConfig) -> Target:
    """The configured cloud target, else ``plantstream.cloud`` on the embedded broker (the demo)."""
    target = target_from_config(cfg)
    if target is not None:
        return target
    kafka.create_topics(kafka_conf, {DEMO_TOPIC: 1})
    return Target(dict(kafka_conf), DEMO_TOPIC, eventhubs=False)
