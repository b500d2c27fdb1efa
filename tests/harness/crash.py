"""Suite 1, crash at every step: a child process makes one metered call and is killed at
each fault point (``LEDGER_FAULT``); the restarted ledger must keep what was committed, release
the dead call's hold at its TTL and admit the next call. The child is
``python -m tests.harness crash-child '<json spec>'`` (see :func:`crash_child`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from ledger.clock import ManualClock
from ledger.core import Ledger
from ledger.faults import POINTS
from ledger.money import from_units
from ledger.store.schema import events, holds
from ledger.testing.simulator import RunAPISimulator, simulated_usage

from .calls import call_async, call_sync, request_body
from .common import (
    FAKE_API_KEY,
    MODEL,
    PATHS,
    REPO_ROOT,
    Figures,
    Shape,
    backend_of,
    cost,
    restart_clock,
)
from .oracle import Seen, audit, check_event, event_rows, hold_rows, json_usage

#: How the crash child makes its one call.
CRASH_DRIVERS = ("openai", "openai-stream", "anthropic-async-stream", "metered-call")
#: The spool replay, killed while it applies its first entry.
REPLAY_POINTS = ("settle:before-commit", "settle:after-commit")
#: The control run: the same child with no fault armed (it must live and bill its call).
NO_FAULT = "none"


@dataclass
class CrashCase:
    """One child killed at one point, and what the restarted ledger found."""

    driver: str
    point: str
    killed: bool = False
    reached_server: bool = False
    settle_committed: bool = False
    hold_state: str | None = None
    events: int = 0
    follow_up_admitted: bool = False
    #: Before its TTL, the dead call's hold kept the next call out (it was still counted).
    blocked_before_ttl: bool = False
    problems: list[str] = field(default_factory=list)


def _crash_body(driver: str) -> tuple[Shape, dict[str, Any]]:
    if driver == "anthropic-async-stream":
        return "anthropic", request_body("anthropic", stream=True)
    return "openai", request_body("openai", stream=driver == "openai-stream")


def crash_child(spec: Mapping[str, Any]) -> None:
    """The child process: one metered call (or a spool replay), killed wherever
    ``LEDGER_FAULT`` says. Prints what its caller saw, if it lives to see it."""
    driver = spec["driver"]
    book = Ledger(spec["url"], spool_path=spec["spool"], replay_spool=driver == "replay")
    if driver == "replay":
        print(json.dumps({"replayed": True}), flush=True)
        return
    shape, body = _crash_body(driver)
    url = spec["base_url"] + PATHS[shape]
    headers = {"authorization": f"Bearer {FAKE_API_KEY}"}
    project = spec["project"]
    seen: Seen
    if driver in ("openai", "openai-stream"):
        with book.httpx_client(project) as client:
            seen = call_sync(client, url, shape, body, headers=headers)
    elif driver == "anthropic-async-stream":
        async def go() -> Seen:
            async with book.async_httpx2_client(project) as client:
                return await call_async(client, url, shape, body, headers=headers)
        seen = asyncio.run(go())
    elif driver == "metered-call":
        with book.metered_call(project, body) as call:
            reply = httpx.post(url, json=body, headers=headers)
            call.settle(reply.json())
        seen = Seen(status=reply.status_code, call_id=call.call_id, complete=True)
        seen.usage = json_usage(shape, reply.content)[0]
    else:
        raise SystemExit(f"unknown crash driver {driver!r}")
    print(json.dumps(asdict(seen)), flush=True)


def _run_child(spec: Mapping[str, Any], point: str | None, timeout: float = 120) -> (
        subprocess.CompletedProcess[str]):
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_FAULT"}
    if point is not None:
        env["LEDGER_FAULT"] = point
    # The child imports ``tests.harness``: the repository root goes first on its path.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO_ROOT), env.get("PYTHONPATH"))))
    return subprocess.run(
        [sys.executable, "-m", "tests.harness", "crash-child", json.dumps(spec)],
        env=env, capture_output=True, text=True, timeout=timeout, check=False)


def crash_case(url: str, sim: RunAPISimulator, driver: str, point: str, workdir: Path) -> (
        CrashCase):
    """Kill a metered call at ``point`` (or, for ``NO_FAULT``, let it live); restart;
    check what the ledger kept."""
    case = CrashCase(driver, point)
    project = f"crash/{driver}/{point}"
    spool = workdir / f"{driver}-{point}.spool".replace(":", "_")
    shape, body = _crash_body(driver)
    with Ledger(url, replay_spool=False, spool_path=spool) as book:
        worst = book.estimate(body, shape=shape).cost
        # Tight: a hold the dead child leaves behind blocks the next call until its TTL.
        book.set_budget(project, worst * Decimal("1.5"))
    before = sim.request_count
    spec = {"url": url, "base_url": sim.base_url, "driver": driver, "project": project,
            "spool": str(spool)}
    proc = _run_child(spec, None if point == NO_FAULT else point)
    case.killed = proc.returncode == -signal.SIGKILL
    case.reached_server = sim.request_count > before
    index = len(POINTS) if point == NO_FAULT else POINTS.index(point)
    if case.killed != (point != NO_FAULT):
        case.problems.append(f"child killed: {case.killed} (rc={proc.returncode}): "
                             f"{proc.stderr[-500:]}")
    if point == NO_FAULT:
        lived = Seen(**json.loads(proc.stdout.splitlines()[-1])) if proc.stdout else None
        if lived is None or lived.status != 200 or tuple(lived.usage or ()) != simulated_usage(body):
            case.problems.append(f"the control call did not succeed: {lived} {proc.stderr[-500:]}")
    want_server = index >= POINTS.index("call:after-response")
    if case.reached_server != want_server:
        case.problems.append(f"reached server: {case.reached_server}, want {want_server}")
    case.settle_committed = index >= POINTS.index("settle:after-commit")
    expected = cost(*simulated_usage(body))
    with Ledger(url, replay_spool=False, spool_path=spool) as book:  # before the TTL
        state = book.budget(project)
        assert state.limit is not None
        case.blocked_before_ttl = state.spent + state.held + worst > state.limit
    leaked = POINTS.index("call:after-hold") <= index < POINTS.index("settle:after-commit")
    if case.blocked_before_ttl != leaked:
        case.problems.append(f"blocked before the TTL: {case.blocked_before_ttl}, want {leaked}")

    clock = restart_clock()
    with Ledger(url, clock=clock, spool_path=spool) as book:  # the restarted process
        rows = event_rows(book, events.c.project == project)
        held = hold_rows(book, holds.c.project == project)
        case.events = len(rows)
        want_hold = index >= POINTS.index("call:after-hold")
        if bool(held) != want_hold or len(held) > 1:
            case.problems.append(f"{len(held)} hold rows, want {int(want_hold)}")
        if case.settle_committed:
            if len(rows) != 1 or rows[0]["status"] != "ok" or from_units(rows[0]["cost"]) != expected:
                case.problems.append(f"settled usage lost or wrong: {rows}, want one ok at {expected}")
            elif held:  # a retried settle (a replay) after the restart changes nothing
                again = book.settle(held[0]["id"], *simulated_usage(body))
                if again != expected or len(event_rows(book, events.c.project == project)) != 1:
                    case.problems.append("a second settle after the restart charged again")
        elif rows:
            case.problems.append(f"events without a committed settle: {rows}")
        book.expire_holds()
        after = hold_rows(book, holds.c.project == project)
        case.hold_state = after[0]["state"] if after else None
        if any(h["state"] == "pending" for h in after):
            case.problems.append("hold still pending after its TTL")
        if book.budget(project).held_units != 0:
            case.problems.append(f"budget still holds {book.budget(project).held}")
        # The project is not blocked: the next call is admitted and billed.
        with book.httpx_client(project) as client:
            follow = call_sync(client, sim.base_url + PATHS[shape],
                               shape, body, tag="follow-up")
        case.follow_up_admitted = follow.status == 200 and follow.refused is None
        row = event_rows(book, events.c.call_id == follow.call_id) if follow.call_id else []
        problem = check_event(follow, row[0] if row else None)
        if not case.follow_up_admitted or problem:
            case.problems.append(f"follow-up call: status {follow.status} "
                                 f"refused={follow.refused} {problem or ''}")
        case.problems.extend(book.store.check_totals())
    return case


def replay_crash_case(url: str, point: str, workdir: Path) -> CrashCase:
    """Kill a spool replay while it applies its first entry; the next open finishes the job,
    every entry recorded exactly once."""
    case = CrashCase("replay", point)
    project = f"crash/replay/{point}"
    spool = workdir / f"replay-{point}.spool".replace(":", "_")
    usages = [(100, 20), (300, 0), (7, 4000)]
    with Ledger(url, replay_spool=False, spool_path=spool) as book:
        ids = [book.hold(project, MODEL, p, 4096).call_id for p, _ in usages]
        from ledger.records import Outcome

        for call_id, (p, c) in zip(ids, usages, strict=True):
            book.spool.append(call_id, project, MODEL, book.now(), Outcome("ok", p, c))
    proc = _run_child({"url": url, "driver": "replay", "spool": str(spool)}, point)
    case.killed = proc.returncode == -signal.SIGKILL
    if not case.killed:
        case.problems.append(f"child not killed (rc={proc.returncode}): {proc.stderr[-500:]}")
    with Ledger(url, replay_spool=False, spool_path=spool) as book:
        case.settle_committed = len(event_rows(book, events.c.project == project)) == 1
    if case.settle_committed != (point == "settle:after-commit"):
        case.problems.append(f"first entry committed: {case.settle_committed}")
    with Ledger(url, clock=restart_clock(), spool_path=spool) as book:  # replays on open
        rows = event_rows(book, events.c.project == project)
        case.events = len(rows)
        got = sorted((r["call_id"], from_units(r["cost"])) for r in rows)
        want = sorted((i, cost(p, c)) for i, (p, c) in zip(ids, usages, strict=True))
        if got != want:
            case.problems.append(f"after replay: {got}, want {want}")
        if book.spool.exists():
            case.problems.append("spool not emptied")
        if book.budget(project).held_units != 0:
            case.problems.append("holds of replayed calls still counted")
        case.hold_state = ",".join(sorted({h["state"] for h in hold_rows(
            book, holds.c.project == project)}))
        case.problems.extend(book.store.check_totals())
    return case


def crash_suite(url: str, workdir: Path, *, drivers: Sequence[str] = CRASH_DRIVERS,
                points: Sequence[str] = (*POINTS, NO_FAULT),
                replay_points: Sequence[str] = REPLAY_POINTS,
                sim: RunAPISimulator | None = None) -> tuple[Figures, list[CrashCase]]:
    """Every driver killed at every point (and once not at all), plus the spool replay
    killed mid-way."""
    figures = Figures("crash", backend_of(url))
    cases: list[CrashCase] = []
    start = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    with Ledger(url, replay_spool=False, spool_path=workdir / "setup.spool"):
        pass  # migrate once, before the children race to do it
    with contextmanager_or(sim) as server:
        for driver in drivers:
            for point in points:
                cases.append(crash_case(url, server, driver, point, workdir))
    for point in replay_points:
        cases.append(replay_crash_case(url, point, workdir))
    for case in cases:
        figures.calls += 1 if case.driver != "replay" else 0
        figures.admitted += case.reached_server
        if case.settle_committed and case.events == 0:
            figures.usage_lost += 1
        if case.events > (3 if case.driver == "replay" else 1):
            figures.charged_twice += 1
        for problem in case.problems:
            figures.problem(f"{case.driver} @ {case.point}: {problem}")
    figures.extra["cases"] = len(cases)
    figures.extra["killed"] = sum(c.killed for c in cases)
    figures.extra["fault_points"] = len({c.point for c in cases if c.point != NO_FAULT})
    figures.extra["follow_up_admitted"] = sum(c.follow_up_admitted for c in cases)
    figures.extra["blocked_until_ttl"] = sum(c.blocked_before_ttl for c in cases)
    figures.extra["answered_but_unbilled"] = sum(
        c.reached_server and not c.settle_committed for c in cases)
    figures.seconds = time.perf_counter() - start
    with Ledger(url, clock=restart_clock(), spool_path=workdir / "setup.spool") as book:
        audit(book, figures, book.clock if isinstance(book.clock, ManualClock) else None)
    return figures, cases


@contextmanager
def contextmanager_or(sim: RunAPISimulator | None) -> Iterator[RunAPISimulator]:
    """The given simulator, or a fresh one for the duration."""
    if sim is not None:
        yield sim
        return
    with RunAPISimulator() as fresh:
        yield fresh
