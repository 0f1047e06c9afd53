from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from connector.database import create_engine
from connector.testing.emulator import Emulator
from tests.e2e.harness import Project
from tests.support import create_customers


@contextmanager
def _project(url: str, emulator: Emulator, directory: Path) -> Iterator[Project]:
    create_customers(url)
    engine = create_engine(url)
    project = Project(url, directory / "lsq-sync.yaml", emulator, engine)
    project.write(project.config())
    try:
        yield project
    finally:
        engine.dispose()


@pytest.fixture
def project(db_url: str, emulator: Emulator, tmp_path: Path) -> Iterator[Project]:
    """The sample table on SQLite or PostgreSQL, and a valid config; `init` not yet run."""
    with _project(db_url, emulator, tmp_path) as project:
        yield project


@pytest.fixture
def sqlite_project(emulator: Emulator, tmp_path: Path) -> Iterator[Project]:
    """For tests of the CLI itself, where the database makes no difference."""
    with _project(f"sqlite:///{tmp_path / 'app.db'}", emulator, tmp_path) as project:
        yield project


@pytest.fixture
def pg_project(pg_url: str, emulator: Emulator, tmp_path: Path) -> Iterator[Project]:
    """`project` on PostgreSQL alone, for what only a database server can do."""
    with _project(pg_url, emulator, tmp_path) as project:
        yield project
