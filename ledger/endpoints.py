"""Which requests are metered, which pass free, which are refused (pure; issue 9 item 1).

No call escapes the ledger: every POST is either metered or refused before it is sent.

* **Metered** (``POST``): ``.../chat/completions`` (``openai``), ``.../messages``
  (``anthropic``), ``.../responses`` (``responses``), ``.../completions`` (``completions``),
  ``.../embeddings`` (``embeddings``).
* **Free**: ``GET``, ``HEAD`` and ``OPTIONS``; other methods (``PUT``, ``PATCH``,
  ``DELETE``) unless they name a metered endpoint; ``POST .../v1/models`` and
  ``.../v1/messages/count_tokens``; and exactly the paths the client lists in ``free_paths``.
* **Refused** (400 ``unmetered_endpoint``): any other ``POST``, and any method but the
  reading ones sent to a metered endpoint.

Paths are matched on their **last segments**, so any base prefix works
(``/v1/chat/completions``, ``/openai/v1/chat/completions``, an Azure-style
``/openai/deployments/x/chat/completions``). The path is normalised first, so that a metered
endpoint spelled differently is still metered: percent-escapes decoded (a path that still holds
one after decoding, i.e. double-encoded, is refused), case folded, repeated slashes collapsed,
``.`` / ``..`` segments resolved, a trailing slash dropped; the query string is not part of the
path. Anything that does not match exactly after that (``;params``, stray characters) is refused.
OpenAI Assistants' ``/threads/{id}/messages`` is not a completion: it is refused unless listed.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from .errors import InvalidInput
from .shapes import Shape

__all__ = ["Route", "classify", "normalise_free_paths", "normalise_path", "shape_for"]

Kind = Literal["metered", "free", "refused"]

#: Metered endpoints by their last path segments (longest first).
METERED: tuple[tuple[str, Shape], ...] = (
    ("/chat/completions", "openai"),
    ("/messages", "anthropic"),
    ("/responses", "responses"),
    ("/completions", "completions"),
    ("/embeddings", "embeddings"),
)
#: POST endpoints that cost nothing.
FREE: tuple[str, ...] = ("/v1/messages/count_tokens", "/v1/models")
#: Methods that only read: passed free whatever the path.
READS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Route:
    """How one request is treated: ``kind``, the ``shape`` of a metered call, the ``path``
    as normalised."""

    kind: Kind
    shape: Shape | None
    path: str


def normalise_path(path: str) -> str | None:
    """The path as it is matched, or ``None`` when it cannot be read unambiguously."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    decoded = unquote(path, errors="strict") if "%" in path else path
    if "%" in decoded or "\\" in decoded or any(ord(c) < 0x21 for c in decoded):
        return None  # double-encoded, or control characters/spaces: not a path we can trust
    decoded = decoded.lower()
    while "//" in decoded:
        decoded = decoded.replace("//", "/")
    normal = posixpath.normpath("/" + decoded.lstrip("/"))
    return "/" if normal in ("/", "//") else normal.rstrip("/") or "/"


def _metered_shape(path: str) -> Shape | None:
    for suffix, shape in METERED:
        if path.endswith(suffix):
            if shape == "anthropic" and "/threads/" in path:
                return None  # Assistants: creates a thread message, not a completion
            if shape == "completions" and path.endswith("/chat/completions"):
                return "openai"
            return shape
    return None


def normalise_free_paths(paths: Iterable[str] | None) -> frozenset[str]:
    """``free_paths`` as matched; a metered path cannot be made free (``InvalidInput``)."""
    if paths is None:
        return frozenset()
    if isinstance(paths, str):
        raise InvalidInput("free_paths must be a list of paths, not one string")
    out: set[str] = set()
    for raw in paths:
        if not isinstance(raw, str) or not raw.startswith("/"):
            raise InvalidInput(f"free_paths: {raw!r} is not a path starting with '/'")
        path = normalise_path(raw)
        if path is None or path == "/":
            raise InvalidInput(f"free_paths: {raw!r} is not a usable path")
        if _metered_shape(path) is not None:
            raise InvalidInput(f"free_paths: {raw!r} is a metered endpoint and cannot be free")
        out.add(path)
    return frozenset(out)


def classify(method: str, path: str, free_paths: frozenset[str] = frozenset()) -> Route:
    """How a request is treated (see the module docs)."""
    verb = method.upper()
    if verb in READS:
        return Route("free", None, path)
    normal = normalise_path(path)
    if normal is None:
        return Route("refused", None, path)
    shape = _metered_shape(normal)
    if verb != "POST":
        # PUT, PATCH, DELETE: free, but never to a metered endpoint (it would run unpriced).
        return Route("refused" if shape is not None else "free", None, normal)
    if shape is not None:
        return Route("metered", shape, normal)
    if any(normal.endswith(free) for free in FREE) or normal in free_paths:
        return Route("free", None, normal)
    return Route("refused", None, normal)


def shape_for(method: str, path: str) -> Shape | None:
    """The shape of a metered call from its HTTP method and path, or ``None`` if it is not one
    (free or refused: see :func:`classify`)."""
    return classify(method, path).shape
