"""Destinations held back: pauses (an outage's breaker, bad credentials, a daily quota) and health
(transient failures in a row). The worker writes both; `status`, alerts and the console read them.

Each function runs inside the caller's transaction (`Store._tx`); `insert` is the dialect's INSERT
(for `ON CONFLICT DO UPDATE`).
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store.schema import destination_health, destination_pauses


def pause(conn: Connection, insert: Any, destination: str, until: float, kind: str, reason: str) -> None:
    stmt = insert(destination_pauses).values(destination=destination, until=until, kind=kind,
                                             reason=reason, updated_at=time.time())
    conn.execute(stmt.on_conflict_do_update(index_elements=[destination_pauses.c.destination],
                                            set_={"until": until, "kind": kind, "reason": reason,
                                                  "updated_at": stmt.excluded.updated_at}))


def unpause(conn: Connection, destination: str) -> None:
    conn.execute(destination_pauses.delete().where(destination_pauses.c.destination == destination))


def pauses(conn: Connection) -> dict[str, dict[str, Any]]:
    return {r.destination: dict(r._mapping) for r in conn.execute(sa.select(destination_pauses))}


def record_failures(conn: Connection, insert: Any, destination: str, count: int, error: str,
                    next_try: float | None) -> dict[str, Any]:
    """Add `count` transient failures in a row (`error`: the last, already redacted); returns the health row."""
    now = time.time()
    stmt = insert(destination_health).values(destination=destination, failing_since=now, failures=count,
                                             last_error=error[:2000], next_try=next_try, updated_at=now)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[destination_health.c.destination],
        set_={"failures": destination_health.c.failures + stmt.excluded.failures,
              "last_error": stmt.excluded.last_error, "next_try": stmt.excluded.next_try,
              "updated_at": stmt.excluded.updated_at}))
    row = conn.execute(sa.select(destination_health)
                       .where(destination_health.c.destination == destination)).one()
    return dict(row._mapping)


def set_next_try(conn: Connection, destination: str, next_try: float) -> None:
    conn.execute(destination_health.update().where(destination_health.c.destination == destination)
                 .values(next_try=next_try))


def record_success(conn: Connection, destination: str) -> bool:
    """The destination answered: forget its failures and any outage pause. True if it was failing."""
    conn.execute(destination_pauses.delete().where(destination_pauses.c.destination == destination,
                                                   destination_pauses.c.kind == "outage"))
    return conn.execute(destination_health.delete()
                        .where(destination_health.c.destination == destination)).rowcount > 0


def health(conn: Connection) -> dict[str, dict[str, Any]]:
    return {r.destination: dict(r._mapping) for r in conn.execute(sa.select(destination_health))}
