"""The OpenAI Embeddings shape (``POST /v1/embeddings``; issue 9 item 1).

Request: ``model``, ``input`` (a string, a list of strings, a token array or a list of token
arrays). Input tokens only: there is no completion, so the worst case is the input estimate.
Response: ``usage.prompt_tokens`` (and ``total_tokens``); no completion tokens, no stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .common import NOTHING, BadCount, StreamEvent, Usage, make_usage, token_field

#: No completion, so no cap to lower.
CAP_FIELDS: tuple[str, ...] = ()


def body_user(body: Mapping[str, Any]) -> object:
    """The end user the body names: ``user`` (whatever it holds; the caller checks it)."""
    return body.get("user")


def max_tokens(body: Mapping[str, Any]) -> int | None:
    """Embeddings have no completion: the cap is 0."""
    return 0


def usage_fields(usage: object) -> dict[str, int] | None:
    if not isinstance(usage, Mapping):
        return None
    try:
        prompt = token_field(usage, "prompt_tokens")
        if prompt is None:
            prompt = token_field(usage, "total_tokens")
    except BadCount:
        return None
    return None if prompt is None else {"prompt_tokens": prompt}


def usage_from_fields(fields: Mapping[str, int]) -> Usage | None:
    prompt = fields.get("prompt_tokens")
    return None if prompt is None else make_usage(prompt, 0, 0)


def usage_from_object(obj: Mapping[str, Any]) -> Usage | None:
    fields = usage_fields(obj.get("usage"))
    return None if fields is None else usage_from_fields(fields)


def text_from_object(obj: Mapping[str, Any]) -> str:
    return ""


def read_stream_event(event: str, data: str) -> StreamEvent:
    return NOTHING


def body_to_forward(body: Mapping[str, Any], *, stream: bool,
                    default_cap: int | None) -> tuple[bytes | None, bool]:
    return None, False
