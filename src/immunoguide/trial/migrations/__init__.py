"""Alembic migrations of the trial store (run from code by ``TrialStore.upgrade``; see ``env.py``)."""
