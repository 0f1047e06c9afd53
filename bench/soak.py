"""A soak of the daemon as a production user runs it (issue 12), on PostgreSQL.

    python bench/soak.py [--minutes 15] [--rate-limit 25|100] [--bulk] [--pg-url URL]
    python bench/soak.py --smoke    # a minute, few rows: checks the machinery, not the figures

The scenario:
- a table of `--rows` rows (5,000), each linked to a lead the emulator already holds with the
  row's values, and `lsq-sync daemon` as a subprocess at a 2 s interval, 8 calls in flight;
- a writer committing `--write-rate` row writes a second (mapped changes, reverts of one,
  no-ops and unmapped updates), plus an UPDATE of `--burst-rows` rows every two minutes;
- the bundled emulator at the account's limit (25 calls per 5 s; `--rate-limit 100` for 100),
  with 0.2-0.35 s of latency and 5% faults (503s and dropped connections).

The defaults fit a write rate the limit can carry: at 25 calls per 5 s, 4 writes a second and
bursts of 200 rows; at 100, 15 writes a second and bursts of 500 (the issue's soak). Run
history is kept 3 minutes (`sync.keep_runs_days`), so that a short soak shows whether its
retention holds `lsq_sync_run` flat.

Every 30 s it samples the daemon's RSS and CPU and the size of every `lsq_sync_*` table. When
the writer stops, it waits for the daemon to push what is pending, sends SIGTERM, and checks:
- mismatches: leads whose attributes in the emulator are not their row's values (target 0);
- identical re-sends: a lead sent the same attributes again right after a successful call
  carrying them (target 0);
- throttled calls (target 0);
- commit -> push latency: from a mapped change's commit to the arrival at the emulator of the
  lead's next call carrying that attribute, p50/p90/p99, for changes made outside bursts (a
  burst lasts from its commit until its last lead's call) and for all of them; a change
  superseded by another of the same attribute before that call (a revert, say, which may
  leave nothing to send) is left out, its call counted for the later change;
- the exit time after SIGTERM;
- RSS growth after the first 2 minutes (target at most 10 MiB), and each table's growth.

Progress goes to stderr, the markdown report to stdout. It exits 1 when a correctness check
fails (a mismatch, a re-send, a throttled call, the daemon's exit status), never on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
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

from connector.testing.emulator import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, Emulator
from connector.values import normalise
from tests.support import (
    CUSTOMERS_DDL,
    MAPPING,
    PG_URL,
    postgres_schema,
    wait_until_readable,
    write_config,
)

CONNECTOR = "soak"
CITIES = ["Pune", "Goa", "Agra", "Delhi", "Kochi", "Surat", "Nagpur"]
PLANS = ["free", "pro", "team", "enterprise"]
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    minutes: float
    rows: int
    write_rate: float
    burst_rows: int
    burst_every: float
    sample_every: float
    calls: int
    window: float
    bulk: bool
    latency: tuple[float, float] = (0.2, 0.35)
    fault_rate: float = 0.05
    interval: float = 2.0
    max_in_flight: int = 8
    keep_runs_minutes: float = 3.0
    seed: int = 12


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the application's table and its writer ------------------------------------------------


def row_values(rng: random.Random, n: int) -> dict[str, Any]:
    return {
        "id": n,
        "phone": f"98{rng.randrange(10**8):08d}",
        "city": rng.choice(CITIES),
        "plan": rng.choice(PLANS),
        "score": rng.randrange(100),
        "notes": "seed",
        "lsq_prospect_id": f"L{n:06d}",
    }


def expected(row: Any) -> dict[str, str]:
    """A row's lead as LeadSquared should hold it (the writer never writes a NULL)."""
    found: dict[str, str] = {}
    for column, attribute in MAPPING.items():
        value = normalise(row[column])
        if value is not None:
            found[attribute] = value
    return found


def seed(engine: sa.Engine, emulator: Emulator, scenario: Scenario) -> None:
    rng = random.Random(scenario.seed)
    rows = [row_values(rng, n) for n in range(1, scenario.rows + 1)]
    with engine.begin() as connection:
        connection.exec_driver_sql(CUSTOMERS_DDL)
        connection.execute(sa.text(_INSERT), rows)
    for row in rows:
        emulator.add_lead(row["lsq_prospect_id"], **expected(row))


_INSERT = (
    "INSERT INTO customers (id, phone, city, plan, score, notes, lsq_prospect_id) "
    "VALUES (:id, :phone, :city, :plan, :score, :notes, :lsq_prospect_id)"
)


@dataclass
class Commit:
    at: float  # time.monotonic() once committed, the emulator's clock too
    lead_id: str
    attribute: str


@dataclass
class Burst:
    at: float
    lead_ids: set[str]


@dataclass
class Writes:
    commits: list[Commit] = field(default_factory=list)
    bursts: list[Burst] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


class Writer(threading.Thread):
    """Commits single-row writes at a steady rate, and a burst every `burst_every` seconds."""

    def __init__(self, engine: sa.Engine, scenario: Scenario, stop: threading.Event) -> None:
        super().__init__(name="soak-writer", daemon=True)
        self.engine = engine
        self.scenario = scenario
        self.stop = stop
        self.writes = Writes()
        self.rng = random.Random(scenario.seed + 1)
        self.undo: list[tuple[int, str, Any]] = []  # (row, column, old value) to revert
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 (the main thread reports it)
            self.error = exc

    def _run(self) -> None:
        next_write = time.monotonic()
        next_burst = next_write + self.scenario.burst_every / 2
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_burst:
                self._burst()
                next_burst += self.scenario.burst_every
            self._write()
            next_write += 1 / self.scenario.write_rate
            self.stop.wait(max(0.0, next_write - time.monotonic()))

    def _count(self, kind: str) -> None:
        self.writes.counts[kind] = self.writes.counts.get(kind, 0) + 1

    def _write(self) -> None:
        rng, n = self.rng, self.rng.randrange(1, self.scenario.rows + 1)
        draw = rng.random()
        if draw < 0.15 and self.undo:
            n, column, old = self.undo.pop(rng.randrange(len(self.undo)))
            self._set(n, column, old, "revert")
        elif draw < 0.6:
            column = rng.choice(list(MAPPING))
            with self.engine.begin() as connection:
                old = connection.execute(
                    sa.text(f"SELECT {column} FROM customers WHERE id = :n"), {"n": n}
                ).scalar_one()
            new = self._other_value(column, old)
            self.undo = [*self.undo[-50:], (n, column, old)]
            self._set(n, column, new, "mapped change")
        elif draw < 0.8:
            self._execute("UPDATE customers SET city = city WHERE id = :n", {"n": n})
            self._count("no-op")
        else:
            self._execute(
                "UPDATE customers SET notes = :notes WHERE id = :n",
                {"n": n, "notes": f"note {rng.random():.6f}"},
            )
            self._count("unmapped")

    def _other_value(self, column: str, old: Any) -> Any:
        """A new value for `column`, never `old`: writing the value a row already holds is a
        no-op, which capture rightly ignores, so it has no push to time. (Timed, it was matched
        to the lead's first push, whenever that came, which carries every attribute.)"""
        rng = self.rng
        draws: dict[str, Callable[[], Any]] = {
            "phone": lambda: f"97{rng.randrange(10**8):08d}",
            "city": lambda: rng.choice(CITIES),
            "plan": lambda: rng.choice(PLANS),
            "score": lambda: rng.randrange(100),
        }
        while True:
            new = draws[column]()
            if new != old:
                return new

    def _set(self, n: int, column: str, value: Any, kind: str) -> None:
        """Write `value`; time it only if it changes the row (a revert may find the value
        already back), since an unchanged value has nothing to push."""
        with self.engine.begin() as connection:
            held = connection.execute(
                sa.text(f"SELECT {column} FROM customers WHERE id = :n FOR UPDATE"), {"n": n}
            ).scalar_one()
            connection.execute(
                sa.text(f"UPDATE customers SET {column} = :value WHERE id = :n"),
                {"n": n, "value": value},
            )
        if held == value:
            self._count("no-op")
            return
        self.writes.commits.append(Commit(time.monotonic(), f"L{n:06d}", MAPPING[column]))
        self._count(kind)

    def _burst(self) -> None:
        ids = self.rng.sample(range(1, self.scenario.rows + 1), self.scenario.burst_rows)
        self._execute(
            "UPDATE customers SET score = (score + 1) % 1000 WHERE id = ANY(:ids)", {"ids": ids}
        )
        self.writes.bursts.append(Burst(time.monotonic(), {f"L{n:06d}" for n in ids}))
        self._count("burst")

    def _execute(self, statement: str, parameters: dict[str, Any]) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.text(statement), parameters)


# -- the daemon and its samples -------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the daemon started
    rss_mib: float
    cpu_seconds: float
    tables: dict[str, tuple[int, int]]  # table -> (rows, bytes)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    # Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def table_sizes(engine: sa.Engine) -> dict[str, tuple[int, int]]:
    with engine.connect() as connection:
        names = connection.execute(
            sa.text(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                "WHERE c.relnamespace = CAST(current_schema() AS regnamespace) "
                "AND c.relkind = 'r' AND c.relname LIKE 'lsq\\_sync\\_%' ORDER BY c.relname"
            )
        ).all()
        return {
            name: (connection.exec_driver_sql(f'SELECT count(*) FROM "{name}"').scalar_one(), size)
            for name, size in names
        }


class Sampler(threading.Thread):
    def __init__(
        self, pid: int, engine: sa.Engine, every: float, started: float, stop: threading.Event
    ) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pid, self.engine, self.every, self.started, self.stop = (
            pid,
            engine,
            every,
            started,
            stop,
        )
        self.samples: list[Sample] = []

    def take(self) -> Sample:
        sample = Sample(
            time.monotonic() - self.started,
            rss_mib(self.pid),
            cpu_seconds(self.pid),
            table_sizes(self.engine),
        )
        self.samples.append(sample)
        log(
            f"t={sample.at:5.0f}s rss={sample.rss_mib:6.1f} MiB cpu={sample.cpu_seconds:6.1f}s "
            + " ".join(f"{name[9:]}={rows}" for name, (rows, _) in sample.tables.items())
        )
        return sample

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.take()


def daemon_config(url: str, emulator: Emulator, scenario: Scenario) -> dict[str, Any]:
    return {
        "name": CONNECTOR,
        "database": {"url": url},
        "leadsquared": {
            "host": emulator.url,
            "access_key": DEFAULT_ACCESS_KEY,
            "secret_key": DEFAULT_SECRET_KEY,
            "rate_limit": {"calls": scenario.calls, "window_seconds": scenario.window},
            "max_in_flight": scenario.max_in_flight,
            "bulk": {"mode": "auto" if scenario.bulk else "off"},
            "check_fields": False,
        },
        "source": {"table": "customers", "key": "id"},
        "lead_id": {"column": "lsq_prospect_id"},
        "mapping": dict(MAPPING),
        "sync": {
            "interval_seconds": scenario.interval,
            "keep_runs_days": scenario.keep_runs_minutes / (24 * 60),
        },
    }


def cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "connector", "--config", str(config), *args]


@contextmanager
def daemon(config: Path, log_path: Path, level: str) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            cli(config, "--log-format", "json", "--log-level", level, "daemon"),
            stdout=output,
            stderr=output,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def backlog(engine: sa.Engine) -> tuple[int, int]:
    """Change rows not yet ingested, and leads still pending (not held back or rejected)."""
    with engine.connect() as connection:
        changes = connection.exec_driver_sql("SELECT count(*) FROM lsq_sync_change").scalar_one()
        leads = connection.exec_driver_sql(
            "SELECT count(*) FROM lsq_sync_lead WHERE pending AND NOT rejected"
        ).scalar_one()
    return changes, leads


def wait_for_drain(engine: sa.Engine, timeout: float) -> float:
    """Seconds until nothing is left to ingest or push; raises after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if backlog(engine) == (0, 0):
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"the daemon left {backlog(engine)} (changes, leads) after {timeout:.0f} s")


# -- the checks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    at: float
    lead_id: str
    attributes: dict[str, str]
    success: bool


def sent(emulator: Emulator) -> list[Sent]:
    """Every lead's part of every update call, single or bulk, in arrival order."""
    found: list[Sent] = []
    for request in emulator.requests:
        success = request.outcome == "success"
        if request.api == "Lead.Update" and request.lead_id and isinstance(request.body, list):
            pairs = {f["Attribute"]: f["Value"] for f in request.body}
            found.append(Sent(request.arrived_at, request.lead_id, pairs, success))
        elif request.api == "Lead/Bulk/UpdateV2" and isinstance(request.body, dict):
            for lead in request.body.get("LeadPropertiesList") or []:
                pairs = {f["Attribute"]: f["Value"] for f in lead.get("Fields", [])}
                lead_id = pairs.pop("ProspectId", None)
                if lead_id:
                    found.append(Sent(request.arrived_at, lead_id, pairs, success))
    return found


def resends(calls: list[Sent]) -> int:
    last: dict[str, Sent] = {}
    count = 0
    for call in calls:
        before = last.get(call.lead_id)
        if before is not None and before.success and before.attributes == call.attributes:
            count += 1
        last[call.lead_id] = call
    return count


def mismatches(engine: sa.Engine, emulator: Emulator) -> int:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM customers")).mappings().all()
    return sum(1 for row in rows if emulator.lead(row["lsq_prospect_id"]) != expected(row))


def latencies(writes: Writes, calls: list[Sent]) -> tuple[list[tuple[float, float]], list[float]]:
    """Commit -> push seconds, outside bursts (with each change's commit time) and for every
    change pushed."""
    by_lead: dict[str, list[Sent]] = {}
    for call in calls:
        by_lead.setdefault(call.lead_id, []).append(call)
    windows = []
    for burst in writes.bursts:
        ends = [
            next((c.at for c in by_lead.get(lead_id, []) if c.at >= burst.at), burst.at)
            for lead_id in burst.lead_ids
        ]
        windows.append((burst.at, max(ends, default=burst.at)))
    outside: list[tuple[float, float]] = []
    every: list[float] = []
    later: dict[tuple[str, str], list[float]] = {}
    for commit in writes.commits:
        later.setdefault((commit.lead_id, commit.attribute), []).append(commit.at)
    for commit in writes.commits:
        pushed = next(
            (
                c.at
                for c in by_lead.get(commit.lead_id, [])
                if c.at >= commit.at and commit.attribute in c.attributes
            ),
            None,
        )
        if pushed is None:
            continue
        # Another change to the attribute before that call: this one was superseded (a revert
        # may even have made it send nothing), and the call counts for the later one.
        if any(commit.at < t < pushed for t in later[(commit.lead_id, commit.attribute)]):
            continue
        every.append(pushed - commit.at)
        if not any(start <= commit.at <= end for start, end in windows):
            outside.append((commit.at, pushed - commit.at))
    return outside, every


def slow_after_a_fault(writes: Writes, calls: list[Sent], faults: list[Sent], slow: float) -> str:
    """Of the changes pushed later than `slow` seconds after their commit, how many had a
    call for their lead fail (a fault) in between: their wait is the retry's."""
    pushed_at: dict[str, list[float]] = {}
    for call in calls:
        if call.success:
            pushed_at.setdefault(call.lead_id, []).append(call.at)
    failed_at: dict[str, list[float]] = {}
    for call in faults:
        failed_at.setdefault(call.lead_id, []).append(call.at)
    late = with_fault = 0
    later: dict[tuple[str, str], list[float]] = {}
    for commit in writes.commits:
        later.setdefault((commit.lead_id, commit.attribute), []).append(commit.at)
    for commit in writes.commits:
        done = next((t for t in pushed_at.get(commit.lead_id, []) if t >= commit.at), None)
        if done is None or done - commit.at <= slow:
            continue
        if any(commit.at < t < done for t in later[(commit.lead_id, commit.attribute)]):
            continue  # superseded, as in `latencies`
        late += 1
        if any(commit.at <= t <= done for t in failed_at.get(commit.lead_id, [])):
            with_fault += 1
    return f"{late} changes took over {slow:g} s, {with_fault} of them after a faulted call"


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# -- the soak -------------------------------------------------------------------------------


@dataclass
class Result:
    scenario: Scenario
    samples: list[Sample]
    writes: Writes
    calls: list[Sent]
    throttled: int
    mismatches: int
    resends: int
    drain_seconds: float
    exit_seconds: float
    exit_code: int
    outside: list[float]
    every: list[float]
    slowest_outside: list[tuple[float, float]]  # (commit, seconds since the soak began; latency)
    bursts_at: list[float]
    runs_recorded: int
    slow: str


def dump(
    directory: Path, started: float, writes: Writes, calls: list[Sent], log_path: Path
) -> None:
    """The soak's raw record, for tracing a slow change: times are seconds since the start."""
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "commits": [[c.at - started, c.lead_id, c.attribute] for c in writes.commits],
        "bursts": [[b.at - started, sorted(b.lead_ids)] for b in writes.bursts],
        "calls": [[c.at - started, c.lead_id, c.attributes, c.success] for c in calls],
    }
    (directory / "soak.json").write_text(json.dumps(record))
    shutil.copy(log_path, directory / "daemon.log")


def soak(scenario: Scenario, pg_url: str, dump_to: Path | None = None) -> Result:
    """The soak; with `dump_to`, its raw record and the daemon's log (at INFO) are kept there."""
    with (
        postgres_schema(pg_url) as url,
        Emulator(rate_limit=(scenario.calls, scenario.window)) as emulator,
        tempfile.TemporaryDirectory(prefix="lsq-soak-") as directory,
    ):
        emulator.set_latency(*scenario.latency, seed=scenario.seed)
        engine = sa.create_engine(url)
        seed(engine, emulator, scenario)
        config = write_config(Path(directory) / "soak.yaml", daemon_config(url, emulator, scenario))
        subprocess.run(cli(config, "init"), check=True, capture_output=True)
        wait_until_readable(engine)
        # Faults from here on: `init` is not what is measured.
        emulator.set_fault_rate(scenario.fault_rate, ["503", "drop"], seed=scenario.seed)
        log(
            f"soak: {scenario.minutes} min, {scenario.rows} rows, {scenario.write_rate} writes/s, "
            f"bursts of {scenario.burst_rows} every {scenario.burst_every:.0f} s, "
            f"{scenario.calls} calls per {scenario.window:.0f} s, bulk "
            f"{'on' if scenario.bulk else 'off'}"
        )
        stop_writing, stop_sampling = threading.Event(), threading.Event()
        level = "WARNING" if dump_to is None else "INFO"
        with daemon(config, Path(directory) / "daemon.log", level) as process:
            started = time.monotonic()
            sampler = Sampler(process.pid, engine, scenario.sample_every, started, stop_sampling)
            writer = Writer(engine, scenario, stop_writing)
            time.sleep(2.0)  # past the interpreter's start, or the first RSS means nothing
            sampler.take()
            sampler.start()
            writer.start()
            deadline = started + scenario.minutes * 60
            while time.monotonic() < deadline and process.poll() is None and writer.is_alive():
                time.sleep(1.0)
            stop_writing.set()
            writer.join()
            if writer.error is not None:
                raise RuntimeError(f"the writer failed: {writer.error!r}") from writer.error
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited early ({process.returncode})")
            drain = wait_for_drain(engine, timeout=600)
            log(f"drained {drain:.1f} s after the writer stopped")
            stop_sampling.set()
            sampler.join()
            sampler.take()
            term = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=120)
            exit_seconds = time.monotonic() - term
        calls = sent(emulator)
        if dump_to is not None:
            dump(dump_to, started, writer.writes, calls, Path(directory) / "daemon.log")
        timed, every = latencies(writer.writes, calls)
        outside = [latency for _, latency in timed]
        slowest = sorted(timed, key=lambda pair: -pair[1])[:8]
        with engine.connect() as connection:
            runs = connection.exec_driver_sql("SELECT count(*) FROM lsq_sync_run").scalar_one()
        result = Result(
            scenario=scenario,
            samples=sampler.samples,
            writes=writer.writes,
            calls=calls,
            throttled=emulator.throttled_count + emulator.bulk_throttled_count,
            mismatches=mismatches(engine, emulator),
            resends=resends(calls),
            drain_seconds=drain,
            exit_seconds=exit_seconds,
            exit_code=code,
            outside=outside,
            every=every,
            slowest_outside=[(at - started, latency) for at, latency in slowest],
            bursts_at=[burst.at - started for burst in writer.writes.bursts],
            runs_recorded=runs,
            slow=slow_after_a_fault(
                writer.writes, calls, [c for c in calls if not c.success], slow=5.0
            ),
        )
        engine.dispose()
        return result


def report(result: Result) -> str:
    scenario, samples = result.scenario, result.samples
    settled = [s for s in samples if s.at >= min(120.0, samples[-1].at / 2)] or samples
    growth = max(s.rss_mib for s in settled) - settled[0].rss_mib
    cpu = (samples[-1].cpu_seconds - samples[0].cpu_seconds) / max(
        samples[-1].at - samples[0].at, 1
    )
    lines = [
        f"### {scenario.minutes:g} min, {scenario.calls} calls per {scenario.window:g} s, bulk "
        f"{'on' if scenario.bulk else 'off'}",
        "",
        f"{scenario.rows} rows, {scenario.write_rate:g} writes/s "
        + ", ".join(f"{kind} {count}" for kind, count in sorted(result.writes.counts.items()))
        + f"; bursts of {scenario.burst_rows} rows every {scenario.burst_every:g} s; latency "
        f"{scenario.latency[0]}-{scenario.latency[1]} s, {scenario.fault_rate:.0%} faults.",
        "",
        "| check | figure | target |",
        "| --- | --- | --- |",
        f"| RSS after {settled[0].at:.0f} s -> max after | {settled[0].rss_mib:.1f} -> "
        f"{max(s.rss_mib for s in settled):.1f} MiB (+{growth:.1f}) | growth <= 10 MiB |",
        f"| daemon CPU | {cpu:.0%} of a core | |",
        f"| mismatches | {result.mismatches} | 0 |",
        f"| identical re-sends after a success | {result.resends} | 0 |",
        f"| throttled calls | {result.throttled} | 0 |",
        f"| commit -> push outside bursts, p50/p90/p99 ({len(result.outside)} changes) | "
        f"{percentile(result.outside, 0.5):.2f} / {percentile(result.outside, 0.9):.2f} / "
        f"{percentile(result.outside, 0.99):.2f} s | p99 <= 5 s |",
        f"| commit -> push, all, p50/p90/p99 ({len(result.every)} changes) | "
        f"{percentile(result.every, 0.5):.2f} / {percentile(result.every, 0.9):.2f} / "
        f"{percentile(result.every, 0.99):.2f} s | |",
        f"| slow changes (all) | {result.slow} | |",
        f"| calls (lead updates) | {len(result.calls)} | |",
        f"| runs recorded at the end | {result.runs_recorded} | |",
        f"| drained after the writer stopped | {result.drain_seconds:.1f} s | |",
        f"| exit after SIGTERM | {result.exit_seconds:.2f} s (status {result.exit_code}) | |",
        "",
        "| table | rows first -> after 2 min -> last | bytes first -> last |",
        "| --- | --- | --- |",
    ]
    for name in samples[-1].tables:
        first, middle, last = (
            s.tables.get(name, (0, 0)) for s in (samples[0], settled[0], samples[-1])
        )
        lines.append(
            f"| {name} | {first[0]} -> {middle[0]} -> {last[0]} | "
            f"{first[1] // 1024} -> {last[1] // 1024} KiB |"
        )
    lines += [
        "",
        "Slowest changes outside bursts (committed at s: took s): "
        + ", ".join(f"{at:.0f}: {took:.1f}" for at, took in result.slowest_outside)
        + "; bursts at "
        + ", ".join(f"{at:.0f}" for at in result.bursts_at)
        + " s.",
        "",
        "RSS samples (s: MiB): " + ", ".join(f"{s.at:.0f}: {s.rss_mib:.1f}" for s in samples),
    ]
    return "\n".join(lines)


def problems(result: Result) -> list[str]:
    found = []
    if result.mismatches:
        found.append(f"{result.mismatches} leads differ from their rows")
    if result.resends:
        found.append(f"{result.resends} identical re-sends after a success")
    if result.throttled:
        found.append(f"{result.throttled} throttled calls")
    if result.exit_code != 0:
        found.append(f"the daemon exited {result.exit_code} after SIGTERM")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--rate-limit", type=int, choices=(25, 100), default=25)
    parser.add_argument("--bulk", action="store_true", help="leadsquared.bulk.mode: auto")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--write-rate", type=float, help="writes/s (4 at 25 calls, 15 at 100)")
    parser.add_argument("--burst-rows", type=int, help="rows per burst (200 at 25, 500 at 100)")
    parser.add_argument("--burst-every", type=float, default=120.0)
    parser.add_argument("--sample-every", type=float, default=30.0)
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--smoke", action="store_true", help="a minute, 300 rows, 10 s samples")
    parser.add_argument(
        "--dump", type=Path, help="a directory to keep the commits, calls and daemon log in"
    )
    args = parser.parse_args()
    fast = args.rate_limit == 100
    scenario = Scenario(
        minutes=args.minutes,
        rows=args.rows,
        write_rate=args.write_rate or (15.0 if fast else 4.0),
        burst_rows=args.burst_rows or (500 if fast else 200),
        burst_every=args.burst_every,
        sample_every=args.sample_every,
        calls=args.rate_limit,
        window=5.0,
        bulk=args.bulk,
    )
    if args.smoke:
        scenario = Scenario(
            minutes=1.0,
            rows=300,
            write_rate=4.0,
            burst_rows=40,
            burst_every=30.0,
            sample_every=10.0,
            calls=args.rate_limit,
            window=5.0,
            bulk=args.bulk,
        )
    result = soak(scenario, args.pg_url, args.dump)
    print(report(result))
    found = problems(result)
    for problem in found:
        log(f"FAILED: {problem}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
