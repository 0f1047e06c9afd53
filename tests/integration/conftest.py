"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.support import PEOPLE_DDL


@pytest.fixture
def people(db_url: str) -> Iterator[sa.Engine]:
    """The people table (keyed by email address) on SQLite or PostgreSQL."""
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(PEOPLE_DDL)
    yield engine
    engine.dispose()
