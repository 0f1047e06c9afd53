"""/metrics and /healthz over real HTTP, for a connector on a real database calling the
emulator; time is the connector's injected clock, so the lag grows without waiting."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from connector import Connector
from connector.errors import LsqSyncError
from connector.metrics import REFRESH_SECONDS, MetricsServer, MetricsUnavailableError
from connector.testing.emulator import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, Emulator
from tests.fakes import FakeClock
from tests.support import config_dict, execute, load, wait_until_readable

THROTTLED_BODY = json.dumps(
    {
        "Status": "Error",
        "ExceptionType": "MXAPIRateLimitExceededException",
        "ExceptionMessage": "API calls exceeded the limit of 25 in 5 second(s)",
    }
)
MAX_LAG = 120.0
MAX_CYCLE_AGE = 300.0


def make_connector(
    db_url: str, emulator: Emulator, clock: FakeClock, *, attempts: int = 4
) -> Connector:
    """With `attempts` tries per lead per run; each retry's pause advances the clock by a
    random amount, so tests that count seconds allow none."""
    config = config_dict(
        db_url,
        emulator,
        leadsquared={"retry": {"attempts": attempts, "max_seconds": 3600}},
        sync={"interval_seconds": 60},
        metrics={
            "host": "127.0.0.1",
            "port": 9464,
            "max_lag_seconds": MAX_LAG,
            "max_cycle_age_seconds": MAX_CYCLE_AGE,
        },
    )
    return Connector(load(config), clock=clock, stop=clock.stop)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sync(db_url: str, app: sa.Engine, emulator: Emulator, clock: FakeClock) -> Iterator[Connector]:
    with make_connector(db_url, emulator, clock) as connector:
        connector.init()
        yield connector


@pytest.fixture
def server(sync: Connector) -> Iterator[MetricsServer]:
    # Port 0: the system picks a free one, so parallel test sessions never collide.
    with MetricsServer.start([sync], "127.0.0.1", 0) as server:
        yield server


def get(server: MetricsServer, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.port}{path}", timeout=10)


def samples(server: MetricsServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = get(server, "/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, frozenset({"connector": "test", **labels}.items()))]


def healthz(server: MetricsServer) -> tuple[int, dict[str, Any]]:
    answer = get(server, "/healthz")
    assert answer.headers["content-type"] == "application/json"
    body: dict[str, Any] = answer.json()
    return answer.status_code, body


def test_metrics_after_pushes_a_throttle_a_retry_and_a_rejection(
    sync: Connector, server: MetricsServer, app: sa.Engine, emulator: Emulator
) -> None:
    for lead_id in ("L1", "L2", "L3"):
        emulator.add_lead(lead_id)
    # The first call alone is throttled, and sent again; its next try fails with a 503 and
    # is sent once more (connector.push sends the first call of a run alone).
    emulator.answer_next(1, 429, THROTTLED_BODY)
    emulator.fail_next(1, "503")
    execute(
        app,
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES "
        "(1, 'Pune', 'L1'), (2, 'Goa', 'L2'), (3, 'Delhi', 'L3'), (4, 'Agra', 'MISSING')",
    )
    wait_until_readable(app)
    report = sync.run_once()
    assert (report.counts.leads_pushed, report.counts.leads_rejected) == (3, 1)

    found = samples(server)
    assert value(found, "lsq_sync_changes_ingested_total") == 4
    assert value(found, "lsq_sync_leads_pushed_total") == 3
    assert value(found, "lsq_sync_attributes_sent_total") == 3  # mx_City, for each lead
    assert value(found, "lsq_sync_lead_outcomes_total", outcome="rejected") == 1
    assert value(found, "lsq_sync_lead_outcomes_total", outcome="pushed") == 3
    update = {"endpoint": "Lead.Update"}
    assert value(found, "lsq_sync_calls_total", **update, outcome="throttled") == 1
    assert value(found, "lsq_sync_calls_total", **update, outcome="transient") == 1
    assert value(found, "lsq_sync_calls_total", **update, outcome="success") == 3
    assert value(found, "lsq_sync_calls_total", **update, outcome="rejected") == 1
    assert value(found, "lsq_sync_throttles_total", **update) == 1
    assert value(found, "lsq_sync_retries_total") == 2
    assert value(found, "lsq_sync_call_duration_seconds_count", **update) == 6
    assert value(found, "lsq_sync_runs_total", status="ok") == 1
    # The backlog: only the rejected lead is left, and it is not lag.
    assert value(found, "lsq_sync_changes_pending") == 0
    assert value(found, "lsq_sync_leads_pending") == 0
    assert value(found, "lsq_sync_leads_rejected") == 1
    assert value(found, "lsq_sync_leads_held_back") == 0
    assert value(found, "lsq_sync_lag_seconds") == 0
    assert value(found, "lsq_sync_last_success_timestamp_seconds") == sync.clock.now().timestamp()
    assert value(found, "lsq_sync_healthy") == 1
    assert all(name.startswith("lsq_sync_") for name, _ in found)


@pytest.fixture
def untried(
    db_url: str, app: sa.Engine, emulator: Emulator, clock: FakeClock
) -> Iterator[Connector]:
    """A connector that tries each lead once per run: its runs take no time on the clock."""
    with make_connector(db_url, emulator, clock, attempts=1) as connector:
        connector.init()
        yield connector


def test_healthz_turns_503_while_leadsquared_is_down_and_200_after_recovery(
    untried: Connector, app: sa.Engine, emulator: Emulator, clock: FakeClock
) -> None:
    with MetricsServer.start([untried], "127.0.0.1", 0) as server:
        leadsquared_down_then_back(untried, server, app, emulator, clock)


def leadsquared_down_then_back(
    sync: Connector, server: MetricsServer, app: sa.Engine, emulator: Emulator, clock: FakeClock
) -> None:
    emulator.add_lead("L1")
    assert healthz(server)[0] == 200
    emulator.set_fault_rate(1.0, ["503"])
    execute(app, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")
    wait_until_readable(app)
    report = sync.run_once()
    assert (report.status, report.counts.leads_deferred) == ("ok", 1)
    status, body = healthz(server)
    assert status == 200, body  # the change has not waited long yet

    # LeadSquared stays down: cycles keep succeeding, but the change waits on.
    clock.seconds += MAX_LAG + 1
    assert sync.run_once().status == "ok"
    status, body = healthz(server)
    assert status == 503
    assert body["status"] == "unhealthy"
    [state] = body["connectors"]
    assert state["connector"] == "test"
    assert not state["healthy"]
    assert "changes have waited" in state["reason"]
    assert "metrics.max_lag_seconds" in state["reason"]
    assert state["lag_seconds"] == MAX_LAG + 1
    assert state["leads_pending"] == 1
    assert "cycle" not in state["reason"]  # the cycles themselves are recent
    assert value(samples(server), "lsq_sync_healthy") == 0

    # No cycle either for longer than its bound: both reasons.
    clock.seconds += MAX_CYCLE_AGE + 1
    status, body = healthz(server)
    assert status == 503
    assert "metrics.max_cycle_age_seconds" in body["connectors"][0]["reason"]

    # Recovery: once the lead's retry delay has passed, the next cycle pushes it.
    emulator.set_fault_rate(0.0, ["503"])
    clock.seconds += 3600
    report = sync.run_once()
    assert report.counts.leads_pushed == 1
    status, body = healthz(server)
    assert status == 200, body
    assert body == {
        "status": "ok",
        "connectors": [
            {
                "connector": "test",
                "healthy": True,
                "reason": None,
                "lag_seconds": 0.0,
                "last_success": clock.now().isoformat(),
                "changes_pending": 0,
                "leads_pending": 0,
                "leads_rejected": 0,
                "leads_held_back": 0,
                "runs_here": True,
            }
        ],
    }
    assert emulator.lead("L1") == {"mx_City": "Pune"}


def test_changes_not_ingested_count_as_lag(
    sync: Connector, server: MetricsServer, app: sa.Engine, clock: FakeClock
) -> None:
    """No cycle runs (the daemon's database work is stuck, say): captured changes age."""
    sync.run_once()
    execute(app, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")
    # Read at the cycle's end, the backlog is kept for a scrape within REFRESH_SECONDS.
    assert healthz(server)[1]["connectors"][0]["changes_pending"] == 0
    clock.seconds += REFRESH_SECONDS
    status, body = healthz(server)
    assert status == 200, body
    assert body["connectors"][0]["changes_pending"] == 1
    clock.seconds += MAX_LAG + 1
    status, body = healthz(server)
    assert status == 503
    assert "changes have waited" in body["connectors"][0]["reason"]
    assert body["connectors"][0]["lag_seconds"] >= MAX_LAG + 1


def test_before_any_success_the_daemon_gets_the_cycle_bound_to_start(
    sync: Connector, server: MetricsServer, clock: FakeClock
) -> None:
    assert healthz(server)[0] == 200
    clock.seconds += MAX_CYCLE_AGE + 1
    status, body = healthz(server)
    assert status == 503
    assert "no cycle has succeeded" in body["connectors"][0]["reason"]


def test_unknown_paths_are_404_and_nothing_holds_a_secret(
    sync: Connector, server: MetricsServer, app: sa.Engine, emulator: Emulator, db_url: str
) -> None:
    emulator.add_lead("L1")
    emulator.set_fault_rate(1.0, ["mx500"])
    execute(app, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')")
    wait_until_readable(app)
    sync.run_once()
    for path in ("/", "/metrics/", "/healthz/x", "/metrics/../x", "/favicon.ico", "/%00"):
        assert get(server, path).status_code == 404, path
    assert get(server, "/metrics?name[]=x").status_code == 200
    shown = get(server, "/metrics").text + get(server, "/healthz").text
    for secret in (DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, db_url, emulator.url, "Pune"):
        assert secret not in shown


def test_an_unreadable_database_is_unhealthy_with_the_reason(
    sync: Connector, server: MetricsServer
) -> None:
    with sync.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE lsq_sync_run"))
    status, body = healthz(server)
    assert status == 503
    assert body["connectors"][0]["reason"].startswith("cannot read the connector's tables: ")
    assert get(server, "/metrics").status_code == 200  # the counters are still worth having


def test_a_port_in_use_is_a_clear_error(sync: Connector) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LsqSyncError) as raised:
            MetricsServer.start([sync], "127.0.0.1", port)
    message = str(raised.value)
    assert f"cannot serve metrics on 127.0.0.1:{port}" in message
    assert "metrics.port" in message


def test_stopping_frees_the_port_and_is_safe_twice(sync: Connector) -> None:
    server = MetricsServer.start([sync], "127.0.0.1", 0)
    port = server.port
    assert get(server, "/healthz").status_code == 200
    server.stop()
    server.stop()
    assert not [target for target in sync._events.targets if target in server.watched]
    with socket.socket() as again:
        # As the server binds: a connection it closed may linger in TIME_WAIT, but a socket
        # still listening on the port would make this raise.
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


def test_without_the_extra_the_error_says_what_to_install(
    sync: Connector, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import prometheus_client` raise ImportError.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(MetricsUnavailableError) as raised:
        MetricsServer.start([sync], "127.0.0.1", 0)
    assert "pip install 'lsq-sync[metrics]'" in str(raised.value)


def test_several_connectors_share_one_server_and_one_lagging_makes_it_503(
    db_url: str, app: sa.Engine, emulator: Emulator, clock: FakeClock
) -> None:
    emulator.add_lead("L1")
    emulator.set_fault_rate(1.0, ["503"])
    idle_config = config_dict(db_url, emulator, name="idle", sync={"interval_seconds": 60})
    with (
        make_connector(db_url, emulator, clock, attempts=1) as lagging,
        Connector(load(idle_config), clock=clock, stop=clock.stop) as idle,
    ):
        lagging.init()
        with MetricsServer.start([lagging, idle], "127.0.0.1", 0) as server:
            execute(
                app, "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')"
            )
            wait_until_readable(app)
            assert lagging.run_once().counts.leads_deferred == 1
            clock.seconds += MAX_LAG + 1
            lagging.run_once()
            status, body = healthz(server)
            found = samples(server)
        # A daemon that shares connectors with others judges only those it runs.
        elsewhere = MetricsServer.start(
            [lagging, idle], "127.0.0.1", 0, runs_here=lambda name: name == "idle"
        )
        with elsewhere:
            status_elsewhere, body_elsewhere = healthz(elsewhere)

    assert status_elsewhere == 200
    here = {state["connector"]: state["runs_here"] for state in body_elsewhere["connectors"]}
    assert here == {"test": False, "idle": True}
    assert status == 503
    states = {state["connector"]: state for state in body["connectors"]}
    assert set(states) == {"test", "idle"}
    assert not states["test"]["healthy"]
    assert states["idle"]["healthy"], states["idle"]
    assert states["idle"]["reason"] is None
    healthy = {"test": 0.0, "idle": 1.0}
    for name, flag in healthy.items():
        assert found[("lsq_sync_healthy", frozenset({"connector": name}.items()))] == flag
    assert (
        found[
            (
                "lsq_sync_calls_total",
                frozenset(
                    {"connector": "test", "endpoint": "Lead.Update", "outcome": "transient"}.items()
                ),
            )
        ]
        > 0
    )
    assert ("lsq_sync_leads_pushed_total", frozenset({"connector": "idle"}.items())) in found


def test_two_connectors_of_one_name_are_refused(sync: Connector) -> None:
    with pytest.raises(LsqSyncError, match="two connectors have the same name"):
        MetricsServer.start([sync, sync], "127.0.0.1", 0)
