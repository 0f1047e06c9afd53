"""CLI conventions: --version, global options after the command, plurals, unknown lead ids,
one error prefix, a closed pipe."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.e2e.harness import Project, assert_clean_failure, cli_command
from tests.support import run_cli

BASH = shutil.which("bash") or "/bin/bash"


def test_version_names_the_program_and_its_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("lsq-sync 0.")


def test_global_options_work_after_the_command_too(sqlite_project: Project) -> None:
    sqlite_project.init_in_process()
    before = run_cli("--config", str(sqlite_project.config_path), "--log-format", "json", "status")
    after = run_cli("status", "--config", str(sqlite_project.config_path), "--log-level", "info")
    assert before.returncode == after.returncode == 0, (before.stderr, after.stderr)
    assert after.stdout.splitlines()[0] == before.stdout.splitlines()[0]
    assert "connector test: 0 leads known" in after.stdout


def test_an_error_is_prefixed_once() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LSQ_SYNC_CONFIG"}
    result = subprocess.run(
        cli_command("status"), capture_output=True, text=True, timeout=60, env=env, check=False
    )
    [message] = assert_clean_failure(result, 2)
    assert message == "no config: pass --config PATH or set LSQ_SYNC_CONFIG"


def test_retry_and_resync_of_an_unknown_lead_say_so(sqlite_project: Project) -> None:
    sqlite_project.init_in_process()
    sqlite_project.execute(
        "INSERT INTO customers (id, city, lsq_prospect_id) VALUES (1, 'Pune', 'L1')"
    )
    sqlite_project.emulator.add_lead("L1")
    sqlite_project.run()
    for command in ("retry", "resync"):
        result = sqlite_project.cli(command, "--lead", "L1", "--lead", "L9")
        [message] = assert_clean_failure(result, 1)
        assert message == (
            "connector test knows no lead with the lead id L9 (`lsq-sync status` lists the "
            "leads it knows); nothing was changed"
        )
    one = sqlite_project.cli("resync", "--lead", "L1")
    assert one.returncode == 0, one.stderr
    assert "test: 1 lead will be sent" in one.stdout


def test_status_into_a_pipe_closed_early_ends_quietly(sqlite_project: Project) -> None:
    sqlite_project.init_in_process()
    rows = ", ".join(f"({n}, 'c{n}', 'L{n}')" for n in range(3000))
    sqlite_project.execute(f"INSERT INTO customers (id, city, lsq_prospect_id) VALUES {rows}")
    # Nothing listens at the host: every lead stays pending, one line each in status.
    sqlite_project.write(sqlite_project.config(leadsquared={"host": "http://127.0.0.1:9"}))
    sqlite_project.cli("run")
    command = " ".join(cli_command("--config", str(sqlite_project.config_path), "status"))
    result = subprocess.run(
        [BASH, "-o", "pipefail", "-c", f"{command} | head -1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout.startswith("connector test: 3000 leads known")
    assert "Traceback" not in result.stderr
    assert "BrokenPipe" not in result.stderr
    assert result.returncode == 0, result.stderr
