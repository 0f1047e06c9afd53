"""A daemon's cycles hold steady: statements are built once while the source table's columns
stay as they are (SQLAlchemy keeps every compiled statement it is given), and a change
committed during a long push joins that push."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from connector import Connector
from connector.testing.emulator import Emulator
from tests.support import config_dict, execute, load


@pytest.fixture
def sync(db_url: str, app: sa.Engine, emulator: Emulator) -> Iterator[Connector]:
    with Connector(load(config_dict(db_url, emulator))) as connector:
        connector.init()
        yield connector


def _busy_cycle(app: sa.Engine, sync: Connector, emulator: Emulator, cycle: int) -> None:
    """A cycle that ingests, pushes and records, as a daemon's busy cycles do."""
    emulator.add_lead(f"L{cycle}")
    execute(
        app,
        f"INSERT INTO customers (id, city, score, lsq_prospect_id) "
        f"VALUES ({cycle}, 'c{cycle}', {cycle}, 'L{cycle}')",
        f"UPDATE customers SET city = 'again {cycle}' WHERE id < {cycle}",
    )
    report = sync.run_once()
    assert report.status == "ok", report.summary()
    assert report.counts.leads_pushed == cycle


def _compiled_statements(sync: Connector) -> int:
    cache = sync.engine._compiled_cache  # private, but it is what grew
    assert cache is not None
    return len(cache)


def test_cycles_build_no_new_statement_while_the_columns_stay(
    app: sa.Engine, sync: Connector, emulator: Emulator
) -> None:
    _busy_cycle(app, sync, emulator, 1)
    _busy_cycle(app, sync, emulator, 2)
    source = sync.source
    compiled = _compiled_statements(sync)
    for cycle in range(3, 8):
        _busy_cycle(app, sync, emulator, cycle)
    assert sync.source is source
    assert _compiled_statements(sync) == compiled


def test_a_column_type_changed_under_a_daemon_is_read_as_its_new_type(
    pg_url: str, pg_app: sa.Engine, emulator: Emulator
) -> None:
    emulator.add_lead("L1")
    with Connector(load(config_dict(pg_url, emulator))) as sync:
        sync.init()
        execute(pg_app, "INSERT INTO customers (id, score, lsq_prospect_id) VALUES (1, 7, 'L1')")
        sync.run_once()
        assert isinstance(sync.source.table.c.score.type, sa.Integer)
        # As a migration of the application would, between two cycles of the daemon.
        execute(
            pg_app,
            "ALTER TABLE customers ALTER COLUMN score TYPE numeric(6, 2)",
            "UPDATE customers SET score = 7.25 WHERE id = 1",
        )
        report = sync.run_once()
        assert report.status == "ok", report.summary()
        assert isinstance(sync.source.table.c.score.type, sa.Numeric)
    assert emulator.leads()["L1"]["mx_Score"] == "7.25"


def test_a_column_added_under_a_daemon_reflects_the_table_again(
    app: sa.Engine, sync: Connector, emulator: Emulator
) -> None:
    _busy_cycle(app, sync, emulator, 1)
    source = sync.source
    execute(app, "ALTER TABLE customers ADD COLUMN extra TEXT")
    _busy_cycle(app, sync, emulator, 2)
    assert sync.source is not source
    assert "extra" in sync.source.table.c


def test_the_tables_version_is_asked_once_then_again_after_a_database_error(
    app: sa.Engine, sync: Connector, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector import migrate  # noqa: PLC0415
    from connector.errors import SourceDatabaseError  # noqa: PLC0415
    from connector.schema import VERSION_TABLE, lead  # noqa: PLC0415

    asked: list[str | None] = []
    real = migrate.current_revision

    def counted(engine: sa.Engine) -> str | None:
        asked.append(real(engine))
        return asked[-1]

    monkeypatch.setattr(migrate, "current_revision", counted)
    for cycle in range(1, 4):
        _busy_cycle(app, sync, emulator, cycle)
    assert len(asked) == 1
    # Someone drops the connector's tables: the run fails on the database, and the next one
    # finds out why.
    execute(app, f"DROP TABLE {lead.name}", f"DROP TABLE {VERSION_TABLE}")
    with pytest.raises(SourceDatabaseError):
        sync.run_once()
    with pytest.raises(Exception, match="run `lsq-sync init` first"):
        sync.run_once()
    assert asked[1:] == [None]
