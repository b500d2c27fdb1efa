#!/usr/bin/env python
"""The runapi-ledger demo: real HTTP calls through the OpenAI and Anthropic SDKs, metered on an
embedded SQLite ledger, then a budget report and an invoice.

Run it with ``scripts/demo`` (which installs what it needs). Without ``RUNAPI_API_KEY`` the calls
go to the built-in loopback RunAPI simulator; with it, to https://runapi.ai (a few cents).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import anthropic
import openai

from ledger import Ledger
from ledger.testing import Behavior, RunAPISimulator

PROJECT = "demo-app"
MODEL = "kimi-k2.5"
BUDGET = Decimal("0.25")
PROMPT = ("Summarise, in about three hundred words, why a cost ledger should reserve the worst "
          "case of an LLM call before sending it and settle the exact usage afterwards. " * 12)
REPLY = ("A ledger that reserves the worst case first can refuse a call before any money is "
         "spent, and settling from the reported usage keeps every invoice exact. " * 16)
MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


@contextmanager
def endpoint() -> Iterator[tuple[str, str, RunAPISimulator | None]]:
    """(base URL, API key, simulator or None): the real RunAPI if RUNAPI_API_KEY is set."""
    key = os.environ.get("RUNAPI_API_KEY")
    if key:
        yield os.environ.get("RUNAPI_BASE_URL", "https://runapi.ai"), key, None
        return
    with RunAPISimulator() as sim:
        sim.default = Behavior(reply=REPLY)
        yield sim.base_url, "sim-key-not-a-secret", sim


def anthropic_client(book: Ledger, base_url: str, key: str, **kw: Any) -> anthropic.Anthropic:
    """Anthropic SDK 2.x takes an httpx2.Client; older releases an httpx.Client."""
    try:
        return anthropic.Anthropic(base_url=base_url, api_key=key,
                                   http_client=book.httpx2_client(PROJECT), **kw)
    except TypeError:
        return anthropic.Anthropic(base_url=base_url, api_key=key,
                                   http_client=book.httpx_client(PROJECT), **kw)  # type: ignore[arg-type]


def cli(url: str, *args: str) -> None:
    command = [sys.executable, "-m", "ledger", "--db", url, *args]
    print("$ ledger " + " ".join(args), flush=True)
    subprocess.run(command, check=False)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ledger-demo-") as tmp, endpoint() as (base, key, sim):
        url = f"sqlite:///{tmp}/ledger.db"
        book = Ledger(url)
        book.set_budget(PROJECT, BUDGET)  # hard: calls that could exceed it are refused
        where = "the local RunAPI simulator" if sim else base
        say(f"Ledger {url}; project {PROJECT!r}, hard budget ${BUDGET}/month; calls go to {where}")

        gpt = openai.OpenAI(base_url=base + "/v1", api_key=key,
                            http_client=book.httpx_client(PROJECT))
        claude = anthropic_client(book, base, key)

        say("OpenAI SDK, plain call")
        reply = gpt.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=600)
        print(f"   {reply.usage.prompt_tokens if reply.usage else '?'} tokens in, "
              f"{reply.usage.completion_tokens if reply.usage else '?'} out; "
              f"spent so far ${book.spend(PROJECT)}")

        say("OpenAI SDK, streamed (the ledger asks for usage; you never see the extra chunk)")
        chunks = list(gpt.chat.completions.create(model=MODEL, messages=MESSAGES,
                                                  max_tokens=600, stream=True))
        print(f"   {len(chunks)} chunks; spent so far ${book.spend(PROJECT)}")

        say("Anthropic SDK, plain call")
        msg = claude.messages.create(model=MODEL, max_tokens=600, messages=MESSAGES)
        print(f"   {msg.usage.input_tokens} tokens in, {msg.usage.output_tokens} out; "
              f"spent so far ${book.spend(PROJECT)}")

        say("Anthropic SDK, streamed with client.messages.stream()")
        with claude.messages.stream(model=MODEL, max_tokens=600, messages=MESSAGES) as stream:
            final = stream.get_final_message()
        print(f"   {final.usage.output_tokens} tokens out; spent so far ${book.spend(PROJECT)}")

        say("A call whose worst case does not fit the budget (max_tokens=50000)")
        try:
            gpt.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50_000)
        except openai.APIStatusError as err:
            print(f"   refused before sending: HTTP {err.status_code}: {err.message}")
        if sim:
            print(f"   requests that reached the server so far: {sim.request_count}")

        say("A call that fails (HTTP 500): it costs zero and is recorded as failed")
        failing = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0,
                                http_client=book.httpx_client(PROJECT))
        if sim:
            sim.enqueue(Behavior(status=500, error_message="simulated upstream failure"))
            body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": 600}
        else:  # the real service: a request it rejects
            body = {"model": MODEL, "messages": [], "max_tokens": 600}
        try:
            failing.chat.completions.create(**body)
            print("   (the server accepted it after all)")
        except openai.APIStatusError as err:
            print(f"   HTTP {err.status_code}; spent so far ${book.spend(PROJECT)}")

        book.close()
        month = book.now().strftime("%Y-%m")
        say("Every call the ledger saw")
        cli(url, "usage", "--project", PROJECT)
        say("Budget report")
        cli(url, "budget", "report", "--month", month)
        say("Invoice")
        cli(url, "invoice", PROJECT, "--month", month, "--draft")  # the month is not over
    return 0


if __name__ == "__main__":
    sys.exit(main())
