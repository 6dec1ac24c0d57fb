"""Reconcile runs, and the scheduled jobs' state: when each is next due and who runs it now.

Each function takes the caller's connection (one transaction, as the Store gives it). Taking a job is a
compare and set on its row: on SQLite the row's lease (owner + until) is the lock; on PostgreSQL the
caller holds an advisory lock (connector.store.Store.take_job) and the row only says when it is due.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.store.schema import reconcile_runs, scheduled_jobs

MISSING_IDS_KEPT = 50


# --- reconcile runs -------------------------------------------------------------------------------
def start_run(conn: Connection, source: str, trigger: str, window_from: float, window_to: float) -> int:
    return int(conn.execute(reconcile_runs.insert().values(
        source=source, trigger=trigger, started_at=time.time(), window_from=window_from, window_to=window_to,
        listed=0, missing=0, recovered=0, state="running")).inserted_primary_key[0])


def finish_run(conn: Connection, run_id: int, *, listed: int, missing: int, recovered: int, state: str,
               error: str | None, summary: str, missing_ids: Sequence[str]) -> None:
    conn.execute(reconcile_runs.update().where(reconcile_runs.c.id == run_id).values(
        finished_at=time.time(), listed=listed, missing=missing, recovered=recovered, state=state, error=error,
        summary=summary, missing_ids=json.dumps(list(missing_ids)[:MISSING_IDS_KEPT])))


def _run(row: Any) -> dict[str, Any]:
    run = dict(row._mapping)
    run["missing_ids"] = json.loads(run["missing_ids"]) if run["missing_ids"] else []
    return run


def recent_runs(conn: Connection, source: str | None, limit: int) -> list[dict[str, Any]]:
    query = sa.select(reconcile_runs).order_by(reconcile_runs.c.started_at.desc(), reconcile_runs.c.id.desc())
    if source is not None:
        query = query.where(reconcile_runs.c.source == source)
    return [_run(row) for row in conn.execute(query.limit(limit))]


def latest_runs(conn: Connection, finished: bool = False) -> dict[str, dict[str, Any]]:
    """The newest run of each source (with `finished`, the newest that finished)."""
    newest = sa.select(sa.func.max(reconcile_runs.c.id)).group_by(reconcile_runs.c.source)
    if finished:
        newest = newest.where(reconcile_runs.c.finished_at.is_not(None))
    return {row.source: _run(row) for row in conn.execute(sa.select(reconcile_runs)
                                                         .where(reconcile_runs.c.id.in_(newest.scalar_subquery())))}


def recovered_totals(conn: Connection) -> dict[str, int]:
    """Leads recovered by all recorded runs, per source (the counter behind /metrics)."""
    query = sa.select(reconcile_runs.c.source, sa.func.sum(reconcile_runs.c.recovered)).group_by(reconcile_runs.c.source)
    return {source: int(total or 0) for source, total in conn.execute(query)}


# --- scheduled jobs -------------------------------------------------------------------------------
def ensure_job(conn: Connection, insert: Callable[..., Any], job: str, now: float) -> None:
    """A job never seen before is due at once (several processes may insert it at once: one row)."""
    conn.execute(insert(scheduled_jobs).values(job=job, next_run_at=now, updated_at=now)
                 .on_conflict_do_nothing(index_elements=[scheduled_jobs.c.job]))


def due_at(conn: Connection, job: str) -> float | None:
    """When `job` is next due; None if it has no row yet."""
    due = conn.execute(sa.select(scheduled_jobs.c.next_run_at).where(scheduled_jobs.c.job == job)).scalar()
    return None if due is None else float(due)


def take(conn: Connection, job: str, owner: str, now: float, lease: float | None) -> bool:
    """Make `owner` the runner of a due job. With `lease` (SQLite) only if no live lease is held: the one
    process whose update changes the row wins. Without (PostgreSQL: the advisory lock decided) it just notes it."""
    where = [scheduled_jobs.c.job == job, scheduled_jobs.c.next_run_at <= now]
    if lease is not None:
        where.append(sa.or_(scheduled_jobs.c.lease_until.is_(None), scheduled_jobs.c.lease_until < now))
    return conn.execute(scheduled_jobs.update().where(*where).values(
        owner=owner[:200], lease_until=now + lease if lease is not None else None, last_started_at=now,
        updated_at=now)).rowcount == 1


def renew(conn: Connection, job: str, owner: str, until: float) -> bool:
    """Extend the owner's lease; False if it is no longer the owner (its lease ran out and another took it)."""
    return conn.execute(scheduled_jobs.update().where(scheduled_jobs.c.job == job, scheduled_jobs.c.owner == owner)
                        .values(lease_until=until, updated_at=time.time())).rowcount == 1


def finish(conn: Connection, job: str, owner: str, next_run_at: float, state: str, summary: str) -> bool:
    now = time.time()
    return conn.execute(scheduled_jobs.update().where(scheduled_jobs.c.job == job, scheduled_jobs.c.owner == owner)
                        .values(next_run_at=next_run_at, owner=None, lease_until=None, last_finished_at=now,
                                last_state=state, last_summary=summary[:2000], updated_at=now)).rowcount == 1


def jobs(conn: Connection) -> dict[str, dict[str, Any]]:
    return {row.job: dict(row._mapping) for row in conn.execute(sa.select(scheduled_jobs))}
