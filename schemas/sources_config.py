"""The ``sources:`` config section: several OPC UA servers and MQTT brokers in one plant config.

A plant usually has more than one source: a PLC line behind an OPC UA server, a second line
behind another, sensors on an MQTT broker. ``sources:`` lists them, each with a ``name`` (it
names the connector process ``plantstream run`` starts, its spool and its state file) and
exactly one of ``opcua:`` or ``mqtt:`` — the same fields as the single top-level ``opcua:`` and
``mqtt:`` sections, which keep working as before: without ``sources:``, a top-level ``opcua:``
or ``mqtt:`` section written in the config is the plant's one source of that kind. The tag
dictionary (``tags:``) and the producer settings (``producer:``) are shared by every source.

Examples
--------
>>> s = SourceConfig.model_validate({"name": "press-shop", "opcua": {"endpoint": "opc.tcp://plc-1:4840"}})
>>> s.kind, s.opcua.endpoint
('opcua', 'opc.tcp://plc-1:4840')
>>> try:
...     SourceConfig.model_validate({"name": "x"})
... except ValueError as exc:
...     print("exactly one of opcua or mqtt" in str(exc))
True
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from plantstream.schemas._base import Frozen
from plantstream.schemas.opcua_config import OpcUaConfig
from plantstream.schemas.tags_config import MqttConfig

SOURCE_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class SourceConfig(Frozen):
    """One source of measurements: an OPC UA server or an MQTT broker."""

    name: str = Field(pattern=SOURCE_NAME)
    """Lower-case letters, digits, ``-``, ``_``, ``.``: names its connector process, spool and state."""
    opcua: OpcUaConfig | None = None
    mqtt: MqttConfig | None = None
    enabled: bool = True
    """False: kept in the file, not started by ``plantstream run``."""

    @model_validator(mode="after")
    def _one_kind(self) -> SourceConfig:
        if (self.opcua is None) == (self.mqtt is None):
            msg = (f"source {self.name!r}: give exactly one of opcua or mqtt (an OPC UA server or an MQTT "
                   "broker); list a second source for the other")
            raise ValueError(msg)
        return self

    @property
    def kind(self) -> Literal["opcua", "mqtt"]:
        return "opcua" if self.opcua is not None else "mqtt"

    def describe(self) -> str:
        """Where the source is, in one phrase (``opc.tcp://plc:4840``, ``mqtt://broker:1883``)."""
        if self.opcua is not None:
            return self.opcua.endpoint
        assert self.mqtt is not None
        return f"mqtt://{self.mqtt.host}:{self.mqtt.port}"
