"""Run the sync cycle on an APScheduler interval until stopped (the CLI stops it on SIGTERM or
SIGINT; see connector.signals)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from connector import wakeup
from connector.errors import FatalRunError, LsqSyncError
from connector.metrics import MetricsServer
from connector.sync import Connector

log = logging.getLogger(__name__)


class _OverlapIsNormal(logging.Filter):
    """A cycle longer than the interval makes APScheduler skip the tick it overlaps, as it
    should (max_instances=1), and say so as a warning: that is said at DEBUG instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "maximum number of running instances reached" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_OVERLAP_IS_NORMAL = _OverlapIsNormal()


def add_cycle_job(
    scheduler: BackgroundScheduler,
    connector: Connector,
    interval: float,
    on_fatal: threading.Event | None = None,
) -> wakeup.Waker | None:
    """Schedule `connector.run_once` so that runs never overlap; usable in a host's scheduler.

    A captured change also starts a run, through the returned waker (None when the database
    cannot be watched); it ends when `connector.stop` is set."""
    logging.getLogger("apscheduler.scheduler").addFilter(_OVERLAP_IS_NORMAL)
    job_id = f"lsq-sync-{connector.config.name}"
    requests = wakeup.CycleRequests(scheduler, job_id, interval)

    def cycle() -> None:
        requests.starting()
        try:
            report = connector.run_once()
            requests.finished(changes_left=report.counts.changes_waiting > 0)
        except FatalRunError as exc:
            log.error("run failed, stopping", extra={"error": str(exc)})
            if on_fatal is not None:
                on_fatal.set()
            connector.stop.set()
        except LsqSyncError as exc:
            log.error("run failed", extra={"error": str(exc)})

    scheduler.add_job(
        cycle,
        "interval",
        seconds=interval,
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
        id=job_id,
    )
    if not wakeup.can_wake(connector.engine):
        return None
    watch = wakeup.watch_for(connector.engine, connector.config.name, connector.stop)
    debounce = connector.config.sync.debounce_seconds
    waker = wakeup.Waker(
        watch, requests.request, connector.stop, debounce, connector=connector.config.name
    )
    return waker.start()


def run_daemon(connector: Connector) -> int:
    """Block until stopped; the cycle in flight records its state before this returns."""
    metrics = connector.config.metrics
    # Bound before the first cycle: a port in use, or the extra not installed, ends the
    # daemon at once with the reason.
    server = MetricsServer.start([connector], metrics.host, metrics.port) if metrics else None
    try:
        fatal = threading.Event()
        scheduler = BackgroundScheduler(timezone=UTC)
        waker = add_cycle_job(scheduler, connector, connector.config.sync.interval_seconds, fatal)
        scheduler.start()
        log.info(
            "daemon started", extra={"interval_seconds": connector.config.sync.interval_seconds}
        )
        connector.stop.wait()
        scheduler.shutdown(wait=True)
        if waker is not None:
            waker.join(wakeup.LISTEN_SLICE_SECONDS + 5)
    finally:
        if server is not None:
            server.stop()
    log.info("daemon stopped")
    return 1 if fatal.is_set() else 0
