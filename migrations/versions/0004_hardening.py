"""Rows held back, leads held back, capture errors and the run lease.

- `lsq_sync_row_problem`: rows that cannot be ingested, kept with the reason until they change.
- `lsq_sync_lead.hold` and `other_key`: a lead the connector holds back itself (several rows
  feeding it), and the other row that claimed it.
- `lsq_sync_capture_error`: what the PostgreSQL triggers could not do, instead of failing the
  application's statement.
- `lsq_sync_lease`: the epoch and heartbeat of the run holding the run lock (fencing).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lsq_sync_row_problem",
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("source_key", sa.Text(), nullable=False),
        sa.Column("lead_id", sa.Text(), nullable=True),
        sa.Column("column_name", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("noted_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("connector", "source_key", name=op.f("pk_lsq_sync_row_problem")),
    )
    op.create_table(
        "lsq_sync_capture_error",
        sa.Column(
            "error_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False),
            nullable=False,
        ),
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("noted_at", sa.DateTime(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("keys_lost", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("error_id", name=op.f("pk_lsq_sync_capture_error")),
    )
    op.create_index(
        op.f("ix_lsq_sync_capture_error_connector"), "lsq_sync_capture_error", ["connector"]
    )
    op.create_table(
        "lsq_sync_lease",
        sa.Column("connector", sa.String(length=40), nullable=False),
        sa.Column("epoch", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("connector", name=op.f("pk_lsq_sync_lease")),
    )
    with op.batch_alter_table("lsq_sync_lead") as batch:
        batch.add_column(sa.Column("hold", sa.Text(), nullable=True))
        batch.add_column(sa.Column("other_key", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lsq_sync_lead") as batch:
        batch.drop_column("other_key")
        batch.drop_column("hold")
    op.drop_table("lsq_sync_lease")
    op.drop_index(op.f("ix_lsq_sync_capture_error_connector"), table_name="lsq_sync_capture_error")
    op.drop_table("lsq_sync_capture_error")
    op.drop_table("lsq_sync_row_problem")
