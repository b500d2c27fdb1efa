"""Names and ids, checked at every entry point: a project or model name, and a call's id.

The first step of every flow (``Ledger``, ``MeteredCall``, ``MeteredTransport``, invoices):
nothing here touches the database or the clock.
"""

from __future__ import annotations

import uuid

from .errors import InvalidInput

__all__ = ["MAX_NAME", "check_name", "new_call_id"]

MAX_NAME = 200


def check_name(value: object, field: str) -> str:
    """A project or model name: a non-empty string of at most 200 characters, kept literally."""
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, not {type(value).__name__}")
    if not value or not value.strip():
        raise InvalidInput(f"{field} must not be empty")
    if len(value) > MAX_NAME:
        raise InvalidInput(f"{field} must be at most {MAX_NAME} characters")
    if "\x00" in value:
        raise InvalidInput(f"{field} must not contain NUL characters")
    return value


def new_call_id() -> str:
    """A fresh id for a metered call (its hold, its event and its spool entry share it)."""
    return uuid.uuid4().hex
