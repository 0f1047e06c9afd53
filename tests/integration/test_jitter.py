"""Calls that reach LeadSquared after a variable delay: the emulator's jitter, and a run paced
through it without a throttle."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import httpx
import pytest
import sqlalchemy as sa

from connector.testing.emulator import API_PREFIX, Emulator
from tests.integration.test_emulator import DEFAULT_KEYS, command_line_emulator
from tests.integration.test_leadsquared import (
    assert_window,
    connector,
    expected_in_leadsquared,
    held_by,
    insert_rows,
)

# -- the emulator's jitter ---------------------------------------------------------------------


def get_lead(client: httpx.Client) -> httpx.Response:
    return client.get("Leads.GetById", params={**DEFAULT_KEYS, "id": "L1"})


def test_jitter_delays_a_call_before_it_is_counted_and_repeats_with_its_seed() -> None:
    draws = random.Random(4)
    expected = [draws.uniform(0, 0.2) for _ in range(3)]
    with Emulator(jitter_seconds=0.2, jitter_seed=4) as emulator:
        emulator.add_lead("L1")
        with httpx.Client(base_url=emulator.url + API_PREFIX) as client:
            sent = []
            for _ in expected:
                sent.append(time.monotonic())  # the emulator's default clock
                assert get_lead(client).status_code == 200
        arrivals = [request.arrived_at for request in emulator.requests]

    # The rate limit counts a call at `arrived_at`: the same moment the log gives it, read
    # once the call's delay was over. 1 ms of leeway for the timer.
    for went, arrived, delay in zip(sent, arrivals, expected, strict=True):
        assert arrived - went >= delay - 0.001


@pytest.mark.parametrize("seconds", [-0.1, float("nan"), 61.0])
def test_a_jitter_out_of_range_is_refused(seconds: float) -> None:
    with Emulator() as emulator, pytest.raises(ValueError, match="jitter"):
        emulator.set_jitter(seconds)
    with pytest.raises(ValueError, match="jitter"):
        Emulator(jitter_seconds=seconds)


def test_command_line_jitter() -> None:
    options = ["--lead", "L1", "--jitter", "0.2", "--jitter-seed", "9"]
    delay = random.Random(9).uniform(0, 0.2)
    with (
        command_line_emulator(*options) as (url, _),
        httpx.Client(base_url=url + API_PREFIX) as client,
    ):
        started = time.monotonic()
        answer = get_lead(client)
        elapsed = time.monotonic() - started
    assert answer.status_code == 200
    assert elapsed >= delay - 0.001


@pytest.mark.parametrize("value", ["-1", "61", "soon"])
def test_command_line_refuses_a_bad_jitter(value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "connector.testing.emulator", "--jitter", value],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "argument --jitter" in done.stderr
    assert "Traceback" not in done.stderr


# -- a run through jitter ----------------------------------------------------------------------


def test_a_run_through_jitter_is_never_throttled(db_url: str, app: sa.Engine) -> None:
    calls, window = 5, 1.0
    leads = [(i, f"c{i}", f"L{i}") for i in range(1, 31)]
    # Up to 0.1 s on the way there, seeded; answers taking 0-0.2 s more, as a server's do.
    # The margin (0.05 s by default) is narrower than the jitter: only a learned one keeps
    # every window within the limit.
    with Emulator(rate_limit=(calls, window), jitter_seconds=0.1, jitter_seed=11) as account:
        account.set_latency(0.0, 0.2, seed=12)
        for _, _, lead_id in leads:
            account.add_lead(lead_id)
        with connector(
            db_url,
            account,
            rate_limit={"calls": calls, "window_seconds": window},
            max_in_flight=4,
        ) as sync:
            sync.init()
            insert_rows(app, leads)
            report = sync.run_once()
            margin = sync.limiter.margin
        arrivals = [r.arrived_at for r in account.requests]

    assert (report.counts.leads_pushed, report.counts.calls_throttled, account.throttled_count) == (
        30,
        0,
        0,
    )
    assert margin > 0.1, "the margin learned must cover the jitter"
    assert_window(arrivals, calls, window)
    assert held_by(account) == expected_in_leadsquared(db_url)
