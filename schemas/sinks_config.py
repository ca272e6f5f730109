"""Config sections of the result sinks: ``eventhubs:`` (the cloud sink) and ``status:`` (the twin).

Examples
--------
>>> EventHubsConfig().tables
('oee_facts', 'downtime_events', 'scrap_events', 'anomalies', 'alerts')
>>> try:
...     EventHubsConfig(tables=("measurements",))
... except ValueError as exc:
...     print("never raw measurements" in str(exc))
True
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator

from plantstream.schemas._base import Frozen
from plantstream.schemas.redact import Setting, wrap_secret_settings

CONNECTION_STRING_ENV = "PLANTSTREAM_EVENTHUBS_CONNECTION_STRING"
DEFAULT_TABLES = ("oee_facts", "downtime_events", "scrap_events", "anomalies", "alerts")
RAW_TABLES = frozenset({"measurements", "deadletter"})


class EventHubsConfig(Frozen):
    """Where KPI facts, events and alerts go for the cloud: Azure Event Hubs or any Kafka cluster.

    Set ``connection_string`` (or ``PLANTSTREAM_EVENTHUBS_CONNECTION_STRING``) to an Event Hubs
    connection string, or ``bootstrap_servers`` + ``topic`` (+ ``extra`` librdkafka settings for
    SASL/TLS) for another Kafka cluster. Unset = no cloud sink.
    """

    connection_string: SecretStr | None = None
    """``Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=…``"""
    bootstrap_servers: str | None = None
    """Any Kafka cluster instead of Event Hubs (then ``topic`` is required)."""
    topic: str | None = None
    """Topic (event hub) to write; default the connection string's ``EntityPath``."""
    tables: tuple[str, ...] = DEFAULT_TABLES
    """Result tables whose records are sent. Raw ``measurements`` are never sent."""
    oee_rollup_s: int = Field(default=3600, ge=0, le=86400)
    """``oee_facts`` are summed per machine over this many seconds before sending (hourly
    rollups for executives); 0 sends every fact as it is computed."""
    rollup_tables: tuple[str, ...] = ("oee_facts",)
    """Tables of additive facts rolled up over ``oee_rollup_s`` (their numeric fields summed)."""
    event_cadence_s: float = Field(default=60.0, ge=0)
    """Events of ``coalesced_tables`` (an open stop is updated every minute) are sent as their
    latest version at most this often; 0 sends every update."""
    coalesced_tables: tuple[str, ...] = ("downtime_events", "scrap_events", "anomalies")
    """Tables whose updates are coalesced; alerts are not, by default: they leave at once."""
    restate_buckets: int = Field(default=2, ge=0, le=48)
    """Closed rollup buckets kept to re-send them (higher version) when a fact is restated."""
    extra: dict[str, Setting] = Field(default_factory=dict)
    """librdkafka settings passed through unchanged (after the Event Hubs ones); those named like
    secrets (``sasl.oauthbearer.client.secret``, ``ssl.key.pem`` …) are kept as secrets (masked)."""

    @field_validator("extra")
    @classmethod
    def _secret_extra(cls, v: dict[str, Setting]) -> dict[str, Setting]:
        return wrap_secret_settings(v)

    @field_validator("tables")
    @classmethod
    def _no_raw(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        raw = sorted(set(v) & RAW_TABLES)
        if raw:
            msg = (f"{raw} cannot be sent: the cloud sink carries KPI facts, events and alerts, "
                   f"never raw measurements; remove them (choose from {list(DEFAULT_TABLES)})")
            raise ValueError(msg)
        return v

    @field_validator("oee_rollup_s")
    @classmethod
    def _divides_day(cls, v: int) -> int:
        if v and 86400 % v:
            msg = f"must divide a day evenly (300, 900, 3600 …) or be 0 for no rollup, got {v}"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _target(self) -> EventHubsConfig:
        if self.connection_string is not None and self.bootstrap_servers:
            msg = ("set either connection_string (Azure Event Hubs) or bootstrap_servers "
                   "(another Kafka cluster), not both")
            raise ValueError(msg)
        if self.bootstrap_servers and not self.topic:
            msg = "bootstrap_servers is set without topic: name the topic to write (eventhubs.topic)"
            raise ValueError(msg)
        return self


class OutboxConfig(Frozen):
    """The outbox workers: the cloud export and the alert webhook, delivered from Kafka topics
    at their own pace (docs/sinks.md). Records are retried forever; these set how.

    >>> OutboxConfig().backoff_max_s, OutboxConfig().ready_max_age_s
    (60.0, 300.0)
    """

    backoff_initial_s: float = Field(default=0.5, gt=0)
    """First wait before a cloud record is retried; doubles up to ``backoff_max_s`` (the webhook
    uses ``alerts.webhook.backoff_initial_s`` / ``backoff_max_s``)."""
    backoff_max_s: float = Field(default=60.0, gt=0)
    """Longest wait between retries."""
    batch_size: int = Field(default=500, ge=1, le=100_000)
    """Records read, delivered and committed per round (the most held in memory)."""
    log_every_s: float = Field(default=30.0, gt=0)
    """How often a worker that is behind logs its lag."""
    ready_max_age_s: float = Field(default=300.0, gt=0)
    """The flows report not ready (``/readyz``) while a record has waited longer than this."""
    drain_s: float = Field(default=30.0, ge=0)
    """``replay`` and ``demo``: how long they wait at the end for the workers to deliver what the
    run produced (the rest waits in Kafka; the embedded broker's is lost with it)."""


class StatusConfig(Frozen):
    """How often the machine digital twin (``machine_status``) is written."""

    throttle_s: float = Field(default=5.0, gt=0)
    """At most one row per machine per this many seconds of event time."""
    heartbeat_s: float = Field(default=60.0, gt=0)
    """A row at least this often (event time) while samples arrive, even without change."""
