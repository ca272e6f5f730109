"""The plant config: one frozen, validated model loaded from YAML plus environment overrides.

A plant config names the site, its time zone, the shift calendar, the lines and machines with
their ideal cycle times, and where Kafka and ClickHouse are. Any field can be overridden from
the environment with ``PLANTSTREAM__`` + the field path in upper case joined by ``__``, e.g.
``PLANTSTREAM__KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or
``PLANTSTREAM__MICROSTOP_THRESHOLD_S=90``. Errors stop at start-up and name the field and the
fix.

Examples
--------
>>> cfg = PlantConfig.model_validate({"site": "plant-a", "lines": [{"id": "line-1",
...     "machines": [{"id": "press-01", "ideal_cycle_time_ms": 1000}]}]})
>>> cfg.machine("press-01").line, cfg.machine("press-01").ideal_cycle_time_ms
('line-1', 1000.0)
>>> try:
...     load_config_text("site: a\\ntimezone: Mars/Olympus")
... except ConfigError as exc:
...     print(str(exc)[:64])
plant config field 'timezone': unknown IANA time zone 'Mars/Olym
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date
from functools import cached_property
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from plantstream.schemas._base import Frozen
from plantstream.schemas.alerts_config import AlertsConfig
from plantstream.schemas.anomaly_config import AnomalyConfig
from plantstream.schemas.counters_config import CounterConfig
from plantstream.schemas.errors import ConfigError
from plantstream.schemas.kafka_config import TopicConfig
from plantstream.schemas.oee_config import LossConfig
from plantstream.schemas.opcua_config import OpcUaConfig
from plantstream.schemas.redact import (
    Setting,
    has_credentials,
    is_secret_key,
    reveal_settings,
    wrap_secret_settings,
)
from plantstream.schemas.scrap_config import ScrapConfig
from plantstream.schemas.sinks_config import EventHubsConfig, OutboxConfig, StatusConfig
from plantstream.schemas.sources_config import SourceConfig
from plantstream.schemas.state_config import StateConfig
from plantstream.schemas.station_config import StationConfig
from plantstream.schemas.tags_config import MqttConfig, ProducerConfig, TagMapping

ENV_PREFIX = "PLANTSTREAM__"
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _hhmm_minutes(value: str) -> int:
    m = _HHMM.match(value)
    if not m:
        msg = f"must be a local time HH:MM such as \"06:00\", got {value!r}"
        raise ValueError(msg)
    return int(m.group(1)) * 60 + int(m.group(2))


class Break(Frozen):
    """A planned break inside a shift: not planned production time."""

    start: str
    minutes: float = Field(gt=0, le=24 * 60)

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        _hhmm_minutes(v)
        return v

    @property
    def start_minute(self) -> int:
        return _hhmm_minutes(self.start)


class Shift(Frozen):
    """A shift in local time; ``end`` before ``start`` means it crosses midnight."""

    name: str = Field(min_length=1)
    start: str
    end: str
    breaks: tuple[Break, ...] = ()
    days: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = (
        "mon", "tue", "wed", "thu", "fri", "sat", "sun",
    )
    """Weekdays on which the shift starts (local time)."""

    @field_validator("start", "end")
    @classmethod
    def _time(cls, v: str) -> str:
        _hhmm_minutes(v)
        return v

    @property
    def start_minute(self) -> int:
        return _hhmm_minutes(self.start)

    @property
    def length_minutes(self) -> int:
        length = (_hhmm_minutes(self.end) - self.start_minute) % (24 * 60)
        return length or 24 * 60

    @model_validator(mode="after")
    def _breaks_inside(self) -> Shift:
        for i, b in enumerate(self.breaks):
            offset = (b.start_minute - self.start_minute) % (24 * 60)
            if offset + b.minutes > self.length_minutes:
                msg = (
                    f"break {i} ({b.start}, {b.minutes:g} min) does not fit inside shift "
                    f"{self.name!r} ({self.start}-{self.end}); move it or shorten it"
                )
                raise ValueError(msg)
        return self


class MachineConfig(Frozen):
    """A machine and its ideal cycle time, overall and per part number."""

    id: str = Field(min_length=1)
    type: str = ""
    ideal_cycle_time_ms: float | None = Field(default=None, gt=0)
    ideal_cycle_time_ms_by_part: dict[str, float] = Field(default_factory=dict)
    counters: CounterConfig | None = None
    """This machine's counter semantics over the plant's ``counters:`` (field by field)."""

    @field_validator("ideal_cycle_time_ms_by_part")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        for part, ms in v.items():
            if ms <= 0:
                msg = f"ideal cycle time for part {part!r} must be > 0 ms, got {ms}"
                raise ValueError(msg)
        return v


class Line(Frozen):
    id: str = Field(min_length=1)
    machines: tuple[MachineConfig, ...] = ()


class KafkaConfig(Frozen):
    """Where the Kafka-protocol broker is. ``bootstrap_servers`` unset = embedded broker."""

    bootstrap_servers: str | None = None
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    partitions: int = Field(default=4, ge=1, le=1024)
    """Partitions of topics plantstream creates (the unit of parallelism of the flows)."""
    deadletter_raw_bytes: int = Field(default=4096, ge=64, le=256 * 1024)
    """Bound of the original bytes a dead letter carries (its ``raw`` text, in bytes); the
    record also holds the original ``length`` and its ``sha256``, so it stays small whatever the
    message was (connectors and flows alike)."""
    replication_factor: int = Field(default=1, ge=1, le=32)
    """Copies of each partition of the topics plantstream creates (3 on a production cluster)."""
    topics: dict[str, TopicConfig] = Field(default_factory=dict)
    """Topic name → partitions, retention, cleanup policy, other configs (``plantstream kafka
    create-topics``; unset fields take the topic's built-in default, see docs/deploy.md)."""
    extra: dict[str, Setting] = Field(default_factory=dict)
    """librdkafka settings passed through unchanged; those named like secrets (``sasl.password``,
    ``ssl.key.pem``, ``sasl.oauthbearer.client.secret`` …) are kept as secrets (masked)."""

    @field_validator("extra")
    @classmethod
    def _secret_extra(cls, v: dict[str, Setting]) -> dict[str, Setting]:
        return wrap_secret_settings(v)

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings for this cluster (without ``bootstrap.servers`` when embedded)."""
        conf: dict[str, Any] = {"security.protocol": self.security_protocol}
        if self.bootstrap_servers:
            conf["bootstrap.servers"] = self.bootstrap_servers
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        conf.update(reveal_settings(self.extra))
        return conf


class ClickHouseUser(Frozen):
    """One ClickHouse account: a user name and its password (rotatable, see docs/deploy.md)."""

    username: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    password: SecretStr | None = None


class ClickHouseConfig(Frozen):
    """Where results go. ``url`` unset = ``PLANTSTREAM_CLICKHOUSE_URL`` or embedded chDB.

    Three accounts, least privilege (a server only; embedded chDB has no users):

    - ``username``/``password``: the **flows** (the writer: SELECT and INSERT on the database).
    - ``migrator``: who ``plantstream db migrate`` connects as (DDL, users and grants); unset =
      the writer's account. ``db migrate`` (re)sets the passwords of the writer and the reader,
      so rotating one is: change the Secret, migrate, restart its pods.
    - ``reader``: who reading commands (``query`` without ``--write``, ``kpi``, ``status``, the
      report, ``helm test``) and Grafana connect as (read-only settings profile); unset = the
      writer's account, every query still sent with ``readonly`` set.
    """

    url: str | None = None
    database: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    migrator: ClickHouseUser | None = None
    reader: ClickHouseUser | None = None
    batch_rows: int = Field(default=50_000, ge=1)
    """A batch is written when it holds this many rows, and at every epoch (snapshot)."""
    retry_initial_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    flush_interval_s: float = Field(default=1.0, gt=0)
    """A batch is also written once its oldest row has waited this long: results are queryable
    about a second after they are computed, at about one insert per table per second."""
    secure: bool | None = None
    """TLS to the server; unset = from the URL scheme (``https`` → on)."""
    verify: bool = True
    """Check the server certificate (against ``ca_cert`` or the system store)."""
    ca_cert: str | None = None
    client_cert: str | None = None
    client_cert_key: str | None = None
    serve_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve the embedded chDB read-only over ClickHouse's HTTP interface on this port, from the
    flows process that owns it (``connectors/chserve.py``), so Grafana and ``plantstream kpi``
    read the live results. 0: a free port. Unset: off, except under ``plantstream run``, which
    serves on 8123 (``--clickhouse-port``). Never with a ClickHouse server (``url``)."""
    serve_host: str = "127.0.0.1"
    """Where the endpoint listens. It has no authentication: keep it on loopback."""
    serve_max_execution_s: float = Field(default=30.0, gt=0, le=3600)
    """Longest a query through the endpoint may run (a reader may ask for less)."""
    serve_max_result_mb: int = Field(default=256, ge=1, le=65536)
    """Largest result a query through the endpoint may return, MiB."""


class Lateness(Frozen):
    """How long event time waits for late data, and how far back corrections restate."""

    allowed_lateness_s: float = Field(default=60.0, ge=0)
    restatement_horizon_s: float = Field(default=24 * 3600.0, ge=0)


class Clock(Frozen):
    """The clock-skew policy of the event-time ledger (OEE, scrap): what a machine's sample
    times may do before they are taken as a wrong clock (``docs/oee.md``, "Clocks")."""

    max_ahead_s: float | None = Field(default=300.0, ge=0)
    """A sample more than this ahead of the flow's wall clock when it arrives is dead-lettered
    (``clock_skew``) and never moves the machine's event time. None: no check (a simulation
    that runs faster than real time from now, as ``plantstream demo`` does)."""
    max_behind_s: float | None = Field(default=None, gt=0)
    """A sample older than the restatement horizon (relative to the machine's newest sample) is
    ``late`` within this bound and a wrong clock (``clock_skew``, held for a re-base) beyond it.
    Unset: the larger of 7 days and ``lateness.restatement_horizon_s``; set, at least that
    horizon."""
    max_gap_s: float | None = Field(default=None, gt=0)
    """A machine whose next sample (or tick) is more than this after its position does not
    account the gap: its timeline is closed and it restarts at the new time (unmonitored, no
    facts). Unset: 86,400 s, at most 1,440 windows of ``window_s``; set, at most 100,000 windows."""
    rebase_after_s: float = Field(default=300.0, gt=0)
    """Samples beyond ``max_behind_s`` are held; once the held ones span this much of their own
    time (a clock reset that ticks on), the machine re-bases onto their timeline."""
    rebase_after_samples: int = Field(default=1_000, ge=1)
    """… or once this many are held (the bound of the held list)."""

    def behind_s(self, horizon_s: float) -> float:
        """The effective ``max_behind_s`` for a restatement horizon."""
        return self.max_behind_s if self.max_behind_s is not None else max(7 * 86_400.0, horizon_s)

    def gap_s(self, window_s: int) -> float:
        """The effective ``max_gap_s`` for a window length."""
        return self.max_gap_s if self.max_gap_s is not None else min(86_400.0, 1_440.0 * window_s)


class PlantConfig(Frozen):
    """The whole plant config (see ``schemas/plant.example.yaml``)."""

    site: str = Field(default="plant", min_length=1)
    timezone: str = "UTC"
    shifts: tuple[Shift, ...] = ()
    holidays: tuple[date, ...] = ()
    lines: tuple[Line, ...] = ()
    microstop_threshold_s: float = Field(default=120.0, ge=0)
    window_s: int = Field(default=60, ge=1, le=3600)
    """Length of the OEE fact window; shift and break boundaries always split too."""
    lateness: Lateness = Lateness()
    counters: CounterConfig = CounterConfig()
    """Counter semantics: resets, wraps, ignored step backs (docs/oee.md, "Counters")."""
    clock: Clock = Clock()
    """Clock skew: samples ahead of the wall clock, far behind the machine's time, gaps, re-bases."""
    losses: LossConfig = LossConfig()
    """State → loss bucket, sub-states, small stops, fault-code and reason-code maps (OEE)."""
    kafka: KafkaConfig = KafkaConfig()
    clickhouse: ClickHouseConfig = ClickHouseConfig()
    tags: dict[str, TagMapping] = Field(default_factory=dict)
    """Tag dictionary: source tag (or ``{placeholder}`` pattern) → machine, metric, unit, scale."""
    producer: ProducerConfig = ProducerConfig()
    mqtt: MqttConfig = MqttConfig()
    scrap: ScrapConfig = ScrapConfig()
    """Scrap: rolling scrap-rate window and hop, reason categories, work-order reference data."""
    alerts: AlertsConfig = AlertsConfig()
    """Alert rules (machine down, scrap rate, OEE, quality, vibration, silence, oil) and the webhook."""
    anomaly: AnomalyConfig = AnomalyConfig()
    """Condition monitoring: detectors, grouped models, thresholds, excluded signals."""
    eventhubs: EventHubsConfig = EventHubsConfig()
    """The cloud sink (Azure Event Hubs or any Kafka cluster): KPI facts, events, alerts."""
    outbox: OutboxConfig = OutboxConfig()
    """The outbox workers that deliver the cloud export and the alert webhook from Kafka."""
    status: StatusConfig = StatusConfig()
    """How often the machine digital twin (``machine_status``) is written."""
    opcua: OpcUaConfig = OpcUaConfig()
    """The OPC UA → Kafka connector: endpoint, security, nodes/browse, subscription settings."""
    state: StateConfig = StateConfig()
    """Bounds of per-machine state: idle eviction, unconfigured machines, signals per machine."""
    sources: tuple[SourceConfig, ...] = ()
    """Several OPC UA servers and MQTT brokers, each named (``schemas/sources_config.py``); unset:
    the top-level ``opcua:`` / ``mqtt:`` sections written in the config are the sources."""
    station: StationConfig = StationConfig()
    """The operator station web app: operators (hashed badge/PIN), TLS, sessions (docs/station.md)."""
    flows: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-flow settings: flow name → its section, validated by the model the flow declares
    (``config=`` of its ``FLOW``) when the flows are built; a name that is no flow is an error."""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            msg = (
                f"unknown IANA time zone {v!r}; use a name such as 'UTC', 'Europe/Berlin' "
                "or 'America/Chicago'"
            )
            raise ValueError(msg) from None
        return v

    @field_validator("window_s")
    @classmethod
    def _window_divides_hour(cls, v: int) -> int:
        if 3600 % v:
            msg = f"must divide an hour evenly (60, 300, 900 …), got {v}"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _clock_bounds(self) -> PlantConfig:
        clock, horizon = self.clock, self.lateness.restatement_horizon_s
        if clock.max_behind_s is not None and clock.max_behind_s < horizon:
            msg = (f"clock.max_behind_s ({clock.max_behind_s:g}) must be at least "
                   f"lateness.restatement_horizon_s ({horizon:g}): a sample within the horizon "
                   "restates; raise clock.max_behind_s or leave it unset")
            raise ValueError(msg)
        if clock.max_gap_s is not None and clock.max_gap_s > 100_000 * self.window_s:
            msg = (f"clock.max_gap_s ({clock.max_gap_s:g}) allows more than 100,000 windows of "
                   f"window_s ({self.window_s}) in one step; lower it to at most "
                   f"{100_000 * self.window_s} or leave it unset")
            raise ValueError(msg)
        return self

    @field_validator("lines")
    @classmethod
    def _unique_machines(cls, lines: tuple[Line, ...]) -> tuple[Line, ...]:
        seen: dict[str, str] = {}
        for line in lines:
            for m in line.machines:
                if m.id in seen:
                    msg = (
                        f"machine id {m.id!r} appears in line {seen[m.id]!r} and line "
                        f"{line.id!r}; machine ids must be unique across the plant"
                    )
                    raise ValueError(msg)
                seen[m.id] = line.id
        return lines

    @field_validator("shifts")
    @classmethod
    def _unique_shifts(cls, shifts: tuple[Shift, ...]) -> tuple[Shift, ...]:
        names = [s.name for s in shifts]
        if len(set(names)) != len(names):
            msg = f"shift names must be unique, got {names}"
            raise ValueError(msg)
        return shifts

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, sources: tuple[SourceConfig, ...]) -> tuple[SourceConfig, ...]:
        names = [s.name for s in sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            msg = f"source names must be unique, {', '.join(dup)} appear more than once; rename one"
            raise ValueError(msg)
        return sources

    def source_list(self) -> list[SourceConfig]:
        """The plant's sources: ``sources:`` (enabled ones), else the top-level ``opcua:`` and
        ``mqtt:`` sections that the config (or the environment) sets, named ``opcua`` and ``mqtt``.

        >>> [s.name for s in PlantConfig.model_validate({"mqtt": {"host": "broker"}}).source_list()]
        ['mqtt']
        >>> PlantConfig().source_list()
        []
        """
        if self.sources:
            return [s for s in self.sources if s.enabled]
        out = []
        if "opcua" in self.model_fields_set:
            out.append(SourceConfig(name="opcua", opcua=self.opcua))
        if "mqtt" in self.model_fields_set:
            out.append(SourceConfig(name="mqtt", mqtt=self.mqtt))
        return out

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def _machines(self) -> dict[str, MachineInfo]:
        return {
            m.id: MachineInfo(site=self.site, line=line.id, config=m)
            for line in self.lines
            for m in line.machines
        }

    def configured(self, machine_id: str) -> bool:
        """True when the machine is listed in ``lines[].machines`` (else it is *unconfigured*)."""
        return machine_id in self._machines

    def machine(self, machine_id: str) -> MachineInfo:
        """Site, line and config of a machine; unknown machines get defaults, never an error."""
        info = self._machines.get(machine_id)
        if info is None:
            return MachineInfo(site=self.site, line="", config=MachineConfig(id=machine_id))
        return info

    def counters_for(self, machine_id: str) -> CounterConfig:
        """The counter semantics of a machine: the plant's ``counters:`` with its own over them."""
        own = self.machine(machine_id).config.counters
        return self.counters if own is None else self.counters.merged(own)


class MachineInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    site: str
    line: str
    config: MachineConfig

    @property
    def ideal_cycle_time_ms(self) -> float | None:
        return self.config.ideal_cycle_time_ms

    def ideal_for_part(self, part: str) -> float | None:
        """Ideal cycle time (ms) for a part number, falling back to the machine's."""
        return self.config.ideal_cycle_time_ms_by_part.get(part, self.config.ideal_cycle_time_ms)


# -- credentials in clear ----------------------------------------------------------------------

TRANSPORTS = ("mqtt", "opcua", "clickhouse", "kafka")


def cleartext_credentials(cfg: PlantConfig, transports: tuple[str, ...] = TRANSPORTS) -> list[str]:
    """One warning per configured transport that would send credentials unencrypted.

    MQTT with a password and no TLS, OPC UA with a user name under SecurityPolicy None,
    ClickHouse over ``http://`` with a password, Kafka (or the cloud sink) with SASL_PLAINTEXT.
    Each names the field and the fix; they are logged at start, not refused (test benches).

    >>> cfg = PlantConfig.model_validate({"mqtt": {"username": "u", "password": "p"},
    ...     "kafka": {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u"}})
    >>> [w.split(":")[0] for w in cleartext_credentials(cfg)]
    ['MQTT', 'Kafka']
    """
    out: list[str] = []
    if "mqtt" in transports and cfg.mqtt.password is not None and cfg.mqtt.tls is None:
        out.append(f"MQTT: mqtt.password is sent in clear to {cfg.mqtt.host}:{cfg.mqtt.port} (no mqtt.tls); "
                   "set mqtt.tls (ca_certs, port 8883) or remove the password")
    if "opcua" in transports and cfg.opcua.username is not None and cfg.opcua.security.policy == "None":
        out.append(f"OPC UA: user {cfg.opcua.username!r} logs on to {cfg.opcua.endpoint} with SecurityPolicy "
                   "None: the password may cross the network unencrypted; set opcua.security.policy "
                   "Basic256Sha256 with mode SignAndEncrypt")
    ch = cfg.clickhouse
    url = ch.url or os.environ.get("PLANTSTREAM_CLICKHOUSE_URL", "")
    passwords = [ch.password] + [u.password for u in (ch.migrator, ch.reader) if u is not None]
    has_pw = any(p is not None for p in passwords) or (url.startswith("http://") and has_credentials(url))
    if "clickhouse" in transports and url.startswith("http://") and ch.secure is not True and has_pw:
        out.append("ClickHouse: passwords are sent in clear over http:// to the server; use an https:// "
                   "clickhouse.url (port 8443) or set clickhouse.secure: true")
    if "kafka" in transports:
        if cfg.kafka.security_protocol == "SASL_PLAINTEXT":
            out.append("Kafka: kafka.security_protocol SASL_PLAINTEXT sends the SASL credentials and all "
                       "data unencrypted; use SASL_SSL")
        if str(cfg.eventhubs.extra.get("security.protocol", "")).upper() == "SASL_PLAINTEXT":
            out.append("Kafka: eventhubs.extra security.protocol SASL_PLAINTEXT sends the cloud sink's "
                       "credentials unencrypted; use SASL_SSL")
    return out


# -- loading ---------------------------------------------------------------------------------


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX:
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                msg = f"environment variable {key} overrides a field that is not a section"
                raise ConfigError(msg)
        if _is_secret_path(path):
            node[path[-1]] = raw  # a password is text: never YAML ("s3cret #2024", "null", "yes")
            continue
        try:
            node[path[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[path[-1]] = raw
    return tree


def _annotation_args(ann: Any) -> tuple[Any, ...]:
    """The members of a union (``X | None``), else the annotation itself."""
    if get_origin(ann) in (Union, UnionType):
        return get_args(ann)
    return (ann,)


def _is_secret_path(path: list[str]) -> bool:
    """True when the config field at ``path`` holds a secret: a ``SecretStr`` field, a value of a
    ``dict[str, SecretStr]`` (webhook headers), or a pass-through setting named like one
    (``kafka.extra.sasl.password``).

    >>> _is_secret_path(["clickhouse", "password"])
    True
    >>> _is_secret_path(["alerts", "webhook", "headers", "x-key"])
    True
    >>> _is_secret_path(["kafka", "extra", "sasl.password"]), _is_secret_path(["clickhouse", "url"])
    (True, False)
    """
    if path and is_secret_key(path[-1]) and len(path) > 1 and path[-2] == "extra":
        return True
    anns: list[Any] = [PlantConfig]
    for part in path:
        nxt: list[Any] = []
        for ann in anns:
            for a in _annotation_args(ann):
                if isinstance(a, type) and issubclass(a, BaseModel):
                    field = a.model_fields.get(part)
                    if field is not None:
                        nxt.append(field.annotation)
                elif get_origin(a) is dict:
                    nxt.append(get_args(a)[1])  # ``part`` is a key of the mapping
        anns = nxt
        if not anns:
            return False
    return any(a is SecretStr for ann in anns for a in _annotation_args(ann))


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling against schemas/plant.example.yaml"
        elif err["type"] == "missing":
            msg = "required field is missing; add it"
        lines.append(f"plant config field '{field}': {msg}")
    return "\n".join(lines)


def build_config(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> PlantConfig:
    """Validate a config mapping after applying ``PLANTSTREAM__…`` environment overrides."""
    merged = _merge(dict(data), _env_overrides(os.environ if environ is None else environ))
    try:
        return PlantConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def load_config_text(text: str, environ: Mapping[str, str] | None = None) -> PlantConfig:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        msg = f"plant config is not valid YAML: {exc}"
        raise ConfigError(msg) from None
    if not isinstance(data, dict):
        msg = "plant config must be a YAML mapping of fields (site:, timezone:, lines: …)"
        raise ConfigError(msg)
    return build_config(data, {} if environ is None else environ)


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> PlantConfig:
    """Load the plant config from ``path`` (or an empty one) plus environment overrides."""
    env = os.environ if environ is None else environ
    if path is None:
        return build_config({}, env)
    p = Path(path)
    if not p.is_file():
        msg = f"plant config file {str(p)!r} does not exist; pass --config PATH to a YAML file"
        raise ConfigError(msg)
    return load_config_text(p.read_text(encoding="utf-8"), env)


EXAMPLE_CONFIG = Path(str(resources.files("plantstream.schemas").joinpath("plant.example.yaml")))
"""The example plant config shipped in the package (the demo's and the tests' default)."""
