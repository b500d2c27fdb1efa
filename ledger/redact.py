"""Credentials out of error text before the ledger keeps it (the events table, the spool).

A server's error message often repeats the request: its URL with ``?api-key=...`` in the
query string, an ``Authorization: Bearer ...`` header, or the key itself ("Incorrect API key
provided: sk-..."). :func:`redact_text` blanks out what looks like a credential:

* the value of any parameter or field whose name ends in ``key``, ``token``, ``sig``,
  ``signature``, ``secret``, ``password``, ``credential``, ``auth`` or ``session``
  (``api-key=``, ``api_key=``, ``key=``, ``access_token=``, ``sig=``, ``X-Amz-Signature=``,
  ``"api_key": "..."``; ``=`` may be URL-encoded as ``%3D``);
* the value of an ``Authorization``, ``X-Api-Key``, ``Api-Key`` or ``Cookie`` header;
* the token after ``Bearer`` (always) or ``Basic`` (when it looks like base64);
* the password in a URL's ``user:password@``;
* strings shaped like well-known keys: ``sk-...`` / ``sk_...`` (OpenAI, Anthropic, Stripe),
  ``lk_...`` (this ledger's proxy keys), ``rk_...``, GitHub ``ghp_...``, Slack ``xox?-...``,
  Hugging Face ``hf_...``, AWS ``AKIA...``, Google ``AIza...`` and JSON Web Tokens.

Pure and idempotent (``redact_text(redact_text(s)) == redact_text(s)``). It errs towards
blanking too much: an error text is for people diagnosing a failure, and a lost word there
costs less than a leaked key. The exact credentials a request carried in its headers are
blanked as well, by :func:`ledger.metering.redact`.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_text"]

REDACTED = "[REDACTED]"

_SUFFIX = (r"(?:key|token|sig|signature|secret|password|passwd|pwd|credentials?|auth|"
           r"authorization|session|sessionid|jwt)")

#: ``name=value`` (a query string, a form body, a log line): the value up to a separator.
_ASSIGNMENT = re.compile(
    rf"(?i)(?<![\w.\-])([\w.\-\[\]]*?{_SUFFIX})(\s*(?:=|%3D)\s*[\"']?)([^\s&#\"'<>\\]+)")

#: ``"name": "value"`` (JSON echoed back).
_QUOTED_FIELD = re.compile(
    rf"(?i)([\"'][\w.\-]*?{_SUFFIX}[\"']\s*:\s*[\"'])((?:[^\"'\\]|\\.)+)")

#: ``Authorization: <scheme> <token>`` and friends (headers echoed back).
_HEADER = re.compile(
    r"(?i)(?<![\w\-])((?:proxy-)?authorization|x-api-key|api-key|x-goog-api-key|"
    r"ocp-apim-subscription-key)(\s*:\s*)"
    r"((?:(?:bearer|basic|token|digest)\s+)?[^\s\"',;]+)")

#: A cookie header: every cookie in it, to the end of the line.
_COOKIE = re.compile(r"(?i)(?<![\w\-])((?:set-)?cookie)(\s*:\s*)([^\r\n\"']+)")

_BEARER = re.compile(r"(?i)\b(bearer)(\s+)([^\s\"',;]+)")

#: ``Basic <base64>``: only when the word is not plain lowercase prose ("Basic auth").
_BASIC = re.compile(r"(?i)\b(basic)(\s+)(?!(?-i:[a-z]+)\b)([A-Za-z0-9+/]{6,}={0,2})")

_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^/\s:@]+:)([^/\s@]+)(@)")

#: Well-known key shapes; the prefix is kept so that people can tell what leaked.
_KEY_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_\-])("
    r"(?:sk|rk|lk)[-_]"
    r"|gh[pousr]_|github_pat_|xox[abposr]-|hf_"
    r")[A-Za-z0-9_\-]{6,}"
    r"|(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"
    r"|(?<![A-Za-z0-9_\-])AIza[0-9A-Za-z_\-]{20,}"
    r"|(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{6,}\.[A-Za-z0-9_\-]{6,}\.[A-Za-z0-9_\-]*")


def _key_shape(match: re.Match[str]) -> str:
    prefix = match.group(1)
    return (prefix or "") + REDACTED


def _value(match: re.Match[str]) -> str:
    return match.group(1) + match.group(2) + REDACTED


def redact_text(text: str) -> str:
    """``text`` with every credential-looking value replaced by ``[REDACTED]``."""
    if not text:
        return text
    text = _HEADER.sub(_value, text)
    text = _COOKIE.sub(_value, text)
    text = _BEARER.sub(_value, text)
    text = _BASIC.sub(_value, text)
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    text = _QUOTED_FIELD.sub(lambda m: m.group(1) + REDACTED, text)
    text = _ASSIGNMENT.sub(_value, text)
    return _KEY_SHAPES.sub(_key_shape, text)
