"""What `lsq-sync run` prints: its report as JSON, and progress on a terminal or in the log."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import threading

from tests.e2e.harness import Project, cli_command

LEADS = 40


def arrange(project: Project) -> None:
    for n in range(LEADS):
        project.emulator.add_lead(f"L{n:02d}")
    project.init_in_process()
    rows = ", ".join(f"({n}, 'c{n}', 'L{n:02d}')" for n in range(LEADS))
    project.execute(f"INSERT INTO customers (id, city, lsq_prospect_id) VALUES {rows}")


def test_run_json_prints_the_report(sqlite_project: Project) -> None:
    project = sqlite_project
    arrange(project)
    project.execute("INSERT INTO customers (id, city, lsq_prospect_id) VALUES (99, 'x', 'LX')")

    result = project.cli("run", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "ok"
    assert report["run_id"] == 1
    assert report["error"] is None
    counts = report["counts"]
    assert (counts["changes_ingested"], counts["leads_pushed"]) == (LEADS + 1, LEADS)
    assert (counts["leads_rejected"], counts["calls_made"]) == (1, LEADS + 1)
    skipped_or_failed = project.cli("run", "--json")
    assert json.loads(skipped_or_failed.stdout)["counts"]["leads_pushed"] == 0


def test_progress_on_a_terminal_is_drawn_in_place_on_stderr(sqlite_project: Project) -> None:
    project = sqlite_project
    arrange(project)
    # Each call answered 30 ms late, one at a time: the run lasts over a second.
    project.emulator.set_latency(0.03, 0.03)
    project.write(project.config(leadsquared={"max_in_flight": 1}))
    main, side = pty.openpty()
    child = subprocess.Popen(
        cli_command("--config", str(project.config_path), "run"),
        stdout=subprocess.PIPE,
        stderr=side,
        text=True,
    )
    os.close(side)
    drawn = bytearray()
    reader = threading.Thread(target=_read_all, args=(main, drawn))
    reader.start()
    stdout, _ = child.communicate(timeout=120)
    reader.join(timeout=30)
    os.close(main)

    assert child.returncode == 0
    assert stdout.startswith(f"run 1 ok: {LEADS} changes ingested, {LEADS} leads pushed")
    text = drawn.decode()
    frames = [frame.removesuffix("\x1b[K") for frame in text.strip().split("\r") if frame]
    assert len(frames) >= 2, text
    assert all(frame.startswith(("ingested ", "pushed ")) for frame in frames), text
    assert frames[-1].startswith(f"pushed {LEADS} of {LEADS} leads (100%)")
    assert "Traceback" not in text


def test_progress_off_a_terminal_is_not_a_line_per_lead(sqlite_project: Project) -> None:
    project = sqlite_project
    arrange(project)

    result = project.cli("--log-level", "info", "run")

    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    progress = [line for line in result.stderr.splitlines() if "connector.progress" in line]
    # The run lasts well under LOG_EVERY_SECONDS; even on a loaded machine, far from a line per
    # lead.
    assert len(progress) < LEADS // 4, progress


def _read_all(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the other side closed: on Linux, EIO
            return
        if not chunk:
            return
        into.extend(chunk)
