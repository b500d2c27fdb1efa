#!/usr/bin/env python3
"""The long soak: a mixed workload of metered calls for minutes, then every call checked.

    scripts/soak.py --minutes 30                      # a SQLite ledger in a temp directory
    scripts/soak.py --minutes 10 --db postgresql+psycopg://postgres@127.0.0.1:5432/test
    scripts/soak.py --quick                           # six seconds: checks the soak runs

Sync and async clients of httpx and httpx2, streamed and not, and ``metered_call``; server
errors, error events, cut streams, missing usage and malformed bodies; refusals by a hard
budget; price changes; the UTC month boundary crossed half-way (a manual clock). At the end:
every call against its event (exact cost at the price in force), refusals never sent, the hard
budget never overspent in either month, invoices equal to their events, the books balanced and
no hold left pending. ``tests/test_soak.py`` runs the same code for seconds.

Exit status 0 when every invariant held, 1 otherwise. ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

# The harness is test equipment in tests/harness (it does not ship): import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import figures_table, pg_schema, soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long (default 5)")
    parser.add_argument("--db", help="a PostgreSQL URL (a fresh schema is made); default SQLite")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--quick", action="store_true", help="six seconds (overrides --minutes)")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes = 0.1
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ledger-soak-")))
        if args.db and not args.db.startswith("sqlite"):
            url = stack.enter_context(pg_schema(args.db))
        else:
            url = args.db or f"sqlite:///{tmp}/soak.db"
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"soak for {args.minutes:g} min on {url.split('?')[0]} (seed {args.seed}), "
              f"started {started}", flush=True)
        figures = soak(url, args.minutes * 60, seed=args.seed, spool_path=tmp / "soak.spool",
                       progress=lambda line: print(line, flush=True))
    print(figures_table([figures]))
    print(json.dumps(figures.extra, indent=1, default=str))
    for problem in figures.problems:
        print("PROBLEM:", problem)
    if args.json:
        args.json.write_text(json.dumps(figures.to_dict(), indent=1, default=str))
    return 1 if figures.problems else 0


if __name__ == "__main__":
    sys.exit(main())
