"""Push takes the leads waiting longest first.

- `lsq_sync_lead.pending_since`: when the oldest change not yet pushed was ingested. Leads
  pending before this version have none, and are read as waiting since `updated_at`, so no
  row is rewritten here.

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


def downgrade() -> None:
    with op.batch_alter_table("lsq_sync_lead") as batch:
        batch.drop_column("pending_since")
