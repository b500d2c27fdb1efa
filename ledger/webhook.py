"""One alert as a webhook request: its JSON body, its signature, where it goes, and the POST.

* :func:`body` — the alert as compact JSON bytes: ``id`` (receivers dedupe on it), ``project``,
  ``user``, ``tag``, ``period``, ``window``, ``threshold``, ``spent`` and ``limit`` as exact
  decimal strings, ``at`` in ISO 8601, and ``type`` (``"budget_alert"``).
* :func:`sign` — header ``X-Ledger-Signature``: the hex HMAC-SHA256 of exactly those bytes
  with the shared secret. A receiver recomputes it over the raw body it read and compares
  with :func:`hmac.compare_digest` (:func:`verify` does that).
* :func:`target_of` — the URL as the ledger remembers and prints it: without a
  ``user:password@`` and with the value of any secret-looking query parameter (``token=``,
  ``key=``, ``sig=``...) blanked, so neither a credential nor the secret is ever stored or
  logged.
* :class:`HttpSender` — the only I/O: one POST with httpx, every failure (connection
  refused, a timeout, a non-2xx) an :class:`Attempt` with a redacted one-line reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import InvalidInput
from .money import money_str
from .redact import REDACTED, redact_text

__all__ = ["SECRET_ENV", "SIGNATURE_HEADER", "AlertLike", "Attempt", "HttpSender", "Sender",
           "body", "check_url", "payload", "sign", "target_of", "verify"]

SIGNATURE_HEADER = "X-Ledger-Signature"
SECRET_ENV = "LEDGER_WEBHOOK_SECRET"
#: The longest webhook URL (deliveries are remembered under it, ``String(1000)``).
MAX_URL = 1000
_SECRET_NAME = ("key", "token", "sig", "signature", "secret", "password", "passwd", "pwd",
                "credential", "credentials", "auth", "authorization", "session", "code", "jwt")


class AlertLike(Protocol):
    """What the worker reads of an alert (``ledger.records.Alert``)."""

    @property
    def id(self) -> int: ...
    @property
    def project(self) -> str: ...
    @property
    def user(self) -> str | None: ...
    @property
    def tag(self) -> str | None: ...
    @property
    def period(self) -> str: ...
    @property
    def window(self) -> str: ...
    @property
    def threshold(self) -> int: ...
    @property
    def spent(self) -> Decimal: ...
    @property
    def limit(self) -> Decimal: ...
    @property
    def at(self) -> datetime: ...


def payload(alert: AlertLike) -> dict[str, object]:
    """The alert as a JSON-ready mapping (money as exact decimal strings)."""
    return {"type": "budget_alert", "id": alert.id, "project": alert.project,
            "user": alert.user, "tag": alert.tag, "period": alert.period,
            "window": alert.window, "threshold": alert.threshold,
            "spent": money_str(alert.spent), "limit": money_str(alert.limit),
            "at": alert.at.isoformat()}


def body(alert: AlertLike) -> bytes:
    """The exact bytes POSTed (and signed)."""
    return json.dumps(payload(alert), ensure_ascii=False, separators=(",", ":")).encode()


def sign(data: bytes, secret: str) -> str:
    """Hex HMAC-SHA256 of ``data`` with ``secret`` (UTF-8)."""
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def verify(data: bytes, secret: str, signature: str) -> bool:
    """Whether ``signature`` is ``sign(data, secret)`` (constant-time comparison)."""
    return hmac.compare_digest(sign(data, secret), signature.strip().lower())


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host; InvalidInput otherwise (the
    message shows it with its credentials blanked)."""
    text = url.strip() if isinstance(url, str) else ""
    try:
        parts = urlsplit(text)
        port = parts.port  # a bad port raises ValueError
    except ValueError:
        parts, port = None, None
    if (parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname
            or any(ch.isspace() or ord(ch) < 32 for ch in text)):
        shown = redact_text(text)[:200] if text else "nothing"
        raise InvalidInput(f"--webhook must be an http:// or https:// URL with a host (e.g. "
                           f"https://hooks.example.com/ledger), got {shown!r}")
    del port
    if len(text) > MAX_URL:
        raise InvalidInput(f"--webhook must be at most {MAX_URL} characters, got {len(text)}")
    return text


#: Characters of the fingerprint a redacted target ends with (``#`` and 12 hex digits).
FINGERPRINT = 13


def target_of(url: str) -> str:
    """The webhook URL without credentials: no ``user:password@``, secret-looking query
    values blanked, no fragment. This is the key deliveries are remembered under, so when
    something was blanked it ends with ``#`` and 12 hex digits of the SHA-256 of the whole
    URL: two receivers that differ only in their token (``?token=A``, ``?token=B``) are two
    targets, each getting every alert, and the token is still never stored."""
    text = check_url(url)
    parts = urlsplit(text)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, REDACTED if _secret_name(k) else v) for k, v in pairs])
    shown = urlunsplit((parts.scheme.lower(), netloc.lower(), parts.path or "/", query, ""))
    blanked = (parts.username is not None or parts.password is not None
               or any(_secret_name(k) for k, _ in pairs))
    if not blanked:
        return shown
    fingerprint = hashlib.sha256(text.encode("utf-8")).hexdigest()[:FINGERPRINT - 1]
    return f"{shown[:MAX_URL - FINGERPRINT]}#{fingerprint}"


def _secret_name(name: str) -> bool:
    low = name.lower().replace("-", "_")
    return low.endswith(_SECRET_NAME)


@dataclass(frozen=True)
class Attempt:
    """How one POST went: ``ok`` on a 2xx; otherwise a one-line, redacted ``error``."""

    ok: bool
    status: int | None = None
    error: str | None = None


class Sender(Protocol):
    def __call__(self, url: str, data: bytes, headers: Mapping[str, str]) -> Attempt: ...


class _RedactingFilter(logging.Filter):
    """httpx logs every request's full URL at INFO: its credentials are blanked first."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        return True


def _redact_httpx_log() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactingFilter) for f in logger.filters):
        logger.addFilter(_RedactingFilter())


class HttpSender:
    """POSTs with one pooled ``httpx.Client``; never follows redirects (a redirect is a
    non-2xx: the receiver should be configured with its final URL). httpx's own request log
    line goes through :func:`ledger.redact.redact_text` (no URL credentials in logs)."""

    def __init__(self, timeout: float = 10.0, *, secrets: tuple[str, ...] = ()) -> None:
        import httpx

        _redact_httpx_log()
        self.timeout = timeout
        self._secrets = tuple(s for s in secrets if s)
        self._client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False,
                                    headers={"User-Agent": "runapi-ledger webhook"})

    def __call__(self, url: str, data: bytes, headers: Mapping[str, str]) -> Attempt:
        import httpx

        try:
            response = self._client.post(url, content=data, headers=dict(headers))
        except httpx.TimeoutException:
            return Attempt(False, None, f"timed out after {self.timeout:g}s")
        except httpx.HTTPError as exc:
            return Attempt(False, None, self._clean(f"{type(exc).__name__}: {exc}", url))
        if 200 <= response.status_code < 300:
            return Attempt(True, response.status_code)
        reason = response.reason_phrase or ""
        return Attempt(False, response.status_code,
                       self._clean(f"HTTP {response.status_code} {reason}".strip(), url))

    def _clean(self, text: str, url: str) -> str:
        text = text.replace(url, target_of(url))
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return " ".join(redact_text(text).split())[:500]

    def close(self) -> None:
        self._client.close()
