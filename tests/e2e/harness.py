"""What the end-to-end tests share: a configured project driven through the real CLI."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from connector import Connector, load_config
from connector.testing.emulator import Emulator
from tests.support import ATTRIBUTES, config_dict, run_cli, write_config

ERROR_PREFIX = "lsq-sync: error: "

_SUMMARY = re.compile(
    r"^run (?P<run_id>\d+) (?P<status>\w+): (?P<changes>\d+) changes ingested, "
    r"(?P<pushed>\d+) leads pushed, (?P<rejected>\d+) rejected, (?P<deferred>\d+) deferred, "
    r"(?P<calls>\d+) calls",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Summary:
    """The line `lsq-sync run` prints, parsed."""

    run_id: int
    status: str
    changes: int
    pushed: int
    rejected: int
    deferred: int
    calls: int


def parse_summary(stdout: str) -> Summary:
    match = _SUMMARY.search(stdout)
    assert match is not None, f"no run summary in {stdout!r}"
    fields = match.groupdict()
    return Summary(
        run_id=int(fields["run_id"]),
        status=fields["status"],
        changes=int(fields["changes"]),
        pushed=int(fields["pushed"]),
        rejected=int(fields["rejected"]),
        deferred=int(fields["deferred"]),
        calls=int(fields["calls"]),
    )


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "connector", *args]


@dataclass
class Project:
    """An application database with the sample table, and a config pointing at the emulator."""

    url: str
    config_path: Path
    emulator: Emulator
    engine: sa.Engine

    def write(self, config: Mapping[str, Any]) -> None:
        write_config(self.config_path, config)

    def config(self, **sections: Any) -> dict[str, Any]:
        return config_dict(self.url, self.emulator, **sections)

    def cli(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return run_cli("--config", str(self.config_path), *args, env=env, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            cli_command("--config", str(self.config_path), *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def init(self) -> None:
        """`lsq-sync init`, which must succeed quietly."""
        result = self.cli("init")
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""

    def init_in_process(self) -> None:
        """The same through the library: arranging a test need not pay for a subprocess."""
        with Connector(load_config(self.config_path)) as connector:
            connector.init()

    def run(self) -> Summary:
        """One `lsq-sync run` that must succeed."""
        result = self.cli("run")
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        return parse_summary(result.stdout)

    def execute(self, *statements: str) -> None:
        """Run the statements as the application would: one transaction, committed."""
        with self.engine.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)

    def query(self, statement: str) -> list[sa.Row[Any]]:
        with self.engine.connect() as connection:
            return list(connection.exec_driver_sql(statement))


def lead_updates(emulator: Emulator) -> list[tuple[str, dict[str, str]]]:
    """Every Lead.Update the emulator received, as (lead id, attributes sent), in order."""
    calls = []
    for request in emulator.requests:
        if request.api != "Lead.Update":
            continue
        assert request.lead_id is not None
        assert isinstance(request.body, list), request
        calls.append((request.lead_id, {f["Attribute"]: f["Value"] for f in request.body}))
    return calls


def assert_only_mapped(calls: list[tuple[str, dict[str, str]]]) -> None:
    for lead_id, sent in calls:
        assert sent, f"an empty update was sent to {lead_id}"
        assert set(sent) <= ATTRIBUTES, f"unmapped attribute sent to {lead_id}: {sent}"


def assert_clean_failure(result: subprocess.CompletedProcess[str], code: int) -> list[str]:
    """A user-facing failure: the exit code, no traceback, every stderr line an error line."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert lines, "a failure must say why on stderr"
    for line in lines:
        assert line.startswith(ERROR_PREFIX), f"not an error line: {line!r}"
    return [line.removeprefix(ERROR_PREFIX) for line in lines]


class LineReader:
    """Reads a subprocess's stream on a thread, so a test can wait for a line with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, wanted: str | Callable[[str], bool], timeout: float = 10.0) -> str:
        """The next line holding `wanted` (or for which it is true); fails when the stream
        ends or time runs out."""
        matches = wanted if callable(wanted) else lambda line: wanted in line
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"{wanted!r} not seen within {timeout} s; got {self.lines}"
                ) from None
            if line is None:
                raise AssertionError(f"stream ended without {wanted!r}; got {self.lines}")
            self.lines.append(line)
            if matches(line):
                return line

    def text(self, timeout: float = 10.0) -> str:
        """Every line the stream carried, once it has ended."""
        self._thread.join(timeout)
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)


def run_cli_concurrently(
    commands: Mapping[str, Sequence[str]],
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Independent CLI invocations, run side by side: most of each is Python starting up."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run_cli, *args) for name, args in commands.items()}
        return {name: future.result() for name, future in futures.items()}
