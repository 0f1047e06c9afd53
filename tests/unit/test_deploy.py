"""The files in deploy/, checked by what can check them on this machine: systemd's own verifier,
the CLI's parser for the commands they run, and the settings they must agree with."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from connector.cli import build_parser
from connector.config import SyncConfig
from tests.support import IN_CI

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
INSTALLED = "/opt/lsq-sync/bin/lsq-sync"


def _largest_drain() -> float:
    """The largest `sync.drain_seconds` the config accepts."""
    for rule in SyncConfig.model_fields["drain_seconds"].metadata:
        if hasattr(rule, "le"):
            return float(rule.le)
    raise AssertionError("sync.drain_seconds has no upper bound")


def _unit() -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in (DEPLOY / "lsq-sync.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings[key] = value
    return settings


def _lsq_sync_args(command: str) -> list[str]:
    words = shlex.split(command)
    return words[words.index(INSTALLED) + 1 :] if INSTALLED in words else words[1:]


def test_systemd_verifies_the_unit(tmp_path: Path) -> None:
    verifier = shutil.which("systemd-analyze")
    if verifier is None:
        if IN_CI:
            pytest.fail("systemd-analyze is missing; under CI=true the unit must be verified")
        pytest.skip("systemd-analyze is not installed")
    # The unit's commands must exist for the verifier: point them at this install.
    executable = shutil.which("lsq-sync") or str(Path(sys.executable).with_name("lsq-sync"))
    unit = tmp_path / "lsq-sync.service"
    unit.write_text((DEPLOY / "lsq-sync.service").read_text().replace(INSTALLED, executable))
    done = subprocess.run(
        [verifier, "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60
    )
    # The verifier exits 0 after "ignoring" a setting it cannot parse: its output is the verdict.
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_the_unit_restarts_on_failure_and_outwaits_any_drain() -> None:
    unit = _unit()
    assert unit["Restart"] == "on-failure"
    assert "2" in unit["RestartPreventExitStatus"].split()  # a bad config: no restart loop
    assert float(unit["TimeoutStopSec"]) > _largest_drain()
    parser = build_parser()
    for key in ("ExecStart", "ExecStartPre"):
        args = parser.parse_args(_lsq_sync_args(unit[key]))
        assert args.command in {"daemon", "init"}


def test_the_cron_line_runs_a_command_the_cli_accepts() -> None:
    jobs = [
        line
        for line in (DEPLOY / "cron").read_text().splitlines()
        if line and not line.startswith("#") and not re.match(r"^[A-Z_]+=", line)
    ]
    assert len(jobs) == 1
    fields = jobs[0].split(None, 5)
    assert len(fields) == 6
    command = fields[5].split("&&")[-1].split(">>")[0]
    args = build_parser().parse_args(_lsq_sync_args(command))
    assert args.command == "run"


def test_the_image_runs_as_a_user_with_a_health_check() -> None:
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    base = next(line for line in lines if line.startswith("FROM "))
    assert "slim" in base
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in {"0", "root"}
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert "/healthz" in "\n".join(lines)


def test_kubernetes_probes_use_healthz_and_grace_outlasts_the_drain() -> None:
    deployment = yaml.safe_load((DEPLOY / "kubernetes" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    default_drain = SyncConfig.model_fields["drain_seconds"].default
    assert pod["terminationGracePeriodSeconds"] > default_drain
    (container,) = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/healthz"
        assert check["port"] in ports
    assert build_parser().parse_args(container["args"]).command == "daemon"
