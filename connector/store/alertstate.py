"""What the alerts read from the store, and the last state each alert was sent for.

Alerts are decided from the store rather than from one worker's memory, so that every worker process
sees the same destinations, queues and dead letters, and `swap` (compare and set on `alert_state`)
lets exactly one of them send each change of state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store.schema import DEAD, PENDING, alert_state, deliveries, events

SAMPLE_LEADS = 3  # dead leads named in an alert, each with its `connector explain` command


@dataclass
class DeadLetters:
    """Dead letters of one destination that died within an interval."""

    destination: str
    by_code: dict[str, int] = field(default_factory=dict)
    leads: list[tuple[str, str]] = field(default_factory=list)  # (source, lead id), newest first

    @property
    def total(self) -> int:
        return sum(self.by_code.values())


@dataclass
class Backlog:
    """A destination's pending deliveries: how many, and how long the oldest has waited."""

    destination: str
    pending: int
    oldest_created_at: float


def states(conn: Connection) -> dict[str, str]:
    return {r.key: r.state for r in conn.execute(sa.select(alert_state.c.key, alert_state.c.state))}


def swap(conn: Connection, insert: Callable[..., Any], key: str, old: str | None, new: str) -> bool:
    """Move `key` from `old` (None: no row yet) to `new`; False if another process changed it first."""
    now = time.time()
    if old is None:
        stmt = insert(alert_state).values(key=key, state=new, updated_at=now)
        inserted = stmt.on_conflict_do_nothing(index_elements=[alert_state.c.key]).returning(alert_state.c.key)
        return conn.execute(inserted).first() is not None  # (psycopg's rowcount is -1 here)
    return conn.execute(alert_state.update().where(alert_state.c.key == key, alert_state.c.state == old)
                        .values(state=new, updated_at=now)).rowcount == 1


def backlogs(conn: Connection) -> dict[str, Backlog]:
    """Served by the partial index on pending deliveries."""
    rows = conn.execute(sa.select(deliveries.c.destination, sa.func.count(), sa.func.min(deliveries.c.created_at))
                        .where(deliveries.c.state == PENDING).group_by(deliveries.c.destination))
    return {dest: Backlog(dest, count, first) for dest, count, first in rows}


def dead_letters(conn: Connection, since: float, until: float) -> dict[str, DeadLetters]:
    """Deliveries that became dead letters in [since, until), per destination, counted by error code."""
    window = (deliveries.c.state == DEAD, deliveries.c.updated_at >= since, deliveries.c.updated_at < until)
    found: dict[str, DeadLetters] = {}
    for dest, code, count in conn.execute(
            sa.select(deliveries.c.destination, deliveries.c.last_error_code, sa.func.count())
            .where(*window).group_by(deliveries.c.destination, deliveries.c.last_error_code)):
        found.setdefault(dest, DeadLetters(dest)).by_code[code or "unknown"] = count
    for item in found.values():
        item.leads = [(r.source, r.lead_id) for r in conn.execute(
            sa.select(events.c.source, events.c.lead_id).join(deliveries, deliveries.c.event_id == events.c.id)
            .where(*window, deliveries.c.destination == item.destination)
            .order_by(deliveries.c.updated_at.desc()).limit(SAMPLE_LEADS))]
    return found
