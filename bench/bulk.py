"""Benchmarks for issue 10: bulk updates against single calls, and the calls that matching
leads by email address costs.

    python bench/bulk.py [--leads N] [--match-leads M] [--db sqlite|postgresql] [--pg-url URL]
    python bench/bulk.py --smoke    # both databases, fast limits, few leads: checks it works

Both parts run against the bundled emulator, the connector configured to the emulator's own
limits, with `leadsquared.check_fields: false` (no field list is read, so every call counted
is a lead's) and the sample customers table's 4 mapped columns (tests.support.MAPPING), filled
with seeded random values.

1. Leads per second, bulk (`leadsquared.bulk.mode: always`, Lead/Bulk/UpdateV2, 25 leads a
   call) against single calls (`mode: off`, one Lead.Update per lead), on one backlog of N
   leads matched by ProspectId. The account allows 25 calls per 5 s, of which 5 per 5 s may be
   bulk calls (a bulk call takes a slot in both windows), and answers in 0.2-0.3 s. Each
   variant gets a fresh connector, source table and emulator, the same rows, `init`, then one
   timed `run_once` that pushes the whole backlog.
   - raw rate: leads pushed / seconds of the `run_once` (ingest included).
   - steady-state rate: a window admits its first N calls at once (25 single calls, 5 bulk
     ones), so a backlog's first window comes free and says nothing about pacing; and it is
     worth more to bulk (125 leads) than to single calls (25 leads), which inflates the raw
     ratio on a finite backlog. As in bench/pacing.py, the steady-state rate counts the leads
     carried by the calls after the first N, over the time they took: a[-1] - a[N-1], with a
     the sorted arrival times the emulator logged of the admitted update calls.
   - ideal ratio: 25 leads per bulk call x the bulk calls a second the account allows (the
     lower of its two windows) over the single calls a second: 25 x (5 / 5) / (25 / 5) = 5.0
     at the defaults. Share of ideal: measured ratio / ideal (target >= 0.9).
   - throttled: calls the emulator answered as throttled, and how many of them the bulk
     window refused (target 0).
   - mismatches: leads whose attributes in the emulator differ from their row's values
     afterwards (must be 0).
   The single-call variant of 2,000 leads takes about 400 s: 5 calls a second is the limit.
   Garbage is collected before each timed run: the emulator shares this process, and a
   collection of what the previous variant left (80 ms, seen) stalls a call on its way there
   for longer than the connector's margin (0.05 s, half of it for the way), which throttles
   the call a window later.
2. Calls per lead with `lead_id.match: EmailAddress` against ProspectId (bulk off), at a fast
   limit (1000 calls per 1 s, no latency) on a smaller backlog: the first run pushes the
   backlog (with EmailAddress, a Leads.GetByEmailaddress lookup before each lead's first
   Lead.Update), the second run follows a change to every row (lookups kept from the first).
   Calls per lead are given for each API.

Progress goes to stderr; the markdown tables to stdout. The script exits non-zero, after
printing the tables, when any lead mismatches, any call is throttled, or a variant makes calls
of the wrong kind.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import repo_root  # noqa: F401  (before tests.*: puts the checkout on sys.path)
import sqlalchemy as sa
from run import database

from connector.bulk import BULK_API, MAX_LEADS_PER_BULK_CALL
from connector.config import Config
from connector.sync import Connector
from connector.testing.emulator import Emulator
from connector.testing.emulator.state import RecordedRequest
from connector.values import normalise
from tests.support import MAPPING, PG_URL, config_dict, load, wait_until_readable

UPDATE_API = "Lead.Update"
LOOKUP_API = "Leads.GetByEmailaddress"
CITIES = ["Pune", "Goa", "Agra", "Delhi", "Kochi", "Surat", "Patna"]
PLANS = ["free", "pro", "team", "enterprise"]
SOURCE_DDL = (
    "CREATE TABLE {table} (id INTEGER PRIMARY KEY, email TEXT, phone TEXT, city TEXT, "
    "plan TEXT, score INTEGER, notes TEXT, lsq_prospect_id TEXT)"
)


@dataclass(frozen=True)
class Account:
    """The account's limits, which the emulator enforces and the connector is configured to:
    `calls` per `window` seconds for every call, `bulk_calls` per `bulk_window` seconds for
    bulk calls on top; and the emulator's latency per call."""

    calls: int
    window: float
    bulk_calls: int
    bulk_window: float
    latency: tuple[float, float]

    @property
    def single_leads_per_second(self) -> float:
        return self.calls / self.window

    @property
    def bulk_leads_per_second(self) -> float:
        """A bulk call passes both windows: the lower rate of the two binds."""
        calls_per_second = min(self.bulk_calls / self.bulk_window, self.calls / self.window)
        return MAX_LEADS_PER_BULK_CALL * calls_per_second

    @property
    def ideal_ratio(self) -> float:
        return self.bulk_leads_per_second / self.single_leads_per_second

    def first_window(self, bulk: bool) -> int:
        """The calls a window admits at once: N of the steady-state rate."""
        return min(self.bulk_calls, self.calls) if bulk else self.calls


REAL = Account(calls=25, window=5.0, bulk_calls=5, bulk_window=5.0, latency=(0.2, 0.3))
# More bulk calls than one window admits, so the pacing after the first window runs too.
SMOKE = Account(calls=20, window=0.5, bulk_calls=2, bulk_window=0.5, latency=(0.0, 0.01))
# Part 2 counts calls, not time: a limit that never binds, no latency.
FAST = Account(calls=1000, window=1.0, bulk_calls=1000, bulk_window=1.0, latency=(0.0, 0.0))
SMOKE_LEADS, SMOKE_MATCH_LEADS = 60, 20


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def backlog(leads: int, seed: int) -> list[dict[str, Any]]:
    """One row per lead, seeded random values in the mapped columns; the same for every
    variant. Lead i is L<i> in the emulator, with the row's email address."""
    rng = random.Random(seed)
    return [
        {
            "id": i,
            "email": f"user{i:05d}@example.com",
            "phone": f"98{rng.randrange(10**8):08d}",
            "city": rng.choice(CITIES),
            "plan": rng.choice(PLANS),
            "score": rng.randrange(1000),
            "lead": f"L{i:05d}",
        }
        for i in range(leads)
    ]


def create_table(engine: sa.Engine, table: str) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql(SOURCE_DDL.format(table=table))


def insert_rows(engine: sa.Engine, table: str, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                f"INSERT INTO {table} (id, email, phone, city, plan, score, notes, "
                "lsq_prospect_id) VALUES (:id, :email, :phone, :city, :plan, :score, 'n', :lead)"
            ),
            rows,
        )


def change_every_row(engine: sa.Engine, table: str, leads: int, rng: random.Random) -> None:
    """Every row gets a new score and a random city: one net change per lead at least."""
    with engine.begin() as connection:
        connection.execute(
            sa.text(f"UPDATE {table} SET score = score + 1, city = :city WHERE id = :id"),
            [{"id": i, "city": rng.choice(CITIES)} for i in range(leads)],
        )


def seed_leads(emulator: Emulator, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        emulator.add_lead(row["lead"], EmailAddress=row["email"])


def mismatches(url: str, table: str, emulator: Emulator) -> int:
    """Leads whose attributes in the emulator are not their row's values, as sent."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text(f"SELECT * FROM {table}")).mappings().all()
    engine.dispose()
    wrong = 0
    for row in rows:
        expected = {"EmailAddress": row["email"]}
        for column, attribute in MAPPING.items():
            value = normalise(row[column])
            if value is not None:
                expected[attribute] = value
        if emulator.lead(row["lsq_prospect_id"]) != expected:
            wrong += 1
    return wrong


def make_config(
    url: str, emulator: Emulator, name: str, account: Account, **sections: Any
) -> Config:
    leadsquared = {
        "rate_limit": {"calls": account.calls, "window_seconds": account.window},
        "check_fields": False,
        **sections.pop("leadsquared", {}),
    }
    return load(
        config_dict(
            url,
            emulator,
            name=name,
            leadsquared=leadsquared,
            source={"table": f"{name}_customers"},
            **sections,
        )
    )


def prepare(
    connector: Connector, engine: sa.Engine, table: str, rows: list[dict[str, Any]]
) -> None:
    connector.init()
    insert_rows(engine, table, rows)
    # On a shared PostgreSQL server, another session's open transaction would hide the new
    # changes from ingest: wait until they are readable, so the timed run finds them all.
    wait_until_readable(engine)


# Part 1: bulk against single calls


@dataclass
class Push:
    label: str
    bulk: bool
    leads: int
    pushed: int
    seconds: float
    api: str
    calls: int  # admitted calls of `api`
    throttled: int
    bulk_throttled: int
    other_calls: Counter[str]  # calls to other APIs: none expected
    first_window: int
    steady_leads: int  # carried by the admitted calls after the first window's
    span: float  # a[-1] - a[N-1]
    mismatches: int
    account: Account

    @property
    def rate(self) -> float:
        return self.pushed / self.seconds

    @property
    def steady_rate(self) -> float | None:
        return self.steady_leads / self.span if self.span > 0 else None

    @property
    def limit_rate(self) -> float:
        account = self.account
        return account.bulk_leads_per_second if self.bulk else account.single_leads_per_second


def carried(request: RecordedRequest) -> int:
    if request.api == BULK_API:
        return len(request.body["LeadPropertiesList"])
    return 1


def measure_push(
    url: str, rows: list[dict[str, Any]], *, bulk: bool, account: Account, seed: int
) -> Push:
    mode = "always" if bulk else "off"
    label = f"bulk (`bulk.mode: {mode}`)" if bulk else f"single calls (`bulk.mode: {mode}`)"
    name = f"bulk_{mode}"
    table = f"{name}_customers"
    api = BULK_API if bulk else UPDATE_API
    with Emulator(
        rate_limit=(account.calls, account.window),
        bulk_rate_limit=(account.bulk_calls, account.bulk_window),
    ) as emulator:
        emulator.set_latency(*account.latency, seed=seed)
        seed_leads(emulator, rows)
        engine = sa.create_engine(url)
        create_table(engine, table)
        config = make_config(
            url,
            emulator,
            name,
            account,
            leadsquared={
                "bulk": {
                    "mode": mode,
                    "rate_limit": {
                        "calls": account.bulk_calls,
                        "window_seconds": account.bulk_window,
                    },
                }
            },
        )
        with Connector(config) as connector:
            prepare(connector, engine, table, rows)
            # The emulator shares this process: a collection of the previous variant's garbage
            # (80 ms, seen) would stall a call of the first window on its way there, beyond
            # the margin, and the call a window later would be throttled.
            gc.collect()
            log(f"{label}: pushing a backlog of {len(rows)} leads")
            started = time.monotonic()
            report = connector.run_once()
            seconds = time.monotonic() - started
        engine.dispose()
        log(f"{label}: {report.counts.leads_pushed} leads in {seconds:.1f} s")
        if report.counts.leads_pushed != len(rows):
            raise SystemExit(f"{label}: pushed {report.counts.leads_pushed} of {len(rows)}")
        requests = emulator.requests
        admitted = sorted(
            (r for r in requests if r.api == api and r.outcome != "throttled"),
            key=lambda r: r.arrived_at,
        )
        first = account.first_window(bulk)
        later = admitted[first:]
        return Push(
            label,
            bulk=bulk,
            leads=len(rows),
            pushed=report.counts.leads_pushed,
            seconds=seconds,
            api=api,
            calls=len(admitted),
            throttled=emulator.throttled_count,
            bulk_throttled=emulator.bulk_throttled_count,
            other_calls=Counter(r.api for r in requests if r.api != api),
            first_window=first,
            steady_leads=sum(carried(r) for r in later),
            span=later[-1].arrived_at - admitted[first - 1].arrived_at if later else 0.0,
            mismatches=mismatches(url, table, emulator),
            account=account,
        )


# Part 2: calls per lead, EmailAddress against ProspectId


@dataclass
class Matching:
    match: str
    leads: int
    pushed: list[int] = field(default_factory=list)  # per run
    calls: list[Counter[str]] = field(default_factory=list)  # per run, by API
    throttled: int = 0
    mismatches: int = 0


def measure_matching(url: str, rows: list[dict[str, Any]], *, match: str, seed: int) -> Matching:
    name = f"match_{match.lower()}"
    table = f"{name}_customers"
    column = "email" if match == "EmailAddress" else "lsq_prospect_id"
    result = Matching(match, len(rows))
    rng = random.Random(seed + 1)
    with Emulator(
        rate_limit=(FAST.calls, FAST.window), bulk_rate_limit=(FAST.bulk_calls, FAST.bulk_window)
    ) as emulator:
        seed_leads(emulator, rows)
        engine = sa.create_engine(url)
        create_table(engine, table)
        config = make_config(url, emulator, name, FAST, lead_id={"column": column, "match": match})
        with Connector(config) as connector:
            prepare(connector, engine, table, rows)
            for run in ("first run: the backlog", "second run: every row changed"):
                if result.pushed:
                    change_every_row(engine, table, len(rows), rng)
                    wait_until_readable(engine)
                emulator.clear_requests()
                log(f"match {match}, {run}")
                report = connector.run_once()
                result.pushed.append(report.counts.leads_pushed)
                result.calls.append(Counter(r.api for r in emulator.requests))
        engine.dispose()
        if result.pushed != [len(rows)] * 2:
            raise SystemExit(f"match {match}: pushed {result.pushed} of {len(rows)} per run")
        result.throttled = emulator.throttled_count
        result.mismatches = mismatches(url, table, emulator)
    return result


# The report


def ratio(bulk: float | None, single: float | None) -> float | None:
    return bulk / single if bulk is not None and single else None


def shown(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def print_pushes(bulk: Push, single: Push, account: Account) -> None:
    print(
        "| push of the backlog | leads | update calls | throttled (by the bulk window) | "
        "mismatches | seconds | **leads/s** | N | a[-1] - a[N-1] | **steady leads/s** | "
        "share of its limit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for push in (bulk, single):
        steady = push.steady_rate
        print(
            f"| {push.label} | {push.pushed} | {push.calls} {push.api} | "
            f"{push.throttled} ({push.bulk_throttled}) | {push.mismatches} | "
            f"{push.seconds:.1f} | **{push.rate:.2f}** | {push.first_window} | "
            f"{push.span:.2f} s | **{shown(steady, '.2f')}** | "
            f"{shown(ratio(steady, push.limit_rate), '.3f')} |"
        )
    raw = ratio(bulk.rate, single.rate)
    steady = ratio(bulk.steady_rate, single.steady_rate)
    ideal = account.ideal_ratio
    print()
    print("| bulk ÷ single | raw | steady state | target |")
    print("|---|---|---|---|")
    print(f"| leads/s | {shown(raw, '.2f')}x | **{shown(steady, '.2f')}x** | |")
    print(f"| ideal | {ideal:.2f}x | {ideal:.2f}x | |")
    print(
        f"| share of ideal | {shown(ratio(raw, ideal), '.3f')} | "
        f"**{shown(ratio(steady, ideal), '.3f')}** | >= 0.9 |"
    )


def print_matching(results: list[Matching]) -> None:
    apis = sorted({api for result in results for calls in result.calls for api in calls})
    print(
        "| lead_id.match | run | leads pushed | "
        + " | ".join(f"{api} / lead" for api in apis)
        + " | **calls / lead** |"
    )
    print("|---|---|---|" + "---|" * len(apis) + "---|")
    for result in results:
        for number, (pushed, calls) in enumerate(zip(result.pushed, result.calls, strict=True)):
            run = "first (the backlog)" if number == 0 else "second (every row changed)"
            per_api = " | ".join(f"{calls[api] / pushed:.3f}" for api in apis)
            total = sum(calls.values()) / pushed
            print(f"| {result.match} | {run} | {pushed} | {per_api} | **{total:.3f}** |")
    print()
    print(
        "Throttled: "
        + ", ".join(f"{r.match} {r.throttled}" for r in results)
        + "; mismatches after both runs: "
        + ", ".join(f"{r.match} {r.mismatches}" for r in results)
        + "."
    )


def problems(bulk: Push, single: Push, matching: list[Matching]) -> list[str]:
    found = []
    for push in (bulk, single):
        if push.mismatches:
            found.append(f"{push.label}: {push.mismatches} leads differ from their rows")
        if push.throttled:
            found.append(f"{push.label}: {push.throttled} calls throttled")
        if push.other_calls:
            found.append(f"{push.label}: calls other than {push.api}: {dict(push.other_calls)}")
    for result in matching:
        if result.mismatches:
            found.append(f"match {result.match}: {result.mismatches} leads differ from their rows")
        if result.throttled:
            found.append(f"match {result.match}: {result.throttled} calls throttled")
    return found


def bench(
    db: str, *, pg_url: str, leads: int, match_leads: int, seed: int, account: Account
) -> list[str]:
    """Both parts on one database; prints the tables, returns the problems found."""
    rows = backlog(leads, seed)
    with database(db, pg_url) as url:
        bulk = measure_push(url, rows, bulk=True, account=account, seed=seed)
        single = measure_push(url, rows, bulk=False, account=account, seed=seed)
        match_rows = backlog(match_leads, seed)
        matching = [
            measure_matching(url, match_rows, match=match, seed=seed)
            for match in ("ProspectId", "EmailAddress")
        ]
    print(
        f"`python bench/bulk.py --leads {leads} --match-leads {match_leads} --db {db}`: "
        f"limit {account.calls} calls per {account.window:g} s, of which "
        f"{account.bulk_calls} bulk calls per {account.bulk_window:g} s; latency "
        f"{account.latency[0]:g}-{account.latency[1]:g} s per call; a backlog of {leads} leads "
        "matched by ProspectId; `check_fields: false`.\n"
    )
    print_pushes(bulk, single, account)
    print()
    print(
        f"Calls per lead, bulk off, {match_leads} leads, limit {FAST.calls} calls per "
        f"{FAST.window:g} s, no latency:\n"
    )
    print_matching(matching)
    print()
    return problems(bulk, single, matching)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--leads",
        type=int,
        default=2000,
        help="backlog of part 1 (> 125: past the first bulk window)",
    )
    parser.add_argument("--match-leads", type=int, default=200, help="backlog of part 2")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--smoke", action="store_true", help="both databases, fast limits: checks it works"
    )
    args = parser.parse_args(argv)
    found: list[str] = []
    if args.smoke:
        for db in ("sqlite", "postgresql"):
            found += bench(
                db,
                pg_url=args.pg_url,
                leads=SMOKE_LEADS,
                match_leads=SMOKE_MATCH_LEADS,
                seed=args.seed,
                account=SMOKE,
            )
    else:
        found = bench(
            args.db,
            pg_url=args.pg_url,
            leads=args.leads,
            match_leads=args.match_leads,
            seed=args.seed,
            account=REAL,
        )
    if found:
        for problem in found:
            print(f"problem: {problem}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
