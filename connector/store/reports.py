"""What operators read: the queue by destination and state, deliveries filtered, one delivery whole.

`connector status`, `deadletters` and `/metrics` ask these; nothing here changes a row.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store.schema import PENDING, STATES, deliveries, events


def queue(conn: Connection) -> dict[str, Any]:
    """Events stored, and per destination its deliveries by state and the age of its oldest pending one."""
    now = time.time()
    by_state = conn.execute(sa.select(deliveries.c.destination, deliveries.c.state, sa.func.count())
                            .group_by(deliveries.c.destination, deliveries.c.state)).all()
    oldest = conn.execute(sa.select(deliveries.c.destination, sa.func.min(deliveries.c.created_at))
                          .where(deliveries.c.state == PENDING)
                          .group_by(deliveries.c.destination)).all()
    received = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() or 0
    per_dest: dict[str, dict[str, Any]] = {}
    for dest, state, count in by_state:
        per_dest.setdefault(dest, {s: 0 for s in STATES})[state] = count
    for dest, first in oldest:
        per_dest.setdefault(dest, {s: 0 for s in STATES})["oldest_pending_age"] = now - first
    return {
        "events": received,
        "queue_depth": sum(d.get(PENDING, 0) for d in per_dest.values()),
        "oldest_pending_age": max((now - first for _, first in oldest), default=None),
        "destinations": per_dest,
    }


def deliveries_matching(conn: Connection, *, state: str | None, destination: str | None, limit: int | None,
                        error_codes: Sequence[str], since: float | None, until: float | None) -> list[dict[str, Any]]:
    """Deliveries, last changed first; `since`/`until` bound when they last changed (a dead letter: when it died)."""
    query = (sa.select(deliveries, events.c.source, events.c.event_type, events.c.lead_id)
             .join(events, events.c.id == deliveries.c.event_id)
             .order_by(deliveries.c.updated_at.desc(), deliveries.c.id.desc()).limit(limit))
    if state:
        query = query.where(deliveries.c.state == state)
    if destination:
        query = query.where(deliveries.c.destination == destination)
    if error_codes:
        query = query.where(deliveries.c.last_error_code.in_(list(error_codes)))
    if since is not None:
        query = query.where(deliveries.c.updated_at >= since)
    if until is not None:
        query = query.where(deliveries.c.updated_at < until)
    return [dict(r._mapping) for r in conn.execute(query)]


def one_delivery(conn: Connection, delivery_id: int) -> dict[str, Any] | None:
    """A delivery with its event: the lead as received, the body, and the event's times."""
    query = (sa.select(deliveries, events.c.source, events.c.event_type, events.c.lead_id, events.c.lead_json,
                       events.c.body, events.c.origin, events.c.received_at,
                       events.c.occurred_at.label("event_occurred_at"), events.c.stated_occurred_at)
             .join(events, events.c.id == deliveries.c.event_id).where(deliveries.c.id == delivery_id))
    row = conn.execute(query).first()
    return dict(row._mapping) if row else None


@dataclass(frozen=True)
class LeadFound:
    """One lead a search found: enough to list it and open its story (`connector explain`)."""

    source: str
    lead_id: str | None
    events: int
    first_received_at: float
    last_received_at: float


def leads_matching(conn: Connection, *, lead_id: str | None = None, email_hash: str | None = None,
                   phone_hash: str | None = None, limit: int = 50) -> list[LeadFound]:
    """Leads whose id, email hash or phone hash is the one given (any of them), newest first."""
    conditions = []
    if lead_id:
        conditions.append(events.c.lead_id == lead_id)
    if email_hash:
        conditions.append(events.c.email_hash == email_hash)
    if phone_hash:
        conditions.append(events.c.phone_hash == phone_hash)
    if not conditions:
        return []
    last = sa.func.max(events.c.received_at)
    rows = conn.execute(sa.select(events.c.source, events.c.lead_id, sa.func.count(), sa.func.min(events.c.received_at),
                                  last)
                        .where(sa.or_(*conditions)).group_by(events.c.source, events.c.lead_id)
                        .order_by(last.desc()).limit(limit)).all()
    return [LeadFound(source, lead, count, first, latest) for source, lead, count, first, latest in rows]


def recent_leads(conn: Connection, limit: int) -> list[LeadFound]:
    """The leads whose newest event arrived last, newest first (counted over all their events)."""
    newest = (sa.select(events.c.source, events.c.lead_id).where(events.c.lead_id.is_not(None))
              .order_by(events.c.received_at.desc(), events.c.id.desc()).limit(limit * 4).subquery())
    pairs = [tuple(row) for row in conn.execute(sa.select(newest.c.source, newest.c.lead_id).distinct())]
    if not pairs:
        return []
    last = sa.func.max(events.c.received_at)
    rows = conn.execute(sa.select(events.c.source, events.c.lead_id, sa.func.count(), sa.func.min(events.c.received_at),
                                  last)
                        .where(sa.tuple_(events.c.source, events.c.lead_id).in_(pairs))
                        .group_by(events.c.source, events.c.lead_id).order_by(last.desc()).limit(limit)).all()
    return [LeadFound(source, lead, count, first, latest) for source, lead, count, first, latest in rows]


@dataclass(frozen=True)
class SecretUse:
    """How one configured webhook secret of a source has been used (by `events.signature_index`)."""

    source: str
    index: int  # its position in the source's configured secrets
    last_used: float | None  # None: not in the events kept (`db prune` deletes old ones)
    uses_in_window: int


def secret_usage(conn: Connection, since: float) -> dict[tuple[str, int], SecretUse]:
    """Per (source, secret index) that verified any kept event: when last, and how often since `since`."""
    recent = sa.func.sum(sa.case((events.c.received_at >= since, 1), else_=0))
    rows = conn.execute(sa.select(events.c.source, events.c.signature_index, sa.func.max(events.c.received_at), recent)
                        .where(events.c.signature_index.is_not(None))
                        .group_by(events.c.source, events.c.signature_index)).all()
    return {(source, int(index)): SecretUse(source, int(index), last, int(count or 0))
            for source, index, last, count in rows}
