"""Create, upgrade and downgrade the connector's own tables through Alembic."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from connector.schema import VERSION_TABLE

# The top-level migrations/ folder is installed as this package (see pyproject.toml).
_SCRIPT_LOCATION = str(files("connector.migrations"))


def _alembic_config(connection: Connection) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", _SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), revision)


def current_revision(engine: Engine) -> str | None:
    # Every run asks; Alembic would say "Context impl ..." each time at INFO.
    with _quiet(logging.getLogger("alembic.runtime.migration")), engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """`logger` says only warnings and errors for a while (not thread-safe: a level is
    shared, and a concurrent `upgrade` may lose its INFO lines meanwhile)."""
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def head_revision() -> str | None:
    with_config = AlembicConfig()
    with_config.set_main_option("script_location", _SCRIPT_LOCATION)
    return ScriptDirectory.from_config(with_config).get_current_head()
