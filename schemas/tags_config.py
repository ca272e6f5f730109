"""Config sections of the OT connectors: the tag dictionary, the Kafka producer and MQTT.

Three fields of :class:`schemas.config.PlantConfig` are defined here:

``tags:``
    The tag dictionary: source tag → machine, canonical metric, unit, ``scale``/``offset`` and,
    for ``machine_state`` tags, an integer → state map (default ``0 off, 1 running, 2 idle,
    3 fault, 4 setup``). A key is either an exact tag (``"Line1.Press01.State"``) or a pattern
    with ``{name}`` placeholders (``"bakery/{site}/{machine}#{metric}"``); a placeholder matches
    one path segment (no ``/``, ``.`` or ``#``) and may be used in ``machine``, ``metric``,
    ``site`` and ``line``. Exact keys win over patterns; patterns are tried in file order.
    How a connector names its source tags is in ``connectors/tags.py``.
``producer:``
    The never-losing Kafka producer shared by the OPC UA and MQTT connectors: bounded memory,
    then a disk spool (``connectors/producer.py``).
``mqtt:``
    The MQTT connector: broker, protocol version, TLS, credentials, subscriptions
    (``connectors/mqtt.py``).

Examples
--------
>>> t = TagMapping.model_validate({"machine": "fryer-01", "metric": "oil_temperature_c",
...                                "unit": "degC", "scale": 0.5555555555555556, "offset": -17.77777777777778})
>>> round(t.apply_scale(375.0), 2)
190.56
>>> TagMapping(machine="press-01", metric="machine_state").state_map()["3"]
'fault'
>>> try:
...     TagMapping(machine="m", metric="machine_state", states={"9": "broken"})
... except ValueError as exc:
...     print("broken" in str(exc))
True
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from plantstream.schemas._base import Frozen
from plantstream.schemas.measurement import MACHINE_STATE, STATES

DEFAULT_STATE_MAP: dict[str, str] = {"0": "off", "1": "running", "2": "idle", "3": "fault", "4": "setup"}
"""PLC state integers → canonical states, used when a state tag has no ``states:`` of its own."""

class TagMapping(Frozen):
    """One entry of the tag dictionary: where a source tag's values go and how they convert.

    ``machine``, ``metric``, ``site`` and ``line`` may use the ``{placeholders}`` of the key.
    A numeric value becomes ``value * scale + offset``; counters stay integers when the result
    is integral. ``states`` maps raw state values (written as strings: ``"3"``, ``"RUN"``) to
    canonical states; only for ``metric: machine_state``.
    """

    machine: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    states: dict[str, str] | None = None
    site: str = ""
    line: str = ""

    @field_validator("states")
    @classmethod
    def _canonical_states(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        bad = {k: s for k, s in v.items() if s not in STATES}
        if bad:
            msg = f"states {bad} are not canonical states; use one of {', '.join(STATES)}"
            raise ValueError(msg)
        return {str(k).strip(): s for k, s in v.items()}

    @model_validator(mode="after")
    def _states_only_for_state(self) -> TagMapping:
        if self.states is not None and self.metric not in (MACHINE_STATE, "{metric}"):
            msg = f"'states' is only meaningful for metric {MACHINE_STATE!r}, not {self.metric!r}"
            raise ValueError(msg)
        return self

    def state_map(self) -> dict[str, str]:
        """The raw → canonical state map of this tag (its own or the default)."""
        return self.states if self.states is not None else DEFAULT_STATE_MAP

    def apply_scale(self, value: float) -> float:
        return value * self.scale + self.offset

    @property
    def scaled(self) -> bool:
        return self.scale != 1.0 or self.offset != 0.0


class ProducerConfig(Frozen):
    """The connectors' Kafka producer: what it holds in memory, where it spools, how it batches.

    While Kafka is unreachable, records wait in librdkafka (at most ``inflight_records``), then
    in memory (at most ``memory_records`` / ``memory_bytes``), then in the disk spool under
    ``spool_dir`` (at most ``spool_max_bytes``; beyond that the connector stops accepting data —
    MQTT messages stay unacknowledged at the broker — rather than drop anything).
    """

    topic: str = "plantstream.measurements"
    spool_dir: str = ".plantstream/spool"
    memory_records: int = Field(default=100_000, ge=1)
    memory_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    inflight_records: int = Field(default=20_000, ge=1)
    spool_segment_bytes: int = Field(default=16 * 1024 * 1024, ge=4096)
    spool_max_bytes: int = Field(default=1024 * 1024 * 1024, ge=4096)
    fsync: bool = False
    """fsync every spooled batch (survives power loss, slower)."""
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    linger_ms: int = Field(default=5, ge=0, le=1000)
    health_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve ``/healthz`` (the producer thread runs) and ``/readyz`` (connected, Kafka confirms)
    on this port (``connectors/health.py``); unset: no endpoint."""
    health_host: str = "0.0.0.0"
    health_stall_s: float = Field(default=60.0, gt=0)
    """Not ready when records have waited this long without any confirmation from Kafka."""


class MqttSubscription(Frozen):
    """A topic filter and how to read its payloads.

    ``format``: ``kepware`` (KEPServerEX IoT Gateway JSON, tag = each value's ``id``),
    ``scalar`` (one value per topic: a bare JSON scalar or ``{"timestamp_ms":…,"value":…}``;
    tag = the topic, with ``kepware/{channel}/{device}/{tag}`` topics named
    ``channel.device.tag``), ``flat`` (a JSON object whose fields are metrics; tag =
    ``topic#field``), ``sparkplug`` (Sparkplug B protobuf on ``spBv1.0/…`` topics, see
    ``connectors/sparkplug.py``) or ``auto`` (told apart by shape; Sparkplug B by the topic).
    """

    topic: str = Field(min_length=1)
    qos: Literal[0, 1, 2] = 1
    format: Literal["auto", "kepware", "scalar", "flat", "sparkplug"] = "auto"
    timestamp_field: str | None = None
    """For ``flat``: the field that holds the timestamp (default: ``timestamp``, ``ts``,
    ``timestamp_ms``, ``time`` in that order; the receive time when none)."""


class MqttTls(Frozen):
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False
    """Skip the server host name check (test benches only)."""


class SparkplugConfig(Frozen):
    """How the MQTT connector acts as a Sparkplug B host application (``mqtt.sparkplug``)."""

    request_rebirth: bool = True
    """Publish ``NCMD`` ``Node Control/Rebirth`` to an edge node after a sequence-number gap or
    data from a node whose ``NBIRTH`` was not seen (needs publish rights on
    ``spBv1.0/<group>/NCMD/<edge node>``)."""
    rebirth_interval_s: float = Field(default=10.0, gt=0)
    """At most one rebirth request per edge node in this many seconds until its ``NBIRTH``."""


class MqttConfig(Frozen):
    """The MQTT → Kafka connector (paho-mqtt 2.x).

    QoS 1 with a persistent session (MQTT 3.1.1 ``clean_session=False``; MQTT 5
    ``clean_start=False`` + ``session_expiry_s``) and manual acknowledgements: a message is
    acknowledged to the broker only after Kafka confirmed every record made from it.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    protocol: Literal["3.1.1", "5"] = "5"
    client_id: str = Field(default="plantstream-mqtt", min_length=1)
    username: str | None = None
    password: SecretStr | None = None
    tls: MqttTls | None = None
    keepalive_s: int = Field(default=30, ge=5)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    connect_timeout_s: float = Field(default=15.0, gt=0)
    max_payload_bytes: int = Field(default=256 * 1024, ge=64)
    """Larger messages are dead-lettered as ``oversized`` (only their first KiB is kept)."""
    subscriptions: tuple[MqttSubscription, ...] = (MqttSubscription(topic="kepware/#"),)
    source: str = "mqtt"
    sparkplug: SparkplugConfig = SparkplugConfig()
    """Sparkplug B (subscriptions on ``spBv1.0/#``): rebirth requests."""
