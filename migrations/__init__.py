"""Alembic migrations for the connector's own tables (installed as connector.migrations)."""
