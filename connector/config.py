"""The connector's configuration: read once from YAML, validated, frozen.

Everything below the CLI receives a `Config`; nothing else reads the file or the environment.
Every problem found is kept as a `ConfigProblem` (where, what), and all of them are raised
together in one `ConfigError`.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connector.errors import ConfigError, ConfigLocation, ConfigProblem
from connector.schema import PREFIX

CONFIG_ENV_VAR = "LSQ_SYNC_CONFIG"

_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_MAX_PORT = 65535
# A year: longer is more likely a unit mistake than a choice, and would overflow a date.
_LONGEST_TTL_SECONDS = 366 * 24 * 3600


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Model):
    # Secret because a URL may hold the database password.
    url: SecretStr = Field(description="SQLAlchemy URL, e.g. postgresql+psycopg://u@h/db")

    @field_validator("url")
    @classmethod
    def _known_driver(cls, url: SecretStr) -> SecretStr:
        # Parsed here, once, so that a malformed URL is a config error rather than a
        # traceback from create_engine. No message may quote the URL: it holds the password.
        try:
            parsed = make_url(url.get_secret_value())
        except ValueError:
            raise ValueError(
                "the port is not a number (postgresql+psycopg://user:password@host:5432/db)"
            ) from None
        except ArgumentError:
            raise ValueError(
                "is not a valid URL (sqlite:///path/to/file.db or "
                "postgresql+psycopg://user:password@host:5432/db)"
            ) from None
        if parsed.drivername not in ("sqlite", "postgresql+psycopg"):
            if parsed.get_backend_name() == "postgresql":
                raise ValueError("use the psycopg 3 driver: postgresql+psycopg://...")
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        if parsed.port is not None and not 1 <= parsed.port <= _MAX_PORT:
            raise ValueError(f"the port must be from 1 to {_MAX_PORT}, not {parsed.port}")
        if parsed.drivername == "sqlite" and _in_memory(parsed.database, parsed.query):
            # Every connection would get a database of its own: the connector's tables, made
            # by `init`, would be gone for the next command, and a run's threads would not
            # see one another's.
            raise ValueError(
                "must name a database file (sqlite:///path/to/file.db): an in-memory SQLite "
                "database lasts only as long as one connection"
            )
        return url


class WindowConfig(_Model):
    calls: int = Field(25, ge=1, description="calls allowed in any window")
    window_seconds: float = Field(5.0, gt=0)
    # Added to the window: covers the time between taking a slot and the call reaching
    # LeadSquared, so that the account's own window never sees one call too many. The least
    # margin: the limiter widens it to the spread of its calls' timings (pacing.learned_margin).
    margin_seconds: float = Field(0.05, ge=0, le=60)


class RateLimitConfig(WindowConfig):
    daily_budget: int | None = Field(None, ge=1, description="calls per UTC day; none = no cap")


# LeadSquared's bulk endpoints have a limit of their own, lower than the account's.
_BULK_WINDOW = WindowConfig(calls=5, window_seconds=5.0)


class BulkConfig(_Model):
    """When pushes go through Lead/Bulk/UpdateV2, 25 leads per call."""

    mode: Literal["auto", "always", "off"] = "auto"
    min_leads: int = Field(50, ge=1, description="auto: bulk when this many leads are pending")
    # On top of the account's window: each bulk call takes a slot in both.
    rate_limit: WindowConfig = _BULK_WINDOW


class TimeoutConfig(_Model):
    connect: float = Field(5.0, gt=0)
    read: float = Field(30.0, gt=0)
    total: float = Field(60.0, gt=0, description="a whole call, however slowly it trickles")


class RetryConfig(_Model):
    # Within one run; after that the lead waits for a later run (next_attempt_at).
    attempts: int = Field(4, ge=1, le=20, description="tries per lead per run, transient errors")
    max_seconds: float = Field(60.0, gt=0, description="time spent retrying one lead per run")


class LeadSquaredConfig(_Model):
    host: str = Field(description="the account's API host, e.g. https://api-in21.leadsquared.com")
    access_key: SecretStr
    secret_key: SecretStr
    post_updated_lead: bool = False
    auth: Literal["query", "header"] = "query"
    rate_limit: RateLimitConfig = RateLimitConfig()
    # Calls in flight at once: with 100-500 ms of latency one at a time cannot reach the limit.
    max_in_flight: int = Field(4, ge=1, le=32)
    timeout_seconds: TimeoutConfig = TimeoutConfig()
    retry: RetryConfig = RetryConfig()
    bulk: BulkConfig = BulkConfig()
    # Read the account's field list (LeadsMetaData.Get) to shape values by type and hold back
    # what LeadSquared would refuse; false sends values as the source spells them.
    check_fields: bool = True
    # How long the field list, kept in the connector's tables, is trusted before a run reads
    # it again.
    metadata_ttl_seconds: float = Field(3600.0, gt=0, le=_LONGEST_TTL_SECONDS)

    @field_validator("host")
    @classmethod
    def _http_url(cls, host: str) -> str:
        if not re.match(r"^https?://[^/\s?#]+/?$", host):
            raise ValueError("must be a URL like https://api.leadsquared.com, without a path")
        if "@" in host:
            # user:password@ would travel into every message that names the host.
            raise ValueError(
                "must not hold a user name or password (the keys go in access_key and secret_key)"
            )
        return host.rstrip("/")

    @field_validator("access_key", "secret_key")
    @classmethod
    def _clean_key(cls, key: SecretStr) -> SecretStr:
        # Secret files and the environments made from them end keys with a newline, which
        # no key has. Inside a key it is a mistake, and escaped into an error message it
        # would slip past the redaction of the key: refused, without quoting the key.
        text = key.get_secret_value().strip()
        if not text:
            raise ValueError("must not be empty")
        problem = key_problem(text, in_header=False)
        if problem:
            raise ValueError(problem)
        return SecretStr(text)

    @field_validator("auth")
    @classmethod
    def _keys_fit_in_headers(cls, auth: str, info: ValidationInfo) -> str:
        # Declared after the keys, so they are validated by now (absent if they failed).
        if auth == "header":
            for name in ("access_key", "secret_key"):
                key = info.data.get(name)
                # Control characters were refused with the key itself.
                if isinstance(key, SecretStr) and not key.get_secret_value().isascii():
                    raise ValueError(
                        f"header auth cannot carry leadsquared.{name}, which holds characters "
                        "other than ASCII: use auth: query"
                    )
        return auth


def key_problem(key: str, in_header: bool) -> str | None:
    """Why a key cannot be sent as it is, or None. Never quotes the key."""
    if any(unicodedata.category(char).startswith("C") for char in key):
        return (
            "holds a control character (a line break, tab or invisible character): "
            "copy the key again"
        )
    if in_header and not key.isascii():
        return "holds characters other than ASCII, which an HTTP header cannot carry"
    return None


class SourceConfig(_Model):
    table: str = Field(min_length=1)
    schema_: str | None = Field(None, alias="schema", min_length=1)
    key: str = Field(min_length=1, description="the table's primary-key column")
    # The zone a date-time without one (a `timestamp` column, naive text) is read in.
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{name!r} is not a time zone name (an IANA name such as UTC, Europe/London "
                "or Asia/Kolkata)"
            ) from None
        return name

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @field_validator("table")
    @classmethod
    def _not_the_connectors_own(cls, table: str) -> str:
        # The connector's tables and queries use these names; capturing one of its own
        # tables would record its own writes.
        if table.lower().startswith(PREFIX):
            raise ValueError(f"must not start with {PREFIX!r}: names of lsq-sync's own tables")
        return table


Match = Literal["ProspectId", "EmailAddress", "Phone"]


class LeadIdConfig(_Model):
    column: str = Field(min_length=1, description="source column that identifies the lead")
    # What the column holds: the lead's ProspectId, or a value LeadSquared finds it by.
    match: Match = "ProspectId"
    # How long a ProspectId found by a lookup is trusted before it is looked up again: an
    # address or number can move to another lead in LeadSquared.
    lookup_ttl_seconds: float = Field(86400.0, gt=0, le=_LONGEST_TTL_SECONDS)


class FieldMapping(_Model):
    """The long form of a mapping entry, for choices per field."""

    attribute: str = Field(min_length=1)
    # Cut a value longer than the field's MaxLength to fit, instead of holding it back.
    truncate: bool = False
    # "skip": a NULL (or empty) source value leaves the field in LeadSquared as it is.
    empty: Literal["clear", "skip"] = "clear"


class SyncConfig(_Model):
    interval_seconds: float = Field(60.0, gt=0, description="daemon: time between cycles")
    # Daemon: after a wake-up (a change captured), how long to gather further changes before
    # the cycle starts; one cycle then pushes a burst of commits instead of one cycle each.
    debounce_seconds: float = Field(0.2, ge=0, le=60)
    ingest_batch_size: int = Field(5000, ge=1, le=100_000)
    push_batch_size: int = Field(200, ge=1, le=10_000)
    # After SIGTERM/SIGINT, how long calls in flight may take to be answered before they are
    # abandoned (their leads are sent again next run). Within Kubernetes' 30 s grace period.
    drain_seconds: float = Field(10.0, ge=0, le=300)
    # Run history older than this is deleted as each run starts, so the table stays bounded.
    keep_runs_days: float = Field(30.0, gt=0, le=3660)


class MetricsConfig(_Model):
    """Where the daemon serves /metrics and /healthz, and what /healthz calls progress."""

    host: str = Field("127.0.0.1", min_length=1)
    # 0: any free port, which the daemon logs ("metrics served").
    port: int = Field(9464, ge=0, le=_MAX_PORT)
    # Unset: derived from sync.interval_seconds (`health_bounds`), so that a slower schedule
    # is not reported unhealthy for being slow by design.
    max_lag_seconds: float | None = Field(None, gt=0)
    max_cycle_age_seconds: float | None = Field(None, gt=0)

    @field_validator("host")
    @classmethod
    def _bare_host(cls, host: str) -> str:
        if re.search(r"[\s/]|^\[|:\d+$", host) and not _is_ipv6(host):
            raise ValueError(
                "must be a host name or address to listen on (127.0.0.1, 0.0.0.0, ::), "
                "without a scheme or port (the port goes in metrics.port)"
            )
        return host


def _is_ipv6(host: str) -> bool:
    return ":" in host and re.fullmatch(r"[0-9A-Fa-f:.]+", host) is not None


# A healthy daemon's lag is at most an interval plus a cycle; these multiples leave room for
# a long cycle (a first run, a backfill) before /healthz calls it stalled.
_BOUND_INTERVALS = 10
_SHORTEST_BOUND_SECONDS = 300.0


def default_health_bound(interval_seconds: float) -> float:
    """metrics.max_lag_seconds and max_cycle_age_seconds when unset: ten intervals, at least
    five minutes."""
    return max(_BOUND_INTERVALS * interval_seconds, _SHORTEST_BOUND_SECONDS)


class Config(_Model):
    name: str = Field(description="identifies this connector's rows in the shared tables")
    database: DatabaseConfig
    leadsquared: LeadSquaredConfig
    source: SourceConfig
    lead_id: LeadIdConfig
    mapping: dict[str, str | FieldMapping] = Field(
        description="source column -> LeadSquared schema name, or {attribute, truncate, empty}"
    )
    sync: SyncConfig = SyncConfig()
    # Served by the daemon only; none: no HTTP server at all.
    metrics: MetricsConfig | None = None

    @property
    def health_bounds(self) -> tuple[float, float]:
        """(max lag, max age of the last successful cycle) in seconds, for /healthz."""
        default = default_health_bound(self.sync.interval_seconds)
        metrics = self.metrics or MetricsConfig()
        return (
            metrics.max_lag_seconds or default,
            metrics.max_cycle_age_seconds or default,
        )

    @property
    def attributes(self) -> dict[str, str]:
        """Source column -> LeadSquared schema name."""
        return {column: _attribute(entry) for column, entry in self.mapping.items()}

    @property
    def truncated(self) -> frozenset[str]:
        """Attributes whose values are cut to the field's MaxLength rather than held back."""
        return frozenset(entry.attribute for entry in self._long_forms() if entry.truncate)

    @property
    def kept_when_empty(self) -> frozenset[str]:
        """Attributes an empty source value leaves as they are in LeadSquared."""
        return frozenset(entry.attribute for entry in self._long_forms() if entry.empty == "skip")

    def _long_forms(self) -> list[FieldMapping]:
        """The mapping entries given in the long form; the short form takes the defaults."""
        return [entry for entry in self.mapping.values() if isinstance(entry, FieldMapping)]

    @field_validator("name")
    @classmethod
    def _identifier_name(cls, name: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
            raise ValueError(
                "must be 1-40 characters of lowercase letters, digits and _, starting with a letter"
            )
        return name

    @field_validator("mapping")
    @classmethod
    def _valid_mapping(
        cls, mapping: dict[str, str | FieldMapping]
    ) -> dict[str, str | FieldMapping]:
        if not mapping:
            raise ValueError("must map at least one column to a LeadSquared attribute")
        attributes = {column: _attribute(entry) for column, entry in mapping.items()}
        bad = [a for a in attributes.values() if not _ATTRIBUTE_NAME.match(a)]
        if bad:
            raise ValueError(f"not a LeadSquared schema name: {', '.join(map(repr, bad))}")
        seen: dict[str, str] = {}
        for column, attribute in attributes.items():
            if attribute in seen:
                raise ValueError(
                    f"columns {seen[attribute]!r} and {column!r} both map to {attribute!r}"
                )
            seen[attribute] = column
        return mapping

    @field_validator("lead_id")
    @classmethod
    def _bulk_can_find_the_lead(cls, lead_id: LeadIdConfig, info: ValidationInfo) -> LeadIdConfig:
        # Declared after leadsquared, which is validated by now (absent if it failed).
        leadsquared = info.data.get("leadsquared")
        if lead_id.match == "Phone" and leadsquared and leadsquared.bulk.mode == "always":
            raise ValueError(
                "match: Phone cannot go with leadsquared.bulk.mode: always: a bulk call finds "
                "leads by a field unique in the account, which Phone is not (with auto, "
                "single calls are made)"
            )
        return lead_id

    @field_validator("mapping", mode="after")
    @classmethod
    def _lead_column_is_not_mapped(
        cls, mapping: dict[str, str | FieldMapping], info: ValidationInfo
    ) -> dict[str, str | FieldMapping]:
        # With EmailAddress or Phone, the column is how the lead is found: a new value there
        # finds another lead (or none), so it can never be the value to give the old one.
        lead_id = info.data.get("lead_id")
        if lead_id is None:
            return mapping
        if lead_id.column in mapping:
            raise ValueError(
                f"lead_id.column {lead_id.column!r} cannot also be in mapping: it identifies "
                "the lead, and is never sent as a value"
            )
        mapped = {_attribute(entry).lower() for entry in mapping.values()}
        if lead_id.match != "ProspectId" and lead_id.match.lower() in mapped:
            raise ValueError(
                f"cannot send {lead_id.match}: leads are found by it (lead_id.match), and "
                "changing it would lose the lead"
            )
        return mapping

    @field_validator("metrics")
    @classmethod
    def _cycle_age_above_interval(
        cls, metrics: MetricsConfig | None, info: ValidationInfo
    ) -> MetricsConfig | None:
        # Declared after sync, which is validated by now (absent if it failed).
        sync = info.data.get("sync")
        bound = metrics.max_cycle_age_seconds if metrics else None
        if sync is not None and bound is not None and bound <= sync.interval_seconds:
            raise ValueError(
                f"max_cycle_age_seconds ({bound:g}) must be above sync.interval_seconds "
                f"({sync.interval_seconds:g}): between two cycles every healthy daemon would "
                "be reported unhealthy"
            )
        return metrics


def _attribute(entry: str | FieldMapping) -> str:
    return entry if isinstance(entry, str) else entry.attribute


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that reports a key given twice instead of silently keeping the last."""

    file: str
    duplicates: list[ConfigProblem]


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            where = ConfigLocation(loader.file, line=key_node.start_mark.line + 1)
            loader.duplicates.append(ConfigProblem(where, f"key {key!r} is given twice"))
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file; every problem is reported at once."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(ConfigLocation(source), "file not found")]) from None
    except OSError as exc:
        problem = ConfigProblem(ConfigLocation(source), f"cannot be read: {exc.strerror}")
        raise ConfigError([problem]) from None
    return parse_config(text, source, os.environ if environ is None else environ)


def parse_config(text: str, source: str, environ: Mapping[str, str]) -> Config:
    raw = _load_yaml(text, source)
    if not isinstance(raw, dict):
        message = "must be a YAML mapping of keys (name, database, ...)"
        raise ConfigError([ConfigProblem(ConfigLocation(source), message)])
    unset: list[ConfigProblem] = []
    interpolated = _interpolate(raw, source, (), environ, unset)
    invalid: list[ConfigProblem] = []
    try:
        config = Config.model_validate(interpolated)
    except ValidationError as exc:
        errors = _one_per_mapping_entry(exc.errors())
        invalid = [_describe(error, source) for error in errors]
    problems = [*unset, *not_reported(invalid, unset)]
    if problems:
        raise ConfigError(problems)
    return config


def not_reported(
    problems: Iterable[ConfigProblem], reported: Iterable[ConfigProblem]
) -> list[ConfigProblem]:
    """`problems` but those at a key already reported: a key whose environment variable is
    unset is named once, not again for the empty value it was given in its place."""
    keys = {problem.location.key for problem in reported}
    return [problem for problem in problems if problem.location.key not in keys]


def in_file_order(problems: Iterable[ConfigProblem]) -> list[ConfigProblem]:
    """Problems with a line by line, then the others as they were found. The YAML parser
    reports a mapping's duplicate keys before those of the mappings inside it."""
    return sorted(problems, key=lambda problem: _line_order(problem.location))


def _line_order(location: ConfigLocation) -> tuple[bool, int]:
    return (location.line is None, location.line or 0)


def _load_yaml(text: str, source: str) -> Any:
    loader = _StrictLoader(text)
    loader.file, loader.duplicates = source, []
    try:
        raw = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = ConfigLocation(source, line=mark.line + 1 if mark is not None else None)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError([ConfigProblem(where, problem)]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(in_file_order(loader.duplicates))
    return raw


def _interpolate(
    value: Any,
    file: str,
    key: tuple[str, ...],
    environ: Mapping[str, str],
    unset: list[ConfigProblem],
) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, file, (*key, str(k)), environ, unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, file, (*key, str(i)), environ, unset) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        if name not in environ:
            where = ConfigLocation(file, key)
            unset.append(ConfigProblem(where, f"environment variable {name} is not set"))
            return ""
        return environ[name]

    return _ENV_REFERENCE.sub(substitute, value)


def _one_per_mapping_entry(errors: Iterable[Any]) -> list[Any]:
    """A mapping entry is a name or a {attribute, ...} form: pydantic reports it against
    each, under keys of its own making. Report the form's own problems when the entry is a
    form, and one problem when it is neither."""
    kept: list[Any] = []
    by_entry: dict[Any, list[Any]] = {}
    for error in errors:
        where = error["loc"]
        if len(where) >= 3 and where[0] == "mapping" and where[2] in ("str", "FieldMapping"):
            by_entry.setdefault(where[1], []).append(error)
        else:
            kept.append(error)
    for column, entry_errors in by_entry.items():
        in_form = [
            {**error, "loc": ("mapping", column, *error["loc"][3:])}
            for error in entry_errors
            if error["loc"][2] == "FieldMapping" and len(error["loc"]) > 3
        ]
        kept.extend(in_form)
        if not in_form:
            message = (
                "must be a LeadSquared schema name, or {attribute: ..., truncate: ..., empty: ...}"
            )
            kept.append({"loc": ("mapping", column), "type": "value_error", "msg": message})
    return kept


def _describe(error: Any, source: str) -> ConfigProblem:
    where = ConfigLocation(source, tuple(str(part) for part in error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        return ConfigProblem(where, "unknown key")
    if kind == "missing":
        return ConfigProblem(where, "required key is missing")
    return ConfigProblem(where, str(error["msg"]).removeprefix("Value error, "))


def _in_memory(database: str | None, query: Mapping[str, Any]) -> bool:
    """Whether a SQLite URL names no file: `sqlite://`, `:memory:`, or a `mode=memory` URI."""
    if not database or database == ":memory:":
        return True
    return "mode=memory" in database or query.get("mode") == "memory"
