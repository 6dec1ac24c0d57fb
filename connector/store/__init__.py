"""The durable queue: SQLite (one file, WAL) by default, PostgreSQL when `DATABASE_URL` is set.

Everything that must survive a crash goes through here, each change in one transaction. Workers
claim due deliveries with a lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`), so any number of them
can run, and a killed worker's batch is taken up again once its lease runs out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from connector.lead import InboundEvent
from connector.store import (
    alertstate,
    budgets,
    checkpoints,
    joblock,
    known,
    lookups,
    migrate,
    outages,
    reconciles,
    replay,
)
from connector.store.alertstate import Backlog, DeadLetters
from connector.store.claiming import Batch, Claimed, Claimer, Superseded, Verdict
from connector.store.engine import GroupCommit, WriterLock, make_engine
from connector.store.eventlog import DEFAULT_FUTURE_TOLERANCE, EventLog, Recorded, Screen, lead_key
from connector.store.history import LeadHistory
from connector.store.joblock import JobClaim
from connector.store.logins import Logins
from connector.store.migrate import MIGRATIONS
from connector.store.people import PersonHasher
from connector.store.privacy import StorePrivacy
from connector.store.reports import LeadFound, SecretUse
from connector.store.schema import DEAD, PENDING, deliveries, events, lead_state, rate_budgets
from connector.store.sealing import Sealer, SealError
from connector.store.settling import Settler
from connector.store.speed import LeadSpeed, RouteSpeed
from connector.store.wakeup import NOTIFY, Doorbell, Listener, listener_for

__all__ = ["MIGRATIONS", "Backlog", "Batch", "Claimed", "DeadLetters", "JobClaim", "LeadFound", "LeadHistory", "LeadSpeed",
           "PersonHasher",
           "Recorded", "RouteSpeed", "Screen", "SealError", "SecretUse", "Store", "StoreUnavailable", "Superseded",
           "Verdict", "lead_key"]


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
        self._settler = Settler(self.engine.dialect.paramstyle, self.is_postgres)
        self.privacy = StorePrivacy(self)
        # What "the database is unavailable" looks like, for callers that must tell it from a bug.
        self.database_errors: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError,
                                                                 self.engine.dialect.loaded_dbapi.Error)
        self._group = None if self.is_postgres else GroupCommit(
            self.engine, self._writer, self._events.record,
            wal_path=f"{sqlite_file}-wal" if sqlite_file else None)
        # Rung after every commit that makes deliveries due; idle workers of this process wait on it.
        self.doorbell = Doorbell()

    def listener(self) -> Listener | None:
        """PostgreSQL: what hears other processes' new deliveries (LISTEN/NOTIFY, see wakeup.py)."""
        return listener_for(self.engine, self.doorbell, self.database_errors) if self.is_postgres else None

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
        return migrate.upgrade(self.engine, self.is_postgres)

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def warm_up(self) -> None:
        """Open the connections a burst of webhooks would otherwise open one by one while answering (the
        pool's size; SQLite: also the writing connection and the WAL file). For a process about to serve."""
        size = getattr(self.engine.pool, "size", lambda: 1)()
        opened = [self.engine.connect() for _ in range(size)]
        for conn in opened:
            conn.exec_driver_sql("SELECT 1")
            conn.close()
        if self._group is not None:
            self._group.warm_up()

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
                recorded = self._group.submit(event, destinations, body, signature_index)
            else:
                with self._tx() as conn:
                    cursor = conn.connection.cursor()
                    recorded = self._events.record(cursor, event, destinations, body, signature_index)
                    if recorded.deliveries:
                        cursor.execute(NOTIFY)  # heard by other processes' workers at commit
            if recorded.deliveries:
                self.doorbell.ring(recorded.deliveries)
                self.doorbell.pace()  # `serve` only: lets its own workers keep up during a burst
            return recorded
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
            due = any(r.deliveries for r in results)
            if due and self.is_postgres:
                cursor.execute(NOTIFY)
        if due:
            self.doorbell.ring()
        return results

    def known_leads(self, source: str, lead_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The newest stored lead document per id, erased ones unknown (store/known.py)."""
        if not lead_ids:
            return {}
        with self._tx() as conn:
            return known.known_leads(conn, self.sealer, source, lead_ids)

    def delivered_destinations(self, source: str, lead_ids: Sequence[str]) -> dict[str, set[str]]:
        """Per lead id, the destinations any event of it was queued to (store/known.py)."""
        if not lead_ids:
            return {}
        with self._tx() as conn:
            return known.delivered_destinations(conn, source, lead_ids)

    # --- out: claiming and settling deliveries ----------------------------------------
    def claim(self, destination: str, limit: int, owner: str, lease: float) -> Batch:
        """Lease up to `limit` due deliveries, at most one per lead, newest data winning (see claiming.py).

        Deliveries that a newer event of their lead makes pointless are settled `stale` in the
        same transaction and returned as `superseded`.
        """
        now = time.time()
        with self._tx() as conn:
            batch = self._claimer.claim(conn, destination, limit, owner, now + lease, now)
        self.doorbell.took(len(batch.claimed) + len(batch.superseded))
        return batch

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

    def settle(self, owner: str, verdicts: Sequence[Verdict]) -> set[int]:
        """Apply the worker's verdicts in one transaction (settling.py); returns the delivery ids whose verdict applied.

        Only rows still leased by `owner` change, so a worker whose lease ran out cannot overwrite
        what another worker did since. A delivered row also moves the lead's state forward.
        """
        with self._tx() as conn:
            return self._settler.settle(conn.connection.cursor(), owner, verdicts, time.time())

    def release(self, owner: str, delivery_ids: Sequence[int], next_attempt_at: float) -> None:
        """Give leased deliveries back untouched (no attempt counted), due again at `next_attempt_at`."""
        if not delivery_ids:
            return
        with self._tx() as conn:
            conn.execute(deliveries.update()
                         .where(deliveries.c.id.in_(list(delivery_ids)), deliveries.c.lease_owner == owner)
                         .values(lease_owner=None, lease_until=None, next_attempt_at=next_attempt_at,
                                 updated_at=time.time()))

    # --- pauses and health: destinations held back (store/outages.py) -------------------
    def pause(self, destination: str, until: float, kind: str, reason: str) -> None:
        with self._tx() as conn:
            outages.pause(conn, self._insert, destination, until, kind, reason)

    def unpause(self, destination: str) -> None:
        with self._tx() as conn:
            outages.unpause(conn, destination)

    def pauses(self) -> dict[str, dict[str, Any]]:
        with self._tx() as conn:
            return outages.pauses(conn)

    def record_failures(self, destination: str, count: int, error: str, next_try: float | None) -> dict[str, Any]:
        """Add `count` transient failures in a row (`error`: the last, already redacted); returns the health row."""
        with self._tx() as conn:
            return outages.record_failures(conn, self._insert, destination, count, error, next_try)

    def set_next_try(self, destination: str, next_try: float) -> None:
        with self._tx() as conn:
            outages.set_next_try(conn, destination, next_try)

    def record_success(self, destination: str) -> bool:
        """The destination answered: forget its failures and any outage pause. True if it was failing."""
        with self._tx() as conn:
            return outages.record_success(conn, destination)

    def health(self) -> dict[str, dict[str, Any]]:
        with self._tx() as conn:
            return outages.health(conn)

    # --- rate budgets shared by every process (connector.pacing) --------------------------
    def change_budget(self, key: str, label: str, step: budgets.Step) -> Any:
        """Apply `step` to budget row `key` by compare and set, deciding again whenever another process
        changed the row in between; returns the step's result."""
        for _ in range(budgets.ATTEMPTS):
            with self._tx() as conn:
                applied, result = budgets.change_once(conn, self._insert, key, label, step)
            if applied:
                return result
        raise budgets.Contended(f"rate budget {label}: changed by others {budgets.ATTEMPTS} times in a row")

    def read_budget(self, key: str) -> str | None:
        with self._tx() as conn:
            found = budgets.read(conn, key)
        return found[1] if found else None

    def create_budget_table(self) -> None:
        """Only for a private in-memory store (connector.pacing.local_budgets); databases migrate."""
        rate_budgets.create(self.engine, checkfirst=True)

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

    # --- operations: what operators read (store/lookups.py), dead letters, replay ------------
    status = lookups.status
    deliveries_query = lookups.deliveries_query
    lead_history = lookups.lead_history
    delivery = lookups.delivery
    find_leads = lookups.find_leads
    recent_leads = lookups.recent_leads
    secret_usage = lookups.secret_usage
    speed_by_route = lookups.speed_by_route
    speed_recent = lookups.speed_recent

    def person_hasher(self) -> PersonHasher:
        """The keyed hashes events are indexed by (store/people.py), for a search or an erasure by person."""
        with self._tx() as conn:
            return self._events.hasher(conn.connection.cursor())

    def logins(self) -> Logins:
        """The console's failed-login counts, lockouts and signing key (store/logins.py)."""
        return Logins(self._tx, self._insert)

    def requeue(self, *, delivery_ids: Sequence[int] | None = None, state: str | None = None,
                destination: str | None = None, force: bool = False) -> int:
        """Make deliveries due now with a fresh attempt count (dead-letter retry and replay; store/replay.py)."""
        with self._tx() as conn:
            changed = replay.requeue(conn, delivery_ids=delivery_ids, state=state, destination=destination,
                                     force=force)
            if changed and self.is_postgres:
                conn.exec_driver_sql(NOTIFY)
        if changed:
            self.doorbell.ring()
        return changed

    def replay_ids(self, *, event_id: int | None = None, source: str | None = None, lead_id: str | None = None,
                   destination: str | None = None) -> list[int]:
        """Delivery ids to re-send: those of one event, or of a lead's newest event."""
        with self._tx() as conn:
            return replay.replay_ids(conn, event_id=event_id, source=source, lead_id=lead_id, destination=destination)

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

    def checkpoints(self) -> list[dict[str, Any]]:
        """Every backfill's checkpoint, last changed first (the console's runs page)."""
        with self._tx() as conn:
            return checkpoints.every(conn)

    def delete_checkpoint(self, source: str, job_key: str) -> None:
        with self._tx() as conn:
            checkpoints.delete(conn, source, job_key)

    # --- reconcile runs and scheduled jobs (store/reconciles.py, store/joblock.py) ---------
    start_reconcile_run = reconciles.start_reconcile_run
    finish_reconcile_run = reconciles.finish_reconcile_run
    reconcile_runs = reconciles.reconcile_runs
    latest_reconcile_runs = reconciles.latest_reconcile_runs
    reconcile_recovered_totals = reconciles.reconcile_recovered_totals
    scheduled_jobs = reconciles.scheduled_jobs

    def take_job(self, job: str, owner: str, lease: float) -> JobClaim | None:
        """Scheduled job `job`, if it is due and no other process runs it (see store/joblock.py)."""
        return joblock.take(self.engine, self._tx, self._insert, self.is_postgres, job, owner, lease)
