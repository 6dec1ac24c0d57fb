"""Recording an event and its deliveries: the one write on the webhook path.

It runs on the database driver's own cursor with SQL written once per dialect. On this path
SQLAlchemy's per-call machinery cost more than SQLite itself, and with SQLite every extra call
made while the writer lock is held can hand the GIL to a request thread and stall every
other process waiting for that lock.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from connector.lead import InboundEvent
from connector.store.people import SALT_KEY, PersonHasher
from connector.store.schema import PENDING, SKIPPED
from connector.store.scrub import scrubber_for
from connector.store.sealing import Sealer

EVENT_COLUMNS = ("source", "event_key", "body_sha256", "event_type", "lead_id", "occurred_at", "stated_occurred_at",
                 "received_at", "origin", "deliverable", "signature_index", "lead_json", "body",
                 "email_hash", "phone_hash", "erased_at", "erased_why")
DELIVERY_COLUMNS = ("event_id", "destination", "lead_key", "occurred_at", "state", "attempts", "next_attempt_at",
                    "force", "created_at", "updated_at", "last_error", "last_error_code")
EVENT_KEY_LENGTH = 400  # the events.event_key and deliveries.lead_key columns
LEAD_ID_LENGTH = 200  # the events.lead_id column
DEFAULT_FUTURE_TOLERANCE = 300.0  # server.event_time_tolerance's default
TOMBSTONE_RECHECK = 5.0  # seconds: how long a receiver that saw no `forgotten` row trusts that
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


@dataclass
class Screen:
    """People whose new leads are stored without personal data and not delivered (privacy settings).

    `opt_outs`: emails and phones as written in `privacy.opt_out_file`, hashed with the database's
    salt on first use; `refuse_forgotten`: look the person up among the `forgotten` tombstones.
    """

    opt_outs: tuple[str, ...] = ()
    refuse_forgotten: bool = True
    _hashes: frozenset[str] | None = None

    def opted_out(self, hasher: PersonHasher, email_hash: str | None, phone_hash: str | None) -> bool:
        if not self.opt_outs:
            return False
        if self._hashes is None:
            self._hashes = frozenset(h for v in self.opt_outs for h in (hasher.email(v), hasher.phone(v)) if h)
        return email_hash in self._hashes or phone_hash in self._hashes


REASONS = {
    "opted_out": "opted out: the person objected to direct marketing (privacy.opt_out_file); stored without "
                 "personal data, not delivered",
    "forgotten": "forgotten: the person's data was erased by `connector forget` (privacy.after_forget: refuse); "
                 "stored without personal data, not delivered",
}


@dataclass(frozen=True)
class Recorded:
    event_id: int
    duplicate: bool
    deliveries: int = 0
    skipped: str | None = None  # "opted_out" or "forgotten": stored without personal data, not delivered


def storable(text: str, limit: int | None = None) -> str:
    """`text` as both databases store it alike: no NUL (PostgreSQL refuses it in text), no lone
    surrogate (no UTF-8 for it), and, when longer than `limit`, its SHA-256 rather than a cut:
    two long ids that share a beginning stay two ids.
    """
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    if limit is not None and len(text) > limit:
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return text


def stored_lead_id(lead_id: str) -> str:
    return storable(lead_id, LEAD_ID_LENGTH)


def lead_key(source: str, lead_id: str | None, event_key: str) -> str:
    key = f"{source}:{stored_lead_id(lead_id)}" if lead_id else f"{source}:event:{storable(event_key)}"
    return storable(key, EVENT_KEY_LENGTH)


class EventLog:
    """The statements for one dialect; `record` runs them on a DBAPI cursor inside the caller's transaction.

    Parameters are positional (`?` for sqlite3, `%s` for psycopg): sqlite3 looks every named
    parameter up by a freshly made string, which on this path cost more than the values themselves.
    """

    def __init__(self, paramstyle: str, future_tolerance: float = DEFAULT_FUTURE_TOLERANCE):
        self.future_tolerance = future_tolerance
        mark = "%s" if paramstyle in ("format", "pyformat") else "?"

        def insert(table: str, columns: Sequence[str]) -> str:
            return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(mark for _ in columns)})"

        self.insert_event = insert("events", EVENT_COLUMNS) + " ON CONFLICT DO NOTHING RETURNING id"
        self.find_event = f"SELECT id FROM events WHERE source = {mark} AND (event_key = {mark} OR body_sha256 = {mark})"
        self.insert_delivery = insert("deliveries", DELIVERY_COLUMNS)
        self.read_salt = f"SELECT value FROM store_meta WHERE key = {mark}"
        self.find_forgotten = f"SELECT 1 FROM forgotten WHERE email_hash = {mark} OR phone_hash = {mark} LIMIT 1"
        self.any_forgotten = "SELECT 1 FROM forgotten LIMIT 1"
        self._forgotten_seen, self._forgotten_checked = False, float("-inf")
        self._hasher: PersonHasher | None = None
        self.sealer = Sealer()
        self.screen = Screen(refuse_forgotten=False)

    def hasher(self, cursor: Any) -> PersonHasher:
        """The people lookup hasher, its salt read once from the database the migration made it in."""
        if self._hasher is None:
            cursor.execute(self.read_salt, (SALT_KEY,))
            row = cursor.fetchall()
            if not row:
                raise RuntimeError("store_meta has no lookup salt: run `connector db upgrade`")
            self._hasher = PersonHasher(str(row[0][0]))
        return self._hasher

    def record(self, cursor: Any, event: InboundEvent, destinations: Sequence[str], body: bytes,
               signature_index: int | None) -> Recorded:
        """Store the event once (a repeat of its key or body is a duplicate) and, if new, its deliveries.

        An event time more than `future_tolerance` ahead of now counts as now (and the stated time
        is kept): one event stamped years ahead would otherwise make every later one look stale.
        """
        now = time.time()
        event_key, body_sha256 = storable(event.event_key, EVENT_KEY_LENGTH), hashlib.sha256(body).hexdigest()
        occurred_at, stated = event.occurred_at, None
        if not occurred_at <= now + self.future_tolerance:  # also NaN
            occurred_at, stated = now, (occurred_at if math.isfinite(occurred_at) else None)
        lead_id = stored_lead_id(event.lead_id) if event.lead_id else event.lead_id
        hasher = self.hasher(cursor)
        email_hash, phone_hash = hasher.of_lead(event.lead)
        blocked = self._blocked(cursor, hasher, email_hash, phone_hash)
        lead_json, stored_body = _compact_json(event.lead), body
        if blocked:  # kept for dedupe and explain, without the person
            scrub = scrubber_for([event.lead])
            lead_json, stored_body = scrub.lead_json(lead_json), scrub.body(body)
        cursor.execute(self.insert_event, (  # in EVENT_COLUMNS order
            event.source, event_key, body_sha256, storable(event.event_type), lead_id, occurred_at, stated, now,
            event.origin, event.deliverable, signature_index, self.sealer.seal_text(lead_json),
            self.sealer.seal_bytes(stored_body), email_hash, phone_hash, now if blocked else None, blocked))
        inserted = cursor.fetchall()  # to the end: SQLite commits only once no statement is running
        if not inserted:
            cursor.execute(self.find_event, (event.source, event_key, body_sha256))
            existing = cursor.fetchall()
            return Recorded(int(existing[0][0]) if existing else 0, duplicate=True)
        event_id = int(inserted[0][0])
        targets = list(destinations) if event.deliverable else []
        key = lead_key(event.source, event.lead_id, event.event_key)
        state, reason = (SKIPPED, REASONS[blocked]) if blocked else (PENDING, None)
        for name in targets:  # in DELIVERY_COLUMNS order; mostly one or two, where executemany costs more
            cursor.execute(self.insert_delivery,
                           (event_id, name, key, occurred_at, state, 0, now, False, now, now, reason, blocked))
        return Recorded(event_id, duplicate=False, deliveries=len(targets), skipped=blocked)

    def _blocked(self, cursor: Any, hasher: PersonHasher, email_hash: str | None,
                 phone_hash: str | None) -> str | None:
        """Why this person's lead must not be delivered ("opted_out", "forgotten"), or None."""
        if email_hash is None and phone_hash is None:
            return None
        if self.screen.opted_out(hasher, email_hash, phone_hash):
            return "opted_out"
        if self.screen.refuse_forgotten and self._any_forgotten(cursor):
            cursor.execute(self.find_forgotten, (email_hash, phone_hash))
            if cursor.fetchall():
                return "forgotten"
        return None

    def _any_forgotten(self, cursor: Any) -> bool:
        """Whether any tombstone exists, asked at most every TOMBSTONE_RECHECK seconds while there is none:
        most databases have none, and then a webhook costs no extra query (a `forget` reaches running
        receivers within that time). Once there is one, every webhook with an email or phone looks."""
        now = time.monotonic()
        if not self._forgotten_seen and now - self._forgotten_checked >= TOMBSTONE_RECHECK:
            cursor.execute(self.any_forgotten)
            self._forgotten_seen = bool(cursor.fetchall())
            self._forgotten_checked = now
        return self._forgotten_seen
