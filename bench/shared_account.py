"""Two connectors on one LeadSquared account at once, one pushing by single calls and one by
bulk calls: does any call get throttled?

    python bench/shared_account.py [--runs R] [--single N] [--bulk M] [--db sqlite|postgresql]
    python bench/shared_account.py --smoke    # one short run on each database

Both connectors use the same host and keys, so they pace themselves through the same rows
of the connector's tables, against the account's real limits (25 calls per 5 s, of which 5
per 5 s may be bulk calls, 0.2-0.3 s per call), which the emulator enforces. Each run starts
both `run_once` together on fresh tables. The bulk calls then often wait for the account's
window, which the single calls keep full: the case `bench/bulk.py` alone never reaches.

Reports, per run, the calls throttled (and of them by the bulk window), and the leads that
differ from their rows afterwards. Targets: 0 and 0.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
from dataclasses import dataclass

import repo_root  # noqa: F401  (before tests.*: puts the checkout on sys.path)
import sqlalchemy as sa
from bulk import (
    REAL,
    SMOKE,
    Account,
    backlog,
    create_table,
    log,
    make_config,
    mismatches,
    prepare,
    seed_leads,
)
from run import database

from connector.sync import Connector
from connector.testing.emulator import Emulator
from tests.support import PG_URL


@dataclass(frozen=True)
class Run:
    throttled: int
    by_bulk_window: int
    mismatches: int
    pushed: int
    seconds: float


def one_run(url: str, account: Account, *, single: int, bulk: int, seed: int) -> Run:
    limits = {
        "rate_limit": {"calls": account.calls, "window_seconds": account.window},
        "check_fields": False,
    }
    with Emulator(
        rate_limit=(account.calls, account.window),
        bulk_rate_limit=(account.bulk_calls, account.bulk_window),
    ) as emulator:
        emulator.set_latency(*account.latency, seed=seed)
        engine = sa.create_engine(url)
        connectors: list[Connector] = []
        tables = []
        for name, mode, leads, offset in (("one", "off", single, 0), ("many", "always", bulk, 1)):
            rows = [
                row | {"lead": f"{name}-{row['lead']}", "email": f"{name}-{row['email']}"}
                for row in backlog(leads, seed + offset)
            ]
            seed_leads(emulator, rows)
            table = f"{name}_customers"
            create_table(engine, table)
            sections = {"leadsquared": {**limits, "bulk": {"mode": mode}}}
            bulk_limit = {"calls": account.bulk_calls, "window_seconds": account.bulk_window}
            sections["leadsquared"]["bulk"]["rate_limit"] = bulk_limit
            connector = Connector(make_config(url, emulator, name, account, **sections))
            prepare(connector, engine, table, rows)
            connectors.append(connector)
            tables.append(table)
        pushed: list[int] = []
        threads = [
            threading.Thread(target=lambda c=c: pushed.append(c.run_once().counts.leads_pushed))
            for c in connectors
        ]
        # The emulator shares this process: a collection of the set-up's garbage during the
        # push would hold calls on their way for longer than the connector's margin.
        gc.collect()
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.monotonic() - started
        for connector in connectors:
            connector.close()
        engine.dispose()
        wrong = sum(mismatches(url, table, emulator) for table in tables)
        return Run(
            emulator.throttled_count,
            emulator.bulk_throttled_count,
            wrong,
            sum(pushed),
            seconds,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--single", type=int, default=100, help="leads pushed by single calls")
    parser.add_argument("--bulk", type=int, default=500, help="leads pushed by bulk calls")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="one short run on each database")
    args = parser.parse_args(argv)
    plans = (
        [("sqlite", SMOKE, 1, 20, 60), ("postgresql", SMOKE, 1, 20, 60)]
        if args.smoke
        else [(args.db, REAL, args.runs, args.single, args.bulk)]
    )
    failed = False
    for db, account, runs, single, bulk in plans:
        print(
            f"`python bench/shared_account.py --runs {runs} --single {single} --bulk {bulk} "
            f"--db {db}`\n"
        )
        print("| run | leads pushed | seconds | throttled (by the bulk window) | mismatches |")
        print("|---|---|---|---|---|")
        for n in range(1, runs + 1):
            with database(db, args.pg_url) as url:
                log(f"{db}: run {n} of {runs}")
                run = one_run(url, account, single=single, bulk=bulk, seed=args.seed + n)
            print(
                f"| {n} | {run.pushed} | {run.seconds:.1f} | {run.throttled} "
                f"({run.by_bulk_window}) | {run.mismatches} |"
            )
            failed |= bool(run.throttled or run.mismatches) or run.pushed != single + bulk
        print()
    if failed:
        print("problem: a call was throttled, or a lead differs from its row", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
