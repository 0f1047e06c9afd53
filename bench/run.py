"""Benchmarks for lsq-sync: capture overhead, ingest throughput and ingest peak memory.

The machine this runs on is shared and noisy, so every headline figure is a RATIO of two
things measured in the same run, with the two sides interleaved and the median of several
repetitions reported. Absolute figures are printed beside the ratios for context only.

    python bench/run.py [--db sqlite|postgresql|both] [--rows N] [--quick] [--capture-only]
    python bench/run.py --smoke    # checks that every step works; its figures mean nothing

Progress goes to stderr; the markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import repo_root  # noqa: F401  (before tests.*: puts the checkout on sys.path)
import sqlalchemy as sa

import connector
from connector.changelog import change_log
from connector.clock import SystemClock
from connector.config import Config
from connector.counts import Tally
from connector.database import create_engine
from connector.ingest import ingest
from connector.schema import change, lead
from connector.source import SourceTable
from connector.sync import Connector
from connector.tables import ConnectorTables
from tests.support import PG_URL, execute, load, postgres_schema, wait_until_readable

CONNECTOR = "bench"
CAPTURED = "bench_customers"  # capture installed by Connector.init()
BARE = "bench_customers_bare"  # identical table and history, never captured
# 9 columns: the key, 5 mapped, the lead id, 2 unmapped.
MAPPING = {
    "email": "EmailAddress",
    "phone": "Phone",
    "city": "mx_City",
    "plan": "mx_Plan",
    "score": "mx_Score",
}
SOURCE_DDL = """
CREATE TABLE {table} (
    id INTEGER PRIMARY KEY,
    name TEXT,
    email TEXT,
    phone TEXT,
    city TEXT,
    plan TEXT,
    score INTEGER,
    notes TEXT,
    lsq_prospect_id TEXT
)
"""
# `g - g / 500 * 500` is g mod 500 in both dialects (psycopg reserves `%`).
ROW_VALUES = (
    "g, 'name ' || g, 'user' || g || '@example.com', '+91 98' || g, "
    "'city ' || (g - g / 500 * 500), 'free', g - g / 100 * 100, 'a', 'lead-' || g"
)
# Changes two mapped columns of every row it touches, and keeps row sizes stable.
MAPPED_UPDATE = (
    "UPDATE {table} SET score = score + 1, "
    "plan = CASE WHEN plan = 'gold' THEN 'silver' ELSE 'gold' END WHERE id <= {limit}"
)
UNMAPPED_UPDATE = "UPDATE {table} SET notes = CASE WHEN notes = 'a' THEN 'b' ELSE 'a' END"
# One row per statement, each its own transaction: what an application's request does.
SINGLE_ROW_UPDATE = "UPDATE {table} SET score = score + 1 WHERE id = {key}"
SINGLE_ROW_STATEMENTS = 2000
# Statements per side before switching to the other, so both sides see the same moments.
SINGLE_ROW_BLOCK = 100
XMIN_WAIT_SECONDS = 120
# The first ingest can crawl (see RESULTS.md); past this it stops and its rate so far counts.
FIRST_INGEST_SECONDS = 60.0
# The modules on the measured path; their hashes go into the output, since connector/ moves.
MEASURED_MODULES = (
    "capture",
    "database",
    "ingest",
    "leads",
    "schema",
    "source",
    "sqlfold",
    "changelog",
    "desired",
    "rowproblems",
    "leadrows",
    "leadqueue",
    "runlog",
    "runlock",
    "tables",
    "values",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    rows: int  # rows in each source table; also the size of the timed UPDATEs
    backlog: int  # change rows ingested per throughput repetition, and the big memory run
    small_backlog: int  # the second memory run, to show memory does not follow the backlog
    capture_reps: int
    ingest_reps: int
    single_row_statements: int


# Enough rows for every step to do real work (batches, a first ingest, both memory runs), few
# enough that both databases take seconds.
SMOKE = Sizes(
    rows=300,
    backlog=600,
    small_backlog=60,
    capture_reps=1,
    ingest_reps=1,
    single_row_statements=100,
)


def sizes_from(args: argparse.Namespace) -> Sizes:
    if args.smoke:
        return SMOKE
    rows = args.rows or (20_000 if args.quick else 200_000)
    backlog = args.backlog or rows * (2 if args.quick else 5)
    return Sizes(
        rows=rows,
        backlog=backlog,
        small_backlog=max(1, backlog // 10),
        capture_reps=args.reps or (3 if args.quick else 5),
        ingest_reps=args.reps or 3,
        single_row_statements=min(SINGLE_ROW_STATEMENTS, rows),
    )


# -- databases --------------------------------------------------------------------------------


@contextmanager
def database(kind: str, pg_url: str) -> Iterator[str]:
    """A private database URL: a temp-dir SQLite file, or a throw-away PostgreSQL schema."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="lsq-bench-") as directory:
            yield f"sqlite:///{Path(directory) / 'bench.db'}"
        return
    with postgres_schema(pg_url) as url:
        yield url


def make_config(url: str) -> Config:
    raw = {
        "name": CONNECTOR,
        "database": {"url": url},
        "leadsquared": {
            # Ingest makes no calls; nothing listens here.
            "host": "http://127.0.0.1:9",
            "access_key": "bench-access",
            "secret_key": "bench-secret",
        },
        "source": {"table": CAPTURED, "key": "id"},
        "lead_id": {"column": "lsq_prospect_id"},
        "mapping": MAPPING,
    }
    return load(raw)


class Maintenance:
    """Out-of-transaction housekeeping, so that each timed statement starts from the same state.

    PostgreSQL: VACUUM the tables an UPDATE bloated, then CHECKPOINT, so neither side pays for
    the other's dead rows or dirty pages. SQLite: empty the WAL.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        if self.postgres:
            self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def settle(self, *tables: str) -> None:
        if self.postgres:
            with self._autocommit.connect() as connection:
                for table in tables:
                    connection.exec_driver_sql(f'VACUUM ANALYZE "{table}"')
                connection.exec_driver_sql("CHECKPOINT")
        else:
            raw = self.engine.raw_connection()
            try:
                raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()


def create_source_tables(engine: sa.Engine, rows: int) -> None:
    if engine.dialect.name == "postgresql":
        series = f"generate_series(1, {rows}) AS s(g)"
        prefix = ""
    else:
        prefix = (
            f"WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {rows}) "
        )
        series = "s"
    for table in (CAPTURED, BARE):
        execute(
            engine,
            SOURCE_DDL.format(table=table),
            f"{prefix}INSERT INTO {table} SELECT {ROW_VALUES} FROM {series}",
        )
        if engine.dialect.name == "postgresql":
            # The benchmark vacuums before every timed statement; autovacuum would only add noise.
            execute(engine, f"ALTER TABLE {table} SET (autovacuum_enabled = false)")


def clear_changes(engine: sa.Engine) -> None:
    """Drop pending change rows; the cursor and the per-lead state are kept."""
    with engine.begin() as connection:
        connection.execute(sa.delete(change).where(change.c.connector == CONNECTOR))


# -- 1. capture overhead ----------------------------------------------------------------------


@dataclass
class Pair:
    """Seconds for the captured and the bare side of one comparison, one entry per repetition."""

    captured: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [c / b for c, b in zip(self.captured, self.bare, strict=True)]


def timed_update(engine: sa.Engine, maintenance: Maintenance, statement: str, table: str) -> float:
    clear_changes(engine)
    maintenance.settle(table, change.name)
    start = time.perf_counter()
    execute(engine, statement.format(table=table, limit=sys.maxsize))
    return time.perf_counter() - start


def measure_capture(engine: sa.Engine, maintenance: Maintenance, reps: int) -> dict[str, Pair]:
    """Each repetition runs both sides back to back, alternating which goes first."""
    results = {"mapped": Pair(), "unmapped": Pair()}
    for rep in range(reps):
        for name, statement in (("mapped", MAPPED_UPDATE), ("unmapped", UNMAPPED_UPDATE)):
            order = [(CAPTURED, "captured"), (BARE, "bare")]
            if rep % 2:
                order.reverse()
            for table, side in order:
                seconds = timed_update(engine, maintenance, statement, table)
                getattr(results[name], side).append(seconds)
            pair = results[name]
            log(
                f"  capture {name:8s} rep {rep + 1}: captured {pair.captured[-1]:.3f}s "
                f"bare {pair.bare[-1]:.3f}s ratio {pair.ratios[-1]:.2f}"
            )
    return results


def measure_single_rows(
    engine: sa.Engine, maintenance: Maintenance, reps: int, statements: int
) -> Pair:
    """Autocommit single-row UPDATEs, alternating sides every SINGLE_ROW_BLOCK statements.

    Timed on the driver's own connection: SQLAlchemy's per-statement work would otherwise
    dilute the trigger's share of each statement.
    """
    pair = Pair()
    for rep in range(reps):
        clear_changes(engine)
        maintenance.settle(CAPTURED, BARE, change.name)
        seconds = {CAPTURED: 0.0, BARE: 0.0}
        raw = engine.raw_connection()
        try:
            driver: Any = raw.driver_connection
            if maintenance.postgres:
                driver.autocommit = True
            sides = [CAPTURED, BARE] if rep % 2 == 0 else [BARE, CAPTURED]
            for start in range(1, statements + 1, SINGLE_ROW_BLOCK):
                keys = range(start, min(start + SINGLE_ROW_BLOCK, statements + 1))
                for table in sides:
                    began = time.perf_counter()
                    for key in keys:
                        driver.execute(SINGLE_ROW_UPDATE.format(table=table, key=key))
                    seconds[table] += time.perf_counter() - began
        finally:
            raw.close()
        pair.captured.append(seconds[CAPTURED])
        pair.bare.append(seconds[BARE])
        log(
            f"  capture single rows rep {rep + 1}: captured {seconds[CAPTURED]:.3f}s "
            f"bare {seconds[BARE]:.3f}s ratio {pair.ratios[-1]:.2f}"
        )
    return pair


# -- 2. ingest throughput ---------------------------------------------------------------------


def build_backlog(
    engine: sa.Engine, maintenance: Maintenance, rows: int, size: int, *, analyze_leads: bool = True
) -> None:
    """`size` change rows, from UPDATEs of the captured table that each touch up to `rows` rows.

    Each UPDATE changes every row it touches, so a backlog of k x rows holds each key k times.
    """
    clear_changes(engine)
    remaining = size
    while remaining > 0:
        limit = min(rows, remaining)
        execute(engine, MAPPED_UPDATE.format(table=CAPTURED, limit=limit))
        remaining -= limit
    # Statistics as autovacuum would soon have them; the lead table's can be left as a
    # first run finds them (never analyzed), see measure_ingest.
    maintenance.settle(CAPTURED, change.name, *([lead.name] if analyze_leads else []))
    with engine.connect() as connection:
        pending = change_log(engine, CONNECTOR).pending_changes(connection)
    if pending != size:
        raise RuntimeError(f"backlog has {pending} change rows, expected {size}")
    # Ingest reads only changes older than every running transaction, cluster-wide: another
    # session on a shared server holding one open would make the run measure an ingest of nothing.
    wait_until_readable(engine, timeout=XMIN_WAIT_SECONDS)


def plain_select(engine: sa.Engine) -> tuple[int, float]:
    query = sa.select(change.c.change_id, change.c.tx_id, change.c.row_key).where(
        change.c.connector == CONNECTOR
    )
    with engine.connect() as connection:
        start = time.perf_counter()
        count = len(connection.execute(query).all())
        return count, time.perf_counter() - start


def run_ingest(
    engine: sa.Engine, config: Config, time_limit: float | None = None
) -> tuple[int, float]:
    """Changes ingested and seconds taken; past `time_limit` ingest stops after its batch."""
    source = SourceTable(engine, config)
    stop = threading.Event()
    timer = threading.Timer(time_limit, stop.set) if time_limit else None
    start = time.perf_counter()
    if timer:
        timer.start()
    tally = Tally()
    try:
        ingest(
            engine,
            tables=ConnectorTables(engine, CONNECTOR),
            source=source,
            clock=SystemClock(stop),
            batch_size=config.sync.ingest_batch_size,
            stop=stop,
            events=tally,
        )
    finally:
        if timer:
            timer.cancel()
    return tally.counts().changes_ingested, time.perf_counter() - start


@dataclass
class Throughput:
    select_rate: list[float] = field(default_factory=list)  # rows per second
    ingest_rate: list[float] = field(default_factory=list)  # changes per second
    ingested: int = 0  # for a time-limited ingest: how far it got, of how many
    backlog: int = 0

    @property
    def ratios(self) -> list[float]:
        return [i / s for i, s in zip(self.ingest_rate, self.select_rate, strict=True)]


def select_then_ingest(
    engine: sa.Engine,
    config: Config,
    expected: int,
    profile: bool = False,
    time_limit: float | None = None,
) -> tuple[float, float, int]:
    """Rows/s of the plain SELECT, then changes/s of ingest, over the same backlog.

    Also returns how many changes ingest took; fewer than `expected` only past `time_limit`.
    """
    plain_select(engine)  # warm the caches, for both sides alike
    selected, select_seconds = plain_select(engine)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    ingested, ingest_seconds = run_ingest(engine, config, time_limit)
    if profiler:
        profiler.disable()
        print_profile(profiler)
    if selected != expected or (ingested != expected and time_limit is None):
        raise RuntimeError(f"selected {selected}, ingested {ingested} of {expected}")
    return selected / select_seconds, ingested / ingest_seconds, ingested


def measure_ingest(
    engine: sa.Engine, config: Config, maintenance: Maintenance, sizes: Sizes, profile: bool
) -> tuple[Throughput, Throughput]:
    """The first ingest, into an empty lead table, then the steady state.

    The first ingest covers one UPDATE of every row; like a real first run it meets a lead
    table that is empty and has never been analyzed. The steady-state repetitions each get a
    fresh backlog of `sizes.backlog` changes for leads that already exist, with statistics
    as autovacuum would have them.
    """
    first = Throughput()
    build_backlog(engine, maintenance, sizes.rows, sizes.rows, analyze_leads=False)
    select_rate, ingest_rate, ingested = select_then_ingest(
        engine, config, sizes.rows, time_limit=FIRST_INGEST_SECONDS
    )
    first.select_rate.append(select_rate)
    first.ingest_rate.append(ingest_rate)
    log(
        f"  first ingest: SELECT {select_rate:,.0f} rows/s, ingest {ingest_rate:,.0f} changes/s"
        f" ({ingested:,} of {sizes.rows:,} within {FIRST_INGEST_SECONDS:.0f} s)"
    )
    if ingested < sizes.rows:
        # Finish untimed, with statistics, so every lead exists for the steady state.
        maintenance.settle(lead.name)
        run_ingest(engine, config)
    first.ingested, first.backlog = ingested, sizes.rows
    steady = Throughput()
    for rep in range(sizes.ingest_reps):
        build_backlog(engine, maintenance, sizes.rows, sizes.backlog)
        select_rate, ingest_rate, _ = select_then_ingest(
            engine, config, sizes.backlog, profile=profile and rep == 0
        )
        steady.select_rate.append(select_rate)
        steady.ingest_rate.append(ingest_rate)
        log(
            f"  ingest rep {rep + 1}: SELECT {select_rate:,.0f} rows/s, "
            f"ingest {ingest_rate:,.0f} changes/s, ratio {steady.ratios[-1]:.3f}"
        )
    return first, steady


def print_profile(profiler: cProfile.Profile) -> None:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
    log(out.getvalue())


# -- 3. peak memory ---------------------------------------------------------------------------


def child(mode: str, url: str) -> None:
    """Runs in a subprocess: ingest everything, or (baseline) only import, connect and read the
    cursor. Prints its own peak RSS, so the parent compares like with like."""
    config = make_config(url)
    engine = create_engine(url)
    source = SourceTable(engine, config)
    changes = 0
    if mode == "ingest":
        changes, _ = run_ingest(engine, config)
    else:
        with engine.connect() as connection:
            change_log(engine, CONNECTOR).load_cursor(connection)
    engine.dispose()
    print(json.dumps({"changes": changes, "peak_kib": peak_rss_kib(), "table": source.table.name}))


def peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(mode: str, url: str) -> dict[str, int]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{mode} subprocess failed:\n{completed.stderr}")
    result: dict[str, int] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


@dataclass(frozen=True)
class Memory:
    baseline_kib: int
    small_kib: int
    large_kib: int


def measure_memory(engine: sa.Engine, maintenance: Maintenance, url: str, sizes: Sizes) -> Memory:
    peaks: dict[str, int] = {"baseline": run_child("baseline", url)["peak_kib"]}
    for name, size in (("small", sizes.small_backlog), ("large", sizes.backlog)):
        build_backlog(engine, maintenance, sizes.rows, size)
        result = run_child("ingest", url)
        if result["changes"] != size:
            raise RuntimeError(f"memory run ingested {result['changes']} of {size}")
        peaks[name] = result["peak_kib"]
        log(f"  memory: backlog {size:,} peak {result['peak_kib'] / 1024:.1f} MiB")
    log(f"  memory: baseline peak {peaks['baseline'] / 1024:.1f} MiB")
    return Memory(peaks["baseline"], peaks["small"], peaks["large"])


# -- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestFigures:
    first_ingest: Throughput
    throughput: Throughput
    memory: Memory


@dataclass(frozen=True)
class Results:
    capture: dict[str, Pair]
    ingest: IngestFigures | None  # None with --capture-only


def bench(kind: str, pg_url: str, sizes: Sizes, profile: bool, capture_only: bool) -> Results:
    with database(kind, pg_url) as url:
        config = make_config(url)
        engine = create_engine(url)
        maintenance = Maintenance(engine)
        try:
            log(f"{kind}: creating two {sizes.rows:,}-row tables")
            create_source_tables(engine, sizes.rows)
            with Connector(config, engine=engine) as connector:
                connector.init()
            log(f"{kind}: capture overhead, {sizes.capture_reps} repetitions")
            capture = measure_capture(engine, maintenance, sizes.capture_reps)
            log(f"{kind}: capture overhead, {sizes.single_row_statements:,} single-row UPDATEs")
            capture["single"] = measure_single_rows(
                engine, maintenance, sizes.capture_reps, sizes.single_row_statements
            )
            if capture_only:
                return Results(capture, None)
            log(f"{kind}: ingest throughput, backlog {sizes.backlog:,}")
            first, throughput = measure_ingest(engine, config, maintenance, sizes, profile)
            log(f"{kind}: peak memory")
            memory = measure_memory(engine, maintenance, url, sizes)
        finally:
            engine.dispose()
    return Results(capture, IngestFigures(first, throughput, memory))


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(results: dict[str, Results], sizes: Sizes) -> str:
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    kinds = list(results)
    rows: list[tuple[str, Callable[[Results], str], str]] = [
        (
            f"capture overhead: UPDATE {sizes.rows:,} rows, 2 mapped columns changed",
            lambda r: capture_cell(r.capture["mapped"]),
            "<= 2.5x",
        ),
        (
            f"capture overhead: UPDATE {sizes.rows:,} rows, unmapped column only",
            lambda r: capture_cell(r.capture["unmapped"]),
            "~1.0x",
        ),
        (
            f"capture overhead: {sizes.single_row_statements:,} single-row autocommit UPDATEs",
            lambda r: capture_cell(r.capture["single"]),
            "",
        ),
    ]
    if all(r.ingest is not None for r in results.values()):
        rows += ingest_rows(sizes)
    lines = [
        "| measure | " + " | ".join(names[k] for k in kinds) + " | target |",
        "|---|" + "---|" * len(kinds) + "---|",
    ]
    for label, cell, target in rows:
        cells = " | ".join(cell(results[k]) for k in kinds)
        lines.append(f"| {label} | {cells} | {target} |")
    return "\n".join(lines)


def ingested(results: Results) -> IngestFigures:
    if results.ingest is None:
        raise ValueError("no ingest figures: measured with --capture-only")
    return results.ingest


def ingest_rows(sizes: Sizes) -> list[tuple[str, Callable[[Results], str], str]]:
    return [
        (
            f"ingest throughput, backlog {sizes.backlog:,} (changes/s)",
            lambda r: f"{median(ingested(r).throughput.ingest_rate):,.0f}",
            "",
        ),
        (
            "plain SELECT of the same change rows (rows/s)",
            lambda r: f"{median(ingested(r).throughput.select_rate):,.0f}",
            "",
        ),
        (
            f"ingest / SELECT ratio (backlog {sizes.backlog:,})",
            lambda r: ratio_cell(ingested(r).throughput.ratios),
            ">= 0.25",
        ),
        (
            f"first ingest: {sizes.rows:,} changes into an empty lead table (changes/s)",
            lambda r: first_ingest_cell(ingested(r).first_ingest),
            "",
        ),
        (
            "first ingest / SELECT ratio",
            lambda r: ratio_cell(ingested(r).first_ingest.ratios),
            "",
        ),
        (
            "peak RSS, baseline process (imports + connect, no ingest)",
            lambda r: mib(ingested(r).memory.baseline_kib),
            "",
        ),
        (
            f"peak RSS, ingest of {sizes.small_backlog:,} changes (growth over baseline)",
            lambda r: memory_cell(ingested(r).memory.small_kib, ingested(r).memory.baseline_kib),
            "bounded",
        ),
        (
            f"peak RSS, ingest of {sizes.backlog:,} changes (growth over baseline)",
            lambda r: memory_cell(ingested(r).memory.large_kib, ingested(r).memory.baseline_kib),
            "same as above",
        ),
    ]


def first_ingest_cell(first: Throughput) -> str:
    cell = f"{median(first.ingest_rate):,.0f}"
    if first.ingested < first.backlog:
        cell += f" (stopped at {FIRST_INGEST_SECONDS:.0f} s: {first.ingested:,} done)"
    return cell


def capture_cell(pair: Pair) -> str:
    return f"{ratio_cell(pair.ratios)} ({median(pair.captured):.2f} s vs {median(pair.bare):.2f} s)"


def ratio_cell(ratios: list[float]) -> str:
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else ""
    return f"**{median(ratios):.2f}x**" + (f" [{spread}]" if spread else "")


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def memory_cell(peak: int, baseline: int) -> str:
    return f"{mib(peak)} (+{(peak - baseline) / 1024:.1f} MiB)"


def code_fingerprint() -> str:
    package = Path(connector.__file__).parent
    return ", ".join(
        f"{name}.py {hashlib.sha256((package / f'{name}.py').read_bytes()).hexdigest()[:10]}"
        for name in MEASURED_MODULES
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rows", type=int, help="rows per source table (default 200000)")
    parser.add_argument("--backlog", type=int, help="change rows to ingest (default 5 x rows)")
    parser.add_argument("--reps", type=int, help="repetitions per comparison (default 5 / 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one repetition: checks it works (CI)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one ingest")
    parser.add_argument(
        "--capture-only", action="store_true", help="measure capture overhead alone"
    )
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--child", choices=["ingest", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child, args.url)
        return
    sizes = sizes_from(args)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    started = time.monotonic()
    fingerprint = code_fingerprint()
    results = {
        kind: bench(kind, args.pg_url, sizes, args.profile, args.capture_only) for kind in kinds
    }
    log(f"done in {time.monotonic() - started:.0f}s")
    print(f"Measured code (sha256 prefixes): {fingerprint}\n")
    if code_fingerprint() != fingerprint:
        print("**WARNING: connector/ changed during this run; figures may mix versions.**\n")
    print(table(results, sizes))
    details = {kind: figures(r) for kind, r in results.items()}
    lines = [f'  "{kind}": {json.dumps(figures)}' for kind, figures in details.items()]
    print("\nPer-repetition figures:\n\n```json\n{\n" + ",\n".join(lines) + "\n}\n```")


def figures(results: Results) -> dict[str, object]:
    capture = results.capture
    details: dict[str, object] = {
        "capture_mapped_ratios": [round(x, 3) for x in capture["mapped"].ratios],
        "capture_unmapped_ratios": [round(x, 3) for x in capture["unmapped"].ratios],
        "capture_single_row_ratios": [round(x, 3) for x in capture["single"].ratios],
    }
    if results.ingest is None:
        return details
    first, throughput = results.ingest.first_ingest, results.ingest.throughput
    return details | {
        "ingest_select_ratios": [round(x, 3) for x in throughput.ratios],
        "ingest_rates": [round(x) for x in throughput.ingest_rate],
        "first_ingest_rate": round(first.ingest_rate[0]),
        "first_select_rate": round(first.select_rate[0]),
        "select_rates": [round(x) for x in throughput.select_rate],
    }


if __name__ == "__main__":
    main()
