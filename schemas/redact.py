"""Masking secrets wherever a value is printed or logged: settings by key, URLs by their parts.

A value is secret because of where it came from (a :class:`~pydantic.SecretStr` field of the
plant config) or because of its name (:func:`is_secret_key`: ``sasl.password``,
``sasl.oauthbearer.client.secret``, ``ssl.key.pem``, ``Authorization`` …). A URL is shown with
its password (``user:***@``) and the values of its query parameters masked (``sig=***``); where
only the destination matters (:func:`url_destination`) the query is left out entirely.

Examples
--------
>>> mask_url("https://ops:hunter2@ch.plant.local:8443/db?x=1")
'https://ops:***@ch.plant.local:8443/db?x=***'
>>> url_destination("https://prod.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?sig=s3cr3t")
'https://prod.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?…'
>>> is_secret_key("sasl.oauthbearer.client.secret"), is_secret_key("ssl.key.pem")
(True, True)
>>> is_secret_key("sasl.username")
False
>>> mask_setting("sasl.password", "s3cret"), mask_setting("bootstrap.servers", "k:9092")
('***', 'k:9092')
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

MASK = "***"

_SECRET_KEY = re.compile(
    r"(password|passwd|secret|token|authorization|api[._-]?key|access[._-]?key|connection[._-]?string"
    r"|sharedaccesskey|credential|ssl[._]key[._]pem|private[._-]?key[._-]?password|keystore[._]pem)",
    re.IGNORECASE,
)
_NOT_SECRET_KEY = re.compile(r"(location|file|path)$", re.IGNORECASE)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_QUERY_VALUE = re.compile(r"([?&;][^=&;#\s]+=)([^&;#\s]*)")
_SECRET_PARAM = re.compile(
    r"((?:sig|signature|code|token|access_token|key|apikey|api_key|password|secret|SharedAccessKey)=)"
    r"([^&;\s\"']+)", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """True when a setting's name says it holds a credential (and not a path to one).

    >>> [is_secret_key(k) for k in ("ssl.key.password", "Authorization", "token", "ssl.key.location")]
    [True, True, True, False]
    """
    return bool(_SECRET_KEY.search(key)) and not _NOT_SECRET_KEY.search(key)


def mask_setting(key: str, value: Any) -> Any:
    """``value`` as it may be shown: masked when it is a :class:`SecretStr` or its key names a secret."""
    if isinstance(value, SecretStr) or (is_secret_key(key) and value not in (None, "")):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    return value


def mask_settings(conf: Mapping[str, Any], secret_keys: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A copy of ``conf`` with every secret masked: by key name, by origin (``secret_keys``), URLs.

    >>> mask_settings({"a": "x", "b": "y", "sasl.password": "p"}, frozenset({"b"}))
    {'a': 'x', 'b': '***', 'sasl.password': '***'}
    """
    return {k: (MASK if k in secret_keys else mask_setting(k, v)) for k, v in conf.items()}


def mask_url(url: str) -> str:
    """``url`` with its password and every query parameter value masked."""
    url = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    return _QUERY_VALUE.sub(lambda m: f"{m.group(1)}{MASK}", url)


def mask_text(text: str) -> str:
    """Free text (an error message, a log line) with URL passwords and signature-like parameters masked.

    >>> mask_text("cannot reach https://u:p@h/x?sig=abc&n=1 (timeout)")
    'cannot reach https://u:***@h/x?sig=***&n=1 (timeout)'
    """
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{MASK}", text)


def url_destination(url: str) -> str:
    """Scheme, host, port and path of ``url`` (no user, no password, no query): safe to log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    query = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{query}"


def has_credentials(url: str) -> bool:
    """True when ``url`` carries a password (``user:pass@``) or a signature-like query parameter.

    >>> has_credentials("http://a:b@h"), has_credentials("https://h/p?sig=x"), has_credentials("http://h/p")
    (True, True, False)
    """
    return bool(_USERINFO.search(url) or _SECRET_PARAM.search(url))


Setting = str | int | bool | SecretStr
"""A pass-through librdkafka setting: secret-named string values are kept as :class:`SecretStr`."""


def wrap_secret_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Secret-named string values of pass-through settings as :class:`SecretStr` (masked in reprs).

    >>> wrap_secret_settings({"sasl.password": "p", "linger.ms": 5})
    {'sasl.password': SecretStr('**********'), 'linger.ms': 5}
    """
    return {k: (SecretStr(v) if isinstance(v, str) and is_secret_key(k) else v) for k, v in settings.items()}


def reveal_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings for the client that uses them: every :class:`SecretStr` unwrapped.

    >>> reveal_settings({"sasl.password": SecretStr("p"), "linger.ms": 5})
    {'sasl.password': 'p', 'linger.ms': 5}
    """
    return {k: (v.get_secret_value() if isinstance(v, SecretStr) else v) for k, v in settings.items()}


def secret_keys_of(settings: Mapping[str, Any]) -> frozenset[str]:
    """Names of the settings that hold a :class:`SecretStr` (secret by origin)."""
    return frozenset(k for k, v in settings.items() if isinstance(v, SecretStr))


_warned: set[str] = set()


def warn_once(logger: logging.Logger, message: str) -> None:
    """Log ``message`` as a warning the first time this process sees it (start-up warnings)."""
    if message not in _warned:
        _warned.add(message)
        logger.warning("%s", message)
