"""`lsq-sync status --json` at scale: its time and peak memory with N leads, against the same
with none (the CLI's start-up and imports), on each database.

Leads are written straight into lsq_sync_lead (tests.support.seed_leads), spread over every
state status counts. Each measurement runs the real CLI in a child process, which reports its
own peak RSS (VmHWM); the median of --reps runs is shown.

    python bench/status.py [--db sqlite|postgresql|both] [--leads N] [--reps R]
    python bench/status.py --smoke    # both databases, few leads: checks it works

Progress goes to stderr; the markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import repo_root  # noqa: F401  (before tests.*: puts the checkout on sys.path)
import sqlalchemy as sa

from connector import Connector
from connector.testing.emulator import Emulator
from tests.support import (
    PEAK_RSS_CLI,
    PG_URL,
    config_dict,
    create_customers,
    load,
    postgres_schema,
    seed_leads,
    write_config,
)

SMOKE_LEADS = 2_000


@contextmanager
def database(db: str, pg_url: str) -> Iterator[str]:
    if db == "postgresql":
        with postgres_schema(pg_url) as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as directory:
        yield f"sqlite:///{Path(directory) / 'bench.db'}"


def measure(config_path: Path) -> tuple[float, float, dict[str, object]]:
    """One `status --json`: (seconds, peak RSS in MB, the document)."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_CLI, "--config", str(config_path), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"status failed: {result.stderr}")
    peak_kb = int(result.stderr.strip().splitlines()[-1].split()[1])
    return seconds, peak_kb / 1024, json.loads(result.stdout)


def bench(db: str, *, pg_url: str, leads: int, reps: int) -> dict[str, float]:
    with database(db, pg_url) as url, Emulator() as emulator, tempfile.TemporaryDirectory() as d:
        create_customers(url)
        config = config_dict(url, emulator)
        config_path = write_config(Path(d) / "bench.yaml", config)
        with Connector(load(config)) as sync:
            sync.init()
        empty = [measure(config_path) for _ in range(reps)]
        print(f"{db}: seeding {leads} leads", file=sys.stderr)
        engine = sa.create_engine(url)
        seeded_at = time.monotonic()
        expected = seed_leads(engine, "test", leads, datetime.now(UTC))
        engine.dispose()
        print(f"{db}: seeded in {time.monotonic() - seeded_at:.0f} s", file=sys.stderr)
        full = [measure(config_path) for _ in range(reps)]
        counted = full[-1][2]["leads"]
        assert isinstance(counted, dict)
        if counted["known"] != expected["known"] or counted["pending"] != expected["pending"]:
            raise SystemExit(f"{db}: status counted {counted}, expected {expected}")
    return {
        "empty_seconds": statistics.median(s for s, _, _ in empty),
        "empty_mb": statistics.median(m for _, m, _ in empty),
        "full_seconds": statistics.median(s for s, _, _ in full),
        "full_mb": statistics.median(m for _, m, _ in full),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--smoke", action="store_true", help="both databases, few leads")
    args = parser.parse_args(argv)
    databases = ("sqlite", "postgresql") if args.db == "both" or args.smoke else (args.db,)
    leads = SMOKE_LEADS if args.smoke else args.leads
    reps = 1 if args.smoke else args.reps
    print("| database | leads | status --json, s | peak RSS, MB | ratio to 0 leads (s / MB) |")
    print("|---|---|---|---|---|")
    for db in databases:
        found = bench(db, pg_url=args.pg_url, leads=leads, reps=reps)
        print(
            f"| {db} | {leads:,} | {found['full_seconds']:.2f} "
            f"(0 leads: {found['empty_seconds']:.2f}) | {found['full_mb']:.0f} "
            f"(0 leads: {found['empty_mb']:.0f}) | "
            f"{found['full_seconds'] / found['empty_seconds']:.2f}x / "
            f"{found['full_mb'] / found['empty_mb']:.2f}x |"
        )


if __name__ == "__main__":
    main()
