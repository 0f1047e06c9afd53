"""Several connectors in one daemon, and several daemons sharing them: every connector run by
one daemon at a time, a killed daemon's connectors taken over, one failing connector alone."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from connector.testing.emulator import Emulator
from tests.e2e.fleet import Daemon, Member, converged, make_members, write_rows
from tests.e2e.harness import assert_clean_failure, lead_updates
from tests.support import lock_holders, run_cli, wait_until, write_config

FAST = {"interval_seconds": 1, "drain_seconds": 2}


def owner_of(members: list[Member]) -> dict[str, str]:
    return {member.lead(n): member.name for member in members for n in range(1, member.leads + 1)}


def spread(daemons: list[Daemon], names: set[str]) -> bool:
    """Every connector owned by exactly one daemon, and every daemon owning one."""
    owned = [daemon.owned for daemon in daemons]
    return all(owned) and set().union(*owned) == names and sum(map(len, owned)) == len(names)


def test_two_daemons_share_five_connectors_and_a_killed_ones_move_to_the_other(
    pg_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    members = make_members(
        pg_url,
        emulator,
        tmp_path,
        5,
        leads=10,
        sync=FAST,
        leadsquared={"max_in_flight": 2},
    )
    names = {member.name for member in members}
    configs = [member.config for member in members]
    first = Daemon.start(configs)
    second = Daemon.start(configs)
    engine = sa.create_engine(pg_url)
    try:
        first.wait_for(lambda _: spread([first, second], names))
        second.wait_for(lambda _: spread([first, second], names))
        for member in members:
            # Held by one session between cycles, not taken per cycle.
            assert len(lock_holders(engine, member.name)) == 1
        killed_own = set(first.owned)

        # Answers held back: the first daemon's calls are in flight when it is killed.
        emulator.hold()
        write_rows(pg_url, members, version=1)
        owners = owner_of(members)
        wait_until(
            lambda: any(owners.get(r.lead_id or "") in killed_own for r in emulator.requests)
        )
        first.kill()
        at_kill = emulator.requests
        emulator.release()
        first.ended()
        assert first.process.returncode == -signal.SIGKILL
        assert first.owned == killed_own, "it neither claimed nor released more before the kill"

        second.wait_for(lambda daemon: daemon.owned == names)
        wait_until(lambda: converged(pg_url, emulator, members))
        for member in members:
            assert len(lock_holders(engine, member.name)) == 1
    finally:
        first.kill()
        code = second.stop()
        engine.dispose()
    assert code == 0, second.text()

    calls = Counter(lead for lead, _ in lead_updates(emulator))
    assert set(calls) == set(owners), "every lead was updated"
    in_flight = {r.lead_id for r in at_kill if owners.get(r.lead_id or "") in killed_own}
    twice = {lead for lead, count in calls.items() if count > 1}
    assert in_flight, "the kill came while calls were in flight"
    # Held unanswered, they were applied but never recorded: sent again, and nothing else.
    assert twice == in_flight, "only the killed daemon's calls in flight were sent again"
    assert max(calls.values()) <= 2
    # At most max_in_flight calls per connector were in flight.
    assert len(in_flight) <= 2 * len(killed_own)
    for member in members:
        if member.name in killed_own:
            taken = second.wait_for_log("connector claimed", member.name)
            assert taken["epoch"] >= 2, "the survivor took the lease over, bumping its epoch"


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_one_daemon_runs_several_connectors_and_stops_them_all_on_sigterm(
    db_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    members = make_members(db_url, emulator, tmp_path, 3, leads=3, sync=FAST)
    daemon = Daemon.start([member.config for member in members])
    try:
        daemon.wait_for(lambda d: d.owned == {m.name for m in members})
        write_rows(db_url, members, version=1)
        wait_until(lambda: converged(db_url, emulator, members))
        write_rows(db_url, members, version=2)
        wait_until(lambda: converged(db_url, emulator, members))
    finally:
        code = daemon.stop()
    assert code == 0, daemon.text()
    released = {e["connector"] for e in daemon.logged("connector released")}
    assert released == {m.name for m in members}
    assert daemon.entries[-1]["message"] == "daemon stopped"
    calls = Counter(lead for lead, _ in lead_updates(emulator))
    assert set(calls.values()) == {2}, "each lead sent its two versions, once each"


def test_two_daemons_on_sqlite_share_the_connectors_by_the_lock_files(
    emulator: Emulator, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    members = make_members(url, emulator, tmp_path, 3, leads=4, sync=FAST)
    names = {member.name for member in members}
    daemons = [Daemon.start([member.config for member in members]) for _ in range(2)]
    try:
        daemons[0].wait_for(lambda _: set().union(*(d.owned for d in daemons)) == names)
        write_rows(url, members, version=1)
        wait_until(lambda: converged(url, emulator, members))
    finally:
        codes = [daemon.stop() for daemon in daemons]
    assert codes == [0, 0], [daemon.text() for daemon in daemons]
    calls = Counter(lead for lead, _ in lead_updates(emulator))
    assert set(calls.values()) == {1}, "each lead was sent once, by the daemon owning it"


def test_a_broken_and_a_fatal_connector_leave_the_others_running(
    pg_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    members = make_members(pg_url, emulator, tmp_path, 3, leads=2, sync=FAST)
    healthy, broken, refused = members
    # The third's keys are refused by LeadSquared (401): fatal, for it alone.
    config = yaml.safe_load(refused.config.read_text(encoding="utf-8"))
    config["leadsquared"]["secret_key"] = "Refused-Secret-7"
    write_config(refused.config, config)
    daemon = Daemon.start([member.config for member in members])
    engine = sa.create_engine(pg_url)
    try:
        daemon.wait_for(lambda d: d.owned == {m.name for m in members})
        write_rows(pg_url, members, version=1)
        wait_until(lambda: converged(pg_url, emulator, [healthy, broken]))
        failure = daemon.wait_for_log("run failed, stopping", refused.name)
        assert "401" in failure["error"]
        daemon.wait_for(lambda d: refused.name not in d.owned)

        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP TABLE {broken.table}")
        write_rows(pg_url, [healthy], version=2)
        wait_until(lambda: converged(pg_url, emulator, [healthy]))
        dropped = daemon.wait_for_log("run failed", broken.name)
        assert broken.table in dropped["error"]
        assert daemon.process.poll() is None, "the daemon runs on"
        assert broken.name in daemon.owned, "a broken connector keeps its lock, and retries"
    finally:
        code = daemon.stop()
        engine.dispose()
    assert code == 1, "a connector stopped on a fatal error"
    assert not any("Traceback" in str(e) for e in daemon.entries), daemon.text()
    assert "Refused-Secret-7" not in "\n".join(map(str, daemon.entries))


def test_two_configs_with_one_name_are_refused_naming_both_files(
    emulator: Emulator, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    first, second = make_members(url, emulator, tmp_path, 2, leads=1, init=False)
    second.config.write_text(
        second.config.read_text(encoding="utf-8").replace("name: c2", "name: c1"),
        encoding="utf-8",
    )
    result = run_cli("daemon", "--config", str(first.config), "--config", str(second.config))
    (message,) = assert_clean_failure(result, 2)
    assert str(first.config) in message
    assert str(second.config) in message
    assert "'c1'" in message


def test_commands_other_than_daemon_take_one_config(emulator: Emulator, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    first, second = make_members(url, emulator, tmp_path, 2, leads=1, init=False)
    result = run_cli("--config", str(first.config), "status", "--config", str(second.config))
    (message,) = assert_clean_failure(result, 2)
    assert "status takes one --config" in message
    assert "only daemon" in message


def test_a_bad_config_among_several_is_reported_before_anything_runs(
    emulator: Emulator, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    (member,) = make_members(url, emulator, tmp_path, 1, leads=1, init=False)
    missing = tmp_path / "missing.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [1\n", encoding="utf-8")
    result = run_cli(
        "daemon", "--config", str(member.config), "--config", str(missing), "--config", str(bad)
    )
    messages = assert_clean_failure(result, 2)
    assert any(str(missing) in m and "file not found" in m for m in messages), messages
    assert any(str(bad) in m for m in messages), messages


def test_the_config_env_var_still_names_the_daemons_one_config(
    emulator: Emulator, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    (member,) = make_members(url, emulator, tmp_path, 1, leads=1, sync=FAST)
    daemon = Daemon.start([], env={**os.environ, "LSQ_SYNC_CONFIG": str(member.config)})
    try:
        daemon.wait_for(lambda d: d.owned == {member.name})
    finally:
        code = daemon.stop()
    assert code == 0, daemon.text()


def test_a_connector_not_ready_at_the_start_leaves_the_others_running(
    emulator: Emulator, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    ready = make_members(url, emulator, tmp_path, 1, leads=2, sync=FAST)
    (late,) = make_members(
        url, emulator, tmp_path, 1, leads=1, init=False, prefix="late", sync=FAST
    )
    daemon = Daemon.start([ready[0].config, late.config])
    try:
        refused = daemon.wait_for_log("connector not ready", late.name)
        assert "init" in refused["error"]
        write_rows(url, ready, version=1)
        wait_until(lambda: converged(url, emulator, ready))
        daemon.wait_for_log("run failed", late.name)
        assert daemon.process.poll() is None
    finally:
        code = daemon.stop()
    assert code == 0, daemon.text()
