"""The proxy's keys without a server: their format and entropy, what is stored, checking,
revoking, and who a call is for (the key decides; request headers may only add)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ledger import Ledger
from ledger.errors import InvalidInput
from ledger.proxy.auth import error_shape, presented_key
from ledger.proxy.forward import attribution_for, forward_headers
from ledger.proxy.keys import create_key, parse_key, revoke_key, verify_key
from ledger.store.keys import get_key, list_keys


def test_a_key_is_lk_id_secret_with_256_random_bits_and_only_its_hash_is_kept(
        book: Ledger) -> None:
    """lk_ + 16 hex + 43 URL-safe characters; the row has the id and SHA-256, not the secret."""
    made = [create_key(book.store, book.now(), "acme") for _ in range(20)]
    for m in made:
        key_id, secret = parse_key(m.key) or ("", "")
        assert m.key == f"lk_{key_id}_{secret}" and len(secret) == 43
        row = get_key(book.store, key_id)
        assert row is not None and secret not in repr(row)
        assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert len({m.key for m in made}) == 20 and len(list_keys(book.store)) == 20


@pytest.mark.parametrize("text", [None, "", "lk_", "lk_0123_abc", "sk-abc",
                                  "lk_0123456789ABCDEF_" + "a" * 43,
                                  "lk_0123456789abcdef_" + "a" * 42,
                                  "lk_0123456789abcdef_" + "a" * 43 + "="])
def test_malformed_keys_do_not_parse(text: str | None) -> None:
    """Anything but the exact format is not a key (and never reaches the database)."""
    assert parse_key(text) is None


def test_verify_refuses_a_wrong_secret_and_a_revoked_key(book: Ledger) -> None:
    """The right key verifies; another secret under its id, and the key once revoked, do not."""
    made = create_key(book.store, book.now(), "acme", user="alice", tags=["env=prod"])
    row = verify_key(book.store, made.key)
    assert row is not None and (row.project, row.user, row.tags) == ("acme", "alice", "env=prod")
    assert verify_key(book.store, made.key[:-1] + ("A" if made.key[-1] != "A" else "B")) is None
    assert revoke_key(book.store, made.key, book.now()) is True  # the whole key names it too
    assert verify_key(book.store, made.key) is None
    assert revoke_key(book.store, made.row.id, book.now()) is False


def test_tags_and_users_are_validated_as_every_attribution(book: Ledger) -> None:
    """A malformed tag or a comma inside one --tag is refused before anything is stored."""
    for bad in (["novalue"], ["a=b,c=d"], ["=v"], ["k=a", "k=b"]):
        with pytest.raises(InvalidInput):
            create_key(book.store, book.now(), "acme", tags=bad)
    assert list_keys(book.store) == []


def test_the_key_decides_and_headers_only_add(book: Ledger) -> None:
    """Headers add a user to a key without one and add tags; contradicting the key's user or
    one of its tags is refused, as the library refuses it for a client."""
    keyed = create_key(book.store, book.now(), "acme", user="alice",
                       tags=["feature=search", "env=prod"]).row
    who = attribution_for(keyed, ["alice"], ["team=web", "env=prod"])
    assert who.user == "alice" and who.tags_text == "env=prod,feature=search,team=web"
    for users, tags in ((["mallory"], []), ([], ["env=dev"])):
        with pytest.raises(InvalidInput):
            attribution_for(keyed, users, tags)
    bare = create_key(book.store, book.now(), "acme").row
    assert attribution_for(bare, ["bob"], []).user == "bob"
    assert attribution_for(bare, [], []).user is None
    with pytest.raises(InvalidInput):
        attribution_for(bare, [], ["broken"])


def test_forwarded_headers_swap_the_client_key_for_the_upstream_one(book: Ledger) -> None:
    """The lk_ key, cookies and hop-by-hop headers stay behind; the key's project is named."""
    row = create_key(book.store, book.now(), "acme").row
    out = dict(forward_headers([(b"Authorization", b"Bearer lk_x"), (b"Cookie", b"a=b"),
                                (b"Connection", b"keep-alive"), (b"X-Ledger-Project", b"other"),
                                (b"Content-Type", b"application/json"),
                                (b"X-Title", "Café".encode())], row, "sk-up"))
    assert out == {b"Content-Type": b"application/json", b"authorization": b"Bearer sk-up",
                   b"x-ledger-project": b"acme", b"X-Title": "Café".encode()}
    tagged = create_key(book.store, book.now(), "acme", user="José", tags=["k=v"]).row
    named = dict(forward_headers([(b"X-Ledger-User", b"someone")], tagged, "sk-up"))
    assert named[b"x-ledger-user"] == "José".encode() and named[b"x-ledger-tags"] == b"k=v"
    assert b"X-Ledger-User" not in named
    anthropic_style = dict(forward_headers([(b"x-api-key", b"lk_x")], row, "sk-up"))
    assert anthropic_style == {b"x-api-key": b"sk-up", b"x-ledger-project": b"acme"}


def test_the_presented_key_and_the_error_shape() -> None:
    """Bearer or x-api-key; two different keys or another scheme count as none."""
    assert presented_key({"authorization": "Bearer lk_a"}) == "lk_a"
    assert presented_key({"x-api-key": "lk_a", "authorization": "Bearer lk_a"}) == "lk_a"
    assert presented_key({"x-api-key": "lk_a", "authorization": "Bearer lk_b"}) is None
    assert presented_key({"authorization": "Basic abc"}) is None
    assert error_shape("/v1/messages") == "anthropic"
    assert error_shape("/v1/chat/completions") == "openai"


def test_readyz_says_when_the_ledger_cannot_be_reached(tmp_path: Path) -> None:
    """/healthz stays 200 while /readyz answers 503 for a ledger whose database is down."""
    from starlette.testclient import TestClient

    from ledger.proxy.app import ProxySettings, create_app

    down = Ledger("postgresql+psycopg://postgres@127.0.0.1:1/none", migrate=False,
                  spool_path=tmp_path / "spool")
    app = create_app(down, ProxySettings(upstream="http://127.0.0.1:1", upstream_key="sk-x"))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    down.close()


def test_alerts_from_proxied_calls_reach_the_ledgers_listeners(tmp_path: Path) -> None:
    """``book.on_alert`` callbacks of an app embedding the proxy hear the alerts its calls
    cross (the proxy's observing store shares the ledger's listeners)."""
    from decimal import Decimal

    from starlette.testclient import TestClient

    from ledger.proxy.app import ProxySettings, create_app
    from ledger.testing import RunAPISimulator

    heard: list[int] = []
    with RunAPISimulator() as sim, Ledger(f"sqlite:///{tmp_path}/l.db") as book:
        book.set_budget("acme", Decimal("0.0001"), hard=False, alerts=[50])
        book.on_alert(lambda alert: heard.append(alert.threshold))
        key = create_key(book.store, book.now(), "acme").key
        app = create_app(book, ProxySettings(upstream=sim.base_url, upstream_key="sk-x"))
        with TestClient(app) as client:
            reply = client.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                                json={"model": "kimi-k2.5", "max_tokens": 50,
                                      "messages": [{"role": "user", "content": "hi " * 50}]})
        assert reply.status_code == 200
        assert heard == [50]


def test_a_compressed_error_reply_reaches_the_client_readable(tmp_path: Path) -> None:
    """An upstream 429 sent gzip-encoded is decoded to blank the upstream key out of it, so
    it goes on without its Content-Encoding: the SDK reads the error, not garbage."""
    import gzip
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from starlette.testclient import TestClient

    from ledger.proxy.app import ProxySettings, create_app

    error = b'{"error":{"message":"slow down, key sk-up-SECRET","type":"rate_limit"}}'

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            packed = gzip.compress(error)
            self.send_response(429)
            self.send_header("content-type", "application/json")
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Ledger(f"sqlite:///{tmp_path}/l.db") as book:
            key = create_key(book.store, book.now(), "acme").key
            app = create_app(book, ProxySettings(
                upstream=f"http://127.0.0.1:{server.server_address[1]}",
                upstream_key="sk-up-SECRET"))
            with TestClient(app) as client:
                reply = client.post("/v1/chat/completions",
                                    headers={"authorization": f"Bearer {key}"},
                                    json={"model": "kimi-k2.5", "messages": [
                                        {"role": "user", "content": "hi"}]})
        assert reply.status_code == 429
        assert "content-encoding" not in reply.headers
        assert reply.json()["error"]["message"] == "slow down, key [REDACTED]"
    finally:
        server.shutdown()
        server.server_close()
