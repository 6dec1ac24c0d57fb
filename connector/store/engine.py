"""Database connections, and how SQLite takes writes from many threads and processes.

PostgreSQL handles concurrent writers itself. SQLite has one writer at a time: writers queue on
a kernel file lock (`WriterLock`), and the webhooks of one process share commits (`GroupCommit`).
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Callable, Iterator
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


class _Waiting:
    """One item queued for the next transaction, and how its thread learns the outcome."""

    __slots__ = ("item", "result", "error", "writes_next", "_signal")

    def __init__(self, item: tuple[Any, ...]):
        self.item = item
        self.result: Any = None
        self.error: BaseException | None = None
        self.writes_next = False
        self._signal = threading.Lock()
        self._signal.acquire()  # released once: the item is written, or it is this thread's turn to write

    def wake(self) -> None:
        self._signal.release()

    def wait(self) -> None:
        self._signal.acquire()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit:
    """Concurrent webhooks of one process share one SQLite transaction, so one fsync serves many.

    Whichever request thread finds nobody writing becomes the writer: it commits everything queued
    so far (its own item first) in one transaction on the process's one writing connection, then
    passes the turn to the oldest thread still waiting, if any. A lone webhook is written by its own
    thread with no hand-off; under load the batches grow by themselves. Every caller returns only once the
    transaction holding its item has committed: a 2xx is only ever sent for an event on disk.
    """

    MAX_BATCH = 64

    def __init__(self, engine: Engine, lock: WriterLock, write: Callable[..., Any]):
        self.engine = engine
        self.lock = lock
        self.write = write  # write(cursor, *item) -> result, inside the transaction
        self._mutex = threading.Lock()
        self._queue: list[_Waiting] = []
        self._writing = False
        self._connection: Any = None  # only the thread whose turn it is touches it

    def submit(self, *item: Any) -> Any:
        mine = _Waiting(item)
        with self._mutex:
            self._queue.append(mine)
            follow, self._writing = self._writing, True
        if follow:
            mine.wait()
            if not mine.writes_next:
                return mine.outcome()
        self._write_turn(mine)
        return mine.outcome()

    def _write_turn(self, mine: _Waiting) -> None:
        with self._mutex:  # `mine` is first: the queue was empty when it found nobody writing, or it is the oldest
            batch = self._queue[:self.MAX_BATCH]
            del self._queue[:self.MAX_BATCH]
        try:
            for waiting, result in zip(batch, self._commit([w.item for w in batch]), strict=True):
                waiting.result = result
        except Exception as exc:  # the database is unusable: every waiter answers 503
            for waiting in batch:
                waiting.error = exc
        finally:
            for waiting in batch:
                if waiting is not mine:
                    waiting.wake()
            with self._mutex:
                if self._queue:
                    self._queue[0].writes_next = True
                    self._queue[0].wake()
                else:
                    self._writing = False

    def _commit(self, items: list[tuple[Any, ...]]) -> list[Any]:
        connection = self._connection = self._connection or self.engine.raw_connection()
        try:
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
        except Exception:
            self._connection = None
            connection.invalidate()
            raise
