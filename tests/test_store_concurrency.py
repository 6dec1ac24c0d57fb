"""Many webhooks at once: each stored exactly once, whichever thread or process writes its transaction."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from connector.lead import InboundEvent
from connector.store import Store, StoreUnavailable
from connector.store.engine import GroupCommit, WriterLock
from connector.store.eventlog import EventLog


def event(number: int, *, key: str | None = None) -> tuple[InboundEvent, bytes]:
    lead_id = f"lead_{number:05d}"
    body = f'{{"event": "lead.new", "lead": {{"id": "{lead_id}"}}}}'.encode()
    return InboundEvent(source="leaditio", event_key=key or f"lead.new:{lead_id}", event_type="lead.new",
                        occurred_at=1_780_000_000.0 + number, lead_id=lead_id, lead={"id": lead_id}), body


def record(store: Store, number: int) -> tuple[int, bool, int]:
    inbound, body = event(number)
    result = store.record_event(inbound, ["crm"], body=body)
    return result.event_id, result.duplicate, result.deliveries


def test_concurrent_webhooks_are_each_stored_once(store):
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda n: record(store, n), range(400)))
        repeats = list(pool.map(lambda n: record(store, n % 40), range(400)))  # duplicates, arriving together
    assert len({event_id for event_id, _, _ in results}) == 400
    assert all(not duplicate and deliveries == 1 for _, duplicate, deliveries in results)
    assert all(duplicate for _, duplicate, _ in repeats)
    assert {event_id for event_id, _, _ in repeats} == {results[n][0] for n in range(40)}
    assert store.status()["events"] == 400 and store.status()["queue_depth"] == 400


def test_the_same_new_event_from_many_threads_is_stored_once(store):
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: record(store, 7), range(64)))
    assert sum(not duplicate for _, duplicate, _ in results) == 1
    assert len({event_id for event_id, _, _ in results}) == 1
    assert store.status()["queue_depth"] == 1


def _record_range(url: str, start: int, count: int) -> None:
    store = Store(url)
    for number in range(start, start + count):
        record(store, number)
    store.dispose()


@pytest.mark.slow
def test_several_processes_share_one_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'connector.db'}"
    Store(url).upgrade()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_range, args=(url, n * 150, 150)) for n in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    assert Store(url).status()["events"] == 450


def test_a_failed_sqlite_transaction_fails_its_webhooks_and_the_next_ones_go_through(tmp_path, monkeypatch):
    real_record = EventLog.record
    failing = {"left": 1}

    def record_or_fail(self, cursor, *args):  # noqa: ANN001, ANN202
        if failing["left"]:
            failing["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real_record(self, cursor, *args)

    monkeypatch.setattr(EventLog, "record", record_or_fail)
    store = Store(f"sqlite:///{tmp_path / 'connector.db'}")  # built after the patch, so its writer uses it
    store.upgrade()
    with pytest.raises(StoreUnavailable, match="OperationalError: disk I/O error"):
        record(store, 1)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: record(store, n), range(2, 50)))
    assert all(not duplicate for _, duplicate, _ in results)
    assert store.status()["events"] == 48


def test_a_webhook_returns_only_once_its_commit_is_fsynced(tmp_path, monkeypatch):
    """The webhook connection commits with synchronous=NORMAL and syncs the WAL itself, outside the lock."""
    database = tmp_path / "connector.db"
    store = Store(f"sqlite:///{database}")
    store.upgrade()
    synced: list[tuple[str, int]] = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        with open(f"{database}.lock", "a+b") as lock:  # the writer lock is free again: other writers go on
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with sqlite3.connect(database) as reader:  # what a fresh connection sees as committed at this moment
            synced.append((os.readlink(f"/proc/self/fd/{fd}"), reader.execute("SELECT count(*) FROM events").fetchone()[0]))

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    record(store, 1)
    assert synced == [(f"{database}-wal", 1)]
    record(store, 2)
    assert synced[-1] == (f"{database}-wal", 2)
    store.dispose()


def test_without_wal_mode_the_writer_leaves_syncing_to_sqlite(tmp_path, monkeypatch):
    """A file system without WAL support leaves SQLite in rollback-journal mode: no WAL file to sync."""
    database = tmp_path / "plain.db"
    with sqlite3.connect(database) as setup:
        setup.execute("CREATE TABLE t (n INTEGER)")
    engine = sa.create_engine(f"sqlite:///{database}")
    synced: list[int] = []
    monkeypatch.setattr(os, "fdatasync", synced.append)
    group = GroupCommit(engine, WriterLock(None), lambda cursor, n: cursor.execute("INSERT INTO t VALUES (?)", (n,)),
                        wal_path=f"{database}-wal")
    group.submit(1)
    group.close()
    assert synced == [] and not os.path.exists(f"{database}-wal")
    with sqlite3.connect(database) as check:
        assert check.execute("SELECT n FROM t").fetchall() == [(1,)]
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
