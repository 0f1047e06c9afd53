"""Run progress: one line rewritten in place on a terminal, a log line every few seconds
elsewhere; timed by the clock it is given."""

from __future__ import annotations

import io
import logging

import pytest

from connector.counts import RunCounts
from connector.instrumentation import LeadOutcome
from connector.progress import LOG_EVERY_SECONDS, Progress, Snapshot
from tests.fakes import FakeClock


def finish_leads(progress: Progress, clock: FakeClock, count: int, seconds_each: float) -> None:
    for n in range(count):
        clock.sleep(seconds_each)
        progress.lead_finished(f"L{n}", LeadOutcome.PUSHED, ["mx_City"])


def test_the_arithmetic_of_a_snapshot() -> None:
    assert Snapshot(done=0, due=10, seconds=5).text() == "pushed 0 of 10 leads (0%)"
    half = Snapshot(done=50, due=100, seconds=10)
    assert (half.rate, half.seconds_left) == (5.0, 10.0)
    assert half.text() == "pushed 50 of 100 leads (50%), 5.0 leads/s, about 10 s left"
    slow = Snapshot(done=1, due=1000, seconds=2)
    assert slow.text() == "pushed 1 of 1000 leads (0%), 0.5 leads/s, about 33 min 18 s left"
    assert Snapshot(done=3, due=1, seconds=1).text().startswith("pushed 3 of 1 lead (100%)")
    assert Snapshot(done=0, due=0, seconds=0).text() == "pushed 0 of 0 leads"


def test_on_a_terminal_one_line_is_rewritten_in_place() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(clock, stream, terminal=True)

    progress.push_started(100)
    finish_leads(progress, clock, 100, 0.125)  # times exact in binary: no rounding at the edges
    progress.run_finished("ok", RunCounts(leads_pushed=100), None)

    written = stream.getvalue()
    assert written.endswith("\n")
    assert written.count("\n") == 1, "one line, ended once"
    frames = [frame.removesuffix("\x1b[K") for frame in written.rstrip("\n").split("\r")[1:]]
    # 12.5 s of pushing, redrawn at most every 0.2 s (so every other lead), once more at the end.
    assert len(frames) == 51
    assert frames[-1] == "pushed 100 of 100 leads (100%), 8.0 leads/s, about 0 s left"
    assert frames[24] == "pushed 50 of 100 leads (50%), 8.0 leads/s, about 6 s left"


def test_off_a_terminal_a_summary_line_is_logged_every_few_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(clock, stream, terminal=False)
    caplog.set_level(logging.INFO, logger="connector.progress")

    progress.push_started(1000)
    finish_leads(progress, clock, 480, 0.125)  # 60 s
    progress.run_finished("ok", RunCounts(leads_pushed=480), None)

    assert stream.getvalue() == "", "nothing on the stream itself"
    records = [r for r in caplog.records if r.name == "connector.progress"]
    assert len(records) == 60 / LOG_EVERY_SECONDS
    first = records[0]
    assert first.getMessage() == "pushed 40 of 1000 leads (4%), 8.0 leads/s, about 2 min 00 s left"
    fields = (first.leads_done, first.leads_due, first.seconds_left)  # type: ignore[attr-defined]
    assert fields == (40, 1000, 120)


def test_ingest_progress_is_shown_before_the_push_and_nothing_without_a_push() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(clock, stream, terminal=True)

    clock.sleep(1)
    progress.ingested(5000, 0, 0)
    progress.lead_finished("L1", LeadOutcome.PUSHED)  # outside a push phase: ignored
    progress.run_finished("failed", RunCounts(), "database error")

    assert stream.getvalue() == "\ringested 5000 changes\x1b[K\n"
    assert progress.snapshot() is None


def test_a_quick_run_draws_nothing_on_a_terminal() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(clock, stream, terminal=True)

    progress.push_started(3)
    for lead in ("L1", "L2", "L3"):
        progress.lead_finished(lead, LeadOutcome.PUSHED)
    progress.run_finished("ok", RunCounts(leads_pushed=3), None)

    assert stream.getvalue() == ""
