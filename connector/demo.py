"""`lsq-sync demo`: the whole product on one screen, with nothing to set up.

A SQLite database with a sample table, the bundled LeadSquared emulator on loopback, and
two sync cycles around a handful of typical application writes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa
import yaml

from connector.config import parse_config
from connector.report import describe_lead
from connector.sync import Connector
from connector.testing.emulator import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, Emulator

MAPPING = {"email": "EmailAddress", "phone": "Phone", "city": "mx_City", "plan": "mx_Plan"}

CUSTOMERS = [
    (1, "Ada", "ada@example.com", "+91-98100-00001", "Pune", "free", "L-1001"),
    (2, "Bob", "bob@example.com", "+91-98100-00002", "Goa", "pro", "L-1002"),
    (3, "Chen", "chen@example.com", None, "Delhi", "free", "L-1003"),
    (4, "Dana", "dana@example.com", "+91-98100-00004", "Agra", "team", "L-4040"),
    (5, "Eve", "eve@example.com", "+91-98100-00005", "Kochi", "free", None),
]

CHANGES = [
    (
        "Ada moves twice before the next run: one update, with the latest city",
        "UPDATE customers SET city = 'Mumbai' WHERE id = 1; "
        "UPDATE customers SET city = 'Chennai' WHERE id = 1",
    ),
    (
        "Bob upgrades, then downgrades back: net change is nothing, so no call",
        "UPDATE customers SET plan = 'enterprise' WHERE id = 2; "
        "UPDATE customers SET plan = 'pro' WHERE id = 2",
    ),
    (
        "Chen's notes change: 'notes' is not mapped, so the trigger records nothing",
        "UPDATE customers SET notes = 'called on Monday' WHERE id = 3",
    ),
    (
        "Chen gets a phone number: only Phone is sent",
        "UPDATE customers SET phone = '+91-98100-00003' WHERE id = 3",
    ),
    (
        "Eve's plan is saved unchanged: a no-op update records nothing",
        "UPDATE customers SET plan = 'free' WHERE id = 5",
    ),
]


def run_demo(directory: str) -> int:
    folder = Path(directory)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    database = folder / "demo.db"
    url = f"sqlite:///{database}"
    say(f"lsq-sync demo, in {folder}/\n")
    _create_sample_table(url)
    say("1. Your application's table 'customers' (SQLite, demo.db):")
    for row in CUSTOMERS:
        say(
            f"     id={row[0]} {row[1]:<5} city={row[4]:<6} plan={row[5]:<5} "
            f"lsq_prospect_id={row[6]}"
        )
    with Emulator(attributes=[*MAPPING.values(), "FirstName"]) as emulator:
        for lead_id in ("L-1001", "L-1002", "L-1003"):
            emulator.add_lead(lead_id)
        say(
            f"\n2. A LeadSquared emulator listens on {emulator.url}; it knows leads "
            "L-1001, L-1002 and L-1003 (not L-4040)."
        )
        config_path = _write_config(folder, url, emulator.url)
        config = parse_config(config_path.read_text(), str(config_path), {})
        say(
            f"   The connector's config is {config_path}: it maps "
            + ", ".join(f"{c} -> {a}" for c, a in MAPPING.items())
            + "."
        )
        with Connector(config, config_source=str(config_path)) as connector:
            connector.init()
            say(
                "\n3. `lsq-sync init` created the connector's tables and installed triggers "
                "that record which rows had a mapped column changed."
            )
            say("\n4. The application inserts its customers:")
            _insert_customers(url)
            for row in CUSTOMERS:
                say(
                    f"     id={row[0]} {row[1]:<5} city={row[4]:<6} plan={row[5]:<5} "
                    f"lsq_prospect_id={row[6]}"
                )
            say(
                "   First run: each linked row's non-empty mapped values are sent, one call "
                "per lead."
            )
            _run(connector, emulator)
            say("\n5. The application goes on writing:")
            engine = sa.create_engine(url)
            with engine.begin() as connection:
                for why, statements in CHANGES:
                    say(f"   - {why}")
                    for statement in statements.split("; "):
                        connection.exec_driver_sql(statement)
            engine.dispose()
            say("\n6. Second run: only real, mapped, net changes are sent.")
            _run(connector, emulator)
            _summarise(connector, emulator)
    say(
        f"\nTry it on your own table: copy config.example.yaml, set your database, keys and "
        f"mapping, then `lsq-sync --config config.yaml init` and `... run`. "
        f"The demo's files stay in {folder}/."
    )
    return 0


def say(text: str) -> None:
    print(text)


def _create_sample_table(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT, phone TEXT,"
            " city TEXT, plan TEXT, notes TEXT, lsq_prospect_id TEXT)"
        )
    engine.dispose()


def _insert_customers(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO customers (id, name, email, phone, city, plan, lsq_prospect_id)"
                " VALUES (:id, :name, :email, :phone, :city, :plan, :lead)"
            ),
            [
                dict(
                    zip(("id", "name", "email", "phone", "city", "plan", "lead"), row, strict=True)
                )
                for row in CUSTOMERS
            ],
        )
    engine.dispose()


def _write_config(folder: Path, url: str, host: str) -> Path:
    path = folder / "config.yaml"
    config = {
        "name": "demo",
        "database": {"url": url},
        "leadsquared": {
            "host": host,
            "access_key": DEFAULT_ACCESS_KEY,
            "secret_key": DEFAULT_SECRET_KEY,
        },
        "source": {"table": "customers", "key": "id"},
        "lead_id": {"column": "lsq_prospect_id"},
        "mapping": MAPPING,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _run(connector: Connector, emulator: Emulator) -> None:
    emulator.clear_requests()
    report = connector.run_once()
    for request in emulator.requests:
        sent = ", ".join(f"{f['Attribute']}={f['Value']!r}" for f in request.body or [])
        verdict = "ok" if request.outcome == "success" else f"HTTP {request.status}"
        say(f"   Lead.Update {request.lead_id}: {sent}  -> {verdict}")
    say(f"   {report.summary()}")


def _summarise(connector: Connector, emulator: Emulator) -> None:
    say("\n7. Where every row stands:")
    with connector.engine.connect() as connection:
        states = {s.source_key: s for s in connector.tables.leads.all_leads(connection)}
    for row in CUSTOMERS:
        row_id, name, lead_id = str(row[0]), row[1], row[6]
        state = states.get(row_id)
        if lead_id is None:
            say(f"   {name}: not pushed: the row has no lead id in lsq_prospect_id")
        elif state is None:
            say(f"   {name} -> {lead_id}: not pushed: nothing captured yet")
        elif not state.pending and not state.rejected and state.hold is None:
            say(f"   {name} -> {lead_id}: in sync; LeadSquared holds {emulator.lead(lead_id)}")
        else:
            say(f"   {name} -> {lead_id}: not pushed: {describe_lead(state)}")
