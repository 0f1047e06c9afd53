"""Run the sync cycles of one or more connectors, each on its own APScheduler interval job,
until stopped (the CLI stops it on SIGTERM or SIGINT; see connector.signals). Which of them
this daemon runs, when other daemons share them, is connector.fleet's to decide."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from connector import wakeup
from connector.errors import ConfigError, ConfigLocation, ConfigProblem, FatalRunError, LsqSyncError
from connector.fleet import Fleet, FleetTiming
from connector.metrics import MetricsServer
from connector.sync import Connector, RunReport

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


def cycle_job_id(connector: Connector) -> str:
    return f"lsq-sync-{connector.config.name}"


def add_cycle_job(
    scheduler: BackgroundScheduler,
    connector: Connector,
    interval: float,
    on_fatal: threading.Event | None = None,
    *,
    run: Callable[[], RunReport | None] | None = None,
    requests: wakeup.CycleRequests | None = None,
) -> wakeup.Waker | None:
    """Schedule `connector.run_once` (or `run`, a cycle of it that may decline) so that runs
    never overlap; usable in a host's scheduler. A fatal error stops this connector alone.

    A captured change also starts a run, through the returned waker (None when the database
    cannot be watched), or through `requests`, when given; the waker ends when
    `connector.stop` is set."""
    logging.getLogger("apscheduler.scheduler").addFilter(_OVERLAP_IS_NORMAL)
    name = connector.config.name
    if requests is None:
        requests = wakeup.CycleRequests(scheduler, cycle_job_id(connector), interval)

    def cycle() -> None:
        requests.starting()
        try:
            report = (run or connector.run_once)()
            left = report is not None and report.counts.changes_waiting > 0
            requests.finished(changes_left=left)
        except FatalRunError as exc:
            log.error("run failed, stopping", extra={"connector": name, "error": str(exc)})
            if on_fatal is not None:
                on_fatal.set()
            connector.stop.set()
        except LsqSyncError as exc:
            log.error("run failed", extra={"connector": name, "error": str(exc)})

    scheduler.add_job(
        cycle,
        "interval",
        seconds=interval,
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
        id=cycle_job_id(connector),
    )
    if not wakeup.can_wake(connector.engine):
        return None
    watch = wakeup.watch_for(connector.engine, name, connector.stop)
    debounce = connector.config.sync.debounce_seconds
    waker = wakeup.Waker(watch, requests.request, connector.stop, debounce, connector=name)
    return waker.start()


# How often the daemon looks whether every connector has stopped on its own.
_LOOK_SECONDS = 0.5


def run_daemon(
    connectors: Connector | Sequence[Connector],
    stop: threading.Event | None = None,
    *,
    fleet_timing: FleetTiming | None = None,
) -> int:
    """Block until `stop` is set (each connector's own stop, for one connector alone), or
    every connector has stopped on a fatal error; the cycles in flight record their state
    before this returns. Returns 1 when a connector stopped on a fatal error, else 0.

    Each connector runs on its own interval job, and only while this daemon owns it: other
    daemons given the same connectors share them (see connector.fleet).
    """
    if isinstance(connectors, Connector):
        connectors = [connectors]
    names = [c.config.name for c in connectors]
    if len(set(names)) != len(names):
        raise ValueError(f"connector names must differ: {', '.join(names)}")
    stop = stop if stop is not None else connectors[0].stop if len(connectors) == 1 else None
    if stop is None:
        raise ValueError("several connectors need a stop event of the daemon's own")
    fatal = threading.Event()
    scheduler = BackgroundScheduler(
        timezone=UTC,
        # A worker per connector, and no deadline for a late start: with fewer, the cycles of
        # some connectors would wait for others' long ones, and APScheduler drops a run that
        # starts more than its grace time late.
        executors={"default": ThreadPoolExecutor(max(10, len(connectors)))},
        job_defaults={"misfire_grace_time": None},
    )
    requests = {
        c.config.name: wakeup.CycleRequests(
            scheduler, cycle_job_id(c), c.config.sync.interval_seconds
        )
        for c in connectors
    }
    # A claim asks for a cycle as a wake-up does, so that one ending as it comes cannot skip it.
    fleet = Fleet(connectors, on_owned=lambda name: requests[name].request(), timing=fleet_timing)
    wakers: list[wakeup.Waker] = []
    server = None
    try:
        # Bound before the first cycle: a port in use, or the extra not installed, ends the
        # daemon at once with the reason.
        server = _metrics_server(connectors, fleet)
        for connector in connectors:
            waker = add_cycle_job(
                scheduler,
                connector,
                connector.config.sync.interval_seconds,
                fatal,
                run=functools.partial(fleet.run_cycle, connector.config.name),
                requests=requests[connector.config.name],
            )
            if waker is not None:
                wakers.append(waker)
        scheduler.start()
        fleet.start()
        log.info("daemon started", extra={"connectors": names, "daemon": fleet.daemon})
        while not stop.wait(_LOOK_SECONDS):
            if all(c.stop.is_set() for c in connectors):
                log.error("every connector stopped on a fatal error; the daemon stops")
                break
    finally:
        # Also after an error on the way up: no waker, lock or heartbeat may outlive this.
        for connector in connectors:
            connector.stop.set()
        # The fleet first: it releases each lock once its cycle in flight has drained, while
        # the scheduler can still take the wake-up of a claim that was under way.
        fleet.stop()
        if scheduler.running:
            scheduler.shutdown(wait=True)
        deadline = time.monotonic() + wakeup.LISTEN_SLICE_SECONDS + 5
        for waker in wakers:
            waker.join(max(0.0, deadline - time.monotonic()))
        if server is not None:
            server.stop()
    log.info("daemon stopped")
    return 1 if fatal.is_set() else 0


def _metrics_server(connectors: Sequence[Connector], fleet: Fleet) -> MetricsServer | None:
    """One server for all the connectors, where their configs ask for it: they must agree on
    where it listens. Its /healthz judges the connectors this daemon runs."""
    wanted = {
        (c.config.metrics.host, c.config.metrics.port): c.config_source
        for c in connectors
        if c.config.metrics is not None
    }
    if not wanted:
        return None
    if len(wanted) > 1:
        places = ", ".join(f"{host}:{port} in {source}" for (host, port), source in wanted.items())
        message = f"the configs ask for metrics in different places ({places}): give them one"
        first = next(iter(wanted.values()))
        raise ConfigError([ConfigProblem(ConfigLocation(first, ("metrics",)), message)])
    ((host, port),) = wanted
    return MetricsServer.start(list(connectors), host, port, runs_here=fleet.runs)
