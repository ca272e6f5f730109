"""Sign-in with a badge id or a PIN against the argon2 hashes of the ``station:`` config.

The config holds only hashes (``plantstream station hash-pin`` makes them). A PIN is checked
against the chosen operator's ``pin_hash`` (a PIN alone does not say who types it); a badge
id, scanned without choosing a name, against every operator's ``badge_hash``.

>>> h = hash_secret("4711")
>>> h.startswith("$argon2id$"), verify(h, "4711"), verify(h, "4712")
(True, True, False)
"""

from __future__ import annotations

from pathlib import Path

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import TypeAdapter, ValidationError

from plantstream.schemas.errors import ConfigError
from plantstream.schemas.station_config import Operator, StationConfig

_HASHER = PasswordHasher()


def hash_secret(secret: str) -> str:
    """An argon2id hash of a PIN or badge id (RFC 9106 low-memory parameters, argon2-cffi's default)."""
    return _HASHER.hash(secret)


def verify(hashed: str, secret: str) -> bool:
    """Whether ``secret`` matches the argon2 hash (constant-time inside argon2)."""
    try:
        return _HASHER.verify(hashed, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def operators(cfg: StationConfig) -> dict[str, Operator]:
    """The operators of the config and of ``operators_file`` (a YAML list), by id."""
    out = {o.id: o for o in cfg.operators}
    if cfg.operators_file:
        path = Path(cfg.operators_file)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        except (OSError, yaml.YAMLError) as exc:
            msg = (f"station.operators_file {str(path)!r} cannot be read ({exc}); mount the operators "
                   "Secret there")
            raise ConfigError(msg) from None
        try:
            more = TypeAdapter(list[Operator]).validate_python(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            msg = f"station.operators_file {str(path)!r} entry {where}: {first['msg']}"
            raise ConfigError(msg) from None
        for op in more:
            if op.id in out:
                msg = f"operator id {op.id!r} is in station.operators and in station.operators_file; keep one"
                raise ConfigError(msg)
            out[op.id] = op
    return out


def sign_in(ops: dict[str, Operator], operator_id: str, secret: str) -> Operator | None:
    """The operator a PIN (with ``operator_id``) or a badge id (without) belongs to, or None."""
    secret = secret.strip()
    if not secret or len(secret) > 200:
        return None
    if operator_id:
        op = ops.get(operator_id)
        if op is None:
            return None
        for h in (op.pin_hash, op.badge_hash):
            if h is not None and verify(h.get_secret_value(), secret):
                return op
        return None
    for op in ops.values():
        if op.badge_hash is not None and verify(op.badge_hash.get_secret_value(), secret):
            return op
    return None
