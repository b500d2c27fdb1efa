"""Issue 12 item "No recipes": llama-index's ``OpenAILike`` (llama-index-llms-openai-like; the
plain ``OpenAI`` class rejects model names it does not know) metered through ``http_client`` and
``async_http_client`` (docs/INTEGRATIONS.md), billed exactly, refused without a retry."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from helpers import Events
from recipe_helpers import assert_billed_exactly, assert_refused_once, framework

from ledger import Ledger
from ledger.testing.simulator import RunAPISimulator

openai = framework("openai", "openai")
openai_like = framework("llama_index.llms.openai_like", "llama-index-llms-openai-like")
llms = framework("llama_index.core.llms", "llama-index-core")


def llm(book: Ledger, sim: RunAPISimulator) -> Any:
    return openai_like.OpenAILike(
        model="kimi-k2.5", api_base=sim.openai_base_url, api_key="sk-...",
        is_chat_model=True, context_window=128_000,
        http_client=book.httpx_client("acme"),
        async_http_client=book.async_httpx_client("acme"))


def hello() -> list[Any]:
    return [llms.ChatMessage(role="user", content="hello there")]


class TestMetered:
    def test_chat_and_stream_chat_are_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": OpenAILike.chat and .stream_chat, billed exactly."""
        model = llm(book, sim)
        reply = model.chat(hello())
        pieces = [r.delta or "" for r in model.stream_chat(hello())]
        usage = assert_billed_exactly(book, sim, ledger_events, calls=2)
        assert str(reply.message.content).startswith("Echo:")
        assert "".join(pieces) == reply.message.content
        assert usage[0] == (reply.additional_kwargs["prompt_tokens"],
                            reply.additional_kwargs["completion_tokens"])

    @pytest.mark.anyio
    async def test_achat_and_astream_chat_are_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": OpenAILike.achat and .astream_chat over async_http_client."""
        model = llm(book, sim)
        await model.achat(hello())
        pieces = [r.delta or "" async for r in await model.astream_chat(hello())]
        assert "".join(pieces).startswith("Echo:")
        assert_billed_exactly(book, sim, ledger_events, calls=2)

    def test_complete_is_billed_exactly(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": OpenAILike.complete (chat model underneath), exact."""
        assert llm(book, sim).complete("hello there").text.startswith("Echo:")
        assert_billed_exactly(book, sim, ledger_events, calls=1)


class TestRefused:
    def test_refusal_raises_the_402_status_error_once(
            self, book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
        """Issue 12 "No recipes": over budget, chat raises openai.APIStatusError 402 and
        llama-index's retry decorator (transient errors only) does not retry it."""
        book.set_budget("acme", Decimal("0.0001"))
        with pytest.raises(openai.APIStatusError) as caught:
            llm(book, sim).chat(hello())
        assert caught.value.status_code == 402
        assert caught.value.body["type"] == "budget_exceeded"
        assert_refused_once(book, sim, ledger_events)
