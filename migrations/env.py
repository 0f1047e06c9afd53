"""Alembic environment: always run through connector.migrate, which passes the connection."""

from __future__ import annotations

from alembic import context

from connector.schema import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `lsq-sync init`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    # The application's own tables share this database: leave them alone.
    include_name=lambda name, type_, parent: (
        type_ != "table" or (name or "").startswith("lsq_sync_")
    ),
)
with context.begin_transaction():
    context.run_migrations()
