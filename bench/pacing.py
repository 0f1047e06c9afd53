"""Benchmarks for talking to LeadSquared: rate-limit utilisation, and calls saved against a
naive sync.

    python bench/pacing.py [--leads N] [--db sqlite|postgresql] [--pg-url URL]
                           [--jitter SECONDS [SECONDS ...]]
    python bench/pacing.py --smoke    # both databases, a fast limit, few leads: checks it works

One workload, one run of the connector against the bundled emulator with the account's real
limit (25 calls per 5 s by default) and 250 ms +/- 50 ms of latency per call:

- utilisation: the sustained call rate over the limit's rate, N / W. A window admits N calls
  at once, so a backlog's first N calls come free and say nothing about pacing; the rate is
  the calls after them, over the time they took: (calls - N) / (a[-1] - a[N-1]), with a the
  sorted arrival times at the emulator. 1.0 is the most any client can sustain unthrottled.
- throttled: calls the emulator answered as throttled (the target is none).
- the same push with one call in flight, to show what latency alone allows.
- with --jitter: the push again for each jitter given, the emulator delaying each call's
  arrival by a random time up to that long (seeded) before the limit counts it, as a network's
  variable delay does; utilisation and throttled calls for each.
- calls and attributes sent, against a naive sync that makes one call per written row with
  every mapped field, on the same writes.

Progress goes to stderr; the markdown table to stdout.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import repo_root  # noqa: F401  (before tests.*: puts the checkout on sys.path)
import sqlalchemy as sa
from run import database

from connector.config import Config
from connector.sync import Connector
from connector.testing.emulator import Emulator
from tests.support import MAPPING, PG_URL, config_dict, load

CITIES = ["Pune", "Goa", "Agra", "Delhi", "Kochi"]
PLANS = ["free", "pro", "team"]


@dataclass(frozen=True)
class Account:
    """The account's limit (N calls per W seconds) and the emulator's latency per call."""

    calls: int
    window: float
    latency: tuple[float, float]
    jitter: float = 0.0


REAL = Account(calls=25, window=5.0, latency=(0.2, 0.3))
# Still more leads than one window admits, so the pacing after the first window runs too.
SMOKE = Account(calls=5, window=0.5, latency=(0.0, 0.01))
SMOKE_JITTER = 0.05
SMOKE_LEADS, SMOKE_ROUNDS = 20, 1


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_config(
    url: str, emulator: Emulator, name: str, max_in_flight: int | None, account: Account
) -> Config:
    leadsquared: dict[str, Any] = {
        "rate_limit": {"calls": account.calls, "window_seconds": account.window},
    }
    if max_in_flight is not None:
        leadsquared["max_in_flight"] = max_in_flight
    return load(
        config_dict(
            url,
            emulator,
            name=name,
            leadsquared=leadsquared,
            source={"table": f"{name}_customers"},
        )
    )


def insert_rows(engine: sa.Engine, table: str, leads: int, rng: random.Random) -> int:
    """One row per lead; returns the number of row writes."""
    with engine.begin() as connection:
        for i in range(leads):
            connection.execute(
                sa.text(
                    f"INSERT INTO {table} (id, phone, city, plan, score, notes, lsq_prospect_id) "
                    "VALUES (:id, :phone, :city, :plan, :score, 'n', :lead)"
                ),
                {
                    "id": i,
                    "phone": f"98{i:08d}",
                    "city": rng.choice(CITIES),
                    "plan": rng.choice(PLANS),
                    "score": rng.randrange(100),
                    "lead": f"L{i:05d}",
                },
            )
    return leads


def update_round(engine: sa.Engine, table: str, leads: int, rng: random.Random) -> int:
    """Every row written once or twice, as an application does: a mapped value changed, a
    mapped value rewritten unchanged, an unmapped column changed, or a mapped value changed
    and then changed back. Returns the number of row writes."""
    writes = 0
    with engine.begin() as connection:
        for i in range(leads):
            kind = rng.choice(["mapped", "same", "unmapped", "back"])
            if kind == "mapped":
                statements = [f"UPDATE {table} SET score = score + 1 WHERE id = :id"]
            elif kind == "same":
                statements = [f"UPDATE {table} SET city = city WHERE id = :id"]
            elif kind == "unmapped":
                statements = [f"UPDATE {table} SET notes = notes || 'x' WHERE id = :id"]
            else:
                statements = [
                    f"UPDATE {table} SET plan = 'changing' WHERE id = :id",
                    f"UPDATE {table} SET plan = :plan WHERE id = :id",
                ]
            original = connection.execute(
                sa.text(f"SELECT plan FROM {table} WHERE id = :id"), {"id": i}
            ).scalar_one()
            for statement in statements:
                connection.execute(sa.text(statement), {"id": i, "plan": original})
                writes += 1
    return writes


@dataclass
class Push:
    label: str
    calls: int  # Lead.Update calls of the first run: the backlog
    throttled: int
    span: float  # from the last arrival of the first window's calls to the very last
    seconds: float
    total_calls: int  # over the first run and the runs after each round of updates
    total_attributes: int
    row_writes: int
    account: Account
    margin: float  # the limiter's margin at the end of the first run

    @property
    def utilisation(self) -> float:
        limit = self.account
        return (self.calls - limit.calls) / (limit.calls * self.span / limit.window)


def measure_push(
    url: str,
    leads: int,
    *,
    rounds: int,
    max_in_flight: int | None,
    label: str,
    seed: int,
    account: Account,
    name: str | None = None,
) -> Push:
    name = name or f"pacing_{max_in_flight or 'default'}"
    table = f"{name}_customers"
    rng = random.Random(seed)
    with Emulator(
        rate_limit=(account.calls, account.window),
        jitter_seconds=account.jitter,
        jitter_seed=seed,
    ) as emulator:
        emulator.set_latency(*account.latency, seed=seed)
        for i in range(leads):
            emulator.add_lead(f"L{i:05d}")
        engine = sa.create_engine(url)
        with engine.begin() as connection:
            connection.exec_driver_sql(
                f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, phone TEXT, city TEXT, "
                "plan TEXT, score INTEGER, notes TEXT, lsq_prospect_id TEXT)"
            )
        config = make_config(url, emulator, name, max_in_flight, account)
        with Connector(config) as connector:
            connector.init()
            writes = insert_rows(engine, table, leads, rng)
            log(f"{label}: pushing a backlog of {leads} leads")
            started = time.monotonic()
            report = connector.run_once()
            seconds = time.monotonic() - started
            if report.counts.leads_pushed != leads:
                raise SystemExit(
                    f"{label}: pushed {report.counts.leads_pushed} of {leads}: {report}"
                )
            margin = connector.limiter.margin
            backlog = [r for r in emulator.requests if r.api == "Lead.Update"]
            throttled = emulator.throttled_count
            for number in range(rounds):
                writes += update_round(engine, table, leads, rng)
                log(f"{label}: round {number + 1} of updates")
                connector.run_once()
        engine.dispose()
        updates = [r for r in emulator.requests if r.api == "Lead.Update"]
        expected = source_state(url, table)
        if {lead_id: emulator.lead(lead_id) for lead_id in expected} != expected:
            raise SystemExit(f"{label}: the emulator does not hold the source's values")
        arrivals = sorted(r.arrived_at for r in backlog)
        return Push(
            label,
            calls=len(backlog),
            throttled=throttled,
            span=arrivals[-1] - arrivals[account.calls - 1],
            seconds=seconds,
            total_calls=len(updates),
            total_attributes=sum(len(r.body or []) for r in updates),
            row_writes=writes,
            account=account,
            margin=margin,
        )


def source_state(url: str, table: str) -> dict[str, dict[str, str]]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text(f"SELECT * FROM {table}")).mappings().all()
    engine.dispose()
    return {
        row["lsq_prospect_id"]: {
            attribute: str(row[column]) for column, attribute in MAPPING.items()
        }
        for row in rows
    }


def pacing(
    db: str,
    *,
    pg_url: str,
    leads: int,
    rounds: int,
    seed: int,
    account: Account,
    jitters: list[float],
) -> None:
    with database(db, pg_url) as url:
        paced = measure_push(
            url,
            leads,
            rounds=rounds,
            max_in_flight=None,
            label="default config",
            seed=seed,
            account=account,
        )
        single = measure_push(
            url,
            leads,
            rounds=0,
            max_in_flight=1,
            label="one call in flight",
            seed=seed,
            account=account,
        )
        jittered = [
            measure_push(
                url,
                leads,
                rounds=0,
                max_in_flight=None,
                label=f"jitter {jitter:g} s",
                seed=seed,
                account=replace(account, jitter=jitter),
                name=f"pacing_jitter_{number}",
            )
            for number, jitter in enumerate(jitters)
        ]
    naive_calls = paced.row_writes
    naive_attributes = naive_calls * len(MAPPING)
    print(
        f"`python bench/pacing.py --leads {leads} --rounds {rounds} --db {db}`: "
        f"limit {account.calls} calls per {account.window:g} s, latency {account.latency[0]:g}-"
        f"{account.latency[1]:g} s per call, a backlog of {leads} leads.\n"
    )
    print("| push of the backlog | calls | throttled | a[-1] - a[N-1] | utilisation |")
    print("|---|---|---|---|---|")
    for push in (paced, single):
        print(
            f"| {push.label} | {push.calls} | {push.throttled} | {push.span:.2f} s | "
            f"**{push.utilisation:.3f}** |"
        )
    print()
    print(
        f"The backlog, then {rounds} rounds of updates each followed by a run "
        f"({paced.row_writes} row writes in all):\n"
    )
    print("| sync | Lead.Update calls | attributes sent |")
    print("|---|---|---|")
    print(
        f"| naive: one call per row write, every mapped field | {naive_calls} | "
        f"{naive_attributes} |"
    )
    print(f"| lsq-sync | {paced.total_calls} | {paced.total_attributes} |")
    print(
        f"| lsq-sync / naive | {paced.total_calls / naive_calls:.3f} | "
        f"{paced.total_attributes / naive_attributes:.3f} |"
    )
    if jittered:
        print(
            "\nThe backlog's push, default config, each call's arrival delayed by up to the "
            f"jitter (uniform, seed {seed}) before the limit counts it:\n"
        )
        print("| jitter | calls | throttled | margin at the end | a[-1] - a[N-1] | utilisation |")
        print("|---|---|---|---|---|---|")
        for push in jittered:
            print(
                f"| {push.account.jitter:g} s | {push.calls} | {push.throttled} | "
                f"{push.margin:.3f} s | {push.span:.2f} s | **{push.utilisation:.3f}** |"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=200, help="backlog of leads (>= 150)")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of updates after it")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--latency",
        type=float,
        nargs=2,
        default=REAL.latency,
        metavar=("MIN", "MAX"),
        help="the emulator's time to answer a call, after counting it (default 0.2 0.3)",
    )
    parser.add_argument(
        "--jitter",
        type=float,
        nargs="+",
        default=[],
        metavar="SECONDS",
        help="push the backlog again with each call's arrival delayed by up to this long",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="both databases, a fast limit: checks it works"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        for db in ("sqlite", "postgresql"):
            pacing(
                db,
                pg_url=args.pg_url,
                leads=SMOKE_LEADS,
                rounds=SMOKE_ROUNDS,
                seed=args.seed,
                account=SMOKE,
                jitters=[SMOKE_JITTER],
            )
        return
    pacing(
        args.db,
        pg_url=args.pg_url,
        leads=args.leads,
        rounds=args.rounds,
        seed=args.seed,
        account=replace(REAL, latency=tuple(args.latency)),
        jitters=args.jitter,
    )


if __name__ == "__main__":
    main()
