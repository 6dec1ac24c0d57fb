"""Bringing a database to the newest schema (`connector db upgrade`, and `serve`/`worker` at start).

Alembic (and Mako under it) is imported only inside `upgrade`: the receiver and the worker never load it
unless they migrate.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

MIGRATIONS = Path(__file__).parent / "migrations"
UPGRADE_LOCK = 472001  # PostgreSQL advisory lock: one release at a time, however many dynos start together


def upgrade(engine: sa.Engine, is_postgres: bool) -> str:
    """Run every Alembic revision up to head; returns the revision the database is at afterwards."""
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from alembic.runtime.migration import MigrationContext

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        if is_postgres:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({UPGRADE_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        revision = MigrationContext.configure(conn).get_current_revision()
        if is_postgres:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({UPGRADE_LOCK})")
        conn.commit()
    return revision or "none"
