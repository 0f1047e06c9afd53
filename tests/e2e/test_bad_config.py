"""Every kind of config mistake: exit 2, one `lsq-sync: error:` line per problem, naming the key."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.config import CONFIG_ENV_VAR
from tests.e2e.harness import Project, assert_clean_failure, run_cli_concurrently
from tests.support import MAPPING, run_cli

EXIT_USAGE = 2
EXIT_RUN_FAILED = 1
UNSET_VAR = "LSQ_SYNC_E2E_SURELY_UNSET"
PASSWORD = "Pw9s3cr3t"
UNREACHABLE_URL = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/x"


def valid_config(directory: Path) -> dict[str, Any]:
    return {
        "name": "test",
        "database": {"url": f"sqlite:///{directory / 'app.db'}"},
        "leadsquared": {
            "host": "http://127.0.0.1:9",
            "access_key": "access",
            "secret_key": "secret",
        },
        "source": {"table": "customers", "key": "id"},
        "lead_id": {"column": "lsq_prospect_id"},
        "mapping": dict(MAPPING),
    }


def _unknown_top_level(config: dict[str, Any]) -> None:
    config["mapings"] = {"phone": "Phone"}


def _unknown_nested(config: dict[str, Any]) -> None:
    config["leadsquared"]["acess_key"] = config["leadsquared"].pop("access_key")


def _missing_required(config: dict[str, Any]) -> None:
    del config["source"]


def _wrong_type(config: dict[str, Any]) -> None:
    config["sync"] = {"interval_seconds": "abc"}


def _unset_env_var(config: dict[str, Any]) -> None:
    config["leadsquared"]["secret_key"] = "${" + UNSET_VAR + "}"


def _bad_host(config: dict[str, Any]) -> None:
    config["leadsquared"]["host"] = "api.leadsquared.com/v2"


def _duplicate_attribute(config: dict[str, Any]) -> None:
    config["mapping"] = {"phone": "Phone", "city": "Phone"}


def _three_mistakes(config: dict[str, Any]) -> None:
    config["name"] = "Not A Valid Name"
    config["sync"] = {"push_batch_size": 0}
    del config["lead_id"]


def _malformed_database_port(config: dict[str, Any]) -> None:
    config["database"]["url"] = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:abc/x"


def _unreachable_database(config: dict[str, Any]) -> None:
    config["database"]["url"] = UNREACHABLE_URL


# case -> (what goes wrong, how each expected stderr line starts after "<path>: ")
MISTAKES: dict[str, tuple[Callable[[dict[str, Any]], None], list[str]]] = {
    "unknown-top-level-key": (_unknown_top_level, ["mapings: unknown key"]),
    "unknown-nested-key": (
        _unknown_nested,
        ["leadsquared.acess_key: unknown key", "leadsquared.access_key: required key"],
    ),
    "missing-key": (_missing_required, ["source: required key is missing"]),
    "wrong-type": (_wrong_type, ["sync.interval_seconds: "]),
    "unset-env-var": (
        _unset_env_var,
        [f"leadsquared.secret_key: environment variable {UNSET_VAR} is not set"],
    ),
    "bad-host-url": (_bad_host, ["leadsquared.host: must be a URL"]),
    "duplicate-attribute": (
        _duplicate_attribute,
        ["mapping: columns 'phone' and 'city' both map to 'Phone'"],
    ),
    "malformed-database-port": (_malformed_database_port, ["database.url: "]),
    "every-mistake-at-once": (
        _three_mistakes,
        ["name: ", "lead_id: required key is missing", "sync.push_batch_size: "],
    ),
}

# case -> (file text, how the one stderr line starts after "<path>: ")
UNREADABLE: dict[str, tuple[str, str]] = {
    "unclosed-brace": ("name: t\nmapping: {phone: Phone\nsource: {}\n", "line 3: "),
    "tab-indent": ("name: t\nmapping:\n\tphone: Phone\n", "line 3: "),
    "empty-file": ("", "must be a YAML mapping"),
    "a-list": ("- name\n- database\n", "must be a YAML mapping"),
}

UNREACHABLE_COMMANDS = ("init", "run")


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """Each case below is its own CLI process; they share nothing, so they run side by side."""
    assert UNSET_VAR not in os.environ
    commands: dict[str, list[str]] = {}
    paths: dict[str, Path] = {}
    for case, (mistake, _) in MISTAKES.items():
        directory = tmp_path_factory.mktemp(case)
        config = valid_config(directory)
        mistake(config)
        paths[case] = _write(directory, yaml.safe_dump(config, sort_keys=False))
        commands[case] = ["--config", str(paths[case]), "run"]
    for case, (text, _) in UNREADABLE.items():
        paths[case] = _write(tmp_path_factory.mktemp(case), text)
        commands[case] = ["--config", str(paths[case]), "run"]
    paths["missing-file"] = tmp_path_factory.mktemp("missing") / "nowhere.yaml"
    commands["missing-file"] = ["--config", str(paths["missing-file"]), "init"]
    for command in UNREACHABLE_COMMANDS:
        directory = tmp_path_factory.mktemp(f"unreachable-{command}")
        config = valid_config(directory)
        _unreachable_database(config)
        case = f"unreachable-{command}"
        paths[case] = _write(directory, yaml.safe_dump(config, sort_keys=False))
        commands[case] = ["--config", str(paths[case]), command]
    results = run_cli_concurrently(commands)
    return {case: (paths[case], results[case]) for case in commands}


def _write(directory: Path, text: str) -> Path:
    path = directory / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", list(MISTAKES))
def test_invalid_config_names_each_key_on_its_own_line(
    case: str, outcomes: dict[str, tuple[Path, subprocess.CompletedProcess[str]]]
) -> None:
    path, result = outcomes[case]
    _, expected_lines = MISTAKES[case]

    lines = assert_clean_failure(result, EXIT_USAGE)

    assert len(lines) == len(expected_lines), lines
    for expected in expected_lines:
        assert any(line.startswith(f"{path}: {expected}") for line in lines), (expected, lines)
    assert not (path.parent / "app.db").exists(), "a bad config must not touch the database"


def test_a_malformed_database_url_never_shows_its_password(
    outcomes: dict[str, tuple[Path, subprocess.CompletedProcess[str]]],
) -> None:
    _, result = outcomes["malformed-database-port"]

    (line,) = assert_clean_failure(result, EXIT_USAGE)

    assert "port" in line
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_yaml_says_where(
    case: str, outcomes: dict[str, tuple[Path, subprocess.CompletedProcess[str]]]
) -> None:
    path, result = outcomes[case]

    (line,) = assert_clean_failure(result, EXIT_USAGE)

    assert line.startswith(f"{path}: {UNREADABLE[case][1]}"), line


def test_missing_config_file(
    outcomes: dict[str, tuple[Path, subprocess.CompletedProcess[str]]],
) -> None:
    path, result = outcomes["missing-file"]

    (line,) = assert_clean_failure(result, EXIT_USAGE)

    assert line == f"{path}: file not found"


@pytest.mark.parametrize("command", UNREACHABLE_COMMANDS)
def test_unreachable_database_fails_cleanly_without_the_password(
    command: str, outcomes: dict[str, tuple[Path, subprocess.CompletedProcess[str]]]
) -> None:
    _, result = outcomes[f"unreachable-{command}"]

    (line,) = assert_clean_failure(result, EXIT_RUN_FAILED)

    assert "database error" in line
    assert "127.0.0.1" in line
    assert PASSWORD not in result.stdout + result.stderr


def test_no_config_at_all_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)

    (line,) = assert_clean_failure(run_cli("run"), EXIT_USAGE)

    assert "--config" in line
    assert CONFIG_ENV_VAR in line


def test_config_path_from_the_environment(sqlite_project: Project, tmp_path: Path) -> None:
    project = sqlite_project
    env = {CONFIG_ENV_VAR: str(project.config_path)}

    result = run_cli("init", env=env)
    assert result.returncode == 0, result.stderr
    assert "change capture installed" in result.stdout

    result = run_cli("run", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("run 1 ok")

    # --config wins over the environment.
    broken = tmp_path / "broken.yaml"
    broken.write_text("bogus: 1\n", encoding="utf-8")
    (line, *_) = assert_clean_failure(run_cli("--config", str(broken), "run", env=env), EXIT_USAGE)
    assert line.startswith(f"{broken}: ")
    (line, *_) = assert_clean_failure(run_cli("run", env={CONFIG_ENV_VAR: str(broken)}), EXIT_USAGE)
    assert line.startswith(f"{broken}: ")


def test_mapping_a_column_the_table_lacks(project: Project) -> None:
    project.write(project.config(mapping={**MAPPING, "town": "mx_Town"}))

    (line,) = assert_clean_failure(project.cli("init"), EXIT_USAGE)

    assert line == f"{project.config_path}: mapping.town: table 'customers' has no column 'town'"


def test_source_table_that_does_not_exist(project: Project) -> None:
    project.write(project.config(source={"table": "clients"}))

    (line,) = assert_clean_failure(project.cli("init"), EXIT_USAGE)

    assert line.startswith(f"{project.config_path}: source.table: ")
    assert "'clients'" in line


def test_run_before_init_says_to_run_init(project: Project) -> None:
    (line,) = assert_clean_failure(project.cli("run"), EXIT_RUN_FAILED)

    assert "lsq-sync init" in line
