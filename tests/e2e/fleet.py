"""Many connectors and many daemons: the tables, configs and daemon processes their tests (and
bench/fleet.py) share."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connector import Connector, load_config
from connector.testing.emulator import Emulator
from tests.e2e.harness import cli_command
from tests.support import CUSTOMERS_DDL, MAPPING, config_dict, write_config


@dataclass(frozen=True)
class Member:
    """One connector of the fleet: its name, table, config file and leads."""

    name: str
    table: str
    config: Path
    leads: int

    def lead(self, number: int) -> str:
        return f"{self.name}-L{number}"


def make_members(
    url: str,
    emulator: Emulator,
    directory: Path,
    count: int,
    *,
    leads: int,
    init: bool = True,
    prefix: str = "c",
    **sections: Any,
) -> list[Member]:
    """`count` connectors on one database, each with its own table and config file; their
    leads exist in the emulator."""
    engine = sa.create_engine(url)
    members = []
    for number in range(1, count + 1):
        name = f"{prefix}{number}"
        member = Member(name, f"{name}_customers", directory / f"{name}.yaml", leads)
        with engine.begin() as connection:
            connection.exec_driver_sql(
                CUSTOMERS_DDL.replace("TABLE customers", f"TABLE {member.table}")
            )
        config = config_dict(url, emulator, name=member.name, **sections)
        config["source"] = {**config["source"], "table": member.table}
        write_config(member.config, config)
        for lead in range(1, leads + 1):
            emulator.add_lead(member.lead(lead))
        if init:
            with Connector(load_config(member.config)) as connector:
                connector.init()
        members.append(member)
    engine.dispose()
    return members


def write_rows(url: str, members: Sequence[Member], version: int) -> None:
    """Give every lead of every member a row (or a new value, for a later `version`)."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for member in members:
            for lead in range(1, member.leads + 1):
                values = {"id": lead, "city": f"{member.name} city {lead} v{version}"}
                values["lead"] = member.lead(lead)
                if version == 1:
                    connection.execute(
                        sa.text(
                            f"INSERT INTO {member.table} (id, city, lsq_prospect_id) "
                            "VALUES (:id, :city, :lead)"
                        ),
                        values,
                    )
                else:
                    connection.execute(
                        sa.text(f"UPDATE {member.table} SET city = :city WHERE id = :id"), values
                    )
    engine.dispose()


def expected_leads(url: str, members: Sequence[Member]) -> dict[str, dict[str, str]]:
    """What the emulator should hold for the members' leads, read from their tables."""
    engine = sa.create_engine(url)
    expected: dict[str, dict[str, str]] = {}
    with engine.connect() as connection:
        for member in members:
            for row in connection.execute(sa.text(f"SELECT * FROM {member.table}")).mappings():
                expected[row["lsq_prospect_id"]] = {
                    attribute: str(row[column])
                    for column, attribute in MAPPING.items()
                    if row[column] is not None
                }
    engine.dispose()
    return expected


def converged(url: str, emulator: Emulator, members: Sequence[Member]) -> bool:
    held = emulator.leads()
    return all(held.get(lead) == values for lead, values in expected_leads(url, members).items())


@dataclass
class Daemon:
    """`lsq-sync daemon` over several configs, its JSON log read as it comes: which
    connectors it owns, from its "connector claimed" and "connector released" lines."""

    process: subprocess.Popen[str]
    owned: set[str] = field(default_factory=set)
    entries: list[dict[str, Any]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _ended: bool = False

    @classmethod
    def start(cls, configs: Sequence[Path], env: Mapping[str, str] | None = None) -> Daemon:
        options = [arg for path in configs for arg in ("--config", str(path))]
        process = subprocess.Popen(
            cli_command("--log-level", "INFO", "--log-format", "json", "daemon", *options),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=None if env is None else dict(env),
        )
        daemon = cls(process)
        threading.Thread(target=daemon._pump, daemon=True).start()
        return daemon

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = {"message": line.rstrip("\n"), "level": "RAW"}
            with self._changed:
                self.entries.append(entry)
                if entry["message"] == "connector claimed":
                    self.owned.add(entry["connector"])
                elif entry["message"] == "connector released":
                    self.owned.discard(entry["connector"])
                self._changed.notify_all()
        self.process.stderr.close()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, condition: Callable[[Daemon], bool], timeout: float = 60) -> None:
        """Until `condition(self)`, on what the log says, holds; re-checked at each line."""
        with self._changed:
            if not self._changed.wait_for(lambda: condition(self) or self._ended, timeout):
                raise AssertionError(f"not within {timeout} s: {condition}; log: {self.text()}")
            if not condition(self):
                raise AssertionError(f"the daemon ended first; log: {self.text()}")

    def wait_for_log(self, message: str, connector: str, timeout: float = 60) -> dict[str, Any]:
        def seen(daemon: Daemon) -> bool:
            return any(
                e["message"] == message and e.get("connector") == connector for e in daemon.entries
            )

        self.wait_for(seen, timeout)
        return next(
            e for e in self.entries if e["message"] == message and e.get("connector") == connector
        )

    def logged(self, message: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self.entries if e["message"] == message]

    def ended(self, timeout: float = 30) -> None:
        """Wait until its log has been read to the end (after the process exited)."""
        with self._changed:
            assert self._changed.wait_for(lambda: self._ended, timeout), self.text()

    def text(self) -> str:
        return "\n".join(json.dumps(e) for e in self.entries[-40:])

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then its exit code."""
        self.process.terminate()
        code = self.process.wait(timeout=timeout)
        self.ended()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
