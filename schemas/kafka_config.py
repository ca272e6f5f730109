"""Per-topic settings of the Kafka topics plantstream creates (``kafka.topics`` of the plant config).

``plantstream kafka create-topics`` (and the Helm chart's pre-install hook that runs it) creates
the plant's own topics and the result topics the flows declare, each with its partitions,
replication factor, retention and cleanup policy. Unset fields take the built-in default of
that topic (:data:`plantstream.connectors.kafka.TOPIC_DEFAULTS`: the work orders compacted,
the measurements kept 7 days, the dead letter 30 days, result topics 7 days), then
``kafka.partitions`` / ``kafka.replication_factor``.

Examples
--------
>>> t = TopicConfig.model_validate({"retention_ms": 86_400_000, "configs": {"max.message.bytes": 2097152}})
>>> t.topic_configs()
{'retention.ms': '86400000', 'max.message.bytes': '2097152'}
>>> TopicConfig(cleanup_policy="compact").topic_configs()
{'cleanup.policy': 'compact'}
>>> TopicConfig.model_validate({"configs": {"retention.ms": 1}})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for TopicConfig
configs
  Value error, 'retention.ms' has its own field: set retention_ms ...
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from plantstream.schemas._base import Frozen

CleanupPolicy = Literal["delete", "compact", "compact,delete"]

_OWN_FIELDS = {"retention.ms": "retention_ms", "cleanup.policy": "cleanup_policy"}


class TopicConfig(Frozen):
    """How one topic is created. Every field unset = the topic's built-in default.

    Parameters
    ----------
    partitions
        Partitions (the unit of parallelism of the flows); default ``kafka.partitions``. An
        existing topic is never repartitioned: a difference is reported.
    replication_factor
        Copies of each partition; default ``kafka.replication_factor``.
    retention_ms
        How long records are kept (``-1``: forever).
    cleanup_policy
        ``delete`` (by retention), ``compact`` (the latest record per key) or ``compact,delete``.
    configs
        Any other topic-level Kafka config, passed through (``max.message.bytes`` …).
    """

    partitions: int | None = Field(default=None, ge=1, le=1024)
    replication_factor: int | None = Field(default=None, ge=1, le=32)
    retention_ms: int | None = Field(default=None, ge=-1)
    cleanup_policy: CleanupPolicy | None = None
    configs: dict[str, str | int | bool] = Field(default_factory=dict)

    @field_validator("configs")
    @classmethod
    def _no_shadowed_fields(cls, v: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        for key in v:
            if key in _OWN_FIELDS:
                msg = f"{key!r} has its own field: set {_OWN_FIELDS[key]} instead of configs.{key}"
                raise ValueError(msg)
        return v

    def topic_configs(self) -> dict[str, str]:
        """The Kafka topic configs these settings give (strings, as the admin API takes them)."""
        out: dict[str, str] = {}
        if self.cleanup_policy is not None:
            out["cleanup.policy"] = self.cleanup_policy
        if self.retention_ms is not None:
            out["retention.ms"] = str(self.retention_ms)
        for k, v in self.configs.items():
            out[k] = str(v).lower() if isinstance(v, bool) else str(v)
        return out

    def over(self, base: TopicConfig) -> TopicConfig:
        """These settings with ``base``'s filling the fields left unset (configs merged)."""
        data = base.model_dump()
        data.update(self.model_dump(exclude_none=True, exclude={"configs"}))
        data["configs"] = {**base.configs, **self.configs}
        return TopicConfig.model_validate(data)
