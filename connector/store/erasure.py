"""Erasing personal data in place: a person (`connector forget`) or old leads (retention).

Rows stay where dedupe, ordering, `explain` and the tombstone need them: ids, times, states, event
types, the keyed hashes. What held a name, an email or a phone is scrubbed (store/scrub.py): the
event's lead and raw body, its deliveries' stored errors, its attempt history. Pending deliveries
of a forgotten person are settled `skipped` so their data never leaves. Every function counts what
it changed per place; with `write=False` it only counts (`--dry-run`).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store.eventlog import stored_lead_id
from connector.store.schema import (
    DEAD,
    PENDING,
    SKIPPED,
    backfill_checkpoints,
    deliveries,
    delivery_attempts,
    destination_health,
    destination_pauses,
    events,
    forgotten,
    lead_state,
)
from connector.store.scrub import Person, Scrubber, scrubber_for
from connector.store.sealing import Sealer

CHUNK = 500
FORGOTTEN = "forgotten"  # the skip code of a forgotten person's deliveries
PLACES = ("events (leads)", "events (raw bodies)", "deliveries (stored errors)", "deliveries (pending, now skipped)",
          "dead letters", "attempt history", "lead state", "destination health", "destination pauses",
          "backfill checkpoints")


@dataclass
class Target:
    """Where a person's lead went: enough for a CRM to erase it there."""

    destination: str
    source: str
    lead_id: str | None
    lead_key: str
    crm_id: str | None


@dataclass
class Found:
    """One person as the store knows them. `person` holds their values: in memory only, never printed."""

    event_ids: list[int] = field(default_factory=list)
    leads: list[tuple[str, str | None]] = field(default_factory=list)
    email_hashes: set[str] = field(default_factory=set)
    phone_hashes: set[str] = field(default_factory=set)
    person: Person = field(default_factory=Person)
    targets: list[Target] = field(default_factory=list)
    already_forgotten: int = 0  # tombstones already there for these hashes


def find_person(conn: Connection, sealer: Sealer, *, email_hash: str | None, phone_hash: str | None,
                lead_id: str | None, source: str | None) -> Found:
    """Events of the person by hash, or of a lead and then every event sharing its email or phone hash."""
    found = Found()
    scope = [events.c.source == source] if source else []
    emails, phones = {email_hash} - {None}, {phone_hash} - {None}
    if lead_id:
        for row in conn.execute(sa.select(events.c.email_hash, events.c.phone_hash)
                                .where(events.c.lead_id == stored_lead_id(lead_id), *scope)):
            emails |= {row.email_hash} - {None}
            phones |= {row.phone_hash} - {None}
    conditions = []
    if emails:
        conditions.append(events.c.email_hash.in_(sorted(emails)))
    if phones:
        conditions.append(events.c.phone_hash.in_(sorted(phones)))
    if lead_id:
        conditions.append(sa.and_(events.c.lead_id == stored_lead_id(lead_id), *scope))
    if not conditions:
        return found
    where = sa.or_(*conditions) if lead_id else sa.and_(sa.or_(*conditions), *scope)
    rows = conn.execute(sa.select(events.c.id, events.c.source, events.c.lead_id, events.c.lead_json,
                                  events.c.email_hash, events.c.phone_hash).where(where).order_by(events.c.id)).all()
    for row in rows:
        found.event_ids.append(row.id)
        if (row.source, row.lead_id) not in found.leads:
            found.leads.append((row.source, row.lead_id))
        found.email_hashes |= {row.email_hash} - {None}
        found.phone_hashes |= {row.phone_hash} - {None}
        with contextlib.suppress(ValueError):
            found.person.add_lead(json.loads(sealer.open_text(row.lead_json, f"event {row.id}'s lead")))
    found.email_hashes |= emails
    found.phone_hashes |= phones
    found.targets = _targets(conn, found.event_ids)
    found.already_forgotten = count_tombstones(conn, found.email_hashes, found.phone_hashes)
    return found


def _targets(conn: Connection, event_ids: Sequence[int]) -> list[Target]:
    out: dict[tuple[str, str], Target] = {}
    for chunk in _chunks(event_ids):
        rows = conn.execute(sa.select(deliveries.c.destination, deliveries.c.lead_key, deliveries.c.crm_id,
                                      events.c.source, events.c.lead_id, lead_state.c.crm_id.label("state_crm_id"))
                            .join(events, events.c.id == deliveries.c.event_id)
                            .outerjoin(lead_state, sa.and_(lead_state.c.destination == deliveries.c.destination,
                                                           lead_state.c.lead_key == deliveries.c.lead_key))
                            .where(deliveries.c.event_id.in_(chunk)).order_by(deliveries.c.id))
        for row in rows:
            target = out.setdefault((row.destination, row.lead_key),
                                    Target(row.destination, row.source, row.lead_id, row.lead_key, None))
            target.crm_id = row.state_crm_id or row.crm_id or target.crm_id
    return list(out.values())


def count_tombstones(conn: Connection, email_hashes: set[str], phone_hashes: set[str]) -> int:
    conditions = ([forgotten.c.email_hash.in_(sorted(email_hashes))] if email_hashes else []) + \
                 ([forgotten.c.phone_hash.in_(sorted(phone_hashes))] if phone_hashes else [])
    if not conditions:
        return 0
    return conn.execute(sa.select(sa.func.count()).select_from(forgotten).where(sa.or_(*conditions))).scalar() or 0


def erase_events(conn: Connection, sealer: Sealer, event_ids: Sequence[int], *, person: Person | None, why: str,
                 now: float, write: bool, skip_pending: bool = False) -> Counter[str]:
    """Scrub these events, their deliveries' errors and attempt history; count what changed per place."""
    counts: Counter[str] = Counter()
    for chunk in _chunks(event_ids):
        rows = conn.execute(sa.select(events.c.id, events.c.lead_json, events.c.body, events.c.erased_at)
                            .where(events.c.id.in_(chunk))).all()
        for row in rows:
            plain = sealer.open_text(row.lead_json, f"event {row.id}'s lead")
            try:
                lead: Any = json.loads(plain)
            except ValueError:
                lead = None
            scrub = scrubber_for([lead], Person(set(person.emails), set(person.phones)) if person else None)
            new_lead = scrub.lead_json(plain)
            body = sealer.open_bytes(row.body, f"event {row.id}'s body")
            new_body = scrub.body(body)
            changes: dict[str, Any] = {}
            if new_lead != plain or row.erased_at is None:
                counts["events (leads)"] += 1
                changes["lead_json"] = sealer.seal_text(new_lead)
            if new_body != body:
                counts["events (raw bodies)"] += 1
                changes["body"] = sealer.seal_bytes(new_body)
            if row.erased_at is None:
                changes.update(erased_at=now, erased_why=why)
            if changes and write:
                conn.execute(events.update().where(events.c.id == row.id).values(**changes))
            counts.update(_erase_deliveries(conn, row.id, scrub, now, write, skip_pending))
    return counts


def _erase_deliveries(conn: Connection, event_id: int, scrub: Scrubber, now: float, write: bool,
                      skip_pending: bool) -> Counter[str]:
    counts: Counter[str] = Counter()
    for row in conn.execute(sa.select(deliveries.c.id, deliveries.c.state, deliveries.c.last_error)
                            .where(deliveries.c.event_id == event_id)).all():
        changes: dict[str, Any] = {}
        if row.state == DEAD:
            counts["dead letters"] += 1
        new_error = scrub.optional(row.last_error)
        if new_error != row.last_error:
            counts["deliveries (stored errors)"] += 1
            changes["last_error"] = new_error
        if skip_pending and row.state == PENDING:
            counts["deliveries (pending, now skipped)"] += 1
            changes.update(state=SKIPPED, last_error_code=FORGOTTEN, lease_owner=None, lease_until=None,
                           last_error="forgotten: the person's data was erased (connector forget); not delivered")
        if changes and write:
            conn.execute(deliveries.update().where(deliveries.c.id == row.id).values(updated_at=now, **changes))
        for attempt in conn.execute(sa.select(delivery_attempts.c.id, delivery_attempts.c.error,
                                              delivery_attempts.c.summary)
                                    .where(delivery_attempts.c.delivery_id == row.id)).all():
            error, summary = scrub.optional(attempt.error), scrub.optional(attempt.summary)
            if (error, summary) != (attempt.error, attempt.summary):
                counts["attempt history"] += 1
                if write:
                    conn.execute(delivery_attempts.update().where(delivery_attempts.c.id == attempt.id)
                                 .values(error=error, summary=summary))
    return counts


def erase_free_text(conn: Connection, scrub: Scrubber, write: bool) -> Counter[str]:
    """The small tables whose text could quote anyone: health, pauses, backfill checkpoints."""
    counts: Counter[str] = Counter()
    places = (("destination health", destination_health, [destination_health.c.destination], ["last_error"]),
              ("destination pauses", destination_pauses, [destination_pauses.c.destination], ["reason"]),
              ("backfill checkpoints", backfill_checkpoints,
               [backfill_checkpoints.c.source, backfill_checkpoints.c.job_key], ["params", "state"]))
    for place, table, keys, columns in places:
        for row in conn.execute(sa.select(*keys, *[table.c[c] for c in columns])).all():
            values = row._mapping
            changed = {c: scrub.text(values[c]) for c in columns if values[c] and scrub.text(values[c]) != values[c]}
            if changed:
                counts[place] += 1
                if write:
                    conn.execute(table.update().where(*[k == values[k.name] for k in keys]).values(**changed))
    return counts


def add_tombstones(conn: Connection, email_hashes: set[str], phone_hashes: set[str], reason: str,
                   counts: dict[str, int], now: float) -> int:
    rows = [{"email_hash": h, "phone_hash": None} for h in sorted(email_hashes)] + \
           [{"email_hash": None, "phone_hash": h} for h in sorted(phone_hashes)]
    for row in rows:
        conn.execute(forgotten.insert().values(**row, erased_at=now, reason=reason[:2000],
                                               erased=json.dumps(counts, sort_keys=True)))
    return len(rows)


def retention_due(conn: Connection, now: float, keep_personal: float, keep_dead: float) -> list[int]:
    """Events not yet erased whose every delivery is finished long enough (dead letters: `keep_dead`)."""
    cutoff = now - min(keep_personal, keep_dead)
    due: list[int] = []
    after = 0
    while True:
        ids = [r[0] for r in conn.execute(sa.select(events.c.id).where(
            events.c.erased_at.is_(None), events.c.received_at < cutoff, events.c.id > after)
            .order_by(events.c.id).limit(CHUNK))]
        if not ids:
            return due
        after = ids[-1]
        latest: dict[int, list[tuple[str, float]]] = {i: [] for i in ids}
        received = dict(conn.execute(sa.select(events.c.id, events.c.received_at).where(events.c.id.in_(ids))).all())
        for row in conn.execute(sa.select(deliveries.c.event_id, deliveries.c.state, deliveries.c.updated_at)
                                .where(deliveries.c.event_id.in_(ids))):
            latest[row.event_id].append((row.state, row.updated_at))
        for event_id, rows in latest.items():
            if any(state == PENDING for state, _ in rows):
                continue  # never before it is delivered or dead-lettered
            finished = max([at for _, at in rows], default=received[event_id])
            keep = keep_dead if any(state == DEAD for state, _ in rows) else keep_personal
            if finished < now - keep:
                due.append(event_id)


def _chunks(ids: Sequence[int]) -> list[list[int]]:
    return [list(ids[i:i + CHUNK]) for i in range(0, len(ids), CHUNK)]
