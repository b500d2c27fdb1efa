"""A Node.js program using the official ``openai`` npm package (tests/node; ``.ci/run`` installs
it) against ``ledger serve`` in front of the simulator: a plain call and a stream, billed
exactly; a wrong key gets the SDK's 401."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import cost
from sqlalchemy import select

from ledger import Ledger
from ledger.proxy.keys import create_key
from ledger.store.schema import events
from ledger.testing.simulator import RunAPISimulator
from tests.harness.proxy import running_proxy

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    assert found is not None, "node is not installed (the Node.js SDK test needs it)"
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), \
        "the openai npm package is missing: run `npm install` in tests/node (.ci/run does)"
    return found


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(f"sqlite:///{tmp_path}/ledger.db") as b:
        yield b


@pytest.mark.timeout(180)
def test_the_openai_npm_package_is_billed_exactly(node: str, book: Ledger,
                                                   tmp_path: Path) -> None:
    """Node's openai SDK through the proxy: plain and streamed calls billed exactly."""
    key = create_key(book.store, book.now(), "node-app").key
    with RunAPISimulator() as sim, running_proxy(book.url, sim.base_url, tmp_path) as proxy:
        env = {**os.environ, "PROXY_BASE_URL": proxy.openai_base_url, "LEDGER_KEY": key}
        done = subprocess.run([node, str(NODE_DIR / "proxy_client.mjs")], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        assert sim.request_count == 2  # the wrong key's call never went upstream
    assert seen["plain"]["prompt_tokens"] == 5 and seen["plain"]["completion_tokens"] == 20
    assert seen["streamed"].startswith("Echo:") and seen["streamUsage"]["completion_tokens"] == 7
    assert seen["refused"] == 401
    with book.engine.connect() as conn:
        rows = conn.execute(select(events.c.status, events.c.prompt_tokens,
                                   events.c.completion_tokens, events.c.estimated)
                            .where(events.c.project == "node-app").order_by(events.c.id)).all()
    assert [tuple(r) for r in rows] == [("ok", 5, 20, False), ("ok", 5, 7, False)]
    assert book.spend("node-app") == cost(25) + cost(12) == Decimal("0.00074")
