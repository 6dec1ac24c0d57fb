"""The durable queue: SQLite (one file, WAL) by default, PostgreSQL when `DATABASE_URL` is set.

Everything that must survive a crash goes through here, each change in one transaction. Workers
claim due deliveries with a lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`), so any number of them
can run, and a killed worker's batch is taken up again once its lease runs out.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from connector.lead import InboundEvent
from connector.store import alertstate, checkpoints, reports
from connector.store.alertstate import Backlog, DeadLetters
from connector.store.claiming import Batch, Claimed, Claimer, Superseded, Verdict
from connector.store.engine import GroupCommit, WriterLock, make_engine
from connector.store.eventlog import (
    DEFAULT_FUTURE_TOLERANCE,
    EventLog,
    Recorded,
    Screen,
    lead_key,
    stored_lead_id,
)
from connector.store.history import LeadHistory, read_history
from connector.store.people import PersonHasher
from connector.store.privacy import StorePrivacy
from connector.store.reports import LeadFound, SecretUse
from connector.store.schema import (
    ATTEMPTS_KEPT,
    DEAD,
    DELIVERED,
    PENDING,
    deliveries,
    delivery_attempts,
    destination_health,
    destination_pauses,
    events,
    lead_state,
)
from connector.store.sealing import Sealer, SealError

__all__ = ["Backlog", "Batch", "Claimed", "DeadLetters", "LeadFound", "LeadHistory", "PersonHasher", "Recorded", "Screen", "SealError",
           "SecretUse", "Store", "StoreUnavailable", "Superseded", "Verdict", "lead_key"]
MIGRATIONS = Path(__file__).parent / "migrations"


class StoreUnavailable(Exception):
    """The database cannot take an event right now (down, unreachable, disk full): the sender should retry."""


class Store:
    def __init__(self, url: str, future_tolerance: float = DEFAULT_FUTURE_TOLERANCE):
        """`future_tolerance`: how far ahead of its receipt an event's time may lie (server.event_time_tolerance)."""
        self.url = url
        self.engine = make_engine(url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        database = self.engine.url.database
        sqlite_file = (os.path.abspath(database) if not self.is_postgres and database and database != ":memory:"
                       else None)
        self._writer = WriterLock(f"{sqlite_file}.lock" if sqlite_file else None)
        self._insert = postgresql_insert if self.is_postgres else sqlite_insert
        self.sealer = Sealer()
        self._events = EventLog(self.engine.dialect.paramstyle, future_tolerance)
        self._claimer = Claimer(self.is_postgres, lambda text, what: self.sealer.open_text(text, what))
        self.privacy = StorePrivacy(self)
        # What "the database is unavailable" looks like, for callers that must tell it from a bug.
        self.database_errors: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError,
                                                                 self.engine.dialect.loaded_dbapi.Error)
        self._group = None if self.is_postgres else GroupCommit(
            self.engine, self._writer, self._events.record,
            wal_path=f"{sqlite_file}-wal" if sqlite_file else None)

    def protect(self, encryption_keys: Sequence[str], screen: Screen) -> None:
        """The privacy settings (connector.runtime): keys to seal bodies and leads with, who not to deliver."""
        self.sealer = self._events.sealer = Sealer(encryption_keys)
        self._events.screen = screen

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """Every read and write of the store: one transaction, committed before the lock is let go."""
        with self._writer.held(), self.engine.begin() as conn:
            yield conn

    # --- schema -----------------------------------------------------------------------
    def upgrade(self) -> str:
        """Bring the database to the newest schema (`connector db upgrade`); returns the revision."""
        # Alembic (and Mako under it) only for this command: the receiver and worker never load it.
        from alembic import command
        from alembic.config import Config as AlembicConfig
        from alembic.runtime.migration import MigrationContext

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.connect() as conn:
            if self.is_postgres:  # one release at a time, however many dynos start together
                conn.exec_driver_sql("SELECT pg_advisory_lock(472001)")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            revision = MigrationContext.configure(conn).get_current_revision()
            if self.is_postgres:
                conn.exec_driver_sql("SELECT pg_advisory_unlock(472001)")
            conn.commit()
        return revision or "none"

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def dispose(self) -> None:
        if self._group is not None:
            self._group.close()
        self.engine.dispose()

    # --- in: events -------------------------------------------------------------------
    def record_event(self, event: InboundEvent, destinations: Sequence[str], *, body: bytes,
                     signature_index: int | None = None) -> Recorded:
        """Store one event and its deliveries, committed before this returns; a duplicate is stored once.

        Raises StoreUnavailable when the database cannot take it.
        """
        try:
            if self._group is not None:
                return self._group.submit(event, destinations, body, signature_index)
            with self._tx() as conn:
                return self._events.record(conn.connection.cursor(), event, destinations, body, signature_index)
        except self.database_errors as exc:
            cause = getattr(exc, "orig", None) or exc  # the driver's own words, never the statement's values
            first_line = (str(cause).splitlines() or [""])[0]
            raise StoreUnavailable(f"{type(cause).__name__}: {first_line}") from exc

    def record_events(self, batch: Iterable[tuple[InboundEvent, Sequence[str], bytes]],
                      checkpoint: tuple[str, str, dict[str, Any], dict[str, Any], bool] | None = None,
                      ) -> list[Recorded]:
        """Several events (a backfill page) and, optionally, the checkpoint that covers them, atomically.

        `checkpoint` is (source, job_key, params, state, done).
        """
        with self._tx() as conn:
            cursor = conn.connection.cursor()
            results = [self._events.record(cursor, event, dests, body, None) for event, dests, body in batch]
            if checkpoint is not None:
                checkpoints.save(conn, self._insert, *checkpoint)
            return results

    def known_leads(self, source: str, lead_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The newest stored lead document per id (for a backfill deciding what it must fetch); a lead whose
        newest event was erased counts as unknown, so a backfill never sends markers from the stored copy."""
        if not lead_ids:
            return {}
        stored = {stored_lead_id(i): i for i in lead_ids}
        newest = (sa.select(events.c.lead_id, sa.func.max(events.c.occurred_at).label("at"))
                  .where(events.c.source == source, events.c.lead_id.in_(list(stored)))
                  .group_by(events.c.lead_id).subquery())
        query = (sa.select(events.c.lead_id, events.c.lead_json)
                 .join(newest, sa.and_(events.c.lead_id == newest.c.lead_id,
                                       events.c.occurred_at == newest.c.at))
                 .where(events.c.source == source, events.c.erased_at.is_(None)))  # erased: markers, not a lead
        with self._tx() as conn:
            return {stored.get(row.lead_id, row.lead_id): json.loads(self.sealer.open_text(row.lead_json, "a stored lead"))
                    for row in conn.execute(query)}

    def delivered_destinations(self, source: str, lead_ids: Sequence[str]) -> dict[str, set[str]]:
        """Per lead id, the destinations any event of it was queued to (whatever became of the delivery)."""
        if not lead_ids:
            return {}
        stored = {stored_lead_id(i): i for i in lead_ids}
        query = (sa.select(events.c.lead_id, deliveries.c.destination).distinct()
                 .join(deliveries, deliveries.c.event_id == events.c.id)
                 .where(events.c.source == source, events.c.lead_id.in_(list(stored))))
        out: dict[str, set[str]] = {}
        with self._tx() as conn:
            for row in conn.execute(query):
                out.setdefault(stored.get(row.lead_id, row.lead_id), set()).add(row.destination)
        return out

    # --- out: claiming and settling deliveries ----------------------------------------
    def claim(self, destination: str, limit: int, owner: str, lease: float) -> Batch:
        """Lease up to `limit` due deliveries, at most one per lead, newest data winning (see claiming.py).

        Deliveries that a newer event of their lead makes pointless are settled `stale` in the
        same transaction and returned as `superseded`.
        """
        now = time.time()
        with self._tx() as conn:
            return self._claimer.claim(conn, destination, limit, owner, now + lease, now)

    def due_count(self, destinations: Sequence[str], before: float | None = None) -> int:
        """Deliveries due by `before` (default now; leased ones included), of destinations not paused."""
        now = time.time()
        before = now if before is None else before
        pauses = self.pauses()
        active = [d for d in destinations if pauses.get(d, {}).get("until", 0) <= before]
        if not active:
            return 0
        with self._tx() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(deliveries).where(
                deliveries.c.state == PENDING, deliveries.c.destination.in_(active),
                deliveries.c.next_attempt_at <= before)).scalar() or 0

    def lead_states(self, destination: str, keys: Sequence[str]) -> dict[str, tuple[float, str | None]]:
        if not keys:
            return {}
        with self._tx() as conn:
            rows = conn.execute(sa.select(lead_state.c.lead_key, lead_state.c.last_occurred_at,
                                          lead_state.c.crm_id)
                                .where(lead_state.c.destination == destination,
                                       lead_state.c.lead_key.in_(list(keys))))
            return {r.lead_key: (r.last_occurred_at, r.crm_id) for r in rows}

    def settle(self, owner: str, verdicts: Sequence[Verdict]) -> None:
        """Apply the worker's verdicts in one transaction.

        Only rows still leased by `owner` change, so a worker whose lease ran out cannot overwrite
        what another worker did since. A delivered row also moves the lead's state forward.
        """
        now = time.time()
        with self._tx() as conn:
            for verdict in verdicts:
                item = verdict.item
                changed = conn.execute(
                    deliveries.update().where(deliveries.c.id == item.delivery_id, deliveries.c.lease_owner == owner)
                    .values(**verdict.changes(), updated_at=now, lease_owner=None, lease_until=None)).rowcount
                if not changed:
                    continue
                if verdict.state == DELIVERED:
                    self._advance_lead(conn, item.destination, item.lead_key, item.occurred_at, item.event_id,
                                       verdict.crm_id, now)
                self._note_attempt(conn, owner, verdict, now)

    def _note_attempt(self, conn: Connection, owner: str, verdict: Verdict, now: float) -> None:
        """One history row per verdict, keeping the newest ATTEMPTS_KEPT of the delivery."""
        delivery_id = verdict.item.delivery_id
        conn.execute(delivery_attempts.insert().values(
            delivery_id=delivery_id, at=now, owner=owner[:200], state=verdict.state,
            next_attempt_at=verdict.next_attempt_at if verdict.state == PENDING else None,
            error_code=verdict.last_error_code, error=verdict.last_error, crm_id=verdict.crm_id,
            summary=json.dumps(verdict.summary) if verdict.summary is not None else None))
        oldest_kept = (sa.select(delivery_attempts.c.id).where(delivery_attempts.c.delivery_id == delivery_id)
                       .order_by(delivery_attempts.c.id.desc()).offset(ATTEMPTS_KEPT - 1).limit(1)
                       .scalar_subquery())
        conn.execute(delivery_attempts.delete().where(delivery_attempts.c.delivery_id == delivery_id,
                                                      delivery_attempts.c.id < oldest_kept))

    def _advance_lead(self, conn: Connection, destination: str, key: str, occurred_at: float, event_id: int,
                      crm_id: str | None, now: float) -> None:
        stmt = self._insert(lead_state).values(destination=destination, lead_key=key, last_occurred_at=occurred_at,
                                               last_event_id=event_id, crm_id=crm_id, updated_at=now)
        excluded = stmt.excluded
        # Only a newer event moves the state on (a forced replay of an older one does not): ties by event id.
        newer = sa.or_(excluded.last_occurred_at > lead_state.c.last_occurred_at,
                       sa.and_(excluded.last_occurred_at == lead_state.c.last_occurred_at,
                               excluded.last_event_id > sa.func.coalesce(lead_state.c.last_event_id, 0)))
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[lead_state.c.destination, lead_state.c.lead_key],
            set_={"last_occurred_at": sa.case((newer, excluded.last_occurred_at), else_=lead_state.c.last_occurred_at),
                  "last_event_id": sa.case((newer, excluded.last_event_id), else_=lead_state.c.last_event_id),
                  "crm_id": sa.func.coalesce(excluded.crm_id, lead_state.c.crm_id),
                  "updated_at": excluded.updated_at}))

    def release(self, owner: str, delivery_ids: Sequence[int], next_attempt_at: float) -> None:
        """Give leased deliveries back untouched (no attempt counted), due again at `next_attempt_at`."""
        if not delivery_ids:
            return
        with self._tx() as conn:
            conn.execute(deliveries.update()
                         .where(deliveries.c.id.in_(list(delivery_ids)), deliveries.c.lease_owner == owner)
                         .values(lease_owner=None, lease_until=None, next_attempt_at=next_attempt_at,
                                 updated_at=time.time()))

    # --- pauses -------------------------------------------------------------------------
    def pause(self, destination: str, until: float, kind: str, reason: str) -> None:
        stmt = self._insert(destination_pauses).values(destination=destination, until=until, kind=kind,
                                                       reason=reason, updated_at=time.time())
        with self._tx() as conn:
            conn.execute(stmt.on_conflict_do_update(index_elements=[destination_pauses.c.destination],
                                                    set_={"until": until, "kind": kind, "reason": reason,
                                                          "updated_at": stmt.excluded.updated_at}))

    def unpause(self, destination: str) -> None:
        with self._tx() as conn:
            conn.execute(destination_pauses.delete().where(destination_pauses.c.destination == destination))

    def pauses(self) -> dict[str, dict[str, Any]]:
        with self._tx() as conn:
            return {r.destination: dict(r._mapping) for r in conn.execute(sa.select(destination_pauses))}

    # --- health: a destination whose deliveries keep failing ----------------------------
    def record_failures(self, destination: str, count: int, error: str, next_try: float | None) -> dict[str, Any]:
        """Add `count` transient failures in a row (`error`: the last, already redacted); returns the health row."""
        now = time.time()
        stmt = self._insert(destination_health).values(destination=destination, failing_since=now, failures=count,
                                                       last_error=error[:2000], next_try=next_try, updated_at=now)
        with self._tx() as conn:
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[destination_health.c.destination],
                set_={"failures": destination_health.c.failures + stmt.excluded.failures,
                      "last_error": stmt.excluded.last_error, "next_try": stmt.excluded.next_try,
                      "updated_at": stmt.excluded.updated_at}))
            row = conn.execute(sa.select(destination_health)
                               .where(destination_health.c.destination == destination)).one()
            return dict(row._mapping)

    def set_next_try(self, destination: str, next_try: float) -> None:
        with self._tx() as conn:
            conn.execute(destination_health.update().where(destination_health.c.destination == destination)
                         .values(next_try=next_try))

    def record_success(self, destination: str) -> bool:
        """The destination answered: forget its failures and any outage pause. True if it was failing."""
        with self._tx() as conn:
            conn.execute(destination_pauses.delete().where(destination_pauses.c.destination == destination,
                                                           destination_pauses.c.kind == "outage"))
            return conn.execute(destination_health.delete()
                                .where(destination_health.c.destination == destination)).rowcount > 0

    def health(self) -> dict[str, dict[str, Any]]:
        with self._tx() as conn:
            return {r.destination: dict(r._mapping) for r in conn.execute(sa.select(destination_health))}

    # --- alerts: what they read, and the state each was last sent for (connector.alerts) --
    def alert_states(self) -> dict[str, str]:
        with self._tx() as conn:
            return alertstate.states(conn)

    def swap_alert_state(self, key: str, old: str | None, new: str) -> bool:
        """Compare and set: True for the one process that moved `key` from `old` to `new`."""
        with self._tx() as conn:
            return alertstate.swap(conn, self._insert, key, old, new)

    def backlogs(self) -> dict[str, Backlog]:
        with self._tx() as conn:
            return alertstate.backlogs(conn)

    def dead_letters_between(self, since: float, until: float) -> dict[str, DeadLetters]:
        with self._tx() as conn:
            return alertstate.dead_letters(conn, since, until)

    # --- operations: status, dead letters, replay ----------------------------------------
    def status(self) -> dict[str, Any]:
        with self._tx() as conn:
            report = reports.queue(conn)
        return {**report, "pauses": self.pauses(), "health": self.health(), "privacy": self.privacy.summary()}

    def deliveries_query(self, *, state: str | None = None, destination: str | None = None,
                         limit: int | None = 50, error_codes: Sequence[str] = (), since: float | None = None,
                         until: float | None = None) -> list[dict[str, Any]]:
        with self._tx() as conn:
            return reports.deliveries_matching(conn, state=state, destination=destination, limit=limit,
                                               error_codes=error_codes, since=since, until=until)

    def lead_history(self, lead_id: str, source: str | None = None) -> LeadHistory:
        """Every stored event of one lead, with its deliveries and their attempt history (`explain`)."""
        with self._tx() as conn:
            history = read_history(conn, lead_id, source)
        for row in history.events:
            row["lead_json"] = self.sealer.open_text(row["lead_json"], f"event {row['id']}'s lead")
        return history

    def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        with self._tx() as conn:
            row = reports.one_delivery(conn, delivery_id)
        if row is not None:
            row["lead_json"] = self.sealer.open_text(row["lead_json"], f"event {row['event_id']}'s lead")
            row["body"] = self.sealer.open_bytes(row["body"], f"event {row['event_id']}'s body")
        return row

    def person_hasher(self) -> PersonHasher:
        """The keyed hashes events are indexed by (store/people.py), for a search or an erasure by person."""
        with self._tx() as conn:
            return self._events.hasher(conn.connection.cursor())

    def find_leads(self, *, lead_id: str | None = None, email: str | None = None, phone: str | None = None,
                   limit: int = 50) -> list[LeadFound]:
        """Leads with this id, email or phone (any format the phone normalises from), newest first."""
        hasher = self.person_hasher()
        with self._tx() as conn:
            return reports.leads_matching(conn, lead_id=stored_lead_id(lead_id) if lead_id else None,
                                          email_hash=hasher.email(email), phone_hash=hasher.phone(phone), limit=limit)

    def secret_usage(self, window: float = 48 * 3600) -> dict[tuple[str, int], SecretUse]:
        """Per (source, secret index): last use among kept events and uses in the last `window` seconds."""
        with self._tx() as conn:
            return reports.secret_usage(conn, time.time() - window)

    def requeue(self, *, delivery_ids: Sequence[int] | None = None, state: str | None = None,
                destination: str | None = None, force: bool = False) -> int:
        """Make deliveries due now with a fresh attempt count (dead-letter retry and replay)."""
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
        with self._tx() as conn:
            return conn.execute(stmt).rowcount

    def replay_ids(self, *, event_id: int | None = None, source: str | None = None, lead_id: str | None = None,
                   destination: str | None = None) -> list[int]:
        """Delivery ids to re-send: those of one event, or of a lead's newest event."""
        with self._tx() as conn:
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

    def prune(self, older_than: float) -> int:
        """Forget finished events older than `older_than` seconds (never pending or dead ones)."""
        cutoff = time.time() - older_than
        open_events = sa.select(deliveries.c.event_id).where(deliveries.c.state.in_([PENDING, DEAD]))
        with self._tx() as conn:
            return conn.execute(events.delete().where(events.c.received_at < cutoff,
                                                      events.c.id.not_in(open_events))).rowcount

    # --- backfill checkpoints -------------------------------------------------------------
    def checkpoint(self, source: str, job_key: str) -> dict[str, Any] | None:
        with self._tx() as conn:
            return checkpoints.load(conn, source, job_key)

    def save_checkpoint(self, source: str, job_key: str, params: dict[str, Any], state: dict[str, Any],
                        done: bool = False) -> None:
        with self._tx() as conn:
            checkpoints.save(conn, self._insert, source, job_key, params, state, done)

    def delete_checkpoint(self, source: str, job_key: str) -> None:
        with self._tx() as conn:
            checkpoints.delete(conn, source, job_key)
