"""What a backfill asks before it fetches: which leads are already stored, and where they were queued.

Each function runs inside the caller's transaction (`Store._tx`). Lead ids are the marketplace's;
the store keeps them as `stored_lead_id` (eventlog.py), and answers in the marketplace's again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store.eventlog import stored_lead_id
from connector.store.schema import deliveries, events
from connector.store.sealing import Sealer


def known_leads(conn: Connection, sealer: Sealer, source: str, lead_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The newest stored lead document per id; a lead whose newest event was erased counts as unknown,
    so a backfill never sends markers from the stored copy."""
    stored = {stored_lead_id(i): i for i in lead_ids}
    newest = (sa.select(events.c.lead_id, sa.func.max(events.c.occurred_at).label("at"))
              .where(events.c.source == source, events.c.lead_id.in_(list(stored)))
              .group_by(events.c.lead_id).subquery())
    query = (sa.select(events.c.lead_id, events.c.lead_json)
             .join(newest, sa.and_(events.c.lead_id == newest.c.lead_id,
                                   events.c.occurred_at == newest.c.at))
             .where(events.c.source == source, events.c.erased_at.is_(None)))  # erased: markers, not a lead
    return {stored.get(row.lead_id, row.lead_id): json.loads(sealer.open_text(row.lead_json, "a stored lead"))
            for row in conn.execute(query)}


def delivered_destinations(conn: Connection, source: str, lead_ids: Sequence[str]) -> dict[str, set[str]]:
    """Per lead id, the destinations any event of it was queued to (whatever became of the delivery)."""
    stored = {stored_lead_id(i): i for i in lead_ids}
    query = (sa.select(events.c.lead_id, deliveries.c.destination).distinct()
             .join(deliveries, deliveries.c.event_id == events.c.id)
             .where(events.c.source == source, events.c.lead_id.in_(list(stored))))
    out: dict[str, set[str]] = {}
    for row in conn.execute(query):
        out.setdefault(stored.get(row.lead_id, row.lead_id), set()).add(row.destination)
    return out
