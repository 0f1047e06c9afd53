"""A PostgreSQL server of a test's own, for tests that stop, crash or restart the server.

Never the shared server at 127.0.0.1:5432: other tests run against that one. The server is
made with initdb in a temporary directory and listens on a free loopback port; fsync is off,
since nothing in it needs to outlive the test. initdb refuses to run as root, so a root test
process runs the server's programs as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from tests.support import IN_CI

ShutdownMode = Literal["smart", "fast", "immediate"]


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Server:
    bin_dir: Path
    directory: Path
    port: int
    as_user: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("start", "-o", options, "-l", str(self.directory / "server.log"))

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """`immediate` is a crash: no checkpoint, and recovery from the WAL at the next start."""
        self._ctl("stop", "-m", mode)

    def restart(self, mode: ShutdownMode = "fast") -> None:
        self.stop(mode)
        self.start()

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _ctl(self, *args: str) -> None:
        command = [*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-w"]
        subprocess.run([*command, *args], check=True, capture_output=True, timeout=60)

    @property
    def data(self) -> Path:
        return self.directory / "data"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; under CI=true the throwaway-server tests must run")
    pytest.skip(reason)


@contextmanager
def throwaway_server() -> Iterator[Server]:
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        _unavailable("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
        raise AssertionError("unreachable")
    as_user: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="lsq-sync-pg-"))
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            _unavailable("running as root without runuser: initdb cannot run as root")
        as_user = [str(runuser), "-u", "postgres", "--"]
        shutil.chown(directory, user="postgres")
    server = Server(bin_dir, directory, _free_port(), as_user)
    try:
        subprocess.run(
            [
                *as_user,
                str(bin_dir / "initdb"),
                "-D",
                str(server.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        server.start()
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            subprocess.run(
                [
                    *as_user,
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(server.data),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(directory, ignore_errors=True)
