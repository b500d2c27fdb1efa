"""``ledger key``: the metering proxy's client keys (create, list, revoke)."""

from __future__ import annotations

import click

from ..render import csv as render_csv
from ..render import json as render_json
from ..render import table as render_table
from ..render.fit import Col, Fitted
from .options import CliState, echo, format_option, pass_state, stdout_text


@click.group()
def key() -> None:
    """Create, list and revoke the keys clients give the metering proxy (`ledger serve`).

    A key decides the project its calls bill (and the end user and tags, if given); the
    ledger keeps only a hash of it, so it is shown once, when created.

    \b
    Example:
      ledger key create acme --user alice --tag feature=search --name "search service"
      ledger key list
      ledger key revoke 3f9c2a1b7d4e5f60
    """


@key.command("create")
@click.argument("project")
@click.option("--user", metavar="U", help="The end user every call with this key is for.")
@click.option("--tag", "tags", metavar="K=V", multiple=True,
              help="A tag every call with this key carries (repeatable).")
@click.option("--name", metavar="NAME", help="A name to recognise the key by in `key list`.")
@click.option("--admin", is_flag=True, help="The key may also open /dashboard.")
@pass_state
def create(state: CliState, project: str, user: str | None, tags: tuple[str, ...],
           name: str | None, admin: bool) -> None:
    """Create a key for PROJECT and print it (once: only its hash is stored).

    \b
    Example:
      ledger key create acme
      ledger key create acme --user alice --tag env=prod --tag feature=search
      ledger key create ops --admin --name dashboard
    """
    from ..proxy.keys import create_key

    book = state.open()
    made = create_key(book.store, book.now(), project, user=user, tags=tags, name=name,
                      admin=admin)
    click.echo(made.key)
    row = made.row
    who = "".join([f", user {row.user}" if row.user else "",
                   f", tags {row.tags}" if row.tags else "", ", admin" if row.admin else ""])
    echo(f"key {row.id} for project {row.project}{who}: keep it now, it is not shown again",
         err=True)


@key.command("list")
@format_option("table", "json", "csv")
@pass_state
def list_keys(state: CliState, fmt: str) -> None:
    """List every key: id, name, project, user, tags, admin, created, last used, revoked.

    Last used is updated at most once a minute per key.

    \b
    Example:
      ledger key list --format json
    """
    from ..store.keys import list_keys as stored_keys

    rows = stored_keys(state.open().store)

    def when(value: object) -> str | None:
        return None if value is None else value.isoformat()  # type: ignore[attr-defined]

    records = [{"id": r.id, "name": r.name, "project": r.project, "user": r.user,
                "tags": r.tags, "admin": r.admin, "created": when(r.created_at),
                "last_used": when(r.last_used_at), "revoked": when(r.revoked_at)}
               for r in rows]
    out = stdout_text()
    if fmt == "json":
        render_json.write({"keys": records}, out)
        return
    header = ["id", "name", "project", "user", "tags", "admin", "created", "last_used",
              "revoked"]
    if fmt == "csv":
        render_csv.write_rows(out, header, [[rec[h] for h in header] for rec in records])
        return

    def short(value: object) -> str:
        return "" if value is None else str(value)[:19].replace("T", " ")

    body = [[render_table.t(r["id"]), render_table.t(r["name"]), render_table.t(r["project"]),
             render_table.t(r["user"]), render_table.t(r["tags"]),
             render_table.t("yes" if r["admin"] else ""), render_table.t(short(r["created"])),
             render_table.t(short(r["last_used"])), render_table.t(short(r["revoked"]))]
            for r in records]
    cols = [Col("Id", keep=True), Col("Name"), Col("Project"), Col("User"), Col("Tags"),
            Col("Admin"), Col("Created", min=10), Col("Last used", min=10),
            Col("Revoked", min=10)]
    render_table.console(out).print(Fitted(cols, body, empty="No keys."))


@key.command("revoke")
@click.argument("key_id")
@pass_state
def revoke(state: CliState, key_id: str) -> None:
    """Revoke KEY_ID: the next request with it gets 401, in every proxy process.

    \b
    Example:
      ledger key revoke 3f9c2a1b7d4e5f60
    """
    from ..errors import InvalidInput
    from ..proxy.keys import revoke_key

    book = state.open()
    if not revoke_key(book.store, key_id, book.now()):
        raise InvalidInput(f"no key {key_id!r} to revoke (unknown, or already revoked)")
    echo(f"key {key_id} revoked")
