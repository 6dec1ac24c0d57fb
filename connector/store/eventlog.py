"""Recording an event and its deliveries: the one write on the webhook path.

It runs on the database driver's own cursor with SQL written once per dialect. On this path
SQLAlchemy's per-call machinery cost more than SQLite itself, and with SQLite every extra call
made while the writer lock is held can hand the GIL to a request thread and stall every
other process waiting for that lock.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from connector.lead import InboundEvent
from connector.store.schema import PENDING

EVENT_COLUMNS = ("source", "event_key", "body_sha256", "event_type", "lead_id", "occurred_at", "received_at",
                 "origin", "deliverable", "signature_index", "lead_json", "body")
DELIVERY_COLUMNS = ("event_id", "destination", "lead_key", "occurred_at", "state", "attempts", "next_attempt_at",
                    "force", "created_at", "updated_at")
EVENT_KEY_LENGTH = 400  # the events.event_key column


@dataclass(frozen=True)
class Recorded:
    event_id: int
    duplicate: bool
    deliveries: int = 0


def lead_key(source: str, lead_id: str | None, event_key: str) -> str:
    return f"{source}:{lead_id}" if lead_id else f"{source}:event:{event_key}"


class EventLog:
    """The statements for one dialect; `record` runs them on a DBAPI cursor inside the caller's transaction."""

    def __init__(self, paramstyle: str):
        # Both drivers take a dict: sqlite3 as :name, psycopg as %(name)s.
        mark = "%({})s" if paramstyle == "pyformat" else ":{}"

        def insert(table: str, columns: Sequence[str]) -> str:
            return (f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join(mark.format(c) for c in columns)})")

        self.insert_event = insert("events", EVENT_COLUMNS) + " ON CONFLICT DO NOTHING RETURNING id"
        self.find_event = (f"SELECT id FROM events WHERE source = {mark.format('source')} AND "
                           f"(event_key = {mark.format('event_key')} OR body_sha256 = {mark.format('body_sha256')})")
        self.insert_delivery = insert("deliveries", DELIVERY_COLUMNS)

    def record(self, cursor: Any, event: InboundEvent, destinations: Sequence[str], body: bytes,
               signature_index: int | None) -> Recorded:
        """Store the event once (a repeat of its key or body is a duplicate) and, if new, its deliveries."""
        now = time.time()
        event_row = {
            "source": event.source, "event_key": event.event_key[:EVENT_KEY_LENGTH],
            "body_sha256": hashlib.sha256(body).hexdigest(), "event_type": event.event_type,
            "lead_id": event.lead_id, "occurred_at": event.occurred_at, "received_at": now, "origin": event.origin,
            "deliverable": event.deliverable, "signature_index": signature_index,
            "lead_json": json.dumps(event.lead, separators=(",", ":")), "body": body}
        cursor.execute(self.insert_event, event_row)
        inserted = cursor.fetchall()  # to the end: SQLite commits only once no statement is running
        if not inserted:
            cursor.execute(self.find_event, event_row)
            existing = cursor.fetchall()
            return Recorded(int(existing[0][0]) if existing else 0, duplicate=True)
        event_id = int(inserted[0][0])
        targets = list(destinations) if event.deliverable else []
        if targets:
            key = lead_key(event.source, event.lead_id, event.event_key)
            cursor.executemany(self.insert_delivery, [
                {"event_id": event_id, "destination": name, "lead_key": key, "occurred_at": event.occurred_at,
                 "state": PENDING, "attempts": 0, "next_attempt_at": now, "force": False,
                 "created_at": now, "updated_at": now}
                for name in targets])
        return Recorded(event_id, duplicate=False, deliveries=len(targets))
