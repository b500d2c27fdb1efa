"""Step 1 of a metered call, continued (pure): **who the call is for**, besides its project: its
end user and its tags (an :class:`~ledger.records.Attribution`), from three places.

* **The client** (``book.httpx_client("acme", user="alice", tags={"feature": "search"})``,
  ``metered_call(..., user=, tags=)``): fixed for every call it makes.
* **The request's headers**, ``X-Ledger-User`` and ``X-Ledger-Tags``
  (``"feature=search,env=prod"``), removed before forwarding. They *add* to the client's: the
  header user is the user of a client made without one; the header tags join the client's.
  A header never *changes* what the client was made with: another user, or another value for
  one of the client's tag keys, is refused, so that no request slips out of the budgets its
  client is held to (the same value again is fine).
* **The body**, only when neither names a user: OpenAI-family ``user``, Anthropic
  ``metadata.user_id``. A body user that is not a string, or is blank, is ignored (the body
  is the API's, and is forwarded unchanged); one that names a user is validated like a header.

Every name is validated as :meth:`Attribution.of <ledger.records.Attribution.of>` does (users
like project names, and without control characters; tags ``key=value``). A bad header or body
value raises :class:`~ledger.errors.InvalidInput` naming where it came from, which the
transport answers with a 400 ``ledger_invalid_request`` in the caller's API shape, before
anything is sent. Header rules, decided here:

* ``X-Ledger-User`` at most once, not empty.
* ``X-Ledger-Tags`` is a comma-separated list (several headers are one list); blanks around an
  item and empty items are skipped (an empty header adds no tags); each item is ``key=value``
  (the value may hold ``=``); each key once; at most :data:`MAX_TAGS` tags in all (client's and
  header's together), and a header longer than :data:`MAX_TAGS_HEADER` characters is refused
  before it is read.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import InvalidInput
from ..records import Attribution

__all__ = [
    "MAX_TAGS",
    "MAX_TAGS_HEADER",
    "NOTHING_ASKED",
    "TAGS_HEADER",
    "USER_HEADER",
    "Asked",
    "client_attribution",
    "resolve",
]

#: Request header naming the call's end user (removed before forwarding).
USER_HEADER = "x-ledger-user"
#: Request header adding tags to the call (``"feature=search,env=prod"``; removed before forwarding).
TAGS_HEADER = "x-ledger-tags"
#: The most tags one call may carry: each one is a budget the hold may have to check.
MAX_TAGS = 20
#: The longest ``X-Ledger-Tags`` read (all its headers together), in characters.
MAX_TAGS_HEADER = 8192


@dataclass(frozen=True)
class Asked:
    """What one request's headers say about who it is for: the raw ``X-Ledger-User`` and
    ``X-Ledger-Tags`` values (one per header line), not yet validated."""

    users: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


#: Unicode categories a user name may not hold (as tags may not): control and format
#: characters, line and paragraph separators.
_CONTROL = ("Cc", "Cf", "Zl", "Zp")


#: A request whose headers say nothing about attribution.
NOTHING_ASKED = Asked()


def _control(text: str) -> bool:
    return any(unicodedata.category(c) in _CONTROL for c in text)


def _user(value: str, source: str) -> str:
    if _control(value):
        raise InvalidInput(f"{source}: the user must not contain control characters")
    try:
        user = Attribution.of(user=value).user
    except InvalidInput as exc:
        raise InvalidInput(f"{source}: {exc}") from None
    assert user is not None
    return user


def client_attribution(user: str | None = None,
                       tags: Mapping[str, str] | str | None = None) -> Attribution:
    """The attribution a client (or a by-hand call) is made with, validated now: ``TypeError``
    for a user that is not a string, ``InvalidInput`` for a bad name or tag."""
    if user is not None and not isinstance(user, str):
        raise TypeError(f"user must be a str, not {type(user).__name__}")
    if user is not None:
        user = _user(user, "user")
    found = Attribution.of(user=user, tags=tags)
    if len(found.tags) > MAX_TAGS:
        raise InvalidInput(f"tags: at most {MAX_TAGS} tags, got {len(found.tags)}")
    return found


def _header_tags(values: tuple[str, ...]) -> dict[str, str]:
    if sum(len(v) for v in values) > MAX_TAGS_HEADER:
        raise InvalidInput(f"X-Ledger-Tags is longer than {MAX_TAGS_HEADER} characters")
    tags: dict[str, str] = {}
    for item in ",".join(values).split(","):
        item = item.strip(" \t")
        if not item:
            continue
        if "=" not in item:
            raise InvalidInput(f"X-Ledger-Tags: {item[:60]!r} is not key=value")
        key, value = item.split("=", 1)
        if key in tags:
            raise InvalidInput(f"X-Ledger-Tags: the key {key[:60]!r} is given twice")
        tags[key] = value
        if len(tags) > MAX_TAGS:
            raise InvalidInput(f"X-Ledger-Tags: at most {MAX_TAGS} tags")
    try:
        Attribution.of(tags=tags)
    except InvalidInput as exc:
        raise InvalidInput(f"X-Ledger-Tags: {exc}") from None
    return tags


def resolve(client: Attribution, asked: Asked = NOTHING_ASKED, body_user: str | None = None
            ) -> Attribution:
    """The call's attribution from its client's, its headers' and its body's (see the module
    docs); ``InvalidInput`` names the bad or contradicting value."""
    user = client.user
    if asked.users:
        if len(asked.users) > 1:
            raise InvalidInput(f"X-Ledger-User is given {len(asked.users)} times; give it once")
        named = asked.users[0]
        if not named.strip():
            raise InvalidInput("X-Ledger-User is empty: name a user, or leave the header out")
        named = _user(named, "X-Ledger-User")
        if user is not None and named != user:
            raise InvalidInput(f"X-Ledger-User {named[:60]!r} contradicts this client's user "
                               f"{user[:60]!r}: a client made for a user bills that user")
        user = named
    if user is None and body_user is not None and body_user.strip():
        user = _user(body_user, "the body's user (user / metadata.user_id)")
    tags = dict(client.tags)
    for key, value in _header_tags(asked.tags).items() if asked.tags else ():
        mine = tags.get(key)
        if mine is not None and mine != value:
            raise InvalidInput(
                f"X-Ledger-Tags {key[:60]}={value[:60]} contradicts this client's tag "
                f"{key[:60]}={mine[:60]}: a header adds tags, it never changes the client's")
        tags[key] = value
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"X-Ledger-Tags: at most {MAX_TAGS} tags in all, with the client's")
    if user == client.user and len(tags) == len(client.tags):
        return client
    return Attribution.of(user=user, tags=tags or None)
