"""Waking idle workers the moment a delivery is stored, instead of at their next poll.

Two ways an event reaches a waiting worker thread:

- in the same process (`connector serve`, a backfill run beside a worker): the store rings the
  process's `Doorbell` right after the commit that stored the event;
- from another process, on PostgreSQL: the transaction that stores an event also sends
  `NOTIFY connector_deliveries` (PostgreSQL delivers it at commit, never for a rolled-back
  transaction, and folds repeats within one transaction into one), and one `Listener` thread
  per worker process, on a connection of its own, rings the doorbell for each notification.

Polling (`worker.poll_interval`) stays underneath both: it is what finds retries falling due, it
is the only way on SQLite across processes, and it carries on alone while the listening
connection is lost (the listener reconnects with growing waits, and rings once it listens again
so nothing stored in between waits for a poll).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from connector.backoff import backoff

log = logging.getLogger("connector.worker")
CHANNEL = "connector_deliveries"
NOTIFY = f"NOTIFY {CHANNEL}"  # sent inside the transaction that stores deliveries (PostgreSQL only)
PROBE_EVERY = 30.0  # seconds without a notification after which the listening connection is checked


class Doorbell:
    """A counter of rings and a condition to wait on it, so that no ring between two looks is lost.

    A worker notes `rings` before a round; if the round found nothing it waits with that number,
    and returns at once if the bell rang meanwhile.

    It also paces a receiver that shares its process with busy workers (`connector serve`, after
    `pace_backlog` is set). Python runs one thread at a time: during a burst the request threads,
    many and each holding the interpreter only briefly, got nearly all of it, and the two worker
    threads, which give it up at every database statement and socket call and then queue for it
    behind every request thread, delivered a small fraction of what arrived (measured: 0.4 to 0.5 of
    the arrivals, bench/serve_burst.py). So while this process's workers are claiming (they took
    something within the last `PACE_ACTIVE` seconds) and more than `pace_backlog` deliveries stored
    here wait unclaimed, a webhook already stored waits, at most `PACE_WAIT`, before it is answered;
    its thread sleeps, and the workers get the interpreter. A worker that is idle, paused or waiting
    on a slow CRM claims nothing, and then nothing waits.
    """

    PACE_WAIT = 0.5
    PACE_ACTIVE = 1.0

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self.rings = 0
        self.pace_backlog: int | None = None  # None: no pacing (the receiver under gunicorn, the worker)
        self._stored = 0  # deliveries stored by this process ...
        self._taken = 0  # ... and claimed (or settled stale) by its workers, while pacing
        self._last_take = float("-inf")

    def ring(self, deliveries: int = 0) -> None:
        with self._condition:
            self.rings += 1
            self._stored += deliveries
            self._condition.notify_all()

    def took(self, deliveries: int) -> None:
        """This process's workers claimed `deliveries` (what pacing compares the stored ones with)."""
        if self.pace_backlog is None or not deliveries:
            return
        with self._condition:
            self._taken += deliveries
            self._last_take = time.monotonic()
            self._condition.notify_all()

    def pace(self) -> None:
        """Wait (at most PACE_WAIT) while this process's busy workers are more than pace_backlog behind."""
        limit = self.pace_backlog
        if limit is None:
            return
        with self._condition:
            deadline = time.monotonic() + self.PACE_WAIT
            while self._stored - self._taken > limit and time.monotonic() - self._last_take < self.PACE_ACTIVE:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._condition.wait(left)
            if self._stored - self._taken > limit and time.monotonic() - self._last_take >= self.PACE_ACTIVE:
                self._taken = self._stored - limit  # what idle workers left is no debt for later webhooks

    def wait(self, seen: int, timeout: float) -> bool:
        """Until the bell rings after `seen` or `timeout` passes; True if it rang."""
        with self._condition:
            return self._condition.wait_for(lambda: self.rings != seen, timeout)


class Listener:
    """One thread per worker process: LISTEN on a dedicated connection, ring the doorbell per NOTIFY.

    `connect()` returns a new DBAPI (psycopg 3) connection; the listener makes it autocommit, as
    LISTEN inside an open transaction would hear nothing until that transaction ended.
    """

    def __init__(self, connect: Any, doorbell: Doorbell, errors: tuple[type[BaseException], ...],
                 retry_max: float = 30.0):
        self._connect = connect
        self.doorbell = doorbell
        self.errors = errors
        self.retry_max = retry_max
        self.listening = threading.Event()  # set while notifications can arrive (tests and status wait on it)
        self._connection: Any = None

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="listen", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                self._listen(stop, failures)
                failures = 0
            except Exception as exc:  # the database's errors above all; a bug here must not end the thread either
                self.listening.clear()
                failures += 1
                if failures == 1:
                    cause = (str(exc).splitlines() or [""])[0]
                    log.warning("not listening for new deliveries (%s: %s); finding them by polling until "
                                "the database answers again", type(exc).__name__, cause,
                                exc_info=not isinstance(exc, self.errors))
                stop.wait(backoff(failures, 0.5, self.retry_max))
            finally:
                self._close()
        self.listening.clear()

    def _listen(self, stop: threading.Event, failures: int) -> None:
        connection = self._connection = self._connect()
        connection.autocommit = True
        connection.execute(f"LISTEN {CHANNEL}")
        self.listening.set()
        if failures:
            log.warning("listening for new deliveries again")
        self.doorbell.ring()  # whatever was stored while we were not listening
        quiet = 0.0
        while not stop.is_set():
            heard = False
            for _ in connection.notifies(timeout=1.0):
                self.doorbell.ring()
                heard = True
            quiet = 0.0 if heard else quiet + 1.0
            if quiet >= PROBE_EVERY:  # a connection that died without a word (a dropped route) says so here
                connection.execute("SELECT 1")
                quiet = 0.0

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - a broken connection may refuse even to close
                log.debug("closing the listening connection failed", exc_info=True)


def listener_for(engine: Any, doorbell: Doorbell, errors: tuple[type[BaseException], ...]) -> Listener:
    """A listener connecting as the engine's own connections do (same URL, same driver options)."""
    dialect = engine.dialect
    cargs, cparams = dialect.create_connect_args(engine.url)
    cparams = {"application_name": "connector listen", **cparams}  # how operators tell it in pg_stat_activity
    return Listener(lambda: dialect.loaded_dbapi.connect(*cargs, **cparams), doorbell, errors)


def watch(stop: threading.Event, doorbell: Doorbell) -> threading.Thread:
    """Ring once `stop` is set, so waiting workers stop now rather than at their next poll."""
    def ring_on_stop() -> None:
        stop.wait()
        doorbell.ring()

    thread = threading.Thread(target=ring_on_stop, name="stop-bell", daemon=True)
    thread.start()
    return thread


__all__ = ["CHANNEL", "NOTIFY", "Doorbell", "Listener", "listener_for", "watch"]
