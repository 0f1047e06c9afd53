"""The connector's own tables: change capture, cursor, per-lead state and run history.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "lsq_sync_change",
        sa.Column(
            "change_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False),
            nullable=False,
        ),
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("row_key", sa.Text(), nullable=False),
        sa.Column("tx_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("change_id", name=op.f("pk_lsq_sync_change")),
        sqlite_autoincrement=True,
    )
    # PostgreSQL reads changes in (tx_id, change_id) order. SQLite reads by rowid alone, and
    # an extra index there would make every captured write cost half as much again.
    if _postgresql():
        op.create_index(
            op.f("ix_lsq_sync_change_connector_tx_id_change_id"),
            "lsq_sync_change",
            ["connector", "tx_id", "change_id"],
            unique=False,
        )
    op.create_table(
        "lsq_sync_capture",
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("source_table", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("installed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("connector", name=op.f("pk_lsq_sync_capture")),
    )
    op.create_table(
        "lsq_sync_cursor",
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("tx_id", sa.BigInteger(), nullable=False),
        sa.Column("change_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("connector", name=op.f("pk_lsq_sync_cursor")),
    )
    op.create_table(
        "lsq_sync_lead",
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("lead_id", sa.String(length=100), nullable=False),
        sa.Column("source_key", sa.Text(), nullable=False),
        sa.Column("desired", sa.Text(), nullable=False),
        sa.Column("pushed", sa.Text(), server_default="{}", nullable=False),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.Column("rejected", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("pushed_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("connector", "lead_id", name=op.f("pk_lsq_sync_lead")),
    )
    op.create_index(
        op.f("ix_lsq_sync_lead_connector_pending"),
        "lsq_sync_lead",
        ["connector", "pending"],
        unique=False,
    )
    op.create_table(
        "lsq_sync_run",
        sa.Column("run_id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("changes_ingested", sa.Integer(), server_default="0", nullable=False),
        sa.Column("leads_pushed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("leads_failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("calls", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_lsq_sync_run")),
    )
    op.create_index(
        op.f("ix_lsq_sync_run_connector_started_at"),
        "lsq_sync_run",
        ["connector", "started_at"],
        unique=False,
    )


def downgrade() -> None:

    op.drop_index(op.f("ix_lsq_sync_run_connector_started_at"), table_name="lsq_sync_run")
    op.drop_table("lsq_sync_run")
    op.drop_index(op.f("ix_lsq_sync_lead_connector_pending"), table_name="lsq_sync_lead")
    op.drop_table("lsq_sync_lead")
    op.drop_table("lsq_sync_cursor")
    op.drop_table("lsq_sync_capture")
    if _postgresql():
        op.drop_index(
            op.f("ix_lsq_sync_change_connector_tx_id_change_id"), table_name="lsq_sync_change"
        )
    op.drop_table("lsq_sync_change")


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"
