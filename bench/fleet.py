"""Many connectors on one LeadSquared account, shared by two daemons: the calls per second
against the account's limit, and how long a killed daemon's connectors take to move.

    python bench/fleet.py [--connectors C] [--leads N] [--db sqlite|postgresql] [--pg-url URL]
    python bench/fleet.py --smoke    # both databases, a fast limit, few connectors

C connectors (20 by default), each with its own table of N leads (20), all on one account with
the real limit (25 calls per 5 s, 0.2-0.3 s per call), which the emulator enforces. Two
`lsq-sync daemon` processes are started with every config; once they have shared the
connectors out, every lead's row is written at once, and the daemons push the C x N leads.

- split: how many connectors each daemon runs (the target: half each).
- utilisation: the sustained call rate over the limit's rate, as bench/pacing.py measures it:
  (calls - N) / (a[-1] - a[N-1]) over N / W, a the sorted arrival times at the emulator (the
  first window's N calls come free). 1.0 is the most any client can sustain unthrottled.
- throttled: calls the emulator answered as throttled (the target: none).
- takeover: the daemon running more connectors is killed with -9; the seconds from the kill
  until the other has taken over the last of them (its lease epoch bumped, read from the
  database every 20 ms), and until a change then written to each of them is pushed. The run
  lock's lease is stale after 5 s: most of the takeover is that wait, which keeps a killed
  daemon's calls in flight from being sent again while it might still be alive.

Progress goes to stderr; the markdown table to stdout.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import repo_root  # noqa: F401  (before tests.*: puts the checkout on sys.path)
import sqlalchemy as sa
from pacing import REAL, SMOKE, Account, log
from run import database

from connector.testing.emulator import Emulator
from tests.e2e.fleet import Daemon, Member, converged, make_members, write_rows
from tests.support import PG_URL, wait_until


@dataclass(frozen=True)
class Result:
    split: tuple[int, int]
    calls: int
    throttled: int
    seconds: float
    utilisation: float
    moved: int
    takeover: float
    pushed_after: float


def sustained(arrivals: list[float], account: Account) -> float:
    """The share of the limit's rate sustained after the first window's free calls."""
    n = account.calls
    if len(arrivals) <= n or arrivals[-1] <= arrivals[n - 1]:
        return float("nan")
    rate = (len(arrivals) - n) / (arrivals[-1] - arrivals[n - 1])
    return rate / (account.calls / account.window)


def updates(emulator: Emulator) -> int:
    return sum(r.api == "Lead.Update" for r in emulator.requests)


def wait_gently(condition: Callable[[], bool], timeout: float = 3600) -> None:
    """wait_until, looking twice a second: reading every table and lead while the emulator
    answers would delay its answers."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {condition}")
        time.sleep(0.5)


def epochs(url: str, names: set[str]) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT connector, epoch FROM lsq_sync_lease")).all()
    finally:
        engine.dispose()
    return {name: epoch for name, epoch in rows if name in names}


def one_run(url: str, account: Account, connectors: int, leads: int, directory: Path) -> Result:
    with Emulator(rate_limit=(account.calls, account.window)) as emulator:
        emulator.set_latency(*account.latency, seed=11)
        members = make_members(
            url,
            emulator,
            directory,
            connectors,
            leads=leads,
            sync={"interval_seconds": 1},
            leadsquared={"rate_limit": {"calls": account.calls, "window_seconds": account.window}},
        )
        configs = [member.config for member in members]
        daemons = [Daemon.start(configs), Daemon.start(configs)]
        try:
            return measure(url, emulator, account, members, daemons)
        finally:
            for daemon in daemons:
                daemon.kill()


def measure(
    url: str,
    emulator: Emulator,
    account: Account,
    members: list[Member],
    daemons: list[Daemon],
) -> Result:
    names = {member.name for member in members}

    def shared_out(_: Daemon) -> bool:
        owned = [daemon.owned for daemon in daemons]
        return set().union(*owned) == names and sum(map(len, owned)) == len(names)

    daemons[0].wait_for(shared_out, timeout=120)
    # On SQLite the lock files decide, not a fair share: the split may stay lopsided.
    split = (len(daemons[0].owned), len(daemons[1].owned))
    log(f"shared out: {split}; pushing {sum(m.leads for m in members)} leads")
    # The emulator shares this process: a collection of the set-up's garbage during the push
    # would hold calls on their way, as would polling it hard.
    gc.collect()
    started = time.monotonic()
    write_rows(url, members, version=1)
    leads = sum(member.leads for member in members)
    wait_gently(lambda: updates(emulator) >= leads and converged(url, emulator, members))
    seconds = time.monotonic() - started
    arrivals = sorted(r.arrived_at for r in emulator.requests if r.api == "Lead.Update")

    victim, survivor = sorted(daemons, key=lambda d: len(d.owned), reverse=True)
    moving = set(victim.owned)
    before = epochs(url, moving)
    log(f"killing the daemon running {len(moving)} connectors")
    killed_at = time.monotonic()
    victim.kill()
    wait_until(
        lambda: all(e > before[name] for name, e in epochs(url, moving).items()), timeout=120
    )
    takeover = time.monotonic() - killed_at
    # One lead each: the time to push them is the takeover's, not the rate limit's.
    moved = [replace(m, leads=1) for m in members if m.name in moving]
    write_rows(url, moved, version=2)
    wait_until(lambda: converged(url, emulator, moved), timeout=120)
    pushed_after = time.monotonic() - killed_at
    survivor.wait_for(lambda d: d.owned == names, timeout=60)
    return Result(
        split,
        len(arrivals),
        emulator.throttled_count,
        seconds,
        sustained(arrivals, account),
        len(moving),
        takeover,
        pushed_after,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connectors", type=int, default=20)
    parser.add_argument("--leads", type=int, default=20, help="leads per connector")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on both databases")
    args = parser.parse_args(argv)
    plans = (
        [("sqlite", SMOKE, 4, 3), ("postgresql", SMOKE, 4, 3)]
        if args.smoke
        else [(args.db, REAL, args.connectors, args.leads)]
    )
    failed = False
    for db, account, connectors, leads in plans:
        print(f"`python bench/fleet.py --connectors {connectors} --leads {leads} --db {db}`\n")
        print(
            "| connectors | split | calls | throttled | seconds | calls/s (limit) | "
            "utilisation | moved | taken over after kill -9 | pushed after kill -9 |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        with database(db, args.pg_url) as url, tempfile.TemporaryDirectory() as directory:
            log(f"{db}: {connectors} connectors of {leads} leads, 2 daemons")
            result = one_run(url, account, connectors, leads, Path(directory))
        rate = result.calls / result.seconds
        print(
            f"| {connectors} | {result.split[0]}/{result.split[1]} | {result.calls} | "
            f"{result.throttled} | {result.seconds:.1f} | {rate:.2f} "
            f"({account.calls / account.window:.0f}) | **{result.utilisation:.3f}** | "
            f"{result.moved} | {result.takeover:.1f} s | {result.pushed_after:.1f} s |"
        )
        print()
        failed |= bool(result.throttled) or result.calls != connectors * leads
    if failed:
        print("problem: a call was throttled, or a lead was sent more than once", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
