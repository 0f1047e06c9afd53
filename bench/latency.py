"""Issue 11's near-real-time figures: how soon an idle daemon pushes a commit, and what the
wake-up NOTIFY adds to capture.

1. Latency. `lsq-sync daemon` runs as a subprocess (its config as shipped: an interval of 60 s,
   a debounce of 0.2 s) against the bundled emulator, served by this process. 200 single-row
   commits, each after a random pause of 0-1 s once the previous one has been pushed (so the
   daemon is idle, and each commit falls at a random moment of its SQLite check or LISTEN
   wait): the latency of each is from the commit's return to the emulator's arrival time of
   its Lead.Update (both `time.monotonic`, one clock for every process on the machine).
   p50/p90/p99 and the maximum, on PostgreSQL and SQLite.
2. Capture cost (PostgreSQL; SQLite sends no NOTIFY). Three identical tables: captured by the
   triggers as installed (with the NOTIFY), captured by the same triggers without it, and
   never captured; a session LISTENs on the channel meanwhile, as a daemon would. The 200k-row
   UPDATE of 2 mapped columns, and 2,000 single-row autocommit UPDATEs, interleaved as in
   bench/run.py; medians of the ratios.

    python bench/latency.py [--db sqlite|postgresql|both] [--commits N] [--skip-capture]
    python bench/latency.py --smoke    # both databases, tiny sizes: checks it works

Progress goes to stderr; the markdown tables go to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import repo_root  # noqa: F401  (before tests.*: puts the checkout on sys.path)
import run as capture_bench
import sqlalchemy as sa

from connector import capture
from connector.database import create_engine
from connector.schema import change
from connector.sync import Connector
from connector.testing.emulator import Emulator
from tests.support import PG_URL, config_dict, create_customers, execute, load, write_config

COMMITS = 200
PUSH_TIMEOUT = 120.0  # one commit's push; far beyond the interval, so a stall fails loudly
QUIET = "bench_customers_quiet"  # captured without the NOTIFY
QUIET_CONNECTOR = "bench_quiet"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def database(kind: str, pg_url: str) -> Iterator[str]:
    with capture_bench.database(kind, pg_url) as url:
        yield url


# -- 1. latency -------------------------------------------------------------------------------


@contextmanager
def daemon(config_path: Path, directory: Path) -> Iterator[None]:
    """`lsq-sync daemon` as a subprocess, stopped with SIGTERM; its log kept in a file."""
    log_path = directory / "daemon.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "connector", "--config", str(config_path), "daemon"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LSQ_SYNC_LOG_LEVEL": "INFO"},
        )
        try:
            yield
        finally:
            process.terminate()
            process.wait(60)
    if process.returncode != 0:
        raise RuntimeError(f"the daemon exited {process.returncode}: {log_path.read_text()}")


def wait_for_line(path: Path, text: str, timeout: float = 60) -> None:
    """The daemon's log holds `text` (a poll of a file another process writes)."""
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{text!r} not logged within {timeout} s: {path.read_text()}")
        time.sleep(0.05)


def measure_latency(kind: str, pg_url: str, commits: int) -> list[float]:
    rng = random.Random(11)
    with (
        database(kind, pg_url) as url,
        tempfile.TemporaryDirectory(prefix="lsq-latency-") as tmp,
        Emulator(rate_limit=None) as emulator,
    ):
        directory = Path(tmp)
        create_customers(url)
        engine = create_engine(url)
        try:
            execute(
                engine,
                *(
                    f"INSERT INTO customers (id, city, lsq_prospect_id) VALUES ({i}, 'c', 'L{i}')"
                    for i in range(1, commits + 1)
                ),
            )
            for i in range(1, commits + 1):
                emulator.add_lead(f"L{i}")
            config = config_dict(url, emulator, name="latency")
            config_path = write_config(directory / "lsq-sync.yaml", config)
            with Connector(load(config)) as connector:
                connector.init()
            latencies: list[float] = []
            with daemon(config_path, directory):
                wait_for_line(directory / "daemon.log", "run finished")
                for n in range(1, commits + 1):
                    time.sleep(rng.uniform(0, 1))
                    execute(engine, f"UPDATE customers SET city = 'v{n}' WHERE id = {n}")
                    committed = time.monotonic()
                    arrived = emulator.wait_for_requests(n, PUSH_TIMEOUT)[n - 1]
                    if arrived.lead_id != f"L{n}":
                        raise RuntimeError(f"commit {n}: expected L{n}, got {arrived}")
                    latencies.append(arrived.arrived_at - committed)
                    if n % 20 == 0 or n == commits:
                        log(f"  {kind}: {n} commits, last {latencies[-1]:.3f}s")
        finally:
            engine.dispose()
    return latencies


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, round(share * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# -- 2. capture cost of the NOTIFY ------------------------------------------------------------


@dataclass
class Sides:
    """Seconds per repetition for each table."""

    notify: list[float] = field(default_factory=list)
    quiet: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)

    def ratio(self, side: str, against: str) -> list[float]:
        return [a / b for a, b in zip(getattr(self, side), getattr(self, against), strict=True)]


TABLES = {"notify": capture_bench.CAPTURED, "quiet": QUIET, "bare": capture_bench.BARE}


def create_tables(engine: sa.Engine, rows: int) -> None:
    capture_bench.create_source_tables(engine, rows)
    series = f"generate_series(1, {rows}) AS s(g)"
    execute(
        engine,
        capture_bench.SOURCE_DDL.format(table=QUIET),
        f"INSERT INTO {QUIET} SELECT {capture_bench.ROW_VALUES} FROM {series}",
        f"ALTER TABLE {QUIET} SET (autovacuum_enabled = false)",
    )


def install(url: str, engine: sa.Engine) -> str:
    """Capture on the notifying and the quiet table; returns the notifying one's channel."""
    with Connector(capture_bench.make_config(url), engine=engine) as connector:
        connector.init()
    quiet = capture_bench.make_config(url).model_dump(by_alias=True, mode="json")
    quiet["database"]["url"] = url
    quiet["leadsquared"]["access_key"] = "bench-access"
    quiet["leadsquared"]["secret_key"] = "bench-secret"  # noqa: S105 (nothing listens)
    quiet.update(name=QUIET_CONNECTOR, source={"table": QUIET, "key": "id"})
    # The same triggers, less the NOTIFY: what capture cost before wake-ups.
    with (
        mock.patch.object(capture, "_wake", return_value=""),
        Connector(load(quiet), engine=engine) as connector,
    ):
        connector.init()
    with engine.connect() as connection:
        schema = connection.exec_driver_sql("SELECT current_schema()").scalar_one()
    return capture.wake_channel(schema, capture_bench.CONNECTOR)


@contextmanager
def listening(engine: sa.Engine, channel: str) -> Iterator[list[int]]:
    """A session LISTENing on `channel` and reading what comes, as the daemon's does."""
    raw = engine.raw_connection()
    connection: Any = raw.driver_connection
    connection.autocommit = True
    connection.execute(f'LISTEN "{channel}"')
    received = [0]
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            received[0] += sum(1 for _ in connection.notifies(timeout=0.2))

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        stop.set()
        thread.join(5)
        raw.invalidate()


def clear_changes(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(sa.delete(change))


def measure_bulk(engine: sa.Engine, maintenance: Any, reps: int) -> Sides:
    sides = Sides()
    names = list(TABLES)
    for rep in range(reps):
        order = names[rep % 3 :] + names[: rep % 3]
        for side in order:
            clear_changes(engine)
            maintenance.settle(TABLES[side], change.name)
            start = time.perf_counter()
            execute(
                engine, capture_bench.MAPPED_UPDATE.format(table=TABLES[side], limit=sys.maxsize)
            )
            getattr(sides, side).append(time.perf_counter() - start)
        log(
            f"  200k-row UPDATE rep {rep + 1}: notify {sides.notify[-1]:.3f}s quiet "
            f"{sides.quiet[-1]:.3f}s bare {sides.bare[-1]:.3f}s"
        )
    return sides


def measure_single(engine: sa.Engine, maintenance: Any, reps: int, statements: int) -> Sides:
    sides = Sides()
    names = list(TABLES)
    block = capture_bench.SINGLE_ROW_BLOCK
    for rep in range(reps):
        clear_changes(engine)
        maintenance.settle(*TABLES.values(), change.name)
        seconds = dict.fromkeys(names, 0.0)
        raw = engine.raw_connection()
        try:
            driver: Any = raw.driver_connection
            driver.autocommit = True
            order = names[rep % 3 :] + names[: rep % 3]
            for start in range(1, statements + 1, block):
                keys = range(start, min(start + block, statements + 1))
                for side in order:
                    began = time.perf_counter()
                    for key in keys:
                        driver.execute(
                            capture_bench.SINGLE_ROW_UPDATE.format(table=TABLES[side], key=key)
                        )
                    seconds[side] += time.perf_counter() - began
        finally:
            raw.close()
        for side in names:
            getattr(sides, side).append(seconds[side])
        log(
            f"  single-row UPDATEs rep {rep + 1}: notify {seconds['notify']:.3f}s quiet "
            f"{seconds['quiet']:.3f}s bare {seconds['bare']:.3f}s"
        )
    return sides


def measure_capture(pg_url: str, rows: int, reps: int, statements: int) -> dict[str, Sides]:
    with database("postgresql", pg_url) as url:
        engine = create_engine(url)
        try:
            log(f"postgresql: three {rows:,}-row tables")
            create_tables(engine, rows)
            channel = install(url, engine)
            maintenance = capture_bench.Maintenance(engine)
            with listening(engine, channel) as received:
                bulk = measure_bulk(engine, maintenance, reps)
                single = measure_single(engine, maintenance, reps, statements)
            log(f"  notifications received by the listening session: {received[0]}")
            if received[0] == 0:
                raise RuntimeError("the notifying table sent no NOTIFY")
        finally:
            engine.dispose()
    return {"bulk": bulk, "single": single}


# -- output -----------------------------------------------------------------------------------


def latency_table(latencies: dict[str, list[float]]) -> str:
    lines = [
        "| database | commits | p50 | p90 | p99 | max | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, values in latencies.items():
        target = "p50 <= 1 s, p99 <= 2 s" if kind == "postgresql" else ""
        cells = [f"{percentile(values, p):.3f} s" for p in (0.5, 0.9, 0.99)]
        lines.append(
            f"| {kind} | {len(values)} | {' | '.join(cells)} | {max(values):.3f} s | {target} |"
        )
    return "\n".join(lines)


def capture_table(results: dict[str, Sides], rows: int, statements: int) -> str:
    def cell(sides: Sides, side: str, against: str) -> str:
        ratios = sides.ratio(side, against)
        return (
            f"**{statistics.median(ratios):.2f}x** [{min(ratios):.2f}-{max(ratios):.2f}] "
            f"({statistics.median(getattr(sides, side)):.3f} s vs "
            f"{statistics.median(getattr(sides, against)):.3f} s)"
        )

    bulk, single = results["bulk"], results["single"]
    return "\n".join(
        [
            "| PostgreSQL | with NOTIFY vs no triggers | without NOTIFY vs no triggers | "
            "with NOTIFY vs without | target |",
            "|---|---|---|---|---|",
            f"| UPDATE {rows:,} rows, 2 mapped columns | {cell(bulk, 'notify', 'bare')} | "
            f"{cell(bulk, 'quiet', 'bare')} | {cell(bulk, 'notify', 'quiet')} | <= 2.5x |",
            f"| {statements:,} single-row autocommit UPDATEs | {cell(single, 'notify', 'bare')} "
            f"| {cell(single, 'quiet', 'bare')} | {cell(single, 'notify', 'quiet')} | "
            "about 1.2x before |",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--commits", type=int, default=COMMITS)
    parser.add_argument("--rows", type=int, default=200_000, help="capture table rows")
    parser.add_argument("--reps", type=int, default=5, help="capture repetitions")
    parser.add_argument("--statements", type=int, default=capture_bench.SINGLE_ROW_STATEMENTS)
    parser.add_argument("--skip-capture", action="store_true", help="latency alone")
    parser.add_argument("--skip-latency", action="store_true", help="capture cost alone")
    parser.add_argument(
        "--smoke", action="store_true", help="both databases, tiny sizes: checks it works"
    )
    parser.add_argument("--pg-url", default=PG_URL)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.smoke:
        args.db, args.commits, args.rows, args.reps, args.statements = "both", 5, 2000, 1, 100
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    started = time.monotonic()
    figures: dict[str, Any] = {}
    if not args.skip_latency:
        latencies = {}
        for kind in kinds:
            log(f"{kind}: latency of {args.commits} commits")
            latencies[kind] = measure_latency(kind, args.pg_url, args.commits)
        print(latency_table(latencies) + "\n")
        figures["latency_seconds"] = {k: [round(x, 4) for x in v] for k, v in latencies.items()}
    if not args.skip_capture and "postgresql" in kinds:
        results = measure_capture(args.pg_url, args.rows, args.reps, args.statements)
        print(capture_table(results, args.rows, args.statements) + "\n")
        figures["capture_seconds"] = {
            name: {side: [round(x, 4) for x in getattr(sides, side)] for side in TABLES}
            for name, sides in results.items()
        }
    log(f"done in {time.monotonic() - started:.0f}s")
    print("Figures:\n\n```json\n" + json.dumps(figures) + "\n```")


if __name__ == "__main__":
    main()
