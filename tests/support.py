"""Shared test helpers: databases, the sample source table, configs, CLI subprocesses.

bench/ builds on them too (its CI smoke run shows when a change here breaks it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
import yaml

from connector.config import Config, parse_config
from connector.runlock import advisory_key
from connector.testing.emulator import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, Emulator

if TYPE_CHECKING:
    from connector.leads import LeadState
    from connector.sync import Connector

PG_URL = os.environ.get("LSQ_SYNC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

MAPPING = {"phone": "Phone", "city": "mx_City", "plan": "mx_Plan", "score": "mx_Score"}
ATTRIBUTES = frozenset(MAPPING.values())

CUSTOMERS_DDL = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name TEXT,
    phone TEXT,
    city TEXT,
    plan TEXT,
    score INTEGER,
    notes TEXT,
    lsq_prospect_id TEXT
)
"""


def postgres_available(url: str = PG_URL) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


@contextmanager
def postgres_schema(base_url: str = PG_URL) -> Iterator[str]:
    """A fresh schema per test, reached through search_path: isolated and cheap.

    `base_url` names another server than the tests' (bench/ takes one on its command line).
    """
    if not postgres_available(base_url):
        shown = sa.make_url(base_url).render_as_string(hide_password=True)
        message = f"PostgreSQL is not reachable at {shown} (set LSQ_SYNC_TEST_PG_URL)"
        if IN_CI:
            pytest.fail(message + "; under CI=true the PostgreSQL tests must run")
        pytest.skip(message)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


# A table keyed by email address, with a typed account to match (tests of real tables).
PEOPLE_DDL = """
CREATE TABLE people (
    id INTEGER PRIMARY KEY,
    email TEXT,
    phone TEXT,
    plan TEXT,
    notes TEXT,
    seats TEXT,
    signed_up TIMESTAMP,
    active BOOLEAN,
    renewal TEXT,
    call_at TEXT,
    site TEXT,
    city TEXT
)
"""

PEOPLE_SCHEMA: dict[str, Any] = {
    "fields": {
        "EmailAddress": {"type": "Email"},
        "Phone": {"type": "Phone"},
        "mx_Plan": {"type": "Select", "options": ["Gold", "Silver"]},
        "mx_Notes": {"type": "Text", "max_length": 10},
        "mx_Seats": {"type": "Number"},
        "mx_Signed_Up": {"type": "Date"},
        "mx_Active": {"type": "Boolean"},
        "mx_Renewal": {"type": "Date"},
        "mx_Call_At": {"type": "Time"},
        "mx_Site": {"type": "Website"},
        "mx_City": {"type": "Text", "mandatory": True},
    }
}

PEOPLE_MAPPING: dict[str, Any] = {
    "phone": "Phone",
    "plan": "mx_Plan",
    "notes": "mx_Notes",
    "seats": "mx_Seats",
    "signed_up": "mx_Signed_Up",
    "active": "mx_Active",
    "renewal": "mx_Renewal",
    "call_at": "mx_Call_At",
    "site": "mx_Site",
    "city": "mx_City",
}


@contextmanager
def application(url: str) -> Iterator[sa.Engine]:
    """The application's side: the sample customers table, and an engine to write to it."""
    create_customers(url)
    engine = sa.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def create_customers(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(CUSTOMERS_DDL)
    engine.dispose()


def execute(engine: sa.Engine, *statements: str) -> None:
    """Run the application's writes, in one transaction."""
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)


def config_dict(
    url: str, emulator: Emulator, *, name: str = "test", **sections: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": name,
        "database": {"url": url},
        "leadsquared": {
            "host": emulator.url,
            "access_key": DEFAULT_ACCESS_KEY,
            "secret_key": DEFAULT_SECRET_KEY,
            "rate_limit": {"calls": 1000, "window_seconds": 1},
            # One Lead.Update per lead, whatever the backlog, and no LeadsMetaData.Get: the
            # tests of bulk calls and field types (test_real_tables.py) turn them on.
            "bulk": {"mode": "off"},
            "check_fields": False,
        },
        "source": {"table": "customers", "key": "id"},
        "lead_id": {"column": "lsq_prospect_id"},
        "mapping": dict(MAPPING),
    }
    for section, values in sections.items():
        if isinstance(values, Mapping) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **values}
        else:
            config[section] = values
    return config


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


def load(config: Mapping[str, Any]) -> Config:
    return parse_config(yaml.safe_dump(dict(config)), "test-config", {})


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def source_values(url: str) -> dict[str, dict[str, str | None]]:
    """Expected LeadSquared state: each linked row's mapped values, as the connector sends them."""
    from connector.values import normalise  # noqa: PLC0415

    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM customers")).mappings().all()
    engine.dispose()
    return {
        row["lsq_prospect_id"]: {
            attribute: normalise(row[column]) for column, attribute in MAPPING.items()
        }
        for row in rows
        if row["lsq_prospect_id"]
    }


def wait_until_readable(engine: sa.Engine, timeout: float = 60) -> None:
    """Wait until ingest can read every change row captured so far.

    On PostgreSQL ingest reads only changes older than every transaction still open on the
    server, and the server is shared with other test sessions: one of them holding a
    transaction open would otherwise make a run find nothing to do.
    """
    if engine.dialect.name != "postgresql":
        return
    deadline = time.monotonic() + timeout
    with engine.connect() as connection:
        newest = connection.exec_driver_sql("SELECT max(tx_id) FROM lsq_sync_change").scalar()
        connection.rollback()
        while newest is not None:
            oldest_open = connection.exec_driver_sql(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
            ).scalar_one()
            connection.rollback()
            if oldest_open > newest:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"a transaction elsewhere stayed open for {timeout} s")
            time.sleep(0.05)


def lock_holders(engine: sa.Engine, connector: str) -> list[int]:
    """The PostgreSQL backends holding the connector's advisory lock."""
    with engine.connect() as connection:
        scope = connection.execute(
            sa.select(sa.func.current_database() + "." + sa.func.current_schema())
        ).scalar_one()
        key = advisory_key(scope, connector) & 0xFFFF_FFFF_FFFF_FFFF
        return list(
            connection.execute(
                sa.text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid) "
                    "AND objsubid = 1"
                ),
                {"high": key >> 32, "low": key & 0xFFFF_FFFF},
            ).scalars()
        )


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll for a condition of the outside world (a database row, a process), bounded."""
    event = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        event.wait(0.05)  # polling a database for a condition; not standing in for one
    raise AssertionError(f"{condition} did not become true within {timeout} s")


def lead_states(sync: Connector) -> dict[str, LeadState]:
    """Every lead the connector knows, by lead id, as stored now."""
    with sync.engine.connect() as connection:
        return {state.lead_id: state for state in sync.tables.leads.all_leads(connection)}


def lead_state(sync: Connector, lead_id: str) -> LeadState:
    return lead_states(sync)[lead_id]


# Rows held back at ingest that seed_leads writes.
PROBLEM_ROWS = 300


def seed_leads(engine: sa.Engine, connector: str, count: int, now: datetime) -> dict[str, int]:
    """Write `count` lead rows straight into lsq_sync_lead (10,000 per statement), spread over
    every state, and PROBLEM_ROWS rows held back; returns the counts status must find. Lead
    `i` was last written `i` seconds before `now`."""
    from connector.schema import lead, row_problem  # noqa: PLC0415

    with engine.begin() as connection:
        for start in range(0, count, 10_000):
            rows = [
                _seeded_lead(connector, i, now) for i in range(start, min(count, start + 10_000))
            ]
            connection.execute(sa.insert(lead), rows)
        connection.execute(
            sa.insert(row_problem),
            [
                {
                    "connector": connector,
                    "source_key": f"bad{i:04d}",
                    "column_name": "score",
                    "reason": "not a number",
                    "noted_at": now,
                }
                for i in range(PROBLEM_ROWS)
            ],
        )
    tenth = count // 10
    fiftieth = count // 50
    return {
        "known": count,
        "rejected": tenth,
        "retrying_later": tenth,
        "held_back": fiftieth,
        "conflicts": fiftieth,
        "attributes_set_aside": tenth,
        "pending": 2 * tenth,  # due now, or retrying later
        "not_in_sync": 4 * tenth + 2 * fiftieth,
    }


def _seeded_lead(connector: str, i: int, now: datetime) -> dict[str, Any]:
    row: dict[str, Any] = {
        "connector": connector,
        "lead_id": f"L{i:07d}",
        "source_key": str(i),
        "desired": '{"mx_City": "Pune"}',
        "pushed": '{"mx_City": "Pune"}',
        "pending": False,
        "rejected": False,
        "set_aside": "{}",
        "attempts": 0,
        "updated_at": now - timedelta(seconds=i),
        # Every row names every column: one INSERT statement serves them all.
        "last_error": None,
        "next_attempt_at": None,
        "hold": None,
        "other_key": None,
        "aside_reason": None,
    }
    if i % 10 == 0:
        row.update(pending=True, rejected=True, last_error="MXInvalidEntityException: no")
    elif i % 10 == 1:
        row.update(pending=True)
    elif i % 10 == 2:
        row.update(pending=True, last_error="HTTP 503", next_attempt_at=now + timedelta(hours=1))
    elif i % 50 == 3:
        row.update(pending=True, hold=f"row {i}, column 'city': cannot be sent")
    elif i % 50 == 13:
        row.update(pending=True, other_key=str(i + 10_000_000))
    elif i % 10 == 4:
        row.update(set_aside='{"mx_Plan": "Gold"}', aside_reason='{"mx_Plan": "unknown"}')
    return row


# Runs the CLI in a child that reports its own peak RSS (VmHWM, kB) on its last stderr line.
# Not getrusage's ru_maxrss: Linux keeps that across exec, so it would count the process
# that forked the child.
PEAK_RSS_CLI = (
    "import re, sys\n"
    "from connector.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "sys.stdout.flush()\n"
    "status = open('/proc/self/status').read()\n"
    "print('peak_kb', re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr)\n"
    "sys.exit(code)\n"
)
