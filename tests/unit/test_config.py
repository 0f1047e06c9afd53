"""connector.config: YAML in, a frozen validated Config out, every mistake reported at once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from connector.config import Config, in_file_order, load_config, not_reported, parse_config
from connector.errors import ConfigError, ConfigLocation, ConfigProblem

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "config.example.yaml"

ACCESS_KEY = "AK$ab/cd+ef=="
SECRET_KEY = "SK$q/r+s=t$$u${v}"

VALID = """
name: customers_to_lsq
database: {url: "sqlite:///lsq-sync.db"}
leadsquared:
  host: "https://api-in21.leadsquared.com"
  access_key: "${LSQ_ACCESS_KEY}"
  secret_key: "${LSQ_SECRET_KEY}"
source: {table: customers, key: id}
lead_id: {column: lsq_prospect_id}
mapping: {phone: Phone, city: mx_City, plan: mx_Plan}
"""
ENV = {"LSQ_ACCESS_KEY": ACCESS_KEY, "LSQ_SECRET_KEY": SECRET_KEY}


def valid_dict() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(VALID)
    return loaded


def plain(value: str | SecretStr) -> str:
    """A value that may be marked secret (a database URL can hold a password)."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def parse(config: dict[str, Any] | str, environ: dict[str, str] | None = None) -> Config:
    text = config if isinstance(config, str) else yaml.safe_dump(config)
    return parse_config(text, "config.yaml", ENV if environ is None else environ)


def lines(error: ConfigError) -> list[str]:
    """Each problem as printed after the file's name."""
    return [str(problem) for problem in error.problems]


def problems(config: dict[str, Any] | str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse(config, environ)
    return lines(raised.value)


def test_valid_config_parses_with_defaults() -> None:
    config = parse(VALID)
    assert config.name == "customers_to_lsq"
    assert config.leadsquared.host == "https://api-in21.leadsquared.com"
    assert config.leadsquared.access_key.get_secret_value() == ACCESS_KEY
    assert config.leadsquared.secret_key.get_secret_value() == SECRET_KEY
    assert config.leadsquared.post_updated_lead is False
    assert config.leadsquared.auth == "query"
    assert (config.leadsquared.rate_limit.calls, config.leadsquared.rate_limit.window_seconds) == (
        25,
        5.0,
    )
    assert config.mapping == {"phone": "Phone", "city": "mx_City", "plan": "mx_Plan"}


def test_config_is_frozen() -> None:
    config = parse(VALID)
    with pytest.raises(ValueError, match="frozen"):
        config.name = "other"  # type: ignore[misc]


def test_example_file_parses() -> None:
    if not EXAMPLE.exists():
        pytest.skip(f"{EXAMPLE.name} does not exist yet at the repository root")
    text = EXAMPLE.read_text(encoding="utf-8")
    referenced = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    environ = {name: f"example-{name.lower()}" for name in referenced} | ENV
    config = load_config(EXAMPLE, environ)
    # Secrets stay out of the file: the example takes its keys from the environment.
    assert config.leadsquared.access_key.get_secret_value() in environ.values()
    assert config.leadsquared.secret_key.get_secret_value() in environ.values()


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(VALID, encoding="utf-8")
    assert load_config(path, ENV).name == "customers_to_lsq"


def test_load_config_reads_the_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "config.yaml"
    path.write_text(VALID, encoding="utf-8")
    assert load_config(path).leadsquared.secret_key.get_secret_value() == SECRET_KEY


def test_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as raised:
        load_config(missing, ENV)
    assert lines(raised.value) == ["file not found"]
    assert str(missing) in str(raised.value)


@pytest.mark.parametrize(
    "text",
    ["name: [unclosed", "- a\n- b", "just a string", ""],
    ids=["bad-yaml", "list", "scalar", "empty"],
)
def test_not_a_mapping_is_one_problem(text: str) -> None:
    assert len(problems(text)) == 1


# -- problems as (location, message) --------------------------------------------------------


def test_keys_given_twice_are_reported_in_file_order() -> None:
    # The parser finds the top level's duplicate (line 5) before the nested one (line 4).
    text = "name: a\nleadsquared:\n  host: x\n  host: y\nname: b\n"
    with pytest.raises(ConfigError) as raised:
        parse(text)
    assert raised.value.problems == (
        ConfigProblem(ConfigLocation("config.yaml", line=4), "key 'host' is given twice"),
        ConfigProblem(ConfigLocation("config.yaml", line=5), "key 'name' is given twice"),
    )
    assert str(raised.value).splitlines() == [
        "config.yaml: line 4: key 'host' is given twice",
        "config.yaml: line 5: key 'name' is given twice",
    ]


def test_a_problem_carries_the_file_and_its_key_path() -> None:
    config = valid_dict()
    config["leadsquared"]["rate_limit"] = {"calls": 0}
    with pytest.raises(ConfigError) as raised:
        parse(config)
    [problem] = raised.value.problems
    assert problem.location == ConfigLocation("config.yaml", ("leadsquared", "rate_limit", "calls"))
    assert problem.message.startswith("Input should be greater than or equal to 1")


def test_an_unset_variable_hides_only_the_problems_at_its_own_key() -> None:
    config = valid_dict()
    config["a"] = "${LSQ_SURELY_UNSET}"
    config["a:b"] = 1  # told apart from `a` by its key, whatever its spelling
    assert problems(config) == [
        "a: environment variable LSQ_SURELY_UNSET is not set",
        "a:b: unknown key",
    ]


def test_problems_at_a_reported_key_are_dropped_on_the_key_alone() -> None:
    def at(*key: str, message: str = "problem") -> ConfigProblem:
        return ConfigProblem(ConfigLocation("c.yaml", key), message)

    reported = [at("a", "b")]
    found = [at("a", "b", message="other"), at("a.b"), at("a"), at("a", "b", "c"), at()]
    assert not_reported(found, reported) == found[1:]
    assert not_reported(found, []) == found


def test_problems_are_ordered_by_line_then_as_found() -> None:
    def problem(line: int | None, message: str) -> ConfigProblem:
        return ConfigProblem(ConfigLocation("c.yaml", line=line), message)

    found = [
        problem(9, "nine"),
        problem(None, "line 1: not a line of its own"),
        problem(2, "two"),
        ConfigProblem(ConfigLocation("c.yaml", ("name",)), "at a key"),
        problem(2, "two again"),
    ]
    assert [p.message for p in in_file_order(found)] == [
        "two",
        "two again",
        "nine",
        "line 1: not a line of its own",
        "at a key",
    ]


def test_a_problem_is_printed_by_line_else_by_key_else_alone() -> None:
    assert str(ConfigProblem(ConfigLocation("f", ("a",), line=3), "m")) == "line 3: m"
    assert str(ConfigProblem(ConfigLocation("f", ("a", "b")), "m")) == "a.b: m"
    assert str(ConfigProblem(ConfigLocation("f", ()), "m")) == "(top level): m"
    assert str(ConfigProblem(ConfigLocation("f"), "m")) == "m"


# -- environment interpolation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "environ", "expected"),
    [
        ("${KEY}", {"KEY": "a$b/c+d=e"}, "a$b/c+d=e"),
        ("pre-${KEY}-post", {"KEY": "x"}, "pre-x-post"),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("$$", {}, "$"),
        ("a$$b", {}, "a$b"),
        ("$${KEY}", {"KEY": "nope"}, "${KEY}"),
        ("$$$${KEY}", {}, "$${KEY}"),
        ("$$${KEY}", {"KEY": "v"}, "$v"),
        ("lone$dollar/and+plus=eq", {}, "lone$dollar/and+plus=eq"),
        ("ends with $", {}, "ends with $"),
        ("${KEY}", {"KEY": "${OTHER}"}, "${OTHER}"),  # values are not interpolated again
        ("${KEY}", {"KEY": "$$"}, "$$"),
    ],
)
def test_env_interpolation(raw: str, environ: dict[str, str], expected: str) -> None:
    config = valid_dict()
    config["leadsquared"]["secret_key"] = raw
    environ = {**environ, "LSQ_ACCESS_KEY": ACCESS_KEY, "LSQ_SECRET_KEY": SECRET_KEY}
    assert parse(config, environ).leadsquared.secret_key.get_secret_value() == expected


def test_literal_key_with_special_characters_needs_only_dollar_escaping() -> None:
    config = valid_dict()
    config["leadsquared"]["access_key"] = "u$$x/y+z=="
    assert parse(config).leadsquared.access_key.get_secret_value() == "u$x/y+z=="


def test_interpolation_reaches_nested_values_everywhere() -> None:
    config = valid_dict()
    config["database"]["url"] = "${DB_URL}"
    config["mapping"] = {"city": "${CITY_ATTRIBUTE}"}
    environ = {**ENV, "DB_URL": "sqlite:///x.db", "CITY_ATTRIBUTE": "mx_City"}
    parsed = parse(config, environ)
    assert plain(parsed.database.url) == "sqlite:///x.db"
    assert parsed.mapping == {"city": "mx_City"}


def test_unset_variable_names_the_key_and_the_variable_once() -> None:
    found = problems(VALID, {"LSQ_ACCESS_KEY": ACCESS_KEY})
    # One line, not a second "must not be empty" for the same key.
    assert found == ["leadsquared.secret_key: environment variable LSQ_SECRET_KEY is not set"]


# -- unknown keys and collected errors ----------------------------------------------------


def test_unknown_top_level_key() -> None:
    config = valid_dict()
    config["mappings"] = {"x": "y"}
    assert problems(config) == ["mappings: unknown key"]


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("leadsquared", "acess_key"),
        ("database", "uri"),
        ("source", "primary_key"),
        ("lead_id", "col"),
    ],
)
def test_unknown_nested_key(section: str, key: str) -> None:
    config = valid_dict()
    config[section][key] = "x"
    assert problems(config) == [f"{section}.{key}: unknown key"]


def test_unknown_key_two_levels_down() -> None:
    config = valid_dict()
    config["leadsquared"]["rate_limit"] = {"calls": 10, "window": 5}
    assert problems(config) == ["leadsquared.rate_limit.window: unknown key"]


def test_every_mistake_is_reported_at_once_each_naming_its_key() -> None:
    config = valid_dict()
    del config["name"]
    config["database"]["url"] = "mysql://x"
    config["leadsquared"]["host"] = "api.leadsquared.com/v2"
    config["leadsquared"]["rate_limit"] = {"calls": 0}
    config["leadsquared"]["secret_key"] = "${MISSING_SECRET}"
    config["source"]["colour"] = "blue"
    config["mapping"] = {"city": "not a name"}
    config["sync"] = {"interval_seconds": -1}
    found = problems(config)
    keys = sorted(line.split(":", 1)[0] for line in found)
    assert keys == sorted(
        [
            "name",
            "database.url",
            "leadsquared.host",
            "leadsquared.rate_limit.calls",
            "leadsquared.secret_key",
            "source.colour",
            "mapping",
            "sync.interval_seconds",
        ]
    )
    assert all("\n" not in line for line in found)
    with pytest.raises(ConfigError) as raised:
        parse(config)
    lines = str(raised.value).splitlines()
    assert len(lines) == len(found)
    assert all(line.startswith("config.yaml: ") for line in lines)


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ({"name": "Has Spaces"}, "name", "lowercase"),
        ({"database": {"url": "postgresql://u@h/db"}}, "database.url", "psycopg"),
        ({"mapping": {}}, "mapping", "at least one"),
        ({"mapping": {"a": "mx_X", "b": "mx_X"}}, "mapping", "both map"),
        ({"lead_id": {"column": "phone"}}, "mapping", "cannot also be in mapping"),
    ],
)
def test_problem_names_the_key_and_what_was_expected(
    change: dict[str, Any], key: str, words: str
) -> None:
    config = valid_dict() | change
    [line] = problems(config)
    assert line.startswith(f"{key}: ")
    assert words in line


def test_blank_key_is_refused() -> None:
    config = valid_dict()
    config["leadsquared"]["access_key"] = "   "
    assert problems(config) == ["leadsquared.access_key: must not be empty"]


# -- secrets ------------------------------------------------------------------------------


def test_repr_and_str_never_hold_a_key() -> None:
    config = parse(VALID)
    for text in (repr(config), str(config), repr(config.leadsquared), str(config.leadsquared)):
        assert ACCESS_KEY not in text
        assert SECRET_KEY not in text
    assert "**" in repr(config.leadsquared)


def test_model_dump_json_hides_the_keys() -> None:
    dumped = parse(VALID).model_dump_json()
    assert ACCESS_KEY not in dumped
    assert SECRET_KEY not in dumped


def test_errors_never_hold_a_key() -> None:
    config = valid_dict()
    config["leadsquared"]["access_key"] = {"nested": ACCESS_KEY}
    config["leadsquared"]["secret_key"] = ["${LSQ_SECRET_KEY}"]
    config["leadsquared"]["host"] = SECRET_KEY
    with pytest.raises(ConfigError) as raised:
        parse(config)
    text = str(raised.value) + repr(raised.value)
    assert ACCESS_KEY not in text
    assert SECRET_KEY not in text
    assert len(raised.value.problems) == 3


# -- the database URL -----------------------------------------------------------------------

DB_PASSWORD = "Pw9s3cr3t"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (f"postgresql+psycopg://u:{DB_PASSWORD}@host:abc/db", "port"),
        (f"postgresql+psycopg://u:{DB_PASSWORD}@[::1:5432/db", "port"),
        (f"postgresql+psycopg://u:{DB_PASSWORD}@host:99999/db", "65535"),
        (f"postgresql+psycopg://u:{DB_PASSWORD}@host:0/db", "65535"),
        (f"postgresql+psycopg//u:{DB_PASSWORD}@host/db", "not a valid"),
    ],
    ids=["letters", "broken-ipv6", "too-high", "zero", "no-scheme-colon"],
)
def test_a_malformed_database_url_is_a_config_error_without_the_password(
    url: str, words: str
) -> None:
    config = valid_dict()
    config["database"]["url"] = url
    with pytest.raises(ConfigError) as raised:
        parse(config)
    [line] = lines(raised.value)
    assert line.startswith("database.url: ")
    assert words in line
    assert DB_PASSWORD not in str(raised.value) + repr(raised.value)


def test_a_database_url_with_a_port_is_accepted() -> None:
    config = valid_dict()
    config["database"]["url"] = "postgresql+psycopg://u:pw@db.example:6432/app"
    assert plain(parse(config).database.url).endswith("@db.example:6432/app")


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///:memory:", "sqlite:///file:app?mode=memory&cache=shared&uri=true"],
    ids=["no-path", "memory", "memory-uri"],
)
def test_an_in_memory_sqlite_database_is_refused(url: str) -> None:
    config = valid_dict()
    config["database"]["url"] = url
    [line] = problems(config)
    assert line.startswith("database.url: must name a database file")


def test_a_sqlite_file_database_is_accepted() -> None:
    config = valid_dict()
    config["database"]["url"] = "sqlite:///relative/app.db"
    assert plain(parse(config).database.url) == "sqlite:///relative/app.db"


def test_a_user_or_password_in_the_host_is_refused_without_showing_it() -> None:
    config = valid_dict()
    config["leadsquared"]["host"] = f"https://user:{DB_PASSWORD}@api.leadsquared.com"
    [line] = problems(config)
    assert line.startswith("leadsquared.host: must not hold a user name or password")
    assert DB_PASSWORD not in line


@pytest.mark.parametrize("table", ["lsq_sync_folded_rows", "LSQ_SYNC_lead"])
def test_a_source_table_named_like_the_connectors_own_is_refused(table: str) -> None:
    config = valid_dict()
    config["source"]["table"] = table
    [line] = problems(config)
    assert line == "source.table: must not start with 'lsq_sync_': names of lsq-sync's own tables"


# -- keys as secret files and environments hand them over ----------------------------------


@pytest.mark.parametrize(
    "padding", ["\n", "\r\n", " ", "\t \n"], ids=["lf", "crlf", "space", "mix"]
)
def test_whitespace_around_a_key_is_stripped(padding: str) -> None:
    environ = {"LSQ_ACCESS_KEY": ACCESS_KEY + padding, "LSQ_SECRET_KEY": padding + SECRET_KEY}
    keys = parse(VALID, environ).leadsquared
    assert keys.access_key.get_secret_value() == ACCESS_KEY
    assert keys.secret_key.get_secret_value() == SECRET_KEY


@pytest.mark.parametrize("inside", ["\n", "\r", "\t", "\x00", "\x7f", "\u200b"])
def test_a_control_character_inside_a_key_is_refused_without_showing_the_key(
    inside: str,
) -> None:
    secret = "Sk9" + inside + "CORE"
    environ = {**ENV, "LSQ_SECRET_KEY": secret}
    with pytest.raises(ConfigError) as raised:
        parse(VALID, environ)
    [line] = lines(raised.value)
    assert line.startswith("leadsquared.secret_key: ")
    assert "control character" in line
    text = str(raised.value) + repr(raised.value)
    assert "Sk9" not in text
    assert "CORE" not in text


def test_a_key_that_is_not_ascii_is_refused_in_headers_only() -> None:
    environ = {**ENV, "LSQ_ACCESS_KEY": "Ak9é"}
    assert parse(VALID, environ).leadsquared.access_key.get_secret_value() == "Ak9é"
    config = valid_dict()
    config["leadsquared"]["auth"] = "header"
    with pytest.raises(ConfigError) as raised:
        parse(config, environ)
    [line] = lines(raised.value)
    assert line.startswith("leadsquared.auth: ")
    assert "leadsquared.access_key" in line
    assert "ASCII" in line
    assert "Ak9" not in str(raised.value)


def test_real_table_keys_default_to_todays_behaviour() -> None:
    config = parse(VALID)
    assert config.lead_id.match == "ProspectId"
    assert config.source.timezone == "UTC"
    assert config.attributes == {"phone": "Phone", "city": "mx_City", "plan": "mx_Plan"}
    assert config.truncated == frozenset()
    assert config.kept_when_empty == frozenset()
    bulk = config.leadsquared.bulk
    assert (bulk.mode, bulk.min_leads) == ("auto", 50)
    assert (bulk.rate_limit.calls, bulk.rate_limit.window_seconds) == (5, 5.0)
    assert config.leadsquared.metadata_ttl_seconds == 3600


def test_the_long_mapping_form_gives_choices_per_field() -> None:
    raw = valid_dict()
    raw["lead_id"] = {"column": "email", "match": "EmailAddress"}
    raw["source"]["timezone"] = "Asia/Kolkata"
    raw["mapping"] = {
        "phone": "Phone",
        "notes": {"attribute": "mx_Notes", "truncate": True},
        "plan": {"attribute": "mx_Plan", "empty": "skip"},
    }
    raw["leadsquared"]["bulk"] = {"mode": "always", "rate_limit": {"calls": 2}}
    config = parse(raw)
    assert config.lead_id.match == "EmailAddress"
    assert config.source.zone.key == "Asia/Kolkata"
    assert config.attributes == {"phone": "Phone", "notes": "mx_Notes", "plan": "mx_Plan"}
    assert config.truncated == {"mx_Notes"}
    assert config.kept_when_empty == {"mx_Plan"}
    assert config.leadsquared.bulk.mode == "always"
    assert config.leadsquared.bulk.rate_limit.calls == 2


def test_every_mistake_in_the_new_keys_is_reported_at_once() -> None:
    raw = valid_dict()
    raw["lead_id"] = {"column": "lsq_prospect_id", "match": "Email"}
    raw["source"]["timezone"] = "Mars/Olympus"
    raw["mapping"] = {
        "phone": {"attribute": "Phone", "truncate": "sometimes"},
        "plan": {"attribute": "mx Plan"},
        "city": {"attribute": "mx_City", "empty": "nothing", "color": "red"},
        "town": 7,
    }
    raw["leadsquared"]["bulk"] = {"mode": "sometimes", "min_leads": 0}
    raw["leadsquared"]["metadata_ttl_seconds"] = 0
    raw["lead_id"]["lookup_ttl_seconds"] = 1e15
    found = "\n".join(problems(raw))
    for expected in (
        "lead_id.match:",
        "source.timezone: 'Mars/Olympus' is not a time zone name",
        "mapping.phone.truncate:",
        "mapping.city.empty:",
        "mapping.city.color: unknown key",
        "mapping.town: must be a LeadSquared schema name, or {attribute",
        "leadsquared.bulk.mode:",
        "leadsquared.bulk.min_leads:",
        "leadsquared.metadata_ttl_seconds:",
        "lead_id.lookup_ttl_seconds:",
    ):
        assert expected in found, found


def test_a_hostile_schema_name_in_the_long_form_is_refused() -> None:
    raw = valid_dict()
    raw["mapping"] = {"plan": {"attribute": "mx_Plan'; DROP TABLE x"}}
    assert any("not a LeadSquared schema name" in line for line in problems(raw))


def test_the_match_attribute_cannot_be_mapped_whatever_its_case() -> None:
    raw = valid_dict()
    raw["lead_id"] = {"column": "email", "match": "EmailAddress"}
    raw["mapping"]["backup_email"] = "emailaddress"
    assert any("leads are found by it" in line for line in problems(raw))


def test_phone_matching_cannot_always_use_bulk() -> None:
    raw = valid_dict()
    raw["lead_id"] = {"column": "mobile", "match": "Phone"}
    raw["mapping"].pop("phone")
    raw["leadsquared"]["bulk"] = {"mode": "always"}
    assert any(line.startswith("lead_id: match: Phone cannot") for line in problems(raw))


def test_the_lead_id_column_cannot_also_be_mapped_in_the_long_form() -> None:
    raw = valid_dict()
    raw["lead_id"] = {"column": "email", "match": "EmailAddress"}
    raw["mapping"]["email"] = {"attribute": "EmailAddress"}
    assert any("identifies the lead" in line for line in problems(raw))
