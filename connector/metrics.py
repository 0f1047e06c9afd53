"""The daemon's /metrics (Prometheus text) and /healthz, for one or several connectors.

Counters come from the instrumentation hook (connector.instrumentation); the backlog gauges
and /healthz from connector.health, read after each cycle and, at most every
REFRESH_SECONDS, when scraped. Every metric is named `lsq_sync_*` and labelled by connector.
Nothing here ever holds a key, a URL or a lead's values.

prometheus-client is an optional extra (`pip install 'lsq-sync[metrics]'`), imported only
when a server starts.
"""

from __future__ import annotations

import importlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import TYPE_CHECKING, Any

from connector.counts import RunCounts
from connector.errors import LsqSyncError
from connector.health import Backlog, Bounds, ChangeAges, Health, judge, read_backlog, unreadable
from connector.instrumentation import Instrumentation, LeadOutcome

if TYPE_CHECKING:
    from connector.sync import Connector

log = logging.getLogger(__name__)

# A scrape reads the database at most this often per connector (by the connector's clock);
# a cycle's end always does.
REFRESH_SECONDS = 5.0

# Call durations: from a fast local answer to LeadSquared's slowest, up to the total timeout.
_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

INSTALL_HINT = "pip install 'lsq-sync[metrics]'"


class MetricsUnavailableError(LsqSyncError):
    """metrics: is set in the config, but prometheus-client is not installed."""


def load_prometheus() -> ModuleType:
    try:
        return importlib.import_module("prometheus_client")
    except ImportError:
        raise MetricsUnavailableError(
            "metrics: is set in the config, but the prometheus-client package is not "
            f"installed: {INSTALL_HINT}"
        ) from None


class _Families:
    """Every lsq_sync_ metric, in a registry of the server's own (never the global one, so
    that two servers in one process, as in tests, do not clash)."""

    def __init__(self, prometheus: ModuleType) -> None:
        self.registry = prometheus.CollectorRegistry(auto_describe=True)
        counter, gauge = prometheus.Counter, prometheus.Gauge
        on = {"registry": self.registry}
        by = ["connector"]
        self.changes_ingested = counter(
            "lsq_sync_changes_ingested", "Captured changes ingested.", by, **on
        )
        self.leads_pushed = counter(
            "lsq_sync_leads_pushed", "Leads whose changed attributes were sent.", by, **on
        )
        self.attributes_sent = counter(
            "lsq_sync_attributes_sent", "Attributes sent in successful pushes.", by, **on
        )
        self.lead_outcomes = counter(
            "lsq_sync_lead_outcomes",
            "How each lead's push in a run ended (pushed, rejected, deferred, shared, "
            "detached, abandoned).",
            [*by, "outcome"],
            **on,
        )
        self.attributes_set_aside = counter(
            "lsq_sync_attributes_set_aside",
            "Attributes held back because LeadSquared does not know or would refuse them.",
            by,
            **on,
        )
        self.calls = counter(
            "lsq_sync_calls",
            "LeadSquared calls that reached the wire, by endpoint and outcome.",
            [*by, "endpoint", "outcome"],
            **on,
        )
        self.throttles = counter(
            "lsq_sync_throttles", "Calls LeadSquared throttled.", [*by, "endpoint"], **on
        )
        self.retries = counter(
            "lsq_sync_retries", "Leads sent again within a run after a transient failure.", by, **on
        )
        self.runs = counter("lsq_sync_runs", "Runs ended, by status.", [*by, "status"], **on)
        self.call_seconds = prometheus.Histogram(
            "lsq_sync_call_duration_seconds",
            "Time from a call going out to its answer (or to giving up on it).",
            [*by, "endpoint"],
            buckets=_CALL_BUCKETS,
            **on,
        )
        self.changes_pending = gauge(
            "lsq_sync_changes_pending", "Captured changes not yet ingested.", by, **on
        )
        self.leads_pending = gauge(
            "lsq_sync_leads_pending", "Leads waiting for a push (retry delays included).", by, **on
        )
        self.leads_rejected = gauge(
            "lsq_sync_leads_rejected", "Leads whose values LeadSquared refused.", by, **on
        )
        self.leads_held_back = gauge(
            "lsq_sync_leads_held_back", "Pending leads the connector holds back.", by, **on
        )
        self.lag = gauge(
            "lsq_sync_lag_seconds", "Age of the oldest change not yet pushed.", by, **on
        )
        self.last_success = gauge(
            "lsq_sync_last_success_timestamp_seconds",
            "When the last successful cycle ended (Unix time; 0 before the first).",
            by,
            **on,
        )
        self.healthy = gauge(
            "lsq_sync_healthy", "1 when /healthz calls the connector healthy, else 0.", by, **on
        )


class ConnectorMetrics(Instrumentation):
    """One connector's share of the metrics: counts its events, and keeps its backlog."""

    def __init__(self, families: _Families, connector: Connector, started: datetime) -> None:
        self.families = families
        self.connector = connector
        self.name = connector.config.name
        max_lag, max_cycle_age = connector.config.health_bounds
        self.bounds = Bounds(max_lag, max_cycle_age)
        self.started = started
        self._lock = threading.Lock()
        self._ages = ChangeAges()
        self._backlog: Backlog | None = None
        self._oldest_change: datetime | None = None
        self._error: str | None = None
        self._read_at: float | None = None
        # Children made now, so that every series shows (at 0) before its first event.
        for family in (
            families.changes_ingested,
            families.leads_pushed,
            families.attributes_sent,
            families.attributes_set_aside,
            families.retries,
        ):
            family.labels(self.name)

    # -- events ----------------------------------------------------------------------------

    def call_made(self, endpoint: str, outcome: str, seconds: float) -> None:
        self.families.calls.labels(self.name, endpoint, outcome).inc()
        self.families.call_seconds.labels(self.name, endpoint).observe(max(0.0, seconds))

    def throttled(self, endpoint: str, retry_after: float | None) -> None:
        self.families.throttles.labels(self.name, endpoint).inc()

    def retrying(self, lead_ids: Sequence[str], pause: float) -> None:
        self.families.retries.labels(self.name).inc(len(lead_ids))

    def lead_finished(
        self, lead_id: str, outcome: LeadOutcome, attributes: Sequence[str] = ()
    ) -> None:
        self.families.lead_outcomes.labels(self.name, outcome.value).inc()
        if outcome is LeadOutcome.PUSHED:
            self.families.leads_pushed.labels(self.name).inc()
            self.families.attributes_sent.labels(self.name).inc(len(attributes))

    def attributes_set_aside(self, lead_id: str, attributes: Sequence[str]) -> None:
        self.families.attributes_set_aside.labels(self.name).inc(len(attributes))

    def ingested(self, changes: int, rows_without_lead_id: int, rows_held_back: int) -> None:
        self.families.changes_ingested.labels(self.name).inc(changes)

    def run_finished(self, status: str, counts: RunCounts, error: str | None) -> None:
        self.families.runs.labels(self.name, status).inc()
        self.refresh()

    # -- backlog and health ----------------------------------------------------------------

    def refresh(self) -> None:
        """Read the backlog now; a database error is kept as the health's reason."""
        clock = self.connector.clock
        try:
            backlog, span = read_backlog(self.connector.engine, self.connector.tables)
        except LsqSyncError as exc:
            with self._lock:
                self._error, self._read_at = str(exc), clock.monotonic()
            log.warning(
                "metrics could not read the backlog",
                extra={"connector": self.name, "error": str(exc)},
            )
            return
        with self._lock:
            self._backlog, self._error = backlog, None
            self._oldest_change = self._ages.oldest_seen(clock.now(), span)
            self._read_at = clock.monotonic()

    def health(self) -> Health:
        """The verdict now, from a backlog read at most REFRESH_SECONDS ago; sets the gauges."""
        clock = self.connector.clock
        with self._lock:
            stale = self._read_at is None or clock.monotonic() - self._read_at >= REFRESH_SECONDS
        if stale:
            self.refresh()
        with self._lock:
            backlog, error, oldest_change = self._backlog, self._error, self._oldest_change
        if error is not None or backlog is None:
            verdict = unreadable(self.name, error or "not read yet")
        else:
            verdict = judge(
                self.name,
                now=clock.now(),
                backlog=backlog,
                oldest_change=oldest_change,
                watching_since=self.started,
                bounds=self.bounds,
            )
        self._show(verdict)
        return verdict

    def _show(self, verdict: Health) -> None:
        families, name = self.families, self.name
        families.healthy.labels(name).set(1 if verdict.healthy else 0)
        backlog = verdict.backlog
        if backlog is None:
            return  # the last values read stay: a failed read says nothing new about them
        families.changes_pending.labels(name).set(backlog.changes_pending)
        families.leads_pending.labels(name).set(backlog.leads_pending)
        families.leads_rejected.labels(name).set(backlog.leads_rejected)
        families.leads_held_back.labels(name).set(backlog.leads_held_back)
        families.lag.labels(name).set(verdict.lag_seconds)
        success = backlog.last_success
        families.last_success.labels(name).set(success.timestamp() if success else 0)


class MetricsServer:
    """Serves /metrics and /healthz for these connectors on a daemon thread.

    `start` binds at once, so a port in use is a clear error before the daemon starts; `stop`
    is safe to call twice.
    """

    def __init__(
        self,
        connectors: Sequence[Connector],
        host: str,
        port: int,
        runs_here: Callable[[str], bool] | None = None,
    ) -> None:
        prometheus = load_prometheus()
        # Daemons that share connectors each judge only those they run: another daemon's
        # lagging connector must not make this one unhealthy (and restarted).
        self._runs_here = runs_here or (lambda name: True)
        names = [connector.config.name for connector in connectors]
        if len(set(names)) != len(names):
            raise LsqSyncError(f"two connectors have the same name: {', '.join(sorted(names))}")
        self._prometheus = prometheus
        self._families = _Families(prometheus)
        self.watched = [
            ConnectorMetrics(self._families, connector, connector.clock.now())
            for connector in connectors
        ]
        self.host = host
        self._server = _bind(host, port, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="lsq-metrics", daemon=True
        )
        self._stopped = False

    @classmethod
    def start(
        cls,
        connectors: Sequence[Connector],
        host: str,
        port: int,
        runs_here: Callable[[str], bool] | None = None,
    ) -> MetricsServer:
        """Bind, hook into the connectors' events, and serve until `stop`. With `runs_here`,
        /healthz judges only the connectors it says this process runs."""
        server = cls(connectors, host, port, runs_here)
        for watched in server.watched:
            watched.connector.observe(watched)
        server._thread.start()
        log.info("metrics served", extra={"host": host, "port": server.port})
        return server

    @property
    def port(self) -> int:
        """The port bound (the one asked for, or the one given for 0)."""
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for watched in self.watched:
            watched.connector.unobserve(watched)
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def exposition(self) -> tuple[bytes, str]:
        """The /metrics body and its content type, with every connector's gauges current."""
        for watched in self.watched:
            watched.health()
        body: bytes = self._prometheus.generate_latest(self._families.registry)
        return body, str(self._prometheus.CONTENT_TYPE_LATEST)

    def health(self) -> tuple[bool, dict[str, Any]]:
        verdicts = [(watched.health(), self._runs_here(watched.name)) for watched in self.watched]
        healthy = all(verdict.healthy for verdict, here in verdicts if here)
        body = {
            "status": "ok" if healthy else "unhealthy",
            "connectors": [verdict.as_json() | {"runs_here": here} for verdict, here in verdicts],
        }
        return healthy, body


def _bind(host: str, port: int, metrics: MetricsServer) -> ThreadingHTTPServer:
    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    handler = type("Handler", (_Handler,), {"metrics": metrics})
    try:
        return Server((host, port), handler)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise LsqSyncError(
            f"cannot serve metrics on {host}:{port} ({reason}): change metrics.host or "
            "metrics.port, or stop what uses it"
        ) from None


class _Handler(BaseHTTPRequestHandler):
    metrics: MetricsServer
    server_version = "lsq-sync"
    sys_version = ""
    # A client that connects and sends nothing holds a thread only this long.
    timeout = 10

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                body, content_type = self.metrics.exposition()
                self._answer(200, body, content_type)
            elif path == "/healthz":
                healthy, verdict = self.metrics.health()
                self._answer(200 if healthy else 503, _json(verdict), "application/json")
            else:
                missing = {"error": "not found: /metrics or /healthz"}
                self._answer(404, _json(missing), "application/json")
        except Exception as exc:  # noqa: BLE001 (one bad answer must not end the server)
            log.error("metrics request failed", extra={"path": path, "error": type(exc).__name__})
            self._answer(500, _json({"error": "internal error"}), "application/json")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics request", extra={"request": format % args})


def _json(value: object) -> bytes:
    return json.dumps(value, indent=2).encode() + b"\n"
