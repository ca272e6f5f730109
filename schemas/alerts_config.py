"""Alert rules (the ``alerts:`` config section), with the KPI.md defaults, and the webhook sink.

Every rule fires when its value is strictly beyond its threshold (a value equal to the
threshold never fires) and clears with hysteresis (a margin back on the good side) or, for
timers, when the condition ends; one episode raises one alert. Set ``enabled: false`` to turn a
rule off.

Examples
--------
>>> cfg = AlertsConfig()
>>> cfg.machine_down.minutes, cfg.scrap_rate.threshold, cfg.oee.warning, cfg.oee.critical
(15.0, 0.05, 0.6, 0.4)
>>> from plantstream.schemas.config import build_config
>>> from plantstream.schemas.errors import ConfigError
>>> try:
...     build_config({"alerts": {"oee": {"warning": 0.3, "critical": 0.4}}}, {})
... except ConfigError as exc:
...     print(str(exc)[:97])
plant config field 'alerts.oee': alerts.oee.critical (0.4) must be below alerts.oee.warning (0.3)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from plantstream.schemas._base import Frozen

Severity = Literal["info", "warning", "critical"]


class MachineDownRule(Frozen):
    """A machine in an unplanned stop (loss bucket ``unplanned_stop``) longer than ``minutes``.

    Fires while the stop is still open, from a timer, without new data."""

    enabled: bool = True
    minutes: float = Field(default=15.0, gt=0)
    severity: Severity = "critical"


class ScrapRateRule(Frozen):
    """Scrap rate over the last ``window_s`` above ``threshold`` (evaluated every minute)."""

    enabled: bool = True
    threshold: float = Field(default=0.05, gt=0, lt=1)
    clear_below: float = Field(default=0.04, ge=0, lt=1)
    """Hysteresis: the alert clears when the rate is at or below this."""
    window_s: int = Field(default=3600, ge=60)
    min_parts: int = Field(default=20, ge=1)
    """No rate is judged on fewer parts in the window."""
    severity: Severity = "warning"

    @model_validator(mode="after")
    def _order(self) -> ScrapRateRule:
        if self.clear_below > self.threshold:
            msg = (f"alerts.scrap_rate.clear_below ({self.clear_below}) must not exceed "
                   f"alerts.scrap_rate.threshold ({self.threshold}); e.g. clear_below: 0.04")
            raise ValueError(msg)
        return self


class OeeRule(Frozen):
    """OEE shift-to-date below ``warning`` (severity warning) or ``critical`` (escalates)."""

    enabled: bool = True
    warning: float = Field(default=0.60, gt=0, le=1)
    critical: float = Field(default=0.40, gt=0, le=1)
    hysteresis: float = Field(default=0.02, ge=0, lt=1)
    """The alert clears when OEE is at or above ``warning + hysteresis``."""
    min_planned_minutes: float = Field(default=30.0, ge=0)
    """No OEE is judged on less planned production time in the shift."""

    @model_validator(mode="after")
    def _order(self) -> OeeRule:
        if self.critical >= self.warning:
            msg = (f"alerts.oee.critical ({self.critical}) must be below alerts.oee.warning "
                   f"({self.warning}); defaults are warning 0.6, critical 0.4")
            raise ValueError(msg)
        return self


class QualityRule(Frozen):
    """Quality (good / total) shift-to-date below ``threshold``."""

    enabled: bool = True
    threshold: float = Field(default=0.95, gt=0, le=1)
    hysteresis: float = Field(default=0.005, ge=0, lt=1)
    min_parts: int = Field(default=50, ge=1)
    severity: Severity = "warning"


class VibrationRule(Frozen):
    """Vibration velocity RMS in ISO 10816 zone C (warning) or D (critical)."""

    enabled: bool = True
    signal: str = "vibration_rms_mms"
    min_samples: int = Field(default=2, ge=1)
    """Consecutive samples in zone C or D before the alert is raised."""
    clear_margin: float = Field(default=0.5, ge=0)
    """The alert clears below the zone C boundary (7.1 mm/s) minus this margin."""


class SilenceRule(Frozen):
    """A signal of a machine silent longer than ``minutes`` while the machine runs (timer)."""

    enabled: bool = True
    minutes: float = Field(default=15.0, gt=0)
    signals: tuple[str, ...] = ()
    """Signals watched; empty = every condition signal the machine has sent."""
    only_while_running: bool = True
    """Judge silence only while the machine runs (a stopped machine's signals may not change,
    and OPC UA / MQTT deliver changes only); false = whenever the machine is not off."""
    severity: Severity = "warning"


class OilTemperatureRule(Frozen):
    """Fryer oil temperature outside target ± band for at least ``min_duration_s``."""

    enabled: bool = True
    signal: str = "oil_temperature_c"
    target_signal: str = "oil_temperature_target_c"
    target: float | None = None
    """Target when the machine does not send ``target_signal``."""
    band: float = Field(default=5.0, gt=0)
    hysteresis: float = Field(default=1.0, ge=0)
    """The alert clears when back within ``band − hysteresis`` of the target."""
    min_duration_s: float = Field(default=60.0, ge=0)
    severity: Severity = "warning"


class WebhookConfig(Frozen):
    """POST every alert record as JSON to ``url`` (e-mail, SMS or Teams bridges).

    ``url`` and ``headers`` are secrets: Teams and Logic Apps URLs carry a signature (``sig=``)
    and headers carry keys. They are never printed or logged (logs show the host and path).
    Redirects are not followed: give the final URL.
    """

    url: SecretStr | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    token: SecretStr | None = None
    """Sent as ``Authorization: Bearer …``."""
    timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=10, ge=1)
    """Attempts of ``WebhookSink.post`` (tools); the alert outbox retries forever."""
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)


class AlertsConfig(Frozen):
    """The ``alerts:`` section of the plant config."""

    machine_down: MachineDownRule = MachineDownRule()
    scrap_rate: ScrapRateRule = ScrapRateRule()
    oee: OeeRule = OeeRule()
    quality: QualityRule = QualityRule()
    vibration: VibrationRule = VibrationRule()
    silence: SilenceRule = SilenceRule()
    oil_temperature: OilTemperatureRule = OilTemperatureRule()
    webhook: WebhookConfig = WebhookConfig()
