"""Push takes the leads waiting longest first.

- `lsq_sync_lead.pending_since`: when the oldest change not yet pushed was ingested. Leads
  from before this version are given their `updated_at`, the best guess there is, so that
  every lead has one and the queue is read in that order by an index.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lsq_sync_lead") as batch:
        batch.add_column(sa.Column("pending_since", sa.DateTime(), nullable=True))
    op.execute("UPDATE lsq_sync_lead SET pending_since = updated_at WHERE pending_since IS NULL")
    op.create_index(
        "ix_lsq_sync_lead_connector_pending_since_lead_id",
        "lsq_sync_lead",
        ["connector", "pending_since", "lead_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_lsq_sync_lead_connector_pending_since_lead_id", table_name="lsq_sync_lead")
    with op.batch_alter_table("lsq_sync_lead") as batch:
        batch.drop_column("pending_since")
