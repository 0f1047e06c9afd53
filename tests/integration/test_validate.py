"""`lsq-sync validate`: every check, with deliberate mistakes reported all at once, on both
databases, against the emulator over loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connector import Connector
from connector.testing.emulator import Emulator
from tests.support import PEOPLE_DDL, config_dict, execute, load, run_cli, write_config
from tests.support import PEOPLE_MAPPING as MAPPING
from tests.support import PEOPLE_SCHEMA as SCHEMA


def people_config(db_url: str, emulator: Emulator, **sections: Any) -> dict[str, Any]:
    mapping = sections.pop("mapping", MAPPING)
    config = config_dict(
        db_url,
        emulator,
        source={"table": "people", "key": "id"},
        lead_id={"column": "email", "match": "EmailAddress"},
        **sections,
    )
    config["leadsquared"]["check_fields"] = True
    config["mapping"] = dict(mapping)
    return config


def validate(tmp_path: Path, config: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    path = write_config(tmp_path / "config.yaml", config)
    done = run_cli("--config", str(path), "validate", "--json")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def levels(result: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(check["check"], check["key"]): check["level"] for check in result["checks"]}


def test_a_ready_connector_passes_every_check(
    tmp_path: Path, db_url: str, people: sa.Engine
) -> None:
    with Emulator(schema=SCHEMA) as emulator:
        config = people_config(db_url, emulator)
        with Connector(load(config)) as sync:
            sync.init()
        execute(
            people,
            "INSERT INTO people (id, email, plan, city) VALUES (1, 'a@x.com', 'gold', 'Pune')",
        )
        code, result = validate(tmp_path, config)
        apis = [request.api for request in emulator.requests]
    assert code == 0, result
    assert result["ok"] is True
    found = levels(result)
    # Only the text columns feeding typed fields are worth a word: each value is checked.
    assert {key for key, level in found.items() if level != "ok"} == {
        ("types", "mapping.seats"),
        ("types", "mapping.renewal"),
        ("types", "mapping.call_at"),
    }, result
    assert found[("types", "mapping.seats")] == "warning"
    assert found[("types", "mapping.signed_up")] == "ok"
    for check in ("database", "source table", "source key", "capture", "keys", "host", "values"):
        assert check in {name for name, _ in found}, check
    assert ("types", "mapping.seats") in found
    # The keys and the fields were read; no lead was touched.
    assert "Lead.Update" not in apis
    assert {"UserByAccessKey.Get", "LeadsMetaData.Get"} <= set(apis)


def test_every_mistake_is_reported_at_once_each_at_its_key(
    tmp_path: Path, db_url: str, people: sa.Engine
) -> None:
    execute(
        people,
        "INSERT INTO people (id, email, plan, notes, city) VALUES "
        "(1, 'a@x.com', 'Platinum', 'far too long for ten', 'Pune'), "
        "(2, 'b@x.com', 'Platinum', NULL, 'Goa')",
    )
    mapping = {c: a for c, a in MAPPING.items() if c != "renewal"}
    mapping |= {"phone": "mx_phone_number", "active": "mx_Renewal"}
    with Emulator(schema=SCHEMA, api_host="api-in21.leadsquared.com") as emulator:
        # Capture never installed, the host another region's, an attribute the account
        # lacks, a boolean column feeding a Date field, values pre-flight would hold back.
        code, result = validate(tmp_path, people_config(db_url, emulator, mapping=mapping))
    assert code == 1
    assert result["ok"] is False
    found = levels(result)
    assert found[("capture", "mapping")] == "error"
    assert found[("host", "leadsquared.host")] == "error"
    assert found[("fields", "mapping.phone")] == "error"
    assert found[("types", "mapping.active")] == "error"
    assert found[("values", "mapping.plan")] == "warning"
    assert found[("values", "mapping.notes")] == "warning"
    plan = next(
        c for c in result["checks"] if c["key"] == "mapping.plan" and c["check"] == "values"
    )
    assert plan["message"].startswith("2 of 2 sampled rows")
    assert "'Platinum' is not one of the field's options" in plan["examples"][0]
    host = next(c for c in result["checks"] if c["check"] == "host")
    assert "api-in21.leadsquared.com" in host["message"]


def test_refused_keys_and_missing_columns_are_both_named(
    tmp_path: Path, db_url: str, people: sa.Engine
) -> None:
    with Emulator(schema=SCHEMA, secret_key="another") as emulator:
        config = people_config(db_url, emulator, mapping={**MAPPING, "nowhere": "mx_Nowhere"})
        code, result = validate(tmp_path, config)
    assert code == 1
    found = levels(result)
    assert found[("source table", "mapping.nowhere")] == "error"
    assert found[("keys", "leadsquared.access_key")] == "error"
    assert "secret" not in json.dumps(result).replace("secret_key", "")


def test_a_config_that_does_not_parse_lists_each_problem(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("name: Bad Name\nlead_id: {column: e, match: Fax}\n", encoding="utf-8")
    done = run_cli("--config", str(path), "validate", "--json")
    assert done.returncode == 1
    result = json.loads(done.stdout)
    keys = {check["key"] for check in result["checks"]}
    assert {"name", "lead_id.match", "database", "leadsquared", "mapping"} <= keys, keys
    text = run_cli("--config", str(path), "validate")
    assert "the connector cannot run" in text.stdout
    assert "Traceback" not in text.stderr


def test_a_row_that_cannot_be_read_is_counted_not_fatal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(PEOPLE_DDL)
        connection.exec_driver_sql(
            "INSERT INTO people (id, email, signed_up, city) VALUES "
            "(1, 'a@x.com', '2024-13-45 99:00:00', 'Pune'), (2, 'b@x.com', NULL, 'Goa')"
        )
    engine.dispose()
    with Emulator(schema=SCHEMA) as emulator:
        code, result = validate(tmp_path, people_config(url, emulator))
    unreadable = [
        c for c in result["checks"] if c["check"] == "values" and "cannot be read" in c["message"]
    ]
    assert unreadable, result
    assert unreadable[0]["message"].startswith("1 of 2 sampled rows")
    assert code == 1  # capture was never installed: the connector cannot run yet
