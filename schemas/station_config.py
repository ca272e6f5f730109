"""The ``station:`` config section: the operator station web app (``plantstream station``).

Operators sign in at the line's tablet with a badge id or a PIN. The config holds only argon2
hashes of them (``plantstream station hash-pin`` prints one), never the badge or the PIN in
clear: a value that is no argon2 hash stops at start naming the field and the fix.

Examples
--------
>>> cfg = StationConfig.model_validate({"enabled": True, "operators": [{"id": "op-7", "name": "Ana",
...     "lines": ["line-1"], "pin_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA"}]})
>>> cfg.operators[0].role, cfg.operators[0].may_use("line-1"), cfg.operators[0].may_use("line-2")
('operator', True, False)
>>> try:
...     StationConfig.model_validate({"operators": [{"id": "x", "name": "X", "pin_hash": "1234"}]})
... except ValueError as exc:
...     print("argon2 hash" in str(exc))
True
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from plantstream.schemas._base import Frozen

Role = Literal["operator", "supervisor"]


def _check_hash(value: SecretStr | None, field: str) -> SecretStr | None:
    if value is not None and not value.get_secret_value().startswith("$argon2"):
        msg = (
            f"{field} must be an argon2 hash ($argon2id$…), never the value in clear; print one with "
            "`plantstream station hash-pin` and paste its output"
        )
        raise ValueError(msg)
    return value


class Operator(Frozen):
    """One person who may sign in at the station."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    """The operator id that every entry of theirs carries (``operator_entries.operator_id``)."""
    name: str = Field(min_length=1, max_length=100)
    role: Role = "operator"
    """``supervisor`` may also correct entries of other operators."""
    lines: tuple[str, ...] = ()
    """The lines they may use; empty: every line of the plant."""
    pin_hash: SecretStr | None = None
    """argon2 hash of the PIN (``plantstream station hash-pin``)."""
    badge_hash: SecretStr | None = None
    """argon2 hash of the badge id (what the badge reader types)."""

    @field_validator("pin_hash")
    @classmethod
    def _pin(cls, v: SecretStr | None) -> SecretStr | None:
        return _check_hash(v, "pin_hash")

    @field_validator("badge_hash")
    @classmethod
    def _badge(cls, v: SecretStr | None) -> SecretStr | None:
        return _check_hash(v, "badge_hash")

    @model_validator(mode="after")
    def _one_credential(self) -> Operator:
        if self.pin_hash is None and self.badge_hash is None:
            msg = f"operator {self.id!r} has neither pin_hash nor badge_hash; give one to let them sign in"
            raise ValueError(msg)
        return self

    def may_use(self, line: str) -> bool:
        """Whether this operator may see and enter on ``line``."""
        return not self.lines or line in self.lines


class StationConfig(Frozen):
    """The operator station (docs/station.md)."""

    enabled: bool = False
    """``plantstream run`` starts the station as a supervised child when true."""
    host: str = "127.0.0.1"
    """Address to listen on; ``0.0.0.0`` to serve the tablets on the shop-floor network."""
    port: int = Field(default=8080, ge=0, le=65535)
    tls_certfile: str | None = None
    """PEM certificate (chain); with ``tls_keyfile`` the station serves HTTPS only."""
    tls_keyfile: str | None = None
    session_secret: SecretStr | None = None
    """Signs the session cookies (``PLANTSTREAM__STATION__SESSION_SECRET`` or a Secret); unset: a
    random one per process (sessions end when the station restarts)."""
    session_ttl_s: float = Field(default=8 * 3600.0, gt=0, le=7 * 86_400.0)
    """A session ends this long after sign-in (one shift by default), however active the operator
    was: requests do not extend it."""
    refresh_s: float = Field(default=2.0, ge=0.2, le=60.0)
    """How often the live line view reads ClickHouse (once per line, shared by every tablet)."""
    kafka_timeout_s: float = Field(default=5.0, gt=0, le=60.0)
    """An entry is accepted only when Kafka confirmed it within this time; else refused."""
    signin_rate: str = "10/minute"
    """Sign-in attempts per client address (``limits`` notation: ``N/second|minute|hour``)."""
    entry_rate: str = "30/minute"
    """Entries per signed-in operator."""
    operators: tuple[Operator, ...] = ()
    operators_file: str | None = None
    """A YAML list of operators (the same fields) read at start, e.g. from a mounted Secret;
    added to ``operators``."""

    @field_validator("operators")
    @classmethod
    def _unique(cls, ops: tuple[Operator, ...]) -> tuple[Operator, ...]:
        ids = [o.id for o in ops]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            msg = f"operator ids must be unique, {', '.join(dup)} appear more than once"
            raise ValueError(msg)
        return ops

    @field_validator("signin_rate", "entry_rate")
    @classmethod
    def _rate(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"\s*\d+\s*(/|per)\s*(second|minute|hour|day)s?\s*", v):
            msg = f"rate {v!r} is not like '10/minute'; use N/second, N/minute, N/hour or N/day"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> StationConfig:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            msg = "station.tls_certfile and station.tls_keyfile go together; set both (HTTPS) or neither"
            raise ValueError(msg)
        return self
