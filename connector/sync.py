"""The one place that wires config, database, source, client and clock into a sync cycle.

Library use::

    from connector import Connector, load_config

    with Connector(load_config("config.yaml")) as sync:
        sync.init()               # once, or after a mapping change
        report = sync.run_once()  # one full cycle: ingest, then push
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from connector import capture, catalogue, installation, migrate, teardown
from connector.calls import call_for
from connector.client import LeadSquaredClient
from connector.clock import Clock, SystemClock
from connector.config import Config
from connector.counts import RunCounts, Tally
from connector.database import create_engine, translate_errors
from connector.errors import (
    LsqSyncError,
    RunLockLostError,
    SourceDatabaseError,
)
from connector.fieldlist import FieldList, RunFields
from connector.ingest import ingest
from connector.instrumentation import Fanout, Instrumentation, LoggingInstrumentation
from connector.preflight import AsSpelled, Preflight, Shaper
from connector.push import Pusher
from connector.ratelimit import AccountLimiter
from connector.runlock import UNFENCED, Lease, LeaseTiming, NotHeld, RunLock
from connector.schema import lease as lease_table
from connector.source import SourceTable
from connector.tables import ConnectorTables

if TYPE_CHECKING:
    from connector.dryrun import DryRun

log = logging.getLogger(__name__)

RunStatus = Literal["ok", "stopped", "failed", "skipped"]


@dataclass(frozen=True)
class RunReport:
    run_id: int
    status: RunStatus
    counts: RunCounts = field(default_factory=RunCounts)
    error: str | None = None

    def summary(self) -> str:
        if self.status == "skipped":
            return f"run skipped: {self.error}"
        c = self.counts
        text = (
            f"run {self.run_id} {self.status}: {c.changes_ingested} changes ingested, "
            f"{c.leads_pushed} leads pushed, {c.leads_rejected} rejected, "
            f"{c.leads_deferred} deferred, {c.calls_made} calls"
        )
        if c.calls_throttled:
            text += f" ({c.calls_throttled} throttled)"
        notes = [
            (
                c.leads_abandoned,
                f"{c.leads_abandoned} leads' calls unanswered at the stop (they are sent again "
                "next run)",
            ),
            (
                c.attributes_set_aside,
                f"{c.attributes_set_aside} attributes set aside (unknown to LeadSquared, or a "
                "value its field would refuse; see `lsq-sync status`)",
            ),
            (c.rows_without_lead_id, f"{c.rows_without_lead_id} changed rows have no lead id"),
            (
                c.leads_held_shared,
                f"{_leads(c.leads_held_shared)} held back: several rows have its lead id (see "
                "`lsq-sync status`)",
            ),
            (
                c.leads_detached,
                f"{_leads(c.leads_detached)} detached: no row has its lead id any more",
            ),
            (
                c.rows_held_back,
                f"{c.rows_held_back} {'row' if c.rows_held_back == 1 else 'rows'} held back (a "
                "value that cannot be read or sent; see `lsq-sync status`)",
            ),
            (
                c.changes_waiting,
                f"{c.changes_waiting} changes left for the next run (committed during this "
                "one, or behind a transaction still open on the database server)",
            ),
        ]
        text += "".join(f", {note}" for count, note in notes if count)
        return text + (f"; error: {self.error}" if self.error else "")

    def as_json(self) -> str:
        """`lsq-sync run --json`: the status, every count and the error (run_id 0: skipped)."""
        return json.dumps(
            {
                "run_id": self.run_id,
                "status": self.status,
                "error": self.error,
                "counts": dataclasses.asdict(self.counts),
            },
            indent=2,
        )


def _calls_per_window(config: Config, leads_per_call: int) -> int:
    """The calls one rate window allows the push's calls: bulk calls have a limit of their own."""
    leadsquared = config.leadsquared
    window = leadsquared.bulk.rate_limit if leads_per_call > 1 else leadsquared.rate_limit
    return window.calls


def _leads(count: int) -> str:
    return f"{count} {'lead' if count == 1 else 'leads'}"


class Connector:
    """One configured connector: its database, its source table and its LeadSquared client."""

    def __init__(
        self,
        config: Config,
        *,
        config_source: str = "config",
        engine: Engine | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        stop: threading.Event | None = None,
        lease_timing: LeaseTiming | None = None,
        instrumentation: Instrumentation | None = None,
    ) -> None:
        self.config = config
        # Every event goes to the log, to the caller's instrumentation, and during a run to
        # the run's tally.
        self._events = Fanout(LoggingInstrumentation(), instrumentation or Instrumentation())
        self.lease_timing = lease_timing or LeaseTiming()
        self.config_source = config_source
        self.stop = stop or threading.Event()
        self.clock = clock or SystemClock(self.stop)
        self.engine = engine or create_engine(config.database.url.get_secret_value())
        self.tables = ConnectorTables(self.engine, config.name)
        self._transport = transport
        self._client: LeadSquaredClient | None = None
        self._source: SourceTable | None = None
        # The source table's columns as `_source` was reflected with (see _source_for_run).
        self._source_columns: tuple[tuple[str, ...], ...] | None = None
        # Whether the connector's tables were found at the current version: asked once per
        # process, and again after a database error (the tables may have been dropped).
        self._tables_checked = False
        # Lives as long as the connector, so a daemon's cycles keep what throttling taught.
        self.limiter = AccountLimiter(self.engine, config.leadsquared, self.clock, self.stop)
        self.bulk_limiter = AccountLimiter(
            self.engine, config.leadsquared, self.clock, self.stop, bulk=True
        )

    def observe(self, instrumentation: Instrumentation) -> None:
        """Send every later event to `instrumentation` too (a daemon's metrics, say)."""
        self._events.targets.append(instrumentation)

    def unobserve(self, instrumentation: Instrumentation) -> None:
        """Stop sending events to an instrumentation given to `observe`."""
        with contextlib.suppress(ValueError):
            self._events.targets.remove(instrumentation)

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self.engine.dispose()

    @property
    def source(self) -> SourceTable:
        if self._source is None:
            with translate_errors("reading the source table's columns"):
                self._source = SourceTable(self.engine, self.config, self.config_source)
        return self._source

    def pusher(self, pending_leads: int = 0) -> Pusher:
        """The run's pusher; with `pending_leads` leads to push, bulk calls may carry them."""
        config = self.config
        shaper: Shaper = AsSpelled()
        if config.leadsquared.check_fields:
            fields = RunFields.for_config(config, self.field_list, self.client, self.clock)
            shaper = Preflight.for_config(config, fields, in_utc=self.source.spelled_in_utc)
        call = call_for(
            config,
            self.client,
            pending_leads=pending_leads,
            matches=self.tables.matches,
            clock=self.clock,
            rows_with=self._rows_with,
        )
        return Pusher(
            queue=self.tables.queue(self.source),
            call=call,
            attributes=frozenset(config.attributes.values()),
            clock=self.clock,
            stop=self.stop,
            retry=config.leadsquared.retry,
            max_in_flight=config.leadsquared.max_in_flight,
            events=self._events,
            shaper=shaper,
            kept_when_empty=config.kept_when_empty,
            burst_leads=call.leads_per_call * _calls_per_window(config, call.leads_per_call),
        )

    def _rows_with(self, lead_ids: list[str]) -> Mapping[str, list[str] | None]:
        with translate_errors("reading the source table"), self.engine.connect() as connection:
            return self.source.keys_pointing_to(connection, lead_ids)

    @property
    def field_list(self) -> FieldList:
        return FieldList(self.engine, self.limiter.account)

    def client_paced_by(
        self, limiter: AccountLimiter | None, bulk_limiter: AccountLimiter | None = None
    ) -> LeadSquaredClient:
        """The connector's client, made paced by `limiter` (None: not paced) on first use:
        `validate` may run before the connector's tables, which pacing writes to, exist."""
        if self._client is None:
            self._client = LeadSquaredClient(
                self.config.leadsquared,
                transport=self._transport,
                limiter=limiter,
                bulk_limiter=bulk_limiter,
                stop=self.stop,
                drain_seconds=self.config.sync.drain_seconds,
                events=self._events,
            )
        return self._client

    @property
    def client(self) -> LeadSquaredClient:
        return self.client_paced_by(self.limiter, self.bulk_limiter)

    def init(self) -> int:
        """Create or upgrade the connector's tables, then (re)install change capture.

        Clears the errors the triggers noted since the last `init`. When one of them lost the
        keys of the rows its statement wrote, or when the capture installed before had stopped
        (see `installation.capture_lapsed`), every row is queued again (as `backfill` does),
        and their number is returned (0 otherwise).
        """
        with translate_errors("creating the connector's tables"):
            self._tables_checked = False
            migrate.upgrade(self.engine)
        source = self.source
        with translate_errors("installing change capture"), self.engine.begin() as connection:
            table = installation.fit_for_capture(connection, self.config, self.config_source)
            lapsed = installation.capture_lapsed(connection, self.config.name, table)
            capture.install(connection, self.config.name, source, table)
            installation.save(
                connection,
                self.config.name,
                table,
                capture.signature(self.config),
                self.clock.now(),
            )
            # After install: its DDL waited for every statement the old triggers saw.
            noted_through = installation.last_error_id(connection, self.config.name)
        # Once the lock install took on the source table is released: queueing every row
        # reads the whole table.
        with translate_errors("queueing rows"), self.engine.begin() as connection:
            noted = installation.clear_errors(connection, self.config.name, noted_through)
            queued = 0
            if lapsed or (noted is not None and noted.keys_lost):
                queued = capture.record_all_rows(connection, self.config.name, source)
        log.info("capture installed", extra={"table": str(table), "rows_queued": queued})
        if self.config.leadsquared.check_fields:
            with translate_errors("keeping the account's lead fields"):
                self.field_list.keep(self.client, self.clock.now())
        return queued

    def uninstall(self, *, drop_state: bool = False) -> teardown.Uninstalled:
        """Remove this connector's triggers and functions; with `drop_state`, also its rows in
        every `lsq_sync_*` table, and those tables when no other connector uses them.

        Holds the run lock, so that no run is in progress or still draining its calls."""
        with translate_errors("removing change capture"):
            has_lease = sa.inspect(self.engine).has_table(lease_table.name)
        if not has_lease:
            # No tables of this version: no run of it can be going on.
            return self._uninstall(drop_state, None)
        with self._run_lock().hold() as held:
            if isinstance(held, NotHeld):
                raise LsqSyncError(f"{held.reason}: stop it, then uninstall")
            return self._uninstall(drop_state, held)

    def _uninstall(self, drop_state: bool, held: Lease | None) -> teardown.Uninstalled:
        if drop_state and held is not None:
            held.retire()
        with translate_errors("removing change capture"), self.engine.begin() as connection:
            removed = teardown.uninstall(connection, self.config, drop_state=drop_state)
        log.info("capture removed", extra={"table": removed.table})
        return removed

    def backfill(self) -> int:
        """Queue every existing source row; the next run pushes whatever differs."""
        self.check_ready()
        with translate_errors("queueing existing rows"), self.engine.begin() as connection:
            return capture.record_all_rows(connection, self.config.name, self.source)

    def retry(self, lead_ids: list[str] | None = None) -> int:
        """Push failed leads again on the next run: those LeadSquared rejected, those with
        attributes set aside, and those waiting out a retry delay. All of them, or these."""
        self.check_ready()
        with translate_errors("marking leads for retry"), self.engine.begin() as connection:
            self._refuse_unknown(connection, lead_ids)
            return self.tables.leads.retry(connection, lead_ids, self.clock.now())

    def _refuse_unknown(self, connection: sa.Connection, lead_ids: list[str] | None) -> None:
        if not lead_ids:
            return
        unknown = self.tables.leads.unknown(connection, lead_ids)
        if unknown:
            shown = ", ".join(unknown[:10]) + (", ..." if len(unknown) > 10 else "")
            noun = "lead id" if len(unknown) == 1 else "lead ids"
            raise LsqSyncError(
                f"connector {self.config.name} knows no lead with the {noun} {shown} "
                "(`lsq-sync status` lists the leads it knows); nothing was changed"
            )

    def resync(self, lead_ids: list[str] | None, attributes: list[str] | None = None) -> int:
        """Make the next run send these leads' (or all leads') current values of these
        attributes (or all mapped ones) again, whatever was last pushed."""
        self.check_ready()
        if attributes is not None:
            mapped = set(self.config.attributes.values())
            unknown = sorted(set(attributes) - mapped)
            if unknown:
                raise LsqSyncError(
                    f"not a mapped attribute: {', '.join(unknown)} (mapped: "
                    f"{', '.join(sorted(mapped))})"
                )
        with translate_errors("marking leads for a resync"), self.engine.connect() as connection:
            self._refuse_unknown(connection, lead_ids)
        forgotten = attributes if attributes is not None else self.config.attributes.values()
        count, after = 0, None
        while True:
            with translate_errors("marking leads for a resync"), self.engine.begin() as connection:
                page = self.tables.leads.resync_page(
                    connection,
                    lead_ids=lead_ids,
                    attributes=set(forgotten),
                    after=after,
                    now=self.clock.now(),
                )
            if page is None:
                return count
            after, size = page
            count += size

    def dry_run(self, limit: int) -> DryRun:
        """What the next run would send (the first `limit` leads), changes not yet ingested
        included, without a call or a write (connector.dryrun). Takes the run lock, but no
        lease: skipped while a run is in progress."""
        from connector.dryrun import DryRun, plan_next_run  # noqa: PLC0415

        self.check_ready()
        source = self.source
        with self._run_lock().held_without_lease() as not_held:
            if not_held is not None:
                return DryRun.skipped_because(self.config.name, not_held.reason)
            with translate_errors("planning the next run"):
                return plan_next_run(self, source, limit)

    def check_ready(self) -> None:
        """Refuse to run on missing tables or on triggers that no longer match the config."""
        if not self._tables_checked:
            installation.check_tables(self.engine)
            self._tables_checked = True
        installation.check_capture(self.engine, self.config)

    def run_once(self) -> RunReport:
        """One full cycle: ingest every committed change, then push every pending lead,
        taking in the changes committed meanwhile about every second (connector.pushorder
        says in which order the leads go).

        Per-lead failures are recorded and reported; a FatalRunError, a database error or
        losing the run lock (RunLockLostError) ends the run, is recorded in the run history
        (unless another run has taken over), and propagates.
        """
        try:
            self.check_ready()
            with self._run_lock().hold() as lease:
                if isinstance(lease, NotHeld):
                    log.warning("run skipped", extra={"reason": lease.reason})
                    return RunReport(0, "skipped", error=lease.reason)
                return self._run_fenced(lease)
        except SourceDatabaseError:
            # The connector's tables may be what is missing: check their version again.
            self._tables_checked = False
            raise

    def run_held(self, lease: Lease) -> RunReport:
        """One cycle, as `run_once`, under a run lock the caller holds already: a daemon keeps
        its connectors' locks from cycle to cycle (see connector.fleet)."""
        try:
            self.check_ready()
            lease.ensure_held()
            return self._run_fenced(lease)
        except SourceDatabaseError:
            self._tables_checked = False
            raise

    def run_lock(self) -> RunLock:
        """The connector's run lock, to `hold()`."""
        return self._run_lock()

    def _run_lock(self) -> RunLock:
        return RunLock(
            self.engine,
            self.config.name,
            clock=self.clock,
            stop=self.stop,
            timing=self.lease_timing,
            # After losing the lock, this run's calls in flight end within their total
            # timeout; for that long the run that took the lock waits for them to be recorded.
            drain_seconds=self.config.leadsquared.timeout_seconds.total
            + self.lease_timing.stale_seconds,
        )

    def _run_fenced(self, lease: Lease) -> RunReport:
        """Every write of run state, and every call, first checks the lease is still ours."""
        self.tables.fence.current = lease
        self.limiter.gate = self.bulk_limiter.gate = lease.call_delay
        try:
            return self._run_locked()
        finally:
            self.tables.fence.current = UNFENCED
            self.limiter.gate = self.bulk_limiter.gate = None

    def _source_for_run(self) -> SourceTable:
        """The source table, reflected again only when its columns changed: in a daemon, a
        column's type may change, and how values are read and normalised follows it. Not on
        every cycle: each reflection makes every statement built on the table a new one, and
        SQLAlchemy's cache of compiled statements would keep them all."""
        source = self.config.source
        with (
            translate_errors("reading the source table's columns"),
            self.engine.connect() as connection,
        ):
            table = catalogue.resolve(connection, source.schema_, source.table)
            columns = catalogue.column_types(connection, table) if table else ()
        if columns != self._source_columns:
            self._source = None
            self._source_columns = None
            fresh = self.source
            self._source_columns = columns
            return fresh
        return self.source

    def _run_locked(self) -> RunReport:
        source = self._source_for_run()
        with translate_errors("starting a run"):
            now = self.clock.now()
            self.tables.runs.close_abandoned_runs(now)
            self.tables.runs.prune(now - timedelta(days=self.config.sync.keep_runs_days))
            run_id = self.tables.runs.start_run(now)
        tally = Tally()
        self._events.targets.append(tally)
        status: RunStatus = "failed"
        error: str | None = None
        try:
            self._ingest(source)
            try:
                with translate_errors("pushing leads"):
                    due = self.tables.queue(source).due_count(self.clock.now())
                    self._events.push_started(due)
                    # Changes committed during the push join its queue (see connector.push).
                    pushed = self.pusher(due).push_pending(
                        self.config.sync.push_batch_size, take_in=lambda: self._ingest(source)
                    )
            except SourceDatabaseError:
                # Sessions killed under the run also cost it the run lock: when that is lost,
                # it is the cause to report (and it says no call followed).
                self.tables.fence.ensure_held()
                raise
            with translate_errors("counting changes left"), self.engine.connect() as connection:
                tally.waiting(self.tables.changes.pending_changes(connection))
            status = "stopped" if pushed.interrupted else "ok"
            error = pushed.stop_reason
        except LsqSyncError as exc:
            error = str(exc)
            raise
        except Exception as exc:
            # A bug, not a user error: still leave a trace in the run history.
            error = self.client.redact(f"internal error: {type(exc).__name__}: {exc}")
            raise
        finally:
            with contextlib.suppress(ValueError):  # the run's record matters more
                self._events.targets.remove(tally)
            self._finish_run(run_id, status, tally.counts(), error)
        report = RunReport(run_id, status, tally.counts(), error)
        log.info("run finished", extra={"summary": report.summary()})
        return report

    def _ingest(self, source: SourceTable) -> None:
        with translate_errors("ingesting changes"):
            ingest(
                self.engine,
                tables=self.tables,
                source=source,
                clock=self.clock,
                batch_size=self.config.sync.ingest_batch_size,
                stop=self.stop,
                events=self._events,
            )

    def _finish_run(
        self, run_id: int, status: RunStatus, counts: RunCounts, error: str | None
    ) -> None:
        """Record how the run ended. If it failed, a failure to record that is only logged:
        raised, it would replace the error that says which phase failed."""
        try:
            with translate_errors("recording the run"):
                self.tables.runs.finish_run(run_id, self.clock.now(), status, counts, error)
        except (SourceDatabaseError, RunLockLostError) as exc:
            if status != "failed":
                raise
            log.error("the failed run could not be recorded", extra={"error": str(exc)})
        finally:
            self._events.run_finished(status, counts, error)
