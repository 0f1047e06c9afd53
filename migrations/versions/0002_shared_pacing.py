"""Account-wide pacing and budget, and attributes set aside per lead.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lsq_sync_account",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("blocked_until", sa.DateTime(), nullable=True),
        sa.Column("budget_day", sa.String(length=10), nullable=True),
        sa.Column("budget_used", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("account", name=op.f("pk_lsq_sync_account")),
    )
    op.create_table(
        "lsq_sync_call",
        sa.Column(
            "call_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False),
            nullable=False,
        ),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_lsq_sync_call")),
    )
    op.create_index(
        op.f("ix_lsq_sync_call_account_started_at"),
        "lsq_sync_call",
        ["account", "started_at"],
        unique=False,
    )
    with op.batch_alter_table("lsq_sync_lead") as batch:
        batch.add_column(sa.Column("set_aside", sa.Text(), server_default="{}", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("lsq_sync_lead") as batch:
        batch.drop_column("set_aside")
    op.drop_index(op.f("ix_lsq_sync_call_account_started_at"), table_name="lsq_sync_call")
    op.drop_table("lsq_sync_call")
    op.drop_table("lsq_sync_account")
