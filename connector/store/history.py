"""What the store knows about one lead, read in one transaction for `connector explain`.

Rows come back as plain mappings of their columns: `connector.explain` turns them into the story.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store.eventlog import stored_lead_id
from connector.store.schema import deliveries, delivery_attempts, events, lead_state


@dataclass(frozen=True)
class LeadHistory:
    """Every stored event of a lead (oldest first), their deliveries and attempts, and its lead states."""

    events: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    attempts: list[dict[str, Any]]
    states: list[dict[str, Any]] = field(default_factory=list)


def read_history(conn: Connection, lead_id: str, source: str | None) -> LeadHistory:
    where = [events.c.lead_id == stored_lead_id(lead_id)] + ([events.c.source == source] if source else [])
    event_rows = [dict(r._mapping) for r in conn.execute(
        sa.select(events.c.id, events.c.source, events.c.event_key, events.c.event_type, events.c.lead_id,
                  events.c.occurred_at, events.c.stated_occurred_at, events.c.received_at, events.c.origin,
                  events.c.deliverable, events.c.signature_index, events.c.lead_json,
                  events.c.erased_at, events.c.erased_why)
        .where(*where).order_by(events.c.received_at, events.c.id))]
    ids = [e["id"] for e in event_rows]
    if not ids:
        return LeadHistory([], [], [])
    delivery_rows = [dict(r._mapping) for r in conn.execute(
        sa.select(deliveries).where(deliveries.c.event_id.in_(ids)).order_by(deliveries.c.id))]
    attempt_rows = [dict(r._mapping) for r in conn.execute(
        sa.select(delivery_attempts)
        .where(delivery_attempts.c.delivery_id.in_([d["id"] for d in delivery_rows] or [-1]))
        .order_by(delivery_attempts.c.at, delivery_attempts.c.id))]
    keys = sorted({d["lead_key"] for d in delivery_rows})
    state_rows = [dict(r._mapping) for r in conn.execute(
        sa.select(lead_state).where(lead_state.c.lead_key.in_(keys or [""])))]
    return LeadHistory(event_rows, delivery_rows, attempt_rows, state_rows)
