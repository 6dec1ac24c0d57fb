"""Database connections, and how SQLite takes writes from many threads and processes.

PostgreSQL handles concurrent writers itself. SQLite has one writer at a time: writers queue on
a kernel file lock (`WriterLock`), and the webhooks of one process share commits (`GroupCommit`).
"""

from __future__ import annotations

import fcntl
import os
import sys
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
        cursor.execute("PRAGMA synchronous=FULL")  # committed means on disk (GroupCommit syncs its own)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # No deadlock upgrading a read lock to a write lock under concurrency.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def off_the_hub(call: Callable[..., Any], *args: Any) -> Any:
    """Run a call that waits on the kernel (a file lock held by another process, an fsync) so that it
    blocks only its caller.

    Under the receiver's gevent worker every request of a process shares one OS thread: a plain
    `flock` or `fdatasync` there stopped every other request of the process until the disk answered,
    which is where its slowest answers came from. When gevent has patched the standard library the call
    goes to gevent's pool of real threads and only the calling greenlet waits; elsewhere (the worker,
    `connector serve`, tests) it is a plain call. gevent is looked up, never imported, here.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return sys.modules["gevent"].get_hub().threadpool.apply(call, args)
    return call(*args)


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
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: no hand-off to a thread
        except BlockingIOError:
            off_the_hub(fcntl.flock, handle, fcntl.LOCK_EX)
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

    Whichever request thread finds nobody writing becomes the writer: once it holds the writer lock
    it commits everything queued so far (its own item first) in one transaction on the process's one
    writing connection, then passes the turn to the oldest thread still waiting, if any. A lone
    webhook is written by its own thread with no hand-off; under load the batches grow by themselves.

    Every caller returns only once its transaction is on disk: a 2xx is only ever sent for an event
    that survives a power cut. The writing connection commits with `synchronous=NORMAL` and the
    writer then fsyncs the WAL file itself, after letting the lock go. That is what
    `synchronous=FULL` does, minus the wait: the next process writes while this one's fsync runs.
    """

    MAX_BATCH = 64

    def __init__(self, engine: Engine, lock: WriterLock, write: Callable[..., Any], wal_path: str | None):
        self.engine = engine
        self.lock = lock
        self.write = write  # write(cursor, *item) -> result, inside the transaction
        self.wal_path = wal_path  # None: an in-memory database, nothing to sync
        self._mutex = threading.Lock()
        self._queue: list[_Waiting] = []
        self._writing = False
        # Only the thread whose turn it is touches these.
        self._connection: Any = None
        self._wal_to_sync: str | None = None  # wal_path once the connection is known to be in WAL mode
        self._wal_fd: int | None = None

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
        batch: list[_Waiting] = []
        try:
            connection = self._writing_connection()
            with self.lock.held():
                # Taken once the lock is held: threads that queued while this one waited for other
                # processes share its commit instead of waiting for the next one.
                batch = self._take_batch()
                self._commit(connection, batch)
            self._sync_wal()
        except Exception as exc:  # every waiter answers 503; the sender retries and a committed event is a duplicate
            self.close()  # the next turn starts on a fresh connection
            batch = batch or self._take_batch()
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

    def close(self) -> None:
        """Let go of the writing connection and the WAL file; the next write opens them again."""
        with self._mutex:
            connection, self._connection = self._connection, None
            wal_fd, self._wal_fd = self._wal_fd, None
        if connection is not None:
            connection.invalidate()  # never back to the pool: it commits without an fsync of its own
        if wal_fd is not None:
            os.close(wal_fd)

    def _writing_connection(self) -> Any:
        if self._connection is None:
            connection = self.engine.raw_connection()
            cursor = connection.cursor()
            # Only in WAL mode is a commit durable once the WAL file is (a file system without WAL
            # support leaves SQLite in rollback-journal mode, where FULL does the syncing).
            in_wal = self.wal_path is not None and cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            self._wal_to_sync = self.wal_path if in_wal else None
            if in_wal:
                cursor.execute("PRAGMA synchronous=NORMAL")  # _sync_wal makes each commit durable
            cursor.close()
            self._connection = connection
        return self._connection

    def warm_up(self) -> None:
        """Open the writing connection and the WAL file now, before the process takes webhooks, rather
        than in the first webhook's turn. Only call it before requests arrive (nothing is queued)."""
        self._writing_connection()
        if self._wal_to_sync is not None and os.path.exists(self._wal_to_sync):
            self._open_wal()

    def _open_wal(self) -> int:
        if self._wal_fd is None:
            assert self._wal_to_sync is not None
            self._wal_fd = os.open(self._wal_to_sync, os.O_RDONLY | os.O_CLOEXEC)
            # The file may be new: its directory entry must be durable too, as SQLite ensures.
            folder = os.open(os.path.dirname(self._wal_to_sync) or ".", os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        return self._wal_fd

    def _sync_wal(self) -> None:
        """Everything written to the WAL so far, this batch's commit included, reaches the disk."""
        if self._wal_to_sync is None:
            return
        off_the_hub(os.fdatasync, self._open_wal())

    def _take_batch(self) -> list[_Waiting]:
        with self._mutex:  # the writer's own item is first: only the thread whose turn it is takes items
            batch = self._queue[:self.MAX_BATCH]
            del self._queue[:self.MAX_BATCH]
        return batch

    def _commit(self, connection: Any, batch: list[_Waiting]) -> None:
        cursor = connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            for waiting in batch:
                waiting.result = self.write(cursor, *waiting.item)
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
