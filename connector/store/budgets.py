"""The rate budgets' rows: read, and changed by compare and set (see connector.pacing).

A change reads the row and its version, lets the caller decide, and writes only if the version is
still the one read (`UPDATE ... WHERE version = :read`). On SQLite the transaction already holds the
write lock (BEGIN IMMEDIATE), so the write always applies; on PostgreSQL two processes may read the
same version and one of them finds its update matched no row: it reads again and decides again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store.schema import rate_budgets

ATTEMPTS = 50  # compare-and-set rounds before giving up (each one lost to a process that did write)

Step = Callable[[str | None], tuple[str | None, Any]]  # stored JSON (None: no row) -> (JSON to write or None, result)


class Contended(Exception):
    """Other processes changed the row every time we tried (should never happen in practice)."""


def read(conn: Connection, key: str) -> tuple[int, str] | None:
    row = conn.execute(sa.select(rate_budgets.c.version, rate_budgets.c.state)
                       .where(rate_budgets.c.key == key)).first()
    return None if row is None else (row.version, row.state)


def change_once(conn: Connection, insert: Callable[..., Any], key: str, label: str, step: Step) -> tuple[bool, Any]:
    """One compare-and-set round: (applied, result)."""
    current = read(conn, key)
    new, result = step(current[1] if current else None)
    if new is None:
        return True, result
    now = time.time()
    if current is None:
        stmt = insert(rate_budgets).values(key=key, label=label[:100], version=1, state=new, updated_at=now)
        done = conn.execute(stmt.on_conflict_do_nothing(index_elements=[rate_budgets.c.key])
                            .returning(rate_budgets.c.key)).first() is not None
        return done, result
    updated = conn.execute(rate_budgets.update()
                           .where(rate_budgets.c.key == key, rate_budgets.c.version == current[0])
                           .values(version=current[0] + 1, state=new, updated_at=now))
    return updated.rowcount == 1, result


def summary(conn: Connection) -> list[dict[str, Any]]:
    """Every key's label, version and when it last changed (never the key's state in full)."""
    return [dict(r._mapping) for r in conn.execute(
        sa.select(rate_budgets.c.label, rate_budgets.c.version, rate_budgets.c.updated_at)
        .order_by(rate_budgets.c.label))]
