"""What a daemon does not log on every cycle: Alembic's context line, APScheduler's skipped
tick when a long cycle overlaps the next one."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler

from connector import migrate
from connector.daemon import add_cycle_job


def test_asking_the_schema_version_logs_nothing_at_info_but_init_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    caplog.set_level(logging.INFO)
    assert migrate.current_revision(engine) is None
    assert [r for r in caplog.records if r.name.startswith("alembic")] == []
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()
    alembic = [r.getMessage() for r in caplog.records if r.name.startswith("alembic")]
    assert any(message.startswith("Running upgrade") for message in alembic), alembic
    assert sum(message.startswith("Context impl") for message in alembic) == 1  # init's


def test_a_skipped_overlapping_tick_is_not_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An in-memory database cannot be watched for wake-ups: no waker thread is started.
    connector = SimpleNamespace(
        config=SimpleNamespace(name="quiet"), engine=sa.create_engine("sqlite://")
    )
    assert add_cycle_job(BackgroundScheduler(), connector, 60) is None  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING)
    logger = logging.getLogger("apscheduler.scheduler")
    logger.warning(
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
        "lsq-sync-quiet",
        1,
    )
    logger.warning("something else")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "something else"
    ]
