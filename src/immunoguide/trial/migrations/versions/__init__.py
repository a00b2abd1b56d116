"""Revisions of the trial store schema (Alembic skips this file)."""
