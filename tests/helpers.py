"""Plain helpers shared by the metering tests (imported as ``helpers``: pytest puts tests/ on
the path)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ledger import Ledger

PRICE = Decimal("0.020")  # kimi-k2.5, per 1K tokens, input and output
MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]  # 5 prompt tokens, 20 back
Events = Callable[[Ledger], list[dict[str, Any]]]


def cost(tokens: int) -> Decimal:
    """What ``tokens`` tokens of kimi-k2.5 cost, exactly."""
    return PRICE * tokens / 1000


def only_event(book: Ledger, ledger_events: Events) -> dict[str, Any]:
    """The one event the ledger holds (fails if there are more or none)."""
    events = ledger_events(book)
    assert len(events) == 1, events
    return events[0]
