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
from connector.store import alertstate, budgets, checkpoints, joblock, reports, runs, speed
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
from connector.store.joblock import JobClaim
from connector.store.logins import Logins
from connector.store.people import PersonHasher
from connector.store.privacy import StorePrivacy
from connector.store.reports import LeadFound, SecretUse
from connector.store.schema import (
    DEAD,
    PENDING,
    deliveries,
    destination_health,
    destination_pauses,
    events,
    lead_state,
    rate_budgets,
)
from connector.store.sealing import Sealer, SealError
from connector.store.settling import Settler
from connector.store.speed import LeadSpeed, RouteSpeed
from connector.store.wakeup import NOTIFY, Doorbell, Listener, listener_for

__all__ = ["Backlog", "Batch", "Claimed", "DeadLetters", "JobClaim", "LeadFound", "LeadHistory", "LeadSpeed", "PersonHasher",
           "Recorded", "RouteSpeed", "Screen", "SealError", "SecretUse", "Store", "StoreUnavailable", "Superseded",
           "Verdict", "lead_key"]
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

    def recent_leads(self, limit: int = 50) -> list[LeadFound]:
        """The leads that last received an event, newest first (the console's lead list)."""
        with self._tx() as conn:
            return reports.recent_leads(conn, limit)

    def logins(self) -> Logins:
        """The console's failed-login counts, lockouts and signing key (store/logins.py)."""
        return Logins(self._tx, self._insert)

    def secret_usage(self, window: float = 48 * 3600) -> dict[tuple[str, int], SecretUse]:
        """Per (source, secret index): last use among kept events and uses in the last `window` seconds."""
        with self._tx() as conn:
            return reports.secret_usage(conn, time.time() - window)

    # --- speed to lead (the console; `explain` reads it with the lead's history) ------------
    def speed_by_route(self, now: float | None = None, window: float = 86400) -> list[RouteSpeed]:
        """Per route, how fast new leads reached the CRM in the last `window` seconds (median, p90)."""
        now = time.time() if now is None else now
        with self._tx() as conn:
            return speed.by_route(conn, now - window, now + 1)

    def speed_recent(self, now: float | None = None, window: float = 86400, limit: int = 50) -> list[LeadSpeed]:
        """New leads' first deliveries of the last `window` seconds, newest first, with their speed."""
        now = time.time() if now is None else now
        with self._tx() as conn:
            return speed.recent(conn, now - window, now + 1, limit)

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
            changed = conn.execute(stmt).rowcount
            if changed and self.is_postgres:
                conn.exec_driver_sql(NOTIFY)
        if changed:
            self.doorbell.ring()
        return changed

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

    def checkpoints(self) -> list[dict[str, Any]]:
        """Every backfill's checkpoint, last changed first (the console's runs page)."""
        with self._tx() as conn:
            return checkpoints.every(conn)

    def delete_checkpoint(self, source: str, job_key: str) -> None:
        with self._tx() as conn:
            checkpoints.delete(conn, source, job_key)

    # --- reconcile runs and scheduled jobs (store/runs.py, store/joblock.py) ---------------
    def start_reconcile_run(self, source: str, trigger: str, window_from: float, window_to: float) -> int:
        with self._tx() as conn:
            return runs.start_run(conn, source, trigger, window_from, window_to)

    def finish_reconcile_run(self, run_id: int, **outcome: Any) -> None:
        """`outcome`: listed, missing, recovered, state, error (redacted), summary, missing_ids."""
        with self._tx() as conn:
            runs.finish_run(conn, run_id, **outcome)

    def reconcile_runs(self, source: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The newest reconcile runs first (of one source, or all): for `status`, alerts and a console."""
        with self._tx() as conn:
            return runs.recent_runs(conn, source, limit)

    def latest_reconcile_runs(self, finished: bool = False) -> dict[str, dict[str, Any]]:
        with self._tx() as conn:
            return runs.latest_runs(conn, finished)

    def reconcile_recovered_totals(self) -> dict[str, int]:
        with self._tx() as conn:
            return runs.recovered_totals(conn)

    def take_job(self, job: str, owner: str, lease: float) -> JobClaim | None:
        """Scheduled job `job`, if it is due and no other process runs it (see store/joblock.py)."""
        return joblock.take(self.engine, self._tx, self._insert, self.is_postgres, job, owner, lease)

    def scheduled_jobs(self) -> dict[str, dict[str, Any]]:
        with self._tx() as conn:
            return runs.jobs(conn)
