"""One process at a time runs each scheduled job, however many worker processes and machines there are.

- PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) on a connection of its own, held while the
  job runs. If the process dies its connection closes and the server lets the lock go: nothing to expire.
- SQLite: a lease on the job's row (owner + until), taken by compare and set and renewed while the job
  runs (`JobClaim.renew`); a process that dies stops renewing, and once the lease runs out another takes it.

Either way the job's row says when it is next due, so a job runs once per interval across all processes,
not once per process.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy.engine import Connection, Engine

from connector.store import runs

Transaction = Callable[[], AbstractContextManager[Connection]]


def advisory_key(job: str) -> int:
    """A stable signed 64-bit key per job name (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(f"connector-job:{job}".encode()).digest()[:8], "big", signed=True)


class JobClaim:
    """A job this process runs now: renew it while running (SQLite), then `finish` or `abandon` it."""

    def __init__(self, job: str, owner: str, lease: float, tx: Transaction, conn: Connection | None,
                 taken_at: float):
        self.job, self.owner, self.lease = job, owner, lease
        self.taken_at = taken_at  # the run's start, as recorded
        self._tx = tx
        self._conn = conn  # PostgreSQL: the connection that holds the advisory lock

    def renew(self) -> bool:
        """Still ours? SQLite extends the lease; PostgreSQL checks the lock's connection is alive."""
        if self._conn is not None:
            try:
                self._conn.exec_driver_sql("SELECT 1")
                self._conn.commit()
                return True
            except Exception:
                return False
        with self._tx() as conn:
            return runs.renew(conn, self.job, self.owner, time.time() + self.lease)

    def finish(self, next_run_at: float, state: str, summary: str) -> bool:
        """Record the run and when the job is next due, then let go of it."""
        try:
            with self._tx() as conn:
                return runs.finish(conn, self.job, self.owner, next_run_at, state, summary)
        finally:
            self._release()

    def abandon(self) -> None:
        """Let go without recording a run (it stays due): what a crash amounts to."""
        self._release()

    def _release(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({advisory_key(self.job)})")
            conn.commit()
            conn.close()
        except Exception:
            conn.invalidate()  # closing the session is what releases a session lock for sure
            conn.close()


def take(engine: Engine, tx: Transaction, insert: Callable[..., Any], is_postgres: bool, job: str, owner: str,
         lease: float) -> JobClaim | None:
    """The job if it is due and no other process runs it now; None otherwise."""
    now = time.time()
    with tx() as conn:  # a read first: most looks find nothing due, and need no write and no lock
        due = runs.due_at(conn, job)
        if due is None:
            runs.ensure_job(conn, insert, job, now)  # a job never seen before is due at once
    if due is not None and due > now:
        return None
    if not is_postgres:
        with tx() as conn:
            if not runs.take(conn, job, owner, now, lease):
                return None
        return JobClaim(job, owner, lease, tx, None, now)
    lock = engine.connect()
    try:
        got = lock.exec_driver_sql(f"SELECT pg_try_advisory_lock({advisory_key(job)})").scalar()
        lock.commit()
        if got:
            now = time.time()
            with tx() as conn:  # due still? another process may have run it between our look and the lock
                if runs.take(conn, job, owner, now, None):
                    return JobClaim(job, owner, lease, tx, lock, now)
            lock.exec_driver_sql(f"SELECT pg_advisory_unlock({advisory_key(job)})")
            lock.commit()
    except Exception:
        lock.invalidate()
        lock.close()
        raise
    lock.close()
    return None


