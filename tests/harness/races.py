"""Suite 3, races: processes × threads of metered calls against one hard budget; the
overspend is zero, or within the reported bound when the default cap is not sent."""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledger.clock import month_of
from ledger.core import Ledger
from ledger.store.schema import events
from ledger.testing.simulator import Behavior, RunAPISimulator

from .calls import call_sync, request_body
from .common import PATHS, PRICE, Figures, Shape, backend_of, cost, restart_clock
from .oracle import Seen, audit, check_event, event_rows

#: A tag ending that marks a call sent with a project header the client does not allow.
BAD_HEADER = ".bad-header"
CAP_FIELD = {"openai": "max_tokens", "responses": "max_output_tokens"}


def _race_process(url: str, base_url: str, project: str, seed: int, threads: int, calls: int,
                  with_max_tokens: bool, default_max_tokens: int, send_default_cap: bool,
                  spool: str, out: Any, null_caps: bool = False, via_header: bool = False,
                  shapes: tuple[Shape, ...] = ("openai",)) -> None:
    """One of the racing processes: ``threads`` threads making metered calls, sync httpx,
    half of them streamed. ``null_caps``: an uncapped call sends its cap as null (the SDKs'
    ``max_tokens=None``). ``via_header``: the client is another project's, allowed to bill
    ``project``, and every call names it in ``X-Ledger-Project``; about one in seven names a
    project it is not allowed (a trailing space, another case, another name): refused."""
    try:
        book = Ledger(url, replay_spool=False, default_max_tokens=default_max_tokens,
                      send_default_cap=send_default_cap, spool_path=spool)
        client = (book.httpx_client(project + "-home", timeout=120, projects=[project])
                  if via_header else book.httpx_client(project, timeout=120))
        seen_all: list[dict[str, Any]] = []
        lock = threading.Lock()
        go = threading.Barrier(threads)

        def run(tid: int) -> None:
            rnd = random.Random(seed * 1000 + tid)
            go.wait()
            for i in range(calls):
                shape = rnd.choice(shapes)
                body = request_body(shape, stream=rnd.random() < 0.5,
                                    max_tokens=rnd.randint(20, 1500) if with_max_tokens else None)
                if null_caps and not with_max_tokens:
                    body[CAP_FIELD[shape]] = None  # issue 9 item 2
                headers, tag = {}, f"{seed}.{tid}.{i}"
                if via_header:  # issue 9 item 3
                    headers = {"X-Ledger-Project": project}
                    if rnd.random() < 0.15:
                        headers = {"X-Ledger-Project": rnd.choice(
                            (project + " ", project.upper(), "other-" + project))}
                        tag += BAD_HEADER
                seen = call_sync(client, base_url + PATHS[shape], shape, body, headers=headers,
                                 tag=tag)
                with lock:
                    seen_all.append(asdict(seen))

        pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        client.close()
        book.close()
        out.put(("ok", seen_all))
    except BaseException:  # report it to the parent rather than hang it
        out.put(("error", traceback.format_exc()))


def race_suite(url: str, *, with_max_tokens: bool, reply_tokens: int | None = None,
               processes: int = 4, threads: int = 8, calls: int = 6,
               limit: Decimal | None = None, default_max_tokens: int = 4096,
               send_default_cap: bool = True, spool_dir: Path | None = None,
               null_caps: bool = False, via_header: bool = False,
               shapes: tuple[Shape, ...] = ("openai",)) -> Figures:
    """``processes`` × ``threads`` metered calls against one hard budget.

    The server answers ``reply_tokens`` words (default: twice the default cap), cut at the
    ``max_tokens`` of the request it receives. With ``max_tokens`` the hold covers every reply
    and overspend must be zero. Without it the ledger holds ``default_max_tokens`` and, by
    default, sends that cap with the call: again zero. With ``send_default_cap=False`` the call
    goes uncapped and a longer reply overshoots its hold: overspend is at most
    (calls in flight) × (reply − default cap) × price, the reported bound; with
    ``null_caps`` the uncapped calls send their cap as null, which the ledger fills in with the
    cap it held whatever ``send_default_cap`` says, so again zero. ``via_header`` and
    ``shapes``: see :func:`_race_process` (``("openai", "responses")`` mixes in Responses calls).
    """
    suite = "race, max_tokens set" if with_max_tokens else (
        "race, " + ("null max_tokens" if null_caps else "no max_tokens")
        + ("" if send_default_cap else ", default cap not sent"))
    if via_header:
        suite += ", project header"
    if shapes != ("openai",):
        suite += ", " + " + ".join(shapes)
    if limit is None:  # small enough that the first wave of calls already contends
        limit = Decimal("0.50") if with_max_tokens else Decimal("2.00")
    figures = Figures(suite, backend_of(url))
    words = reply_tokens if reply_tokens is not None else 2 * default_max_tokens
    project = f"race-{os.getpid()}-{random.randrange(1 << 30):x}"
    spool_dir = spool_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    start = time.perf_counter()
    with RunAPISimulator() as sim:
        sim.default = Behavior(reply=" ".join(["w"] * words))
        with Ledger(url, replay_spool=False, spool_path=spool_dir / "race.spool") as book:
            book.set_budget(project, limit)
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_race_process, args=(
            url, sim.base_url, project, p, threads, calls, with_max_tokens, default_max_tokens,
            send_default_cap, str(spool_dir / f"race-{p}.spool"), out, null_caps, via_header,
            shapes))
            for p in range(processes)]
        for p in procs:
            p.start()
        seen: list[Seen] = []
        try:
            for _ in procs:
                status, payload = out.get(timeout=600)
                if status != "ok":
                    figures.problem(f"a racing process failed: {payload}")
                    continue
                seen.extend(Seen(**s) for s in payload)
        finally:
            for p in procs:
                p.join(timeout=60)
                if p.is_alive():
                    p.kill()
        server_calls = sim.request_count
    figures.seconds = time.perf_counter() - start
    figures.calls = len(seen)
    with Ledger(url, replay_spool=False, spool_path=spool_dir / "race.spool",
                clock=restart_clock()) as book:
        rows = {r["call_id"]: r for r in event_rows(book, events.c.project == project)}
        bad_headers = [s for s in seen if s.tag.endswith(BAD_HEADER)]
        for s in bad_headers:
            if s.refused != "project_not_allowed" or s.status != 400:
                figures.problem(f"a call naming a project not allowed got {s.status} "
                                f"{s.refused} ({s.tag})")
        if via_header:
            figures.extra["bad_headers_refused"] = sum(
                1 for s in bad_headers if s.refused == "project_not_allowed")
            home = event_rows(book, events.c.project.in_(
                [project + "-home", project + " ", project.upper(), "other-" + project]))
            if home:
                figures.problem(f"{len(home)} events went to another project than the header's")
        seen = [s for s in seen if not s.tag.endswith(BAD_HEADER)]
        admitted = [s for s in seen if s.sent]
        figures.admitted = len(admitted)
        figures.refused = sum(1 for s in seen if s.refused == "budget_exceeded")
        figures.failed = sum(1 for s in admitted if s.kind() == "failed")
        other = [s for s in seen if s.refused not in (None, "budget_exceeded")]
        for s in other[:5]:
            figures.problem(f"refused for another reason: {s.refused} ({s.status})")
        if server_calls != figures.admitted:
            figures.problem(f"the server saw {server_calls} calls, {figures.admitted} admitted")
        total = Decimal(0)
        for s in admitted:
            if s.kind() != "ok-exact":
                figures.problem(f"admitted call {s.tag} not a clean success: {s}")
                continue
            problem = check_event(s, rows.get(s.call_id))
            if problem:
                figures.usage_lost += 1
                figures.problem(problem)
            assert s.usage is not None
            total += cost(*s.usage)
        state = book.budget(project, month_of(datetime.now(UTC)))
        if state.spent != total:
            figures.problem(f"spend {state.spent} != sum of admitted calls {total}")
        figures.overspend = max(Decimal(0), state.spent - limit)
        cap = default_max_tokens
        figures.extra.update({
            "limit": limit, "spent": state.spent, "reply_tokens": words, "default_cap": cap,
            "overspend_bound": processes * threads * max(0, words - cap) * PRICE / 1000
            if not (with_max_tokens or send_default_cap or null_caps) else Decimal(0),
            "refused_events": sum(1 for r in rows.values() if r["status"] == "refused"),
        })
        if figures.refused == 0:
            figures.problem("the budget was never contended: the race proves nothing")
        if figures.extra["refused_events"] != figures.refused:
            figures.problem("refusals and refused events disagree")
        if figures.overspend > figures.extra["overspend_bound"]:
            figures.problem(f"overspend {figures.overspend} above the bound "
                            f"{figures.extra['overspend_bound']}")
        audit(book, figures)
    return figures
