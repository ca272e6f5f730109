"""Scrap configuration (the ``scrap:`` config section): rolling window, reason categories, costs.

Scrap events carry a reason (the latest ``scrap_reason`` of the machine, or ``unassigned``) and
a category: the category listed for the reason in ``reasons``, else ``startup`` for the reasons
in ``startup_reasons`` (start-up rejects, one of the six big losses), else
``default_category`` (production rejects). Costs come from work-order reference data: the
compacted topic ``plantstream.workorders`` (when ``workorders_topic`` and a Kafka cluster is
configured) and/or a file named by ``workorders_file`` (JSONL, CSV or YAML; read at start).

Examples
--------
>>> cfg = ScrapConfig.model_validate({"reasons": {"tool_wear": "tooling"}})
>>> cfg.category("tool_wear"), cfg.category("startup"), cfg.category("burr"), cfg.category("unassigned")
('tooling', 'startup', 'production', 'unassigned')
>>> ScrapConfig.model_validate({"window_s": 3600, "hop_s": 7})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for ScrapConfig
  Value error, scrap.window_s (3600) must be a multiple of scrap.hop_s (7); e.g. hop_s: 60 ...
"""

from __future__ import annotations

from pydantic import Field, model_validator

from plantstream.schemas._base import Frozen

UNASSIGNED = "unassigned"


class ScrapConfig(Frozen):
    """The ``scrap:`` section of the plant config."""

    window_s: int = Field(default=3600, ge=60, le=7 * 86_400)
    """Length of the rolling scrap-rate window (default 1 h)."""
    hop_s: int = Field(default=60, ge=1, le=3600)
    """How often the rolling window is evaluated (default every minute, in event time)."""
    reasons: dict[str, str] = Field(default_factory=dict)
    """Scrap reason → category (e.g. ``tool_wear: tooling``)."""
    startup_reasons: tuple[str, ...] = ("startup",)
    """Reasons that are start-up rejects (category ``startup``) unless listed in ``reasons``."""
    default_category: str = "production"
    """Category of any other reason (production rejects)."""
    workorders_file: str | None = None
    """Work-order reference data read at start: JSONL, CSV or YAML records with ``work_order``,
    ``part_number``, ``material_cost`` (per unit), ``labor_rate`` (per hour), optional
    ``labor_s_per_unit`` and ``currency``."""
    workorders_topic: bool = True
    """Also join the compacted topic ``plantstream.workorders`` (needs ``kafka.bootstrap_servers``)."""
    max_pending_per_work_order: int = Field(default=1000, ge=0)
    """Scrap events of a work order without reference data kept to be costed when it arrives."""

    @model_validator(mode="after")
    def _hop_divides(self) -> ScrapConfig:
        if self.window_s % self.hop_s:
            msg = (f"scrap.window_s ({self.window_s}) must be a multiple of scrap.hop_s ({self.hop_s}); "
                   "e.g. hop_s: 60 with window_s: 3600")
            raise ValueError(msg)
        return self

    def category(self, reason: str) -> str:
        """The category of a scrap reason."""
        if reason in self.reasons:
            return self.reasons[reason]
        if reason == UNASSIGNED:
            return UNASSIGNED
        if reason in self.startup_reasons:
            return "startup"
        return self.default_category
