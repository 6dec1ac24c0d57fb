"""Speed to lead, as the store kept it: per route over a window (median, p90), and per delivery.

The worker records, on a lead's first delivery to a destination, when the CRM took it (`written_at`)
and how long after the marketplace delivered the lead that was (`speed_to_lead`). These reads are what
the console shows (and `explain` per lead); `/metrics` has the same figures as a histogram.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store.schema import deliveries, events


@dataclass(frozen=True)
class RouteSpeed:
    """How quickly one route's new leads reached the CRM within the window."""

    source: str
    destination: str
    leads: int
    median: float
    p90: float  # nearest rank: 90% of the leads were in the CRM this fast or faster
    slowest: float


@dataclass(frozen=True)
class LeadSpeed:
    """One lead's first delivery to a destination: when it reached the CRM, and how long it took."""

    delivery_id: int
    source: str
    lead_id: str | None
    destination: str
    crm_id: str | None
    written_at: float
    seconds: float


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest rank on sorted values: the smallest value at least `fraction` of them are at or under."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _measured(since: float, until: float) -> tuple[sa.ColumnElement[bool], ...]:
    return (deliveries.c.speed_to_lead.is_not(None), deliveries.c.written_at >= since, deliveries.c.written_at < until)


def by_route(conn: Connection, since: float, until: float) -> list[RouteSpeed]:
    """Per (source, destination) with a measured delivery written in [since, until); served by
    ix_deliveries_written. The values are read, not aggregated in SQL: SQLite has no percentile."""
    rows = conn.execute(sa.select(events.c.source, deliveries.c.destination, deliveries.c.speed_to_lead)
                        .join(events, events.c.id == deliveries.c.event_id).where(*_measured(since, until)))
    values: dict[tuple[str, str], list[float]] = {}
    for source, destination, seconds in rows:
        values.setdefault((source, destination), []).append(seconds)
    out = []
    for (source, destination), found in sorted(values.items()):
        found.sort()
        out.append(RouteSpeed(source, destination, len(found), statistics.median(found), percentile(found, 0.9),
                              found[-1]))
    return out


def recent(conn: Connection, since: float, until: float, limit: int) -> list[LeadSpeed]:
    """Measured deliveries written in [since, until), newest first."""
    rows = conn.execute(sa.select(deliveries.c.id, events.c.source, events.c.lead_id, deliveries.c.destination,
                                  deliveries.c.crm_id, deliveries.c.written_at, deliveries.c.speed_to_lead)
                        .join(events, events.c.id == deliveries.c.event_id).where(*_measured(since, until))
                        .order_by(deliveries.c.written_at.desc(), deliveries.c.id.desc()).limit(limit))
    return [LeadSpeed(*row) for row in rows]
