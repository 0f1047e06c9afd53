"""Create, upgrade and downgrade the connector's own tables through Alembic."""

from __future__ import annotations

import logging
import threading
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
    with _ALEMBIC_LOGS.migrating(), engine.begin() as connection:
        command.upgrade(_alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    with _ALEMBIC_LOGS.migrating(), engine.begin() as connection:
        command.downgrade(_alembic_config(connection), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


class _OnlyWhileMigrating(logging.Filter):
    """Every run asks for the schema's version, and Alembic says "Context impl ..." each time
    at INFO: its INFO lines pass only while this thread runs a migration (`init`)."""

    def __init__(self) -> None:
        super().__init__()
        self._migrating = threading.local()

    @contextmanager
    def migrating(self) -> Iterator[None]:
        self._migrating.active = True
        try:
            yield
        finally:
            self._migrating.active = False

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or getattr(self._migrating, "active", False)


_ALEMBIC_LOGS = _OnlyWhileMigrating()
logging.getLogger("alembic.runtime.migration").addFilter(_ALEMBIC_LOGS)


def head_revision() -> str | None:
    with_config = AlembicConfig()
    with_config.set_main_option("script_location", _SCRIPT_LOCATION)
    return ScriptDirectory.from_config(with_config).get_current_head()
