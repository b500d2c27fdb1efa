"""What every suite shares: the price and model of a fresh ledger, the fake API key, the
figures a suite run reports (and their Markdown table), and the restarted process's clock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
import httpx2
from sqlalchemy.engine import make_url

from ledger.clock import ManualClock

Shape = Literal["openai", "anthropic", "responses", "completions", "embeddings"]
PRICE = Decimal("0.020")  # kimi-k2.5 and kimi-k2.6 on a fresh ledger, per 1K tokens
MODEL = "kimi-k2.5"
FAKE_API_KEY = "sk-reliability-SECRET-6c1d0e9f2b7a4c58"
PATHS: dict[str, str] = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages",
                         "responses": "/v1/responses", "completions": "/v1/completions",
                         "embeddings": "/v1/embeddings"}
HTTPX_ERRORS = (httpx.TransportError, httpx2.TransportError)
#: The directory holding ``tests/`` (on ``sys.path``, ``tests.harness`` imports).
REPO_ROOT = Path(__file__).resolve().parents[2]


def cost(prompt: int, completion: int, per_1k: Decimal = PRICE) -> Decimal:
    """The exact cost of a call at one price for input and output tokens."""
    return (prompt + completion) * per_1k / 1000


# -- figures --------------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one suite run did and found. ``problems`` is empty when every invariant held."""

    suite: str
    backend: str = "sqlite"
    #: Calls the callers made.
    calls: int = 0
    #: Held and sent to the server.
    admitted: int = 0
    #: Refused before sending (budget 402, ledger unavailable 503).
    refused: int = 0
    #: Sent, failed (HTTP >= 400, error event, broken stream, transport error): cost zero.
    failed: int = 0
    #: Settled spend above a hard limit, in dollars.
    overspend: Decimal = Decimal(0)
    #: Calls whose settled usage is missing from the ledger or recorded at a wrong cost.
    usage_lost: int = 0
    #: Calls recorded more than once, or totals that disagree with the events.
    charged_twice: int = 0
    #: Holds still pending after their TTL passed and expiry ran.
    unresolved_holds: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def problem(self, message: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(message)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["overspend"] = str(self.overspend)
        out["extra"] = {k: str(v) if isinstance(v, Decimal) else v for k, v in self.extra.items()}
        return out


def backend_of(url: str) -> str:
    return "sqlite" if make_url(url).get_backend_name() == "sqlite" else "postgresql"

def restart_clock() -> ManualClock:
    """The restarted process's clock: past the TTL of every hold the child could have made."""
    return ManualClock(datetime.now(UTC) + timedelta(minutes=16))


def figures_table(rows: Sequence[Figures]) -> str:
    """The figures as a Markdown table."""
    head = ("| suite | backend | calls | admitted | refused | failed | overspend | usage lost "
            "| charged twice | holds unresolved past TTL | seconds |")
    lines = [head, "|" + "---|" * 11]
    for f in rows:
        lines.append(f"| {f.suite} | {f.backend} | {f.calls:,} | {f.admitted:,} | "
                     f"{f.refused:,} | {f.failed:,} | ${f.overspend} | {f.usage_lost} | "
                     f"{f.charged_twice} | {f.unresolved_holds} | {f.seconds:.1f} |")
    return "\n".join(lines)
