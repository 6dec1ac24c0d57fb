"""Database connections, and how SQLite takes writes from many threads and processes.

PostgreSQL handles concurrent writers itself. SQLite has one writer at a time: writers queue on
a kernel file lock (`WriterLock`), and the webhooks of one process share commits (`GroupCommit`).
"""

from __future__ import annotations

import fcntl
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return sa.create_engine(url, pool_size=8, max_overflow=16, pool_pre_ping=True)


def _sqlite_engine(url: str) -> Engine:
    """SQLite in WAL mode, fsync on every commit, each transaction taking the write lock up front."""
    memory = ":memory:" in url or url in ("sqlite://", "sqlite:///")
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                              poolclass=sa.pool.StaticPool if memory else sa.pool.QueuePool,
                              **({} if memory else {"pool_size": 8, "max_overflow": 16}))

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # a 2xx means the event is on disk
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # No deadlock upgrading a read lock to a write lock under concurrency.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class WriterLock:
    """One SQLite transaction at a time across processes, queued on a kernel file lock.

    SQLite's own busy handler sleeps and polls; with several gunicorn processes taking webhooks
    the polling, not the work, set the slowest answer times. A waiter on `flock` wakes the moment
    the lock is free. Each thread has its own file handle (flock excludes per open file).
    """

    def __init__(self, path: str | None):
        self.path = path
        self._local = threading.local()

    @contextmanager
    def held(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._local.handle = open(self.path, "a+b")  # noqa: SIM115 - kept per thread
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class GroupCommit:
    """Concurrent webhooks of one process share one SQLite transaction, so one fsync serves many.

    One thread writes every batch on its own connection, straight through the driver: the
    transaction is a handful of calls, so the writer lock is held as briefly as possible. Each
    caller still waits until the transaction holding its item has committed: a 2xx is only ever
    sent for an event on disk.
    """

    MAX_BATCH = 64

    def __init__(self, engine: Engine, lock: WriterLock, write: Callable[..., Any]):
        self.engine = engine
        self.lock = lock
        self.write = write  # write(cursor, *item) -> result, inside the transaction
        self.queue: queue.Queue[tuple[tuple[Any, ...], Future[Any]]] = queue.Queue()
        self._started = False
        self._start_lock = threading.Lock()

    def submit(self, *item: Any) -> Any:
        if not self._started:
            with self._start_lock:
                if not self._started:
                    threading.Thread(target=self._run, name="group-commit", daemon=True).start()
                    self._started = True
        future: Future[Any] = Future()
        self.queue.put((item, future))
        return future.result()

    def _run(self) -> None:
        connection = None
        while True:
            batch = [self.queue.get()]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                connection = connection or self.engine.raw_connection()
                results = self._commit(connection, [item for item, _ in batch])
            except Exception as exc:  # the database is unusable: every waiter answers 503
                if connection is not None:
                    connection.invalidate()
                    connection = None
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)

    def _commit(self, connection: Any, items: list[tuple[Any, ...]]) -> list[Any]:
        with self.lock.held():
            cursor = connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                results = [self.write(cursor, *item) for item in items]
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            return results
