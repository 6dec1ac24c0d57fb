"""The store's side of privacy: find a person, erase them or old leads, re-encrypt, say what was done.

`Store.privacy` is one of these. Each call is one transaction (a forget is all or nothing).
connector/privacy/ decides what to call and when; store/erasure.py does the scrubbing.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from connector.store import erasure
from connector.store.erasure import Found
from connector.store.schema import SKIPPED, deliveries, events, forgotten, store_meta
from connector.store.scrub import scrubber_for

if TYPE_CHECKING:
    from connector.store import Store

RETENTION_RUN = "retention_last_run"  # store_meta: when retention last ran


class StorePrivacy:
    def __init__(self, store: Store):
        self._store = store

    def find(self, *, email: str | None = None, phone: str | None = None, lead_id: str | None = None,
             source: str | None = None) -> Found:
        hasher = self._store.person_hasher()
        with self._store._tx() as conn:
            found = erasure.find_person(conn, self._store.sealer, email_hash=hasher.email(email),
                                        phone_hash=hasher.phone(phone), lead_id=lead_id, source=source)
        found.person.add(email, phone)
        found.email_hashes |= {h for h in (hasher.email(email),) if h}
        found.phone_hashes |= {h for h in (hasher.phone(phone),) if h}
        return found

    def forget(self, found: Found, reason: str, *, dry_run: bool = False, now: float | None = None) -> dict[str, int]:
        """Erase the person everywhere and leave a tombstone; per place, how many rows (would) change."""
        now = time.time() if now is None else now
        write = not dry_run
        with self._store._tx() as conn:
            counts = erasure.erase_events(conn, self._store.sealer, found.event_ids, person=found.person,
                                          why="forget", now=now, write=write, skip_pending=True)
            counts.update(erasure.erase_free_text(conn, scrubber_for([], found.person), write))
            result = {place: counts.get(place, 0) for place in erasure.PLACES}
            if write and (found.email_hashes or found.phone_hashes):
                result["tombstones"] = erasure.add_tombstones(conn, found.email_hashes, found.phone_hashes, reason,
                                                              result, now)
            else:
                result["tombstones"] = len(found.email_hashes) + len(found.phone_hashes) if dry_run else 0
        return result

    def retention(self, now: float, keep_personal: float, keep_dead: float, *,
                  dry_run: bool = False) -> dict[str, int]:
        """Erase the personal data of every event finished longer ago than its keep; counts per place."""
        with self._store._tx() as conn:
            due = erasure.retention_due(conn, now, keep_personal, keep_dead)
            counts: Counter[str] = erasure.erase_events(conn, self._store.sealer, due, person=None, why="retention",
                                                        now=now, write=not dry_run)
        return {"events erased": len(due), **{p: counts.get(p, 0) for p in erasure.PLACES if p in counts}}

    def note_retention_run(self, now: float) -> None:
        """When retention last ran (for `status`); which process runs it is the scheduler's business."""
        with self._store._tx() as conn:
            if not conn.execute(store_meta.update().where(store_meta.c.key == RETENTION_RUN)
                                .values(value=repr(now))).rowcount:
                conn.execute(store_meta.insert().values(key=RETENTION_RUN, value=repr(now)))

    def erased(self, event_ids: list[int]) -> dict[int, tuple[float, str]]:
        """Of these events, those erased: id -> (when, why)."""
        if not event_ids:
            return {}
        with self._store._tx() as conn:
            rows = conn.execute(sa.select(events.c.id, events.c.erased_at, events.c.erased_why)
                                .where(events.c.id.in_(event_ids), events.c.erased_at.is_not(None)))
            return {r.id: (r.erased_at, r.erased_why or "") for r in rows}

    def erased_deliveries(self, delivery_ids: list[int]) -> dict[int, tuple[float, str]]:
        if not delivery_ids:
            return {}
        with self._store._tx() as conn:
            rows = conn.execute(sa.select(deliveries.c.id, events.c.erased_at, events.c.erased_why)
                                .join(events, events.c.id == deliveries.c.event_id)
                                .where(deliveries.c.id.in_(delivery_ids), events.c.erased_at.is_not(None)))
            return {r.id: (r.erased_at, r.erased_why or "") for r in rows}

    def rotate(self, batch: int = 500) -> int:
        """Every sealed or plain body and lead re-encrypted under the first key, `batch` events a transaction."""
        sealer = self._store.sealer
        if not sealer.enabled:
            raise ValueError("privacy.encryption_keys is empty: set at least one key to encrypt with")
        done, after = 0, 0
        while True:
            with self._store._tx() as conn:
                rows = conn.execute(sa.select(events.c.id, events.c.lead_json, events.c.body)
                                    .where(events.c.id > after).order_by(events.c.id).limit(batch)).all()
                for row in rows:
                    conn.execute(events.update().where(events.c.id == row.id).values(
                        lead_json=sealer.reseal_text(row.lead_json), body=sealer.reseal_bytes(row.body)))
            if not rows:
                return done
            done += len(rows)
            after = rows[-1].id

    def summary(self) -> dict[str, Any]:
        """For `status`: deliveries skipped for privacy by reason, erased events, tombstones, last retention."""
        with self._store._tx() as conn:
            skipped = dict(conn.execute(sa.select(deliveries.c.last_error_code, sa.func.count())
                                        .where(deliveries.c.state == SKIPPED,
                                               deliveries.c.last_error_code.in_(["opted_out", "forgotten"]))
                                        .group_by(deliveries.c.last_error_code)).all())
            erased = dict(conn.execute(sa.select(events.c.erased_why, sa.func.count())
                                       .where(events.c.erased_at.is_not(None)).group_by(events.c.erased_why)).all())
            tombstones = conn.execute(sa.select(sa.func.count()).select_from(forgotten)).scalar() or 0
            last = conn.execute(sa.select(store_meta.c.value).where(store_meta.c.key == RETENTION_RUN)).scalar()
        return {"skipped": skipped, "erased_events": erased, "tombstones": tombstones,
                "last_retention": float(last) if last else None}
