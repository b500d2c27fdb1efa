"""Shared by the framework recipes: import a framework (fail in CI, skip elsewhere when it is
missing) and check that the ledger billed exactly what the simulator reported."""

from __future__ import annotations

import importlib
import os
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest
from helpers import PRICE, Events

from ledger import Ledger
from ledger.money import from_units
from ledger.testing.simulator import Behavior, RunAPISimulator, simulated_usage

IN_CI = os.environ.get("CI", "").lower() == "true"


def framework(module: str, package: str) -> ModuleType:
    """Import ``module``; without it: fail under CI=true, else skip this file with the reason."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f"{package} is not installed ({exc}); pip install -e '.[integrations]'"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)


def reported_usage(sim: RunAPISimulator, behavior: Behavior | None = None
                   ) -> list[tuple[int, int]]:
    """(prompt, completion) tokens the simulator reported, one pair per API request it served
    (every request answered under ``behavior``)."""
    return [simulated_usage(r.json, behavior, r.shape) for r in sim.api_requests]


def assert_billed_exactly(book: Ledger, sim: RunAPISimulator, ledger_events: Events,
                          calls: int, behavior: Behavior | None = None
                          ) -> list[tuple[int, int]]:
    """``calls`` requests reached the simulator, each settled (status ok, not estimated) at the
    usage it reported, and the project's spend is that usage times the price, to the digit."""
    usage = reported_usage(sim, behavior)
    assert len(usage) == calls, usage
    events = ledger_events(book)
    assert [e["status"] for e in events] == ["ok"] * calls
    assert not any(e["estimated"] for e in events)
    assert [(e["prompt_tokens"], e["completion_tokens"]) for e in events] == usage
    expected = sum((PRICE * (p + c) / 1000 for p, c in usage), Decimal(0))
    assert sum((from_units(e["cost"]) for e in events), Decimal(0)) == expected
    assert book.spend("acme") == expected and expected > 0
    assert book.budget("acme").held == 0
    return usage


def assert_refused_once(book: Ledger, sim: RunAPISimulator, ledger_events: Events) -> None:
    """The budget refused one attempt (402, nothing billed) and nothing reached the server."""
    assert sim.request_count == 0
    events = ledger_events(book)
    assert [(e["status"], e["http_status"], e["cost"]) for e in events] == [("refused", 402, 0)]
    assert book.spend("acme") == 0


def status_of(exc: BaseException) -> Any:
    """The HTTP status an exception (or the one it wraps) carries, if any."""
    seen: BaseException | None = exc
    while seen is not None:
        status = getattr(seen, "status_code", None)
        if status is not None:
            return status
        seen = seen.__cause__ or seen.__context__
    return None
