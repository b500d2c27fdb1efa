"""What the ledger keeps of a metered call: never API keys or Authorization headers, never
prompts or completions, in the database or in the spool."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from ledger import Ledger, LedgerUnavailable
from ledger.testing.simulator import Behavior, RunAPISimulator

MARKER = "zebracorn"  # a word of the prompt; the simulator echoes it back in the completion
MESSAGES: list[Any] = [{"role": "user", "content": f"tell me about the {MARKER} please"}]


def database_text(url: str) -> str:
    """Every table of a SQLite ledger, dumped as SQL text."""
    path = url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def test_api_keys_prompts_and_completions_are_never_stored(
        book: Ledger, sqlite_url: str, sim: RunAPISimulator, openai_client: openai.OpenAI,
        anthropic_client: anthropic.Anthropic, fake_api_key: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After ok, streamed, failed, refused, broken and spooled calls, neither the tables nor
    the spool hold the API key, the prompt or the completion."""
    reply = openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
    assert MARKER in (reply.choices[0].message.content or "")
    for _ in openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES,
                                                   stream=True):
        pass
    with anthropic_client.messages.stream(model="kimi-k2.5", max_tokens=100,
                                          messages=MESSAGES) as stream:
        stream.until_done()
    sim.enqueue(Behavior(status=400, retry_after=None))
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
    sim.enqueue(Behavior(error_event=True))
    with pytest.raises(anthropic.APIError):
        with anthropic_client.messages.stream(model="kimi-k2.5", max_tokens=100,
                                              messages=MESSAGES) as stream:
            stream.until_done()
    sim.enqueue(Behavior(omit_usage=True))  # charged by estimate of the completion text
    openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)

    def down(*args: Any, **kwargs: Any) -> int:
        raise LedgerUnavailable("ledger database unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(book.store, "settle", down)
        openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
    spool = Path(book.spool.path).read_text()
    book.set_budget("acme", Decimal("0.0001"))
    with pytest.raises(openai.APIStatusError):
        openai_client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)

    assert sim.api_requests[0].headers["authorization"] == f"Bearer {fake_api_key}"
    assert fake_api_key in sim.api_requests[2].headers["authorization"]  # the Anthropic SDK
    stored = database_text(sqlite_url)
    assert "refused" in stored and "failed" in stored and '"call_id"' in spool
    for secret in (fake_api_key, MARKER, "Bearer"):
        assert secret not in stored
        assert secret not in spool
    book.replay()
    assert fake_api_key not in database_text(sqlite_url)
