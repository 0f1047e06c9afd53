"""Leads found by email address or phone number, and the account's field list.

- `lsq_sync_match`: the ProspectId found for each email address or phone number.
- `lsq_sync_field_list`: LeadsMetaData.Get's answer per account, with when it was read.
- `lsq_sync_lead.lead_id` holds an email address (up to 254 characters), not only a GUID;
  `aside_reason` says why its attributes are set aside.
- `lsq_sync_run.leads_failed` is renamed `leads_rejected`, which is what it counts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lsq_sync_match",
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("lead_id", sa.String(length=254), nullable=False),
        sa.Column("prospect_id", sa.String(length=100), nullable=False),
        sa.Column("found_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("connector", "lead_id", name=op.f("pk_lsq_sync_match")),
    )
    op.create_index(
        op.f("ix_lsq_sync_match_connector_prospect_id"),
        "lsq_sync_match",
        ["connector", "prospect_id"],
    )
    op.create_table(
        "lsq_sync_field_list",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account", name=op.f("pk_lsq_sync_field_list")),
    )
    # Widening a varchar rewrites nothing on PostgreSQL; SQLite's batch copies the table.
    with op.batch_alter_table("lsq_sync_lead") as batch:
        batch.alter_column(
            "lead_id", existing_type=sa.String(length=100), type_=sa.String(length=254)
        )
        batch.add_column(sa.Column("aside_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("lsq_sync_run") as batch:
        batch.alter_column("leads_failed", new_column_name="leads_rejected")


def downgrade() -> None:
    with op.batch_alter_table("lsq_sync_run") as batch:
        batch.alter_column("leads_rejected", new_column_name="leads_failed")
    with op.batch_alter_table("lsq_sync_lead") as batch:
        batch.drop_column("aside_reason")
        batch.alter_column(
            "lead_id", existing_type=sa.String(length=254), type_=sa.String(length=100)
        )
    op.drop_table("lsq_sync_field_list")
    op.drop_index(op.f("ix_lsq_sync_match_connector_prospect_id"), table_name="lsq_sync_match")
    op.drop_table("lsq_sync_match")
