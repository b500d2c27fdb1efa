"""The proxy's dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright with
the system browser: no browser download): an admin key logs in and sees a budget's figures
change after a call without reloading; a non-admin key is refused; a project named like HTML
is shown as text and runs nothing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
from helpers import MESSAGES

from ledger import Ledger
from ledger.proxy.keys import create_key
from ledger.testing.simulator import RunAPISimulator
from tests.harness.proxy import Proxy, running_proxy

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EVIL = "<img src=x onerror=alert(1)>"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    place = tmp_path_factory.mktemp("dashboard")
    with Ledger(f"sqlite:///{place}/ledger.db") as b:
        yield b


@pytest.fixture(scope="module")
def proxy(book: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with RunAPISimulator() as sim, running_proxy(book.url, sim.base_url,
                                                 tmp_path_factory.mktemp("logs")) as p:
        yield p


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed (.ci/run installs it)"
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def test_an_admin_sees_a_budget_move_after_a_call_and_names_stay_text(
        book: Ledger, proxy: Proxy, browser: object) -> None:
    """Log in with an admin key; a call moves the budget's spent figure without a reload;
    the HTML-like project name is shown literally and no script or image runs."""
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    book.set_budget(EVIL, Decimal("5"))
    book.set_budget(EVIL, Decimal("0.0008"), hard=False, period="day", alerts=(50,))
    admin = create_key(book.store, book.now(), "ops", admin=True).key
    caller = create_key(book.store, book.now(), EVIL).key
    context = browser.new_context()
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    first = page.goto(proxy.url + "/dashboard")
    assert first is not None and first.status == 401
    page.fill("#key", admin)
    page.click("#login")
    row = page.locator("#budgets tbody tr", has=page.locator("td.name",
                                                             has_text=f"{EVIL} month"))
    row.wait_for(timeout=20_000)
    assert row.locator("td.name").inner_text() == f"{EVIL} month"
    before = row.locator("td.spent").inner_text()
    assert before == "$0.00"
    loads: list[str] = []
    page.on("load", lambda _p: loads.append("load"))

    openai.OpenAI(base_url=proxy.openai_base_url, api_key=caller).chat.completions.create(
        model="kimi-k2.5", messages=MESSAGES)
    page.wait_for_function(
        """([name, before]) => [...document.querySelectorAll('#budgets tbody tr')].some(
             tr => tr.querySelector('td.name').textContent === name + ' month' &&
                   tr.querySelector('td.spent').textContent !== before)""",
        arg=[EVIL, before], timeout=20_000)
    assert row.locator("td.spent").inner_text() == "$0.0005"
    assert loads == []  # no reload: the figures came by polling
    calls = page.locator("#calls tbody td.name", has_text=EVIL)
    calls.first.wait_for(timeout=20_000)
    alert = page.locator("#alerts tbody td.name", has_text=f"{EVIL} day")
    alert.first.wait_for(timeout=20_000)  # the soft day budget crossed 50%
    assert page.locator("img").count() == 0 and dialogs == []
    cookies = context.cookies()
    (cookie,) = [c for c in cookies if c["name"] == "ledger_dashboard_key"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""
    context.close()


def test_a_non_admin_key_is_refused(book: Ledger, proxy: Proxy, browser: object) -> None:
    """A project key that is not an admin key gets 403, in the browser and with Bearer."""
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    plain = create_key(book.store, book.now(), "acme").key
    context = browser.new_context()
    page = context.new_page()
    page.goto(proxy.url + "/dashboard")
    page.fill("#key", plain)
    with page.expect_response(lambda r: r.url.endswith("/dashboard/login")) as answer:
        page.click("#login")
    assert answer.value.status == 403
    assert "not an admin key" in page.inner_text("body")
    assert [c for c in context.cookies() if c["name"] == "ledger_dashboard_key"] == []
    assert page.goto(proxy.url + "/dashboard").status == 401  # type: ignore[union-attr]
    context.close()
    assert httpx.get(proxy.url + "/dashboard/state",
                     headers={"authorization": f"Bearer {plain}"}).status_code == 403
    assert httpx.get(proxy.url + "/dashboard/state").status_code == 401
    assert httpx.get(proxy.url + "/dashboard",
                     headers={"authorization": "Bearer lk_nope"}).status_code == 401
