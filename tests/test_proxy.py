"""``ledger serve`` (issue 13) started as a user starts it, in a subprocess on a free loopback
port, in front of the RunAPI simulator: the OpenAI and Anthropic SDKs (sync and streaming)
billed exactly, keys checked on every request, the upstream key kept inside, bodies bounded,
a client that goes away settled as cancelled, a proxy killed mid-stream leaving balanced books,
SIGTERM draining the streams in flight."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from click.testing import CliRunner
from helpers import MESSAGES, cost
from sqlalchemy import inspect, select, text

from ledger import Ledger, ManualClock
from ledger.cli import main
from ledger.money import from_units
from ledger.proxy.keys import create_key
from ledger.store.schema import events, proxy_keys
from ledger.testing import assert_consistent
from ledger.testing.simulator import Behavior, RunAPISimulator
from tests.harness.proxy import UPSTREAM_KEY, Proxy, running_proxy

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy")


@pytest.fixture(scope="module")
def db_url(place: Path) -> str:
    return f"sqlite:///{place}/ledger.db"


@pytest.fixture(scope="module")
def book(db_url: str) -> Iterator[Ledger]:
    """The proxy's ledger, opened by the test too (the system clock)."""
    with Ledger(db_url) as b:
        yield b


@pytest.fixture(scope="module")
def sim() -> Iterator[RunAPISimulator]:
    with RunAPISimulator() as s:
        yield s


@pytest.fixture(scope="module")
def proxy(book: Ledger, db_url: str, sim: RunAPISimulator, place: Path) -> Iterator[Proxy]:
    with running_proxy(db_url, sim.base_url, place,
                       args=["--max-body-bytes", "20000"]) as p:
        yield p


@pytest.fixture(autouse=True)
def _normal_upstream(sim: RunAPISimulator) -> None:
    sim.reset()


def new_key(book: Ledger, project: str, **kwargs: Any) -> str:
    return create_key(book.store, book.now(), project, **kwargs).key


@contextmanager
def streaming(proxy: Proxy, key: str) -> Iterator[Iterator[str]]:
    """A streamed chat call through ``proxy``, read up to its first ``data:`` line: yields the
    rest of its lines."""
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", proxy.openai_base_url + "/chat/completions",
                           headers={"authorization": f"Bearer {key}"},
                           json={"model": "kimi-k2.5", "messages": MESSAGES,
                                 "stream": True}) as reply:
            lines = reply.iter_lines()
            next(line for line in lines if line.startswith("data:"))
            yield lines


def project_events(book: Ledger, project: str) -> list[dict[str, Any]]:
    with book.engine.connect() as conn:
        rows = conn.execute(select(events).where(events.c.project == project)
                            .order_by(events.c.id)).all()
    return [dict(r._mapping) for r in rows]


def wait_for_events(book: Ledger, project: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The project's events once there are ``count`` (a stream settles as its body closes,
    just after the client has read it)."""
    deadline = time.monotonic() + timeout
    while True:
        found = project_events(book, project)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)  # polling another process's writes: no event to wait on


def assert_exact(book: Ledger, project: str, calls: list[tuple[int, int]]) -> None:
    """The project's events are these (prompt, completion) calls, each billed exactly."""
    found = wait_for_events(book, project, len(calls))
    assert [(e["prompt_tokens"], e["completion_tokens"]) for e in found] == calls
    for e, (p, c) in zip(found, calls, strict=True):
        assert e["status"] == "ok" and not e["estimated"], e
        assert from_units(e["cost"]) == cost(p + c)
    assert book.spend(project) == sum((cost(p + c) for p, c in calls), Decimal(0))
    assert book.budget(project).held == 0


class TestSDKsThroughTheProxy:
    def test_openai_sync_and_streaming_are_billed_exactly(self, book: Ledger, proxy: Proxy,
                                                          sim: RunAPISimulator) -> None:
        """The OpenAI SDK, plain and streamed, through the proxy: billed at reported usage."""
        client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=new_key(book, "oa"))
        reply = client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        assert reply.choices[0].message.content and reply.usage is not None
        chunks = list(client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES,
                                                     stream=True))
        text_ = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text_.startswith("Echo:")
        # The caller did not ask for stream usage: the ledger's usage chunk is not passed on.
        assert all(c.usage is None for c in chunks)
        assert_exact(book, "oa", [(5, 20), (5, 20)])
        assert sim.request_count == 2

    def test_anthropic_sync_and_streaming_are_billed_exactly(self, book: Ledger, proxy: Proxy,
                                                             sim: RunAPISimulator) -> None:
        """The Anthropic SDK, plain and streamed, through the proxy: billed exactly."""
        claude = anthropic.Anthropic(base_url=proxy.url, api_key=new_key(book, "an"))
        msg = claude.messages.create(model="kimi-k2.5", max_tokens=100, messages=MESSAGES)
        assert msg.usage.input_tokens == 5
        with claude.messages.stream(model="kimi-k2.5", max_tokens=8,
                                    messages=MESSAGES) as stream:
            final = stream.get_final_message()
        assert final.usage.output_tokens == 8
        assert_exact(book, "an", [(5, 20), (5, 8)])

    def test_async_openai_sdk_streams_through(self, book: Ledger, proxy: Proxy) -> None:
        """The async OpenAI SDK, streaming with include_usage: the usage chunk reaches it."""
        import asyncio

        async def go() -> int:
            client = openai.AsyncOpenAI(base_url=proxy.openai_base_url,
                                        api_key=new_key(book, "oa-async"))
            stream = await client.chat.completions.create(
                model="kimi-k2.5", messages=MESSAGES, stream=True,
                stream_options={"include_usage": True})
            usage = [c.usage async for c in stream if c.usage is not None]
            await client.close()
            return usage[0].total_tokens

        assert asyncio.run(go()) == 25
        assert_exact(book, "oa-async", [(5, 20)])

    def test_a_budget_refusal_is_the_librarys_402(self, book: Ledger, proxy: Proxy,
                                                  sim: RunAPISimulator) -> None:
        """Over a hard budget: 402 budget_exceeded in the caller's shape, nothing sent."""
        book.set_budget("tight", Decimal("0.0001"))
        key = new_key(book, "tight")
        client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        assert caught.value.status_code == 402
        assert caught.value.response.headers["x-ledger-refused"] == "budget_exceeded"
        claude = anthropic.Anthropic(base_url=proxy.url, api_key=key, max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as refused:
            claude.messages.create(model="kimi-k2.5", max_tokens=100, messages=MESSAGES)
        assert refused.value.status_code == 402
        assert refused.value.body["error"]["type"] == "budget_exceeded"  # type: ignore[index]
        assert sim.request_count == 0
        assert [e["status"] for e in project_events(book, "tight")] == ["refused", "refused"]


class TestKeys:
    @pytest.mark.parametrize("presented", [None, "lk_", "sk-not-ours", "lk_short",
                                           "lk_0123456789abcdef_" + "x" * 43])
    def test_a_missing_malformed_or_unknown_key_gets_401(self, proxy: Proxy,
                                                         sim: RunAPISimulator,
                                                         presented: str | None) -> None:
        """No key, a malformed one or an unknown one: 401 in each API's shape, nothing sent."""
        headers = {} if presented is None else {"authorization": f"Bearer {presented}"}
        reply = httpx.post(proxy.openai_base_url + "/chat/completions", headers=headers,
                           json={"model": "kimi-k2.5", "messages": MESSAGES})
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "invalid_api_key"
        anthropic_headers = {} if presented is None else {"x-api-key": presented}
        reply = httpx.post(proxy.url + "/v1/messages", headers=anthropic_headers,
                           json={"model": "kimi-k2.5", "max_tokens": 5, "messages": MESSAGES})
        assert reply.status_code == 401
        body = reply.json()
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        assert sim.requests == []

    def test_a_wrong_secret_for_a_real_id_gets_401(self, book: Ledger, proxy: Proxy,
                                                   sim: RunAPISimulator) -> None:
        """A known key id with another secret is refused: the SDK raises AuthenticationError."""
        key = new_key(book, "wrong")
        forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=forged, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        claude = anthropic.Anthropic(base_url=proxy.url, api_key=forged, max_retries=0)
        with pytest.raises(anthropic.AuthenticationError):
            claude.messages.create(model="kimi-k2.5", max_tokens=5, messages=MESSAGES)
        assert sim.requests == [] and project_events(book, "wrong") == []

    def test_a_revoked_key_is_refused_on_the_next_request(self, book: Ledger, proxy: Proxy,
                                                          sim: RunAPISimulator,
                                                          db_url: str) -> None:
        """`ledger key revoke` takes effect on the very next request: 401, nothing sent."""
        key = new_key(book, "revoked")
        client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=key, max_retries=0)
        client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        key_id = key.split("_")[1]
        result = CliRunner().invoke(main, ["--db", db_url, "key", "revoke", key_id])
        assert result.exit_code == 0, result.output
        sim.reset()
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="kimi-k2.5", messages=MESSAGES)
        assert sim.requests == []
        assert len(project_events(book, "revoked")) == 1

    def test_the_key_decides_the_project(self, book: Ledger, proxy: Proxy,
                                         sim: RunAPISimulator) -> None:
        """X-Ledger-Project naming another project is refused (400); the key's own passes."""
        key = new_key(book, "mine")
        other = httpx.post(proxy.openai_base_url + "/chat/completions",
                           headers={"authorization": f"Bearer {key}",
                                    "x-ledger-project": "theirs"},
                           json={"model": "kimi-k2.5", "messages": MESSAGES})
        assert other.status_code == 400
        assert other.json()["error"]["code"] == "project_not_allowed"
        assert sim.requests == []
        same = httpx.post(proxy.openai_base_url + "/chat/completions",
                          headers={"authorization": f"Bearer {key}", "x-ledger-project": "mine"},
                          json={"model": "kimi-k2.5", "messages": MESSAGES})
        assert same.status_code == 200
        assert "x-ledger-project" not in sim.requests[-1].headers
        assert project_events(book, "theirs") == [] and len(wait_for_events(book, "mine", 1)) == 1

    def test_names_and_headers_beyond_ascii_pass_through(
            self, book: Ledger, proxy: Proxy, sim: RunAPISimulator) -> None:
        """A key whose project, user and tag are not ASCII, and a client header in UTF-8:
        the call goes through (never a 500), billed to those names, the header forwarded
        byte for byte."""
        key = new_key(book, "Café ☕", user="José", tags=["équipe=nuit"])
        reply = httpx.post(proxy.openai_base_url + "/chat/completions",
                           json={"model": "kimi-k2.5", "messages": MESSAGES},
                           headers=[(b"authorization", f"Bearer {key}".encode()),
                                    (b"x-title", "Café".encode())])
        assert reply.status_code == 200, reply.text
        assert sim.requests[-1].headers["x-title"].encode("latin-1") == "Café".encode()
        found = wait_for_events(book, "Café ☕", 1)
        assert [(e["user"], e["tags"], e["status"]) for e in found] == [
            ("José", ",équipe=nuit,", "ok")]

    def test_the_key_decides_user_and_tags_and_headers_only_add(
            self, book: Ledger, proxy: Proxy, sim: RunAPISimulator) -> None:
        """A key's user and tags go on its calls; request tags add; a header contradicting
        the key is a 400 sent nowhere; a key without a user takes the header's or the body's."""
        keyed = new_key(book, "attr", user="alice", tags=["feature=search"])
        url = proxy.openai_base_url + "/chat/completions"
        body = {"model": "kimi-k2.5", "messages": MESSAGES}
        ok = httpx.post(url, json=body, headers={"authorization": f"Bearer {keyed}",
                                                 "x-ledger-tags": "env=prod"})
        assert ok.status_code == 200
        for bad in ({"x-ledger-user": "mallory"}, {"x-ledger-tags": "feature=other"}):
            refused = httpx.post(url, json=body,
                                 headers={"authorization": f"Bearer {keyed}", **bad})
            assert refused.status_code == 400
            assert refused.json()["error"]["code"] == "ledger_invalid_request"
        bare = new_key(book, "attr")
        httpx.post(url, json=body, headers={"authorization": f"Bearer {bare}",
                                            "x-ledger-user": "bob"}).raise_for_status()
        httpx.post(url, json={**body, "user": "carol"},
                   headers={"authorization": f"Bearer {bare}"}).raise_for_status()
        assert sim.request_count == 3
        assert all(not h.startswith("x-ledger") for r in sim.requests for h in r.headers)
        found = wait_for_events(book, "attr", 3)
        assert [(e["user"], e["tags"]) for e in found] == [
            ("alice", ",env=prod,feature=search,"), ("bob", None), ("carol", None)]
        assert book.spend("attr", user="alice") == cost(25)

    def test_key_cli_shows_the_key_once_and_stores_only_its_hash(self, db_url: str,
                                                                 book: Ledger) -> None:
        """`ledger key create` prints lk_<id>_<secret>; the table has the id and a SHA-256."""
        runner = CliRunner()
        made = runner.invoke(main, ["--db", db_url, "key", "create", "cli-proj", "--user",
                                    "alice", "--tag", "feature=search", "--name", "svc",
                                    "--admin"])
        assert made.exit_code == 0, made.output
        key = made.stdout.strip().splitlines()[0]
        assert key.startswith("lk_") and len(key.split("_", 2)[2]) == 43
        key_id, secret = key.split("_", 2)[1:]
        listed = runner.invoke(main, ["--db", db_url, "key", "list", "--format", "json"])
        mine = [k for k in json.loads(listed.stdout)["keys"] if k["id"] == key_id]
        assert mine == [{"id": key_id, "name": "svc", "project": "cli-proj", "user": "alice",
                         "tags": "feature=search", "admin": True, "created": mine[0]["created"],
                         "last_used": None, "revoked": None}]
        assert secret not in listed.stdout
        with book.engine.connect() as conn:
            row = conn.execute(select(proxy_keys).where(proxy_keys.c.id == key_id)).one()
        assert secret not in json.dumps([str(v) for v in row])
        import hashlib

        assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
        gone = runner.invoke(main, ["--db", db_url, "key", "revoke", key_id])
        again = runner.invoke(main, ["--db", db_url, "key", "revoke", key_id])
        assert gone.exit_code == 0 and again.exit_code == 2


class TestTheUpstreamKeyStaysInside:
    def test_upstream_gets_its_key_and_nobody_else_sees_it(self, book: Ledger, proxy: Proxy,
                                                           sim: RunAPISimulator) -> None:
        """Upstream sees the RunAPI key, never the lk_ key; no response, log line, metric,
        dashboard figure or table holds the RunAPI key."""
        key = new_key(book, "secret-check")
        admin = new_key(book, "ops", admin=True)
        seen: list[str] = []
        r1 = httpx.post(proxy.openai_base_url + "/chat/completions",
                        headers={"authorization": f"Bearer {key}"},
                        json={"model": "kimi-k2.5", "messages": MESSAGES, "stream": True})
        sim.enqueue(Behavior(status=401, error_message="bad key " + UPSTREAM_KEY))
        r2 = httpx.post(proxy.url + "/v1/messages", headers={"x-api-key": key},
                        json={"model": "kimi-k2.5", "max_tokens": 5, "messages": MESSAGES})
        r3 = httpx.get(proxy.openai_base_url + "/models", headers={"authorization": f"Bearer {key}"})
        assert (r1.status_code, r2.status_code, r3.status_code) == (200, 401, 200)
        first, second = sim.requests[0].headers, sim.requests[1].headers
        assert first["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert second["x-api-key"] == UPSTREAM_KEY and "authorization" not in second
        assert all(key not in json.dumps(r.headers) for r in sim.requests)
        for reply in (r1, r2, r3):
            seen += [reply.text, json.dumps(dict(reply.headers))]
        seen.append(httpx.get(proxy.url + "/metrics").text)
        seen.append(httpx.get(proxy.url + "/dashboard/state",
                              headers={"authorization": f"Bearer {admin}"}).text)
        wait_for_events(book, "secret-check", 2)
        with book.engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                    seen.append(" ".join(str(v) for v in row))
        seen.append(proxy.output())
        leaks = [s[:200] for s in seen if UPSTREAM_KEY in s]
        assert leaks == []
        assert "[REDACTED]" in " ".join(e["error"] or "" for e in project_events(
            book, "secret-check"))


class TestLimitsAndEndings:
    def test_a_body_over_the_limit_gets_413(self, book: Ledger, proxy: Proxy,
                                            sim: RunAPISimulator) -> None:
        """Past --max-body-bytes: 413 in the API's shape, declared or streamed; nothing sent."""
        key = new_key(book, "big")
        big = {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "x " * 20000}]}
        declared = httpx.post(proxy.openai_base_url + "/chat/completions", json=big,
                              headers={"authorization": f"Bearer {key}"})
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "body_too_large"

        def chunks() -> Iterator[bytes]:
            data = json.dumps(big).encode()
            for i in range(0, len(data), 4096):
                yield data[i:i + 4096]

        chunked = httpx.post(proxy.url + "/v1/messages", content=chunks(),
                             headers={"x-api-key": key, "content-type": "application/json"})
        assert chunked.status_code == 413 and chunked.json()["type"] == "error"
        assert sim.requests == [] and project_events(book, "big") == []

    def test_a_client_gone_mid_stream_ends_the_call_and_settles_it_cancelled(
            self, book: Ledger, proxy: Proxy, sim: RunAPISimulator) -> None:
        """The client closes a slow stream after a few chunks: the proxy stops the upstream
        call at once and the call settles as cancelled, charged for what streamed."""
        key = new_key(book, "gone")
        sim.enqueue(Behavior(chunk_delay=0.3))  # 20 words: about 7 s if read to the end
        started = time.monotonic()
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", proxy.openai_base_url + "/chat/completions",
                               headers={"authorization": f"Bearer {key}"},
                               json={"model": "kimi-k2.5", "messages": MESSAGES,
                                     "stream": True}) as reply:
                assert reply.status_code == 200
                lines = reply.iter_lines()
                got: list[str] = []
                for line in lines:
                    if line.startswith("data:"):
                        got.append(line)
                    if len(got) == 3:
                        break
        (event,) = wait_for_events(book, "gone", 1, timeout=5)
        assert time.monotonic() - started < 5
        assert event["status"] == "cancelled" and event["estimated"]
        assert 0 < event["completion_tokens"] < 20 and event["cost"] > 0
        assert book.budget("gone").held == 0
        assert_consistent(book)


class TestHealthAndMetrics:
    def test_health_readiness_and_metrics(self, book: Ledger, proxy: Proxy) -> None:
        """/healthz and /readyz answer 200; /metrics counts calls, refusals and latencies."""
        assert httpx.get(proxy.url + "/healthz").status_code == 200
        assert httpx.get(proxy.url + "/readyz").json() == {"status": "ok"}
        key = new_key(book, "metered")
        openai.OpenAI(base_url=proxy.openai_base_url, api_key=key).chat.completions.create(
            model="kimi-k2.5", messages=MESSAGES)
        httpx.post(proxy.openai_base_url + "/chat/completions", json={})
        wait_for_events(book, "metered", 1)
        page = httpx.get(proxy.url + "/metrics")
        assert page.headers["content-type"].startswith("text/plain")
        body = page.text
        assert ('ledger_proxy_calls_total{model="kimi-k2.5",project="metered",status="ok"} 1.0'
                in body)
        assert 'ledger_proxy_tokens_total{kind="completion",model="kimi-k2.5",project="metered"} 20.0' in body
        assert 'ledger_proxy_refusals_total{code="invalid_api_key"}' in body
        for name in ("ledger_proxy_upstream_seconds_count", "ledger_proxy_overhead_seconds_count",
                     "ledger_proxy_spool_entries", "ledger_proxy_cost_dollars_total"):
            assert name in body

    def test_unknown_routes_are_404_and_unmetered_posts_are_refused(
            self, book: Ledger, proxy: Proxy, sim: RunAPISimulator) -> None:
        """Outside /v1: 404; an unmetered POST under /v1: the library's 400, nothing sent."""
        key = new_key(book, "routes")
        assert httpx.get(proxy.url + "/nope").status_code == 404
        reply = httpx.post(proxy.openai_base_url + "/files", content=b"x",
                           headers={"authorization": f"Bearer {key}"})
        assert reply.status_code == 400
        assert reply.json()["error"]["code"] == "unmetered_endpoint"
        assert sim.requests == []


class TestProcesses:
    def test_sigterm_lets_a_stream_in_flight_finish(self, book: Ledger, db_url: str,
                                                    sim: RunAPISimulator, tmp_path: Path) -> None:
        """SIGTERM mid-stream: the stream is delivered to its end, settled ok, and the
        proxy exits 0."""
        key = new_key(book, "drain")
        sim.enqueue(Behavior(chunk_delay=0.1))
        with running_proxy(db_url, sim.base_url, tmp_path) as proxy:
            with streaming(proxy, key) as lines:
                proxy.proc.send_signal(signal.SIGTERM)
                rest = [line for line in lines if line.startswith("data:")]
            assert rest[-1] == "data: [DONE]"
            assert proxy.proc.wait(30) == 0
        (event,) = project_events(book, "drain")
        assert event["status"] == "ok" and (event["prompt_tokens"],
                                            event["completion_tokens"]) == (5, 20)

    def test_sigterm_cuts_a_stream_longer_than_the_drain_and_settles_it(
            self, book: Ledger, db_url: str, sim: RunAPISimulator, tmp_path: Path) -> None:
        """A stream still running when --drain-seconds is up is cut, settled as cancelled
        (charged for what streamed), and the proxy exits."""
        key = new_key(book, "cut")
        sim.enqueue(Behavior(chunk_delay=0.5))  # about 10 s to the end
        with running_proxy(db_url, sim.base_url, tmp_path,
                           args=["--drain-seconds", "1"]) as proxy:
            with streaming(proxy, key) as lines:
                stopped = time.monotonic()
                proxy.proc.send_signal(signal.SIGTERM)
                with pytest.raises(httpx.HTTPError):
                    list(lines)
            assert proxy.proc.wait(30) == 0
            assert time.monotonic() - stopped < 8
        (event,) = project_events(book, "cut")
        assert event["status"] == "cancelled" and 0 < event["completion_tokens"] < 20
        assert book.budget("cut").held == 0

    def test_kill_9_mid_stream_leaves_a_hold_that_expires_and_books_that_balance(
            self, book: Ledger, db_url: str, sim: RunAPISimulator, tmp_path: Path) -> None:
        """A proxy killed with SIGKILL mid-stream settles nothing; its hold expires after the
        TTL and the books balance."""
        key = new_key(book, "killed")
        book.set_budget("killed", Decimal("5"))
        sim.enqueue(Behavior(chunk_delay=0.2))
        with running_proxy(db_url, sim.base_url, tmp_path) as proxy:
            with streaming(proxy, key) as lines:
                proxy.stop(signal.SIGKILL)
                with pytest.raises(httpx.HTTPError):
                    list(lines)
        assert book.budget("killed").held > 0 and project_events(book, "killed") == []
        later = ManualClock(book.now() + book.hold_ttl + book.hold_ttl / 10)
        with Ledger(db_url, clock=later) as after:
            assert after.expire_holds() == 1
            assert after.budget("killed").held == 0 and after.spend("killed") == 0
            assert_consistent(after)


class TestTheReplyBeforeTheSettle:
    def test_the_next_request_is_served_while_the_last_call_settles(
            self, tmp_path: Path, sim: RunAPISimulator, monkeypatch: pytest.MonkeyPatch) -> None:
        """A JSON reply completes at its last byte: on one keep-alive connection the client's
        next request is answered while the call before it is still settling (made slow here),
        and that call is still billed exactly."""
        import threading

        import uvicorn

        from ledger.proxy.app import ProxySettings, create_app
        from ledger.proxy.metrics import ObservedStore
        from tests.harness.proxy import free_port

        settling = threading.Event()
        original = ObservedStore.settle

        def slow_settle(self: ObservedStore, *args: Any, **kwargs: Any) -> int:
            settling.set()
            time.sleep(2.0)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(ObservedStore, "settle", slow_settle)
        with Ledger(f"sqlite:///{tmp_path}/l.db") as book:
            key = new_key(book, "slow")
            app = create_app(book, ProxySettings(upstream=sim.base_url, upstream_key="sk-x"))
            port = free_port()
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                   lifespan="on", log_level="warning"))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            try:
                deadline = time.monotonic() + 20
                while not server.started and time.monotonic() < deadline:
                    time.sleep(0.02)  # a server starting in a thread: no event to wait on
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                  headers={"authorization": f"Bearer {key}"}) as client:
                    start = time.monotonic()
                    reply = client.post("/v1/chat/completions",
                                        json={"model": "kimi-k2.5", "messages": MESSAGES,
                                              "max_tokens": 20})
                    health = client.get("/healthz")
                    both = time.monotonic() - start
                assert reply.status_code == 200 and health.status_code == 200
                assert settling.is_set()
                assert both < 1.5, f"the next request waited for the settle ({both:.2f} s)"
                usage = reply.json()["usage"]
                found = wait_for_events(book, "slow", 1)
                assert [(e["prompt_tokens"], e["completion_tokens"], e["status"])
                        for e in found] == [(usage["prompt_tokens"],
                                             usage["completion_tokens"], "ok")]
                assert book.spend("slow") == cost(usage["prompt_tokens"]
                                                  + usage["completion_tokens"])
            finally:
                server.should_exit = True
                thread.join(30)
