"""What operators read through the Store: the queue's status, deliveries, a lead's history, lead
searches, secret usage and speed to lead (`connector status`, `deadletters`, `explain`, the console).

These are the Store's own methods (bound in its class body: `Store.status` is `lookups.status`), kept
here so the Store stays the queue; each is one transaction. The SQL lives in reports.py, history.py
and speed.py; what is added here is opening sealed leads and bodies (sealing.py) and the person hashes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from connector.store import reports, speed
from connector.store.eventlog import stored_lead_id
from connector.store.history import LeadHistory, read_history
from connector.store.reports import LeadFound, SecretUse
from connector.store.speed import LeadSpeed, RouteSpeed

if TYPE_CHECKING:
    from connector.store import Store


def status(store: Store) -> dict[str, Any]:
    with store._tx() as conn:
        report = reports.queue(conn)
    return {**report, "pauses": store.pauses(), "health": store.health(), "privacy": store.privacy.summary()}


def deliveries_query(store: Store, *, state: str | None = None, destination: str | None = None,
                     limit: int | None = 50, error_codes: Sequence[str] = (), since: float | None = None,
                     until: float | None = None) -> list[dict[str, Any]]:
    with store._tx() as conn:
        return reports.deliveries_matching(conn, state=state, destination=destination, limit=limit,
                                           error_codes=error_codes, since=since, until=until)


def lead_history(store: Store, lead_id: str, source: str | None = None) -> LeadHistory:
    """Every stored event of one lead, with its deliveries and their attempt history (`explain`)."""
    with store._tx() as conn:
        history = read_history(conn, lead_id, source)
    for row in history.events:
        row["lead_json"] = store.sealer.open_text(row["lead_json"], f"event {row['id']}'s lead")
    return history


def delivery(store: Store, delivery_id: int) -> dict[str, Any] | None:
    with store._tx() as conn:
        row = reports.one_delivery(conn, delivery_id)
    if row is not None:
        row["lead_json"] = store.sealer.open_text(row["lead_json"], f"event {row['event_id']}'s lead")
        row["body"] = store.sealer.open_bytes(row["body"], f"event {row['event_id']}'s body")
    return row


def find_leads(store: Store, *, lead_id: str | None = None, email: str | None = None, phone: str | None = None,
               limit: int = 50) -> list[LeadFound]:
    """Leads with this id, email or phone (any format the phone normalises from), newest first."""
    hasher = store.person_hasher()
    with store._tx() as conn:
        return reports.leads_matching(conn, lead_id=stored_lead_id(lead_id) if lead_id else None,
                                      email_hash=hasher.email(email), phone_hash=hasher.phone(phone), limit=limit)


def recent_leads(store: Store, limit: int = 50) -> list[LeadFound]:
    """The leads that last received an event, newest first (the console's lead list)."""
    with store._tx() as conn:
        return reports.recent_leads(conn, limit)


def secret_usage(store: Store, window: float = 48 * 3600) -> dict[tuple[str, int], SecretUse]:
    """Per (source, secret index): last use among kept events and uses in the last `window` seconds."""
    with store._tx() as conn:
        return reports.secret_usage(conn, time.time() - window)


# --- speed to lead (the console; `explain` reads it with the lead's history) ------------
def speed_by_route(store: Store, now: float | None = None, window: float = 86400) -> list[RouteSpeed]:
    """Per route, how fast new leads reached the CRM in the last `window` seconds (median, p90)."""
    now = time.time() if now is None else now
    with store._tx() as conn:
        return speed.by_route(conn, now - window, now + 1)


def speed_recent(store: Store, now: float | None = None, window: float = 86400, limit: int = 50) -> list[LeadSpeed]:
    """New leads' first deliveries of the last `window` seconds, newest first, with their speed."""
    now = time.time() if now is None else now
    with store._tx() as conn:
        return speed.recent(conn, now - window, now + 1, limit)
