"""Progress of a real run, timed by the connector's injected clock: on a terminal and off one."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import pytest
import sqlalchemy as sa

from connector import Connector
from connector.instrumentation import Fanout, Instrumentation, LeadOutcome
from connector.progress import Progress
from connector.runlock import LeaseTiming
from connector.testing.emulator import Emulator
from tests.fakes import FakeClock
from tests.support import config_dict, execute, load, wait_until_readable

LEADS = 30


class SecondPerLead(Instrumentation):
    """Moves the fake clock on by one second as each lead finishes, before Progress hears."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def lead_finished(
        self, lead_id: str, outcome: LeadOutcome, attributes: Sequence[str] = ()
    ) -> None:
        self.clock.sleep(1.0)


def run_with(db_url: str, emulator: Emulator, app: sa.Engine, terminal: bool) -> io.StringIO:
    for n in range(LEADS):
        emulator.add_lead(f"L{n:02d}")
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(clock, stream, terminal=terminal)
    # The lease judges its heartbeat by the same clock: it must not find it stale as time
    # jumps a second per lead.
    with Connector(
        # One call at a time: each lead's second passes before the next one's.
        load(config_dict(db_url, emulator, leadsquared={"max_in_flight": 1})),
        clock=clock,
        instrumentation=Fanout(SecondPerLead(clock), progress),
        lease_timing=LeaseTiming(stale_seconds=3600),
    ) as sync:
        sync.init()
        rows = ", ".join(f"({n}, 'c{n}', 'L{n:02d}')" for n in range(LEADS))
        execute(app, f"INSERT INTO customers (id, city, lsq_prospect_id) VALUES {rows}")
        wait_until_readable(app)
        report = sync.run_once()
    assert report.counts.leads_pushed == LEADS
    return stream


def test_a_run_on_a_terminal_shows_leads_done_rate_and_time_left(
    db_url: str, app: sa.Engine, emulator: Emulator
) -> None:
    written = run_with(db_url, emulator, app, terminal=True).getvalue()

    frames = [frame.removesuffix("\x1b[K") for frame in written.rstrip("\n").split("\r")[1:]]
    assert written.endswith("\n")
    assert len(frames) == LEADS + 1  # a second apart, each drawn; then the final one
    assert frames[0] == f"pushed 1 of {LEADS} leads (3%), 1.0 leads/s, about 29 s left"
    assert frames[-1] == f"pushed {LEADS} of {LEADS} leads (100%), 1.0 leads/s, about 0 s left"


def test_a_run_off_a_terminal_logs_a_line_every_few_seconds(
    db_url: str, app: sa.Engine, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="connector.progress")

    stream = run_with(db_url, emulator, app, terminal=False)

    assert stream.getvalue() == ""
    lines = [r.getMessage() for r in caplog.records if r.name == "connector.progress"]
    assert lines == [
        f"pushed {done} of {LEADS} leads ({done * 100 // LEADS}%), 1.0 leads/s, about "
        f"{LEADS - done} s left"
        for done in range(5, LEADS + 1, 5)
    ]
