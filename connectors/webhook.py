"""Webhook sink: POST every alert record as JSON, with retries and capped exponential backoff.

Plants wire e-mail, SMS or Microsoft Teams through it (a Teams workflow, an SMS gateway, a
small relay). Each record is one ``POST`` with ``Content-Type: application/json`` and the
header ``Idempotency-Key: <event_id>`` (``alert_id:status:severity``): a receiver that keeps
the keys it has seen turns the sink's at-least-once delivery into exactly-once.

Redirects are never followed: a 3xx answer is a failure of that record, reported as
``redirected`` (urllib would re-send a 302 as a GET carrying ``Authorization`` to wherever the
``Location`` points). The URL and headers are secrets (Teams/Logic Apps URLs carry ``sig=``):
logs and errors name only the host and path (:func:`~plantstream.schemas.redact.url_destination`).

Retried: connection errors, timeouts, HTTP 408, 425, 429 and 5xx, after ``backoff_initial_s``,
doubling up to ``backoff_max_s``. Any other 4xx is a permanent rejection of that record (a
3xx too): logged, counted in :attr:`WebhookStats.rejected` (3xx also in ``redirected``), never
retried. :meth:`WebhookSink.attempt` is one POST and its outcome; the alert outbox
(:class:`plantstream.connectors.outbox.WebhookDelivery`, reading ``plantstream.alerts`` at its
own pace) retries it forever and dead-letters the refused records, so a webhook that is down
never holds back the flows. :meth:`WebhookSink.post` gives up after ``max_attempts`` (tools,
one-off deliveries); as a Bytewax sink it would stop the flow, which is why the flows no longer
use it as one.

Standard library only (``urllib``).

Unit of parallelism: one partition per Bytewax worker (``DynamicSink``). Delivery:
at-least-once; duplicates after a retry or a resume carry the same ``Idempotency-Key``.

Examples
--------
>>> WebhookSink("http://hooks.example/alerts").backoff(2), WebhookSink("http://x").backoff(20)
(1.0, 30.0)
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from plantstream.schemas.alerts_config import WebhookConfig
from plantstream.schemas.errors import ConfigError, ConnectorError
from plantstream.schemas.redact import mask_text, url_destination

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 425, 429})

Outcome = Literal["sent", "refused", "retry"]


def idempotency_key(row: Mapping[str, Any]) -> str:
    """The ``Idempotency-Key`` of an alert record: its ``event_id`` (else its ``alert_id``).

    >>> idempotency_key({"alert_id": "a1", "event_id": "a1:raised:warning"})
    'a1:raised:warning'
    """
    return str(row.get("event_id") or row.get("alert_id") or "")


@dataclass
class WebhookStats:
    """What the sink did (shared by its partitions)."""

    sent: int = 0
    attempts: int = 0
    retries: int = 0
    rejected: int = 0
    redirected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, float):
        return None
    return str(obj)


class _WebhookPartition(StatelessSinkPartition[Any]):
    def __init__(self, sink: WebhookSink) -> None:
        self.sink = sink

    def write_batch(self, items: list[Any]) -> None:
        for item in items:
            row = item[1] if isinstance(item, tuple) and len(item) == 2 else item
            self.sink.post(row)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: the 3xx reaches the caller as an :class:`urllib.error.HTTPError`."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class WebhookSink(DynamicSink[Any]):
    """POST each record (a row dict, or ``(key, row)``) to ``url`` as JSON."""

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None, token: str | None = None,
                 timeout_s: float = 5.0, max_attempts: int = 10, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0, sleep: Callable[[float], None] = time.sleep) -> None:
        if not url.startswith(("http://", "https://")):
            msg = f"alerts.webhook.url {url_destination(url)!r}: must start with http:// or https://"
            raise ConfigError(msg)
        self._url = url
        self.destination = url_destination(url)
        """Scheme, host and path of the URL: what logs and errors show."""
        self._headers = dict(headers or {})
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.sleep = sleep
        self.stats = WebhookStats()

    def __repr__(self) -> str:
        return f"WebhookSink({self.destination!r}, headers={sorted(self._headers)})"

    @classmethod
    def from_config(cls, cfg: WebhookConfig) -> WebhookSink:
        if cfg.url is None or not cfg.url.get_secret_value():
            msg = "alerts.webhook.url is not set; give the URL alerts are posted to"
            raise ConfigError(msg)
        return cls(cfg.url.get_secret_value(),
                   headers={k: v.get_secret_value() for k, v in cfg.headers.items()},
                   token=cfg.token.get_secret_value() if cfg.token is not None else None,
                   timeout_s=cfg.timeout_s, max_attempts=cfg.max_attempts,
                   backoff_initial_s=cfg.backoff_initial_s, backoff_max_s=cfg.backoff_max_s)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WebhookPartition:
        return _WebhookPartition(self)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1)))

    def attempt(self, row: Mapping[str, Any]) -> tuple[Outcome, str]:
        """One POST of one record: ``("sent", "")``, ``("refused", why)`` for an answer that will
        not change (3xx, a 4xx other than 408/425/429: never retried), or ``("retry", why)``
        (unreachable, timeout, 408/425/429, 5xx)."""
        body = orjson.dumps(row, default=_json_default)
        key = idempotency_key(row)
        headers = {"Content-Type": "application/json", "Idempotency-Key": key, **self._headers}
        self.stats.add(attempts=1)
        req = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with _OPENER.open(req, timeout=self.timeout_s) as resp:
                resp.read()
            self.stats.add(sent=1)
            return "sent", ""
        except urllib.error.HTTPError as exc:
            location = exc.headers.get("Location", "") if exc.headers else ""
            exc.close()
            if 300 <= exc.code < 400:
                where = url_destination(location) if location else "?"
                log.error("webhook %s answered HTTP %s (redirect to %s): alert record %s NOT delivered; "
                          "redirects are not followed, set alerts.webhook.url to the final URL",
                          self.destination, exc.code, where, key)
                self.stats.add(rejected=1, redirected=1)
                return "refused", f"webhook {self.destination} answered HTTP {exc.code} (redirect to {where})"
            if exc.code < 500 and exc.code not in RETRY_STATUS:
                log.error("webhook %s rejected alert record %s: HTTP %s", self.destination, key, exc.code)
                self.stats.add(rejected=1)
                return "refused", f"webhook {self.destination} rejected it: HTTP {exc.code}"
            return "retry", f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            return "retry", mask_text(str(getattr(exc, "reason", exc))).replace(self._url, self.destination)

    def post(self, row: Mapping[str, Any]) -> bool:
        """Deliver one record with at most ``max_attempts`` attempts; True when accepted, False when
        permanently rejected (4xx, 3xx); :class:`ConnectorError` when every attempt failed.

        The outbox (:class:`plantstream.connectors.outbox.WebhookDelivery`) retries forever
        instead; this is for one-off deliveries and tools."""
        key = idempotency_key(row)
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            outcome, last = self.attempt(row)
            if outcome != "retry":
                return outcome == "sent"
            if attempt < self.max_attempts:
                self.stats.add(retries=1)
                log.warning("webhook %s attempt %d for %s failed (%s); retrying",
                            self.destination, attempt, key, last)
                self.sleep(self.backoff(attempt))
        msg = (f"webhook {self.destination}: alert record {key} not delivered after {self.max_attempts} "
               f"attempts ({last}); check the receiver or raise alerts.webhook.max_attempts")
        raise ConnectorError(msg)
