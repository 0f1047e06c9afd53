"""connector.health's verdict and change ages, the `metrics:` config, and the retry event."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from connector.changelog import ChangeCursor
from connector.config import default_health_bound, parse_config
from connector.errors import ConfigError
from connector.health import Backlog, Bounds, ChangeAges, judge, lag_seconds
from connector.instrumentation import Fanout, Instrumentation

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BOUNDS = Bounds(max_lag_seconds=100, max_cycle_age_seconds=300)


def backlog(**fields: Any) -> Backlog:
    values: dict[str, Any] = {
        "changes_pending": 0,
        "leads_pending": 0,
        "leads_rejected": 0,
        "leads_held_back": 0,
        "oldest_waiting_lead": None,
        "last_success": NOW - timedelta(seconds=10),
    }
    return Backlog(**{**values, **fields})


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def verdict(state: Backlog, oldest_change: datetime | None = None) -> Any:
    return judge(
        "c",
        now=NOW,
        backlog=state,
        oldest_change=oldest_change,
        watching_since=ago(1000),
        bounds=BOUNDS,
    )


def test_recent_success_and_small_lag_is_healthy() -> None:
    health = verdict(backlog(leads_pending=5, oldest_waiting_lead=ago(99)))
    assert (health.healthy, health.reason, health.lag_seconds) == (True, None, 99)


@pytest.mark.parametrize(
    ("state", "oldest_change", "lag"),
    [
        (backlog(leads_pending=1, oldest_waiting_lead=ago(101)), None, 101),
        (backlog(changes_pending=1), ago(150), 150),
        (backlog(leads_pending=1, oldest_waiting_lead=ago(120)), ago(50), 120),
    ],
)
def test_a_lag_over_its_bound_is_unhealthy_however_recent_the_cycle(
    state: Backlog, oldest_change: datetime | None, lag: float
) -> None:
    health = verdict(state, oldest_change)
    assert not health.healthy
    assert health.lag_seconds == lag
    assert health.reason == (
        f"changes have waited {lag} s to be pushed (metrics.max_lag_seconds: 100)"
    )


def test_an_old_last_success_is_unhealthy_and_both_reasons_are_given() -> None:
    health = verdict(backlog(last_success=ago(301), oldest_waiting_lead=ago(200)))
    assert not health.healthy
    assert health.reason is not None
    assert health.reason.startswith("the last successful cycle ended 301 s ago")
    assert "metrics.max_cycle_age_seconds: 300" in health.reason
    assert "metrics.max_lag_seconds: 100" in health.reason


def test_before_any_success_the_start_counts() -> None:
    assert judge(
        "c",
        now=NOW,
        backlog=backlog(last_success=None),
        oldest_change=None,
        watching_since=ago(299),
        bounds=BOUNDS,
    ).healthy
    late = judge(
        "c",
        now=NOW,
        backlog=backlog(last_success=None),
        oldest_change=None,
        watching_since=ago(301),
        bounds=BOUNDS,
    )
    assert late.reason is not None
    assert late.reason.startswith("no cycle has succeeded in the 301 s since the daemon started")


def test_a_time_in_the_future_is_no_negative_lag() -> None:
    assert lag_seconds(NOW, backlog(oldest_waiting_lead=NOW + timedelta(seconds=5)), None) == 0


def at(tx_id: int, change_id: int) -> ChangeCursor:
    return ChangeCursor(tx_id, change_id)


def test_a_change_is_as_old_as_the_first_note_that_saw_it() -> None:
    ages = ChangeAges()
    assert ages.oldest_seen(ago(100), None) is None
    assert ages.oldest_seen(ago(90), (at(1, 1), at(1, 3))) == ago(90)
    assert ages.oldest_seen(ago(80), (at(1, 1), at(2, 9))) == ago(90)
    # Ingest passed the first note's changes; (2, 5) was seen first at 80 s.
    assert ages.oldest_seen(ago(70), (at(2, 5), at(2, 9))) == ago(80)
    # Changes newer than every note: first seen now.
    assert ages.oldest_seen(ago(60), (at(3, 1), at(3, 1))) == ago(60)
    assert ages.oldest_seen(ago(50), None) is None
    assert ages.oldest_seen(ago(40), (at(3, 2), at(3, 2))) == ago(40)


def test_change_notes_stay_bounded_and_keep_the_first() -> None:
    ages = ChangeAges()
    for second in range(5000):
        oldest = ages.oldest_seen(ago(5000 - second), (at(0, 1), at(0, second + 1)))
    assert oldest == ago(5000)
    assert len(ages._notes) <= 1001


VALID = {
    "name": "c",
    "database": {"url": "sqlite:///x.db"},
    "leadsquared": {"host": "https://api.leadsquared.com", "access_key": "a", "secret_key": "s"},
    "source": {"table": "t", "key": "id"},
    "lead_id": {"column": "lead"},
    "mapping": {"city": "mx_City"},
}


def problems(**sections: Any) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(yaml.safe_dump({**VALID, **sections}), "config.yaml", {})
    return [str(problem) for problem in raised.value.problems]


def test_metrics_are_off_unless_configured_and_bounds_follow_the_interval() -> None:
    config = parse_config(yaml.safe_dump(VALID), "config.yaml", {})
    assert config.metrics is None
    assert config.health_bounds == (600, 600)
    slow = parse_config(
        yaml.safe_dump({**VALID, "sync": {"interval_seconds": 120}, "metrics": {}}), "c", {}
    )
    assert slow.metrics is not None
    assert (slow.metrics.host, slow.metrics.port) == ("127.0.0.1", 9464)
    assert slow.health_bounds == (1200, 1200)
    assert default_health_bound(1) == 300  # never below five minutes


def test_set_bounds_are_kept() -> None:
    config = parse_config(
        yaml.safe_dump({**VALID, "metrics": {"max_lag_seconds": 30, "max_cycle_age_seconds": 90}}),
        "c",
        {},
    )
    assert config.health_bounds == (30, 90)


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"port": -1}, "metrics.port: Input should be greater than or equal to 0"),
        ({"port": 70000}, "metrics.port: Input should be less than or equal to 65535"),
        ({"port": "http"}, "metrics.port: Input should be a valid integer"),
        ({"host": ""}, "metrics.host: String should have at least 1 character"),
        ({"host": "http://0.0.0.0"}, "metrics.host: must be a host name or address"),
        ({"host": "localhost:9464"}, "metrics.host: must be a host name or address"),
        ({"max_lag_seconds": 0}, "metrics.max_lag_seconds: Input should be greater than 0"),
        ({"max_cycle_age_seconds": -1}, "metrics.max_cycle_age_seconds: Input should be"),
        ({"path": "/x"}, "metrics.path: unknown key"),
        ({"max_cycle_age_seconds": 60}, "metrics: max_cycle_age_seconds (60) must be above"),
        ("yes", "metrics: Input should be a valid dictionary"),
    ],
)
def test_bad_metrics_settings_name_the_key(metrics: Any, expected: str) -> None:
    found = problems(metrics=metrics)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_listening_on_every_address_is_allowed() -> None:
    for host in ("0.0.0.0", "::", "::1", "metrics.internal"):  # noqa: S104 (what is tested)
        config = parse_config(yaml.safe_dump({**VALID, "metrics": {"host": host}}), "c", {})
        assert config.metrics is not None
        assert config.metrics.host == host


class Retries(Instrumentation):
    def __init__(self) -> None:
        self.seen: list[tuple[list[str], float]] = []

    def retrying(self, lead_ids: Sequence[str], pause: float) -> None:
        self.seen.append((list(lead_ids), pause))


class WrittenBefore:
    """An observer of the duck-typed kind, without the newer events."""

    def __init__(self) -> None:
        self.calls = 0

    def call_made(self, endpoint: str, outcome: str, seconds: float) -> None:
        self.calls += 1


def test_retries_reach_observers_and_older_observers_are_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    retries, older = Retries(), WrittenBefore()
    events = Fanout(retries, older)  # type: ignore[arg-type]
    events.retrying(["L1", "L2"], 1.5)
    events.call_made("Lead.Update", "success", 0.1)
    assert retries.seen == [(["L1", "L2"], 1.5)]
    assert older.calls == 1
    assert not caplog.records
