from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

from connector.testing.emulator import Emulator
from tests.support import application, postgres_schema

# The machines are shared and noisy: a slow moment must not fail a property test.
settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks `postgres` every test given a PostgreSQL database: one that takes `pg_url`
    (itself or through another fixture), or `db_url` as PostgreSQL (by the fixture's own
    params or, indirectly, by the test's)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        db = callspec.params.get("db_url") if callspec is not None else None
        if db == "postgresql" or "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every test that takes this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
    else:
        with postgres_schema() as url:
            yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """An emulator whose account limit is far above the connector's test pacing."""
    with Emulator(rate_limit=(10_000, 1.0)) as emulator:
        yield emulator


@pytest.fixture
def app(db_url: str) -> Iterator[sa.Engine]:
    with application(db_url) as engine:
        yield engine


@pytest.fixture
def pg_app(pg_url: str) -> Iterator[sa.Engine]:
    """`app` on PostgreSQL alone."""
    with application(pg_url) as engine:
        yield engine
