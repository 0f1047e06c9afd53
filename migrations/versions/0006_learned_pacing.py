"""What pacing learns, kept per account so that every process and later run starts from it.

- `lsq_sync_account.slow_calls` and `slow_since`: the pace a throttle set, and when; it
  recovers from then as before.
- `lsq_sync_account.margin_seconds`: the margin learned from the spread of the calls' timings.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lsq_sync_account") as batch:
        batch.add_column(sa.Column("slow_calls", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("slow_since", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("margin_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lsq_sync_account") as batch:
        batch.drop_column("margin_seconds")
        batch.drop_column("slow_since")
        batch.drop_column("slow_calls")
