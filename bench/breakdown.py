"""Where ingest spends its time: wall time per step, and on PostgreSQL the slow plans.

    python bench/breakdown.py [--db sqlite|postgresql] [--rows N] [--backlog M] [--first]
    python bench/breakdown.py --smoke    # both databases, both modes, tiny: checks it works

A diagnostic companion to run.py, on the same tables and backlog. Each step of ingest (change
log, desired values and SourceTable methods, the fold) is wrapped with a timer for this process
only; nothing in connector/ is changed. On PostgreSQL, auto_explain reports the plan of every
statement slower than --explain-ms, and one plan per statement is printed.

By default the lead table already holds every lead (the steady state); --first ingests into
an empty, never-analyzed lead table instead, as a first run after `init` does.
"""

from __future__ import annotations

import argparse
import collections
import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import repo_root  # noqa: F401  (before tests.*: puts the checkout on sys.path)
import run
import sqlalchemy as sa
from sqlalchemy import event

import connector.ingest
from connector.changelog import PostgresChangeLog, SqliteChangeLog
from connector.database import create_engine
from connector.desired import PostgresDesiredValues, SqliteDesiredValues
from connector.source import SourceTable
from connector.sync import Connector
from tests.support import PG_URL

# The concrete classes of each database: a method a subclass overrides and calls with super()
# would be timed twice if the base class were wrapped too.
CHANGE_LOGS = (PostgresChangeLog, SqliteChangeLog)
DESIRED = (PostgresDesiredValues, SqliteDesiredValues)
STEPS: list[tuple[Any, str, str]] = [
    *((cls, "load_cursor", "changes.load_cursor") for cls in CHANGE_LOGS),
    *((cls, "read_changes", "changes.read_changes") for cls in CHANGE_LOGS),
    (SourceTable, "read", "source.read"),
    *(
        (cls, "write_desired_from", "desired.write_desired_from (source read and fold in SQL)")
        for cls in DESIRED
    ),
    (connector.ingest, "fold_rows", "fold_rows (pure)"),
    *((cls, "write_desired", "desired.write_desired") for cls in DESIRED),
    *((cls, "consume", "changes.consume") for cls in CHANGE_LOGS),
    *((cls, "discard_consumed", "changes.discard_consumed") for cls in CHANGE_LOGS),
    *((cls, "commit_without_waiting", "changes.commit_without_waiting") for cls in CHANGE_LOGS),
]


class StepTimer:
    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    @contextmanager
    def installed(self, engine: sa.Engine) -> Iterator[None]:
        """The steps timed while inside; restored after, so that a second run in this process
        (--smoke) is not timed twice over."""
        # Inherited methods are wrapped on the subclass, and removed from it after.
        originals = [(owner, name, vars(owner).get(name)) for owner, name, _ in STEPS]
        for owner, name, label in STEPS:
            setattr(owner, name, self._timed(getattr(owner, name), label))
        # The commit is where a batch waits for its WAL to reach the disk.
        dialect = engine.dialect
        dialect.do_commit = self._timed(dialect.do_commit, "commit")  # type: ignore[method-assign]
        try:
            yield
        finally:
            for owner, name, original in reversed(originals):
                if original is None:
                    delattr(owner, name)
                else:
                    setattr(owner, name, original)
            del dialect.do_commit

    def _timed(self, function: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1

        return timed


def collect_plans(engine: sa.Engine, threshold_ms: int) -> dict[str, list[str]]:
    """auto_explain at NOTICE level on every new connection, so the plans come to this client."""
    plans: dict[str, list[str]] = collections.defaultdict(list)

    def keep(diagnostic: Any) -> None:
        text = diagnostic.message_primary or ""
        if "Query Text:" in text:
            statement = text.split("Query Text:", 1)[1].strip()
            plans[" ".join(statement.split()[:4])].append(text)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.add_notice_handler(keep)
        cursor = dbapi_connection.cursor()
        cursor.execute("LOAD 'auto_explain'")
        for setting, value in (
            ("log_min_duration", str(threshold_ms)),
            ("log_analyze", "on"),
            ("log_buffers", "on"),
            ("log_level", "notice"),
        ):
            cursor.execute(f"SET auto_explain.{setting} = '{value}'")
        cursor.close()
        dbapi_connection.commit()

    engine.dispose()  # new connections from here on get the listener
    return plans


def short_plan(text: str) -> str:
    """The plan without the statement's long list of bound parameters."""
    keep = ("Cond", "Filter")
    lines = [line for line in text.splitlines() if "$" not in line or any(k in line for k in keep)]
    return "\n".join(line if len(line) < 240 else line[:240] + " ..." for line in lines)


def breakdown(
    db: str, *, rows: int, backlog: int, first: bool, explain_ms: int, pg_url: str
) -> None:
    with run.database(db, pg_url) as url:
        config = run.make_config(url)
        engine = create_engine(url)
        maintenance = run.Maintenance(engine)
        try:
            run.create_source_tables(engine, rows)
            with Connector(config, engine=engine) as sync:
                sync.init()
            if not first:
                run.build_backlog(engine, maintenance, rows, rows)
                run.run_ingest(engine, config)
            run.build_backlog(engine, maintenance, rows, backlog, analyze_leads=not first)
            plans = collect_plans(engine, explain_ms) if maintenance.postgres else {}
            timer = StepTimer()
            with timer.installed(engine):
                changes, seconds = run.run_ingest(engine, config)
        finally:
            engine.dispose()
    if changes != backlog:
        raise RuntimeError(f"ingested {changes} of {backlog} changes")
    print(f"{db}: {changes:,} changes in {seconds:.1f} s = {changes / seconds:,.0f}/s\n")
    print("| step | seconds | share | calls |\n|---|---|---|---|")
    for label, spent in timer.seconds.most_common():
        print(f"| {label} | {spent:.2f} | {spent / seconds:.0%} | {timer.calls[label]} |")
    rest = seconds - sum(timer.seconds.values())
    print(f"| everything else (ingest's own Python, BEGIN) | {rest:.2f} | {rest / seconds:.0%} | |")
    for statement, texts in plans.items():
        print(f"\n{len(texts)} executions over {explain_ms} ms of `{statement} ...`; one:")
        print("```\n" + short_plan(texts[len(texts) // 2]) + "\n```")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--backlog", type=int, help="default 5 x rows")
    parser.add_argument("--first", action="store_true", help="ingest into an empty lead table")
    parser.add_argument("--explain-ms", type=int, default=30)
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument(
        "--smoke", action="store_true", help="both databases and modes, tiny: checks it works"
    )
    args = parser.parse_args()
    if args.smoke:
        # Every statement explained, so that the plan collection runs too.
        for db in ("sqlite", "postgresql"):
            for first in (False, True):
                breakdown(
                    db,
                    rows=run.SMOKE.rows,
                    backlog=run.SMOKE.backlog,
                    first=first,
                    explain_ms=0,
                    pg_url=args.pg_url,
                )
        return
    backlog = args.backlog or 5 * args.rows
    breakdown(
        args.db,
        rows=args.rows,
        backlog=backlog,
        first=args.first,
        explain_ms=args.explain_ms,
        pg_url=args.pg_url,
    )


if __name__ == "__main__":
    main()
