"""The connector's own tables: one set shared by every connector in a database, keyed by name.

This metadata is also Alembic's target, so a migration test can compare the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

PREFIX = "lsq_sync_"
VERSION_TABLE = f"{PREFIX}alembic_version"

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite has no time zones)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; the connector stores UTC only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        return value.replace(tzinfo=UTC)


# SQLite's AUTOINCREMENT needs INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_ChangeId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

change = sa.Table(
    f"{PREFIX}change",
    metadata,
    # The primary key on SQLite, where changes are read by rowid. On PostgreSQL the primary
    # key is (connector, tx_id, change_id), the order changes are read in (migration 0003):
    # one index to maintain per captured row, not two. Neither Alembic's comparison nor any
    # query depends on which it is.
    sa.Column("change_id", _ChangeId, sa.Identity(), primary_key=True),
    sa.Column("connector", sa.String(40), nullable=False),
    sa.Column("row_key", sa.Text(), nullable=False),
    # The writing transaction's id on PostgreSQL (gap-safe ordering); 0 on SQLite.
    sa.Column("tx_id", sa.BigInteger(), nullable=False, server_default="0"),
    sqlite_autoincrement=True,
)


# What `init` installed, so a run can refuse to go on with triggers that no longer match the
# config (a mapping changed without `init` would silently miss changes).
capture_state = sa.Table(
    f"{PREFIX}capture",
    metadata,
    sa.Column("connector", sa.String(40), primary_key=True),
    sa.Column("source_table", sa.Text(), nullable=False),
    sa.Column("signature", sa.String(64), nullable=False),
    sa.Column("installed_at", UtcDateTime(), nullable=False),
)

cursor = sa.Table(
    f"{PREFIX}cursor",
    metadata,
    sa.Column("connector", sa.String(40), primary_key=True),
    sa.Column("tx_id", sa.BigInteger(), nullable=False),
    sa.Column("change_id", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

# LeadSquared's ProspectId is a GUID; a longer lead id is a row's mistake, not a lead.
MAX_LEAD_ID_LENGTH = 100
# A lead found by email address or phone number is kept under that value: an address has at
# most 254 characters.
MAX_LEAD_KEY_LENGTH = 254

lead = sa.Table(
    f"{PREFIX}lead",
    metadata,
    sa.Column("connector", sa.String(40), primary_key=True),
    # The ProspectId, or with lead_id.match the email address or phone number.
    sa.Column("lead_id", sa.String(MAX_LEAD_KEY_LENGTH), primary_key=True),
    sa.Column("source_key", sa.Text(), nullable=False),
    # JSON objects {attribute: normalised value}: what the source holds now, and what
    # LeadSquared was last told, attribute by attribute.
    sa.Column("desired", sa.Text(), nullable=False),
    sa.Column("pushed", sa.Text(), nullable=False, server_default="{}"),
    # Derived from desired and pushed, stored so pending leads are found by index.
    sa.Column("pending", sa.Boolean(), nullable=False),
    # Set when LeadSquared rejected the current desired values; cleared when they change.
    sa.Column("rejected", sa.Boolean(), nullable=False, server_default=sa.false()),
    # JSON {attribute: desired value}: attributes LeadSquared said do not exist, held back for
    # this lead while their desired value stays the one that was refused.
    sa.Column("set_aside", sa.Text(), nullable=False, server_default="{}"),
    # Why those attributes are set aside (LeadSquared's answer, or pre-flight's rule), kept
    # while they are: the lead's other attributes may be pushed meanwhile.
    sa.Column("aside_reason", sa.Text()),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text()),
    sa.Column("next_attempt_at", UtcDateTime()),
    sa.Column("pushed_at", UtcDateTime()),
    # When the lead's values (or its rows) last moved; a failed push leaves it, so the oldest
    # pending lead's tells how long changes have waited (connector.health).
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    # When the oldest change not yet pushed was ingested: push takes the leads waiting longest
    # first. Kept while the lead stays pending; migration 0007 gave older leads `updated_at`.
    sa.Column("pending_since", UtcDateTime()),
    # Why the connector itself holds this lead back, without a call (say, several source rows
    # give it conflicting values); NULL when it does not. Not LeadSquared's answer: that is
    # `rejected` and `last_error`.
    sa.Column("hold", sa.Text()),
    # Another source row that claimed this lead id after (or before) `source_key` did: the
    # push phase checks whether both rows still point here before sending anything.
    sa.Column("other_key", sa.Text()),
    sa.Index(None, "connector", "pending"),
    # The push queue's order (connector.leadqueue): no sort of the whole backlog per page.
    sa.Index(None, "connector", "pending_since", "lead_id"),
    # Ingest rewrites every changed lead; free room on the page keeps that a HOT update.
    postgresql_with={"fillfactor": 70},
)

# The rate limit and the daily cap belong to the LeadSquared account, not to one process, so
# every process that uses the same keys paces itself from these rows. `account` is a digest of
# the host and access key: the keys themselves are never stored.
account = sa.Table(
    f"{PREFIX}account",
    metadata,
    sa.Column("account", sa.String(64), primary_key=True),
    # Set when LeadSquared throttled a call: no process starts one before this moment.
    sa.Column("blocked_until", UtcDateTime()),
    sa.Column("budget_day", sa.String(10)),  # the UTC date budget_used counts for
    sa.Column("budget_used", sa.Integer(), nullable=False, server_default="0"),
    # The pace a throttle set (calls per window, and when), for every process to start from.
    sa.Column("slow_calls", sa.Integer()),
    sa.Column("slow_since", UtcDateTime()),
    # The margin learned from the calls' timings, for a process that has timed none yet.
    sa.Column("margin_seconds", sa.Float()),
)

call = sa.Table(
    f"{PREFIX}call",
    metadata,
    sa.Column(
        "call_id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.Identity(),
        primary_key=True,
    ),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Index(None, "account", "started_at"),
)

run = sa.Table(
    f"{PREFIX}run",
    metadata,
    sa.Column("run_id", sa.Integer(), sa.Identity(), primary_key=True),
    sa.Column("connector", sa.String(40), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("finished_at", UtcDateTime()),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("changes_ingested", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("leads_pushed", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("leads_rejected", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("calls", sa.Integer(), nullable=False, server_default="0"),  # calls_made
    sa.Column("error", sa.Text()),
    sa.Index(None, "connector", "started_at"),
)


# Rows that could not be ingested at all (a value that cannot be read or sent, a lead id too
# long to be one): kept with the reason until the row changes, while every other row goes on.
row_problem = sa.Table(
    f"{PREFIX}row_problem",
    metadata,
    sa.Column("connector", sa.String(40), primary_key=True),
    sa.Column("source_key", sa.Text(), primary_key=True),
    sa.Column("lead_id", sa.Text()),  # when it could be read
    sa.Column("column_name", sa.Text()),  # the source column at fault, when one is
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("noted_at", UtcDateTime(), nullable=False),
)

# What the PostgreSQL capture triggers could not do (a mapped column dropped or renamed under
# them, say): written by the trigger instead of failing the application's statement, so that
# a run can refuse with the reason. Append-only from the triggers, so no application
# transaction ever waits on another's row here; `init` clears a connector's rows.
capture_error = sa.Table(
    f"{PREFIX}capture_error",
    metadata,
    sa.Column(
        "error_id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.Identity(),
        primary_key=True,
    ),
    sa.Column("connector", sa.String(40), nullable=False),
    sa.Column("noted_at", UtcDateTime(), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    # True when the trigger could not even tell which rows the statement wrote: `init` must
    # then queue every row again.
    sa.Column("keys_lost", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Index(None, "connector"),
)

# Who runs this connector now. `epoch` grows with every run that takes the run lock; the
# holder writes its state only while the epoch is still its own (fencing), and beats
# `heartbeat_at` while it runs, so a run that takes over waits for the one before it to drain.
lease = sa.Table(
    f"{PREFIX}lease",
    metadata,
    sa.Column("connector", sa.String(40), primary_key=True),
    sa.Column("epoch", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("heartbeat_at", UtcDateTime()),
)


# The ProspectId each lead was found to have, for a connector that finds leads by email
# address or phone number: looked up once per value, not once per change. Dropped when
# LeadSquared says the lead is gone (merged, deleted), so that the value is looked up again.
match = sa.Table(
    f"{PREFIX}match",
    metadata,
    sa.Column("connector", sa.String(40), primary_key=True),
    sa.Column("lead_id", sa.String(MAX_LEAD_KEY_LENGTH), primary_key=True),
    sa.Column("prospect_id", sa.String(MAX_LEAD_ID_LENGTH), nullable=False),
    sa.Column("found_at", UtcDateTime(), nullable=False),
    # Two values that find one lead are told apart by it.
    sa.Index(None, "connector", "prospect_id"),
)

# The account's lead fields as LeadsMetaData.Get last described them (JSON), per account like
# the pacing rows: the types values are shaped for, and what pre-flight holds back.
field_list = sa.Table(
    f"{PREFIX}field_list",
    metadata,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("fields", sa.Text(), nullable=False),
    sa.Column("fetched_at", UtcDateTime(), nullable=False),
)
