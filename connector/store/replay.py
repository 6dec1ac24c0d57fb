"""Making deliveries due again: a dead letter retried, an event or a lead's newest event replayed.

Each function runs inside the caller's transaction (`Store._tx`); the Store wakes workers afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store.eventlog import stored_lead_id
from connector.store.schema import PENDING, deliveries, events


def requeue(conn: Connection, *, delivery_ids: Sequence[int] | None, state: str | None, destination: str | None,
            force: bool) -> int:
    """Due now with a fresh attempt count; returns how many deliveries changed."""
    now = time.time()
    stmt = deliveries.update().values(state=PENDING, attempts=0, next_attempt_at=now, first_failed_at=None,
                                      lease_owner=None, lease_until=None, force=force, updated_at=now)
    if delivery_ids is not None:
        stmt = stmt.where(deliveries.c.id.in_(list(delivery_ids)))
    if state:
        stmt = stmt.where(deliveries.c.state == state)
    if destination:
        stmt = stmt.where(deliveries.c.destination == destination)
    # an erased event holds markers, not the lead: sending it would overwrite the CRM's record with them
    stmt = stmt.where(~sa.exists().where(events.c.id == deliveries.c.event_id, events.c.erased_at.is_not(None)))
    return conn.execute(stmt).rowcount


def replay_ids(conn: Connection, *, event_id: int | None, source: str | None, lead_id: str | None,
               destination: str | None) -> list[int]:
    """Delivery ids to re-send: those of one event, or of a lead's newest event."""
    if event_id is None:
        event_id = conn.execute(
            sa.select(events.c.id).where(events.c.lead_id == stored_lead_id(lead_id or ""), events.c.deliverable.is_(True),
                                         *([events.c.source == source] if source else []))
            .order_by(events.c.occurred_at.desc(), events.c.id.desc()).limit(1)).scalar()
        if event_id is None:
            return []
    query = sa.select(deliveries.c.id).where(deliveries.c.event_id == event_id)
    if destination:
        query = query.where(deliveries.c.destination == destination)
    return [r[0] for r in conn.execute(query)]
