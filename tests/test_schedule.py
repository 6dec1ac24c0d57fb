"""The worker's scheduler on SQLite and PostgreSQL: each due job runs once across competing schedulers
(threads with stores of their own, and real processes), not again before it is due, and a holder that
dies hands the job over (PostgreSQL: at once; SQLite: when its lease runs out). Reconcile and prune run
on it inside the worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connector.config import load_config
from connector.runtime import Runtime
from connector.store import Store
from connector.worker import run_workers
from connector.worker.jobs import scheduled_jobs
from connector.worker.schedule import Job, Scheduler
from fakes.leaditio_api import FakeLeaditioApi, make_lead, source_config
from tests.conftest import ENV, ROOT, read_jsonl, wait_for, write_config


def store_for(url: str) -> Store:
    store = Store(url)
    store.upgrade()
    return store


@pytest.fixture
def url(tmp_path: Path, database_url: str) -> Any:
    """The database URL as a config would resolve it, migrated."""
    store_for(database_url).dispose()
    return database_url


def test_competing_schedulers_run_a_due_job_once(url):
    runs: list[str] = []
    started = threading.Barrier(4)

    def job_for(owner: str) -> Job:
        def run() -> str:
            runs.append(owner)
            time.sleep(0.3)  # still running while the others look
            return "done"
        return Job("demo", 3600, run)

    stores = [store_for(url) for _ in range(4)]  # each "worker process" its own engine and connections
    schedulers = [Scheduler(s, [job_for(f"w{i}")], f"w{i}", lease=5) for i, s in enumerate(stores)]
    ran: list[list[str]] = [[] for _ in schedulers]

    def tick(index: int) -> None:
        started.wait()
        for _ in range(5):
            ran[index] += schedulers[index].tick()
            time.sleep(0.05)

    threads = [threading.Thread(target=tick, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(runs) == 1 and sum(len(r) for r in ran) == 1
    job = stores[0].scheduled_jobs()["demo"]
    assert job["last_state"] == "ok" and job["last_summary"] == "done" and job["owner"] is None
    assert 3590 < job["next_run_at"] - job["last_started_at"] <= 3600  # due again an interval after it started
    for store in stores:
        store.dispose()


def test_a_failing_job_is_recorded_and_runs_again_when_due(url):
    store = store_for(url)
    calls: list[float] = []

    def boom() -> str:
        calls.append(time.time())
        raise RuntimeError("the API is down")

    scheduler = Scheduler(store, [Job("flaky", 0.3, boom)], "w", lease=5)
    assert scheduler.tick() == ["flaky"] and scheduler.tick() == []
    job = store.scheduled_jobs()["flaky"]
    assert job["last_state"] == "failed" and "RuntimeError: the API is down" in job["last_summary"]
    time.sleep(0.35)
    assert scheduler.tick() == ["flaky"] and len(calls) == 2
    store.dispose()


def test_a_long_job_keeps_its_lease_and_an_expired_one_is_taken_over(tmp_path):
    """SQLite: a running job renews its lease, so nobody else starts it; a holder that stops renewing (it
    died) loses it when the lease runs out, and its late finish changes nothing."""
    url = f"sqlite:///{tmp_path / 'lease.db'}"
    one, two = store_for(url), store_for(url)
    other_ran: list[str] = []
    long = Scheduler(one, [Job("long", 3600, lambda: time.sleep(1.2) or "slow")], "one", lease=0.4)
    rival = Scheduler(two, [Job("long", 3600, lambda: other_ran.append("two") or "x")], "two", lease=0.4)
    thread = threading.Thread(target=long.tick)
    thread.start()
    time.sleep(0.1)
    while thread.is_alive():
        rival.tick()  # the lease (0.4 s) is renewed every 0.13 s: never free
        time.sleep(0.05)
    assert other_ran == [] and one.scheduled_jobs()["long"]["last_summary"] == "slow"

    dead = one.take_job("crash", "dead", lease=0.3)  # taken, never renewed nor finished
    assert dead is not None and two.take_job("crash", "two", lease=0.3) is None
    time.sleep(0.35)
    taken = two.take_job("crash", "two", lease=5)
    assert taken is not None
    assert dead.finish(time.time() + 60, "ok", "late") is False  # no longer its job
    assert taken.finish(time.time() + 60, "ok", "mine") is True
    assert one.scheduled_jobs()["crash"]["last_summary"] == "mine"


HOLDER = textwrap.dedent("""
    import sys, time
    from connector.store import Store
    store = Store(sys.argv[1])
    claim = store.take_job("crashy", "holder", lease=float(sys.argv[2]))
    print("taken" if claim is not None else "refused", flush=True)
    time.sleep(60)
""")

COMPETITOR = textwrap.dedent("""
    import sys, time
    from connector.store import Store
    from connector.worker.schedule import Job, Scheduler
    store, out = Store(sys.argv[1]), sys.argv[2]
    def run():
        with open(out, "a") as f:
            f.write(sys.argv[3] + "\\n")
        time.sleep(0.5)
        return "ran"
    scheduler = Scheduler(store, [Job("shared", 3600, run)], sys.argv[3], lease=5)
    deadline = time.time() + float(sys.argv[4])
    while time.time() < deadline:
        scheduler.tick()
        time.sleep(0.02)
""")


@pytest.mark.slow
def test_worker_processes_run_a_job_once_and_a_killed_holder_hands_it_over(url, tmp_path):
    out = tmp_path / "ran.txt"
    start = time.time()
    procs = [subprocess.Popen([sys.executable, "-c", COMPETITOR, url, str(out), f"p{i}", "4"], cwd=ROOT)
             for i in range(3)]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    assert len(out.read_text().split()) == 1, out.read_text()
    assert time.time() - start < 60

    lease = 2.0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(lease)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "taken"
    store = store_for(url)
    assert store.take_job("crashy", "me", lease=5) is None  # held by a live process
    holder.kill()
    holder.wait()
    killed = time.time()
    claim = wait_for(lambda: store.take_job("crashy", "me", lease=5), timeout=10, interval=0.1)
    waited = time.time() - killed
    if store.is_postgres:
        assert waited < 1.5  # its connection closed: the advisory lock went with it
    else:
        assert waited >= lease - 0.5  # the lease had to run out
    assert claim.finish(time.time() + 60, "ok", "taken over")
    store.dispose()


def test_the_worker_reconciles_on_its_schedule_and_prunes(tmp_path, database_url):
    key = f"key-{uuid.uuid4().hex[:8]}"
    leads = [{**make_lead(n, start=datetime.now(UTC) - timedelta(hours=6)), "id": f"lead_{n:06d}"} for n in range(4)]
    with FakeLeaditioApi(leads, keys={key: True}, rate_limit=5000, window=1) as fake:
        path = write_config(tmp_path, database_url, sources=source_config(
            fake.url, reconcile={"every": "1h", "window": "48h", "grace": "0s"}))
        config = load_config(path, env={**ENV, "LEADITIO_API_KEY": key})
        store = store_for(config.database.url)
        runtime = Runtime(config, store)
        assert [job.name for job in scheduled_jobs(runtime)] == ["reconcile:leaditio", "prune", "retention"]
        stop = threading.Event()
        threads = run_workers(runtime, 1, stop)
        try:
            wait_for(lambda: len(read_jsonl(tmp_path / "leads.jsonl")) == 4, timeout=20)
            wait_for(lambda: "prune" in (jobs := store.scheduled_jobs()) and jobs["prune"]["last_state"] == "ok")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
        (run,) = store.reconcile_runs("leaditio")
        assert run["trigger"] == "schedule" and run["recovered"] == 4 and run["state"] == "ok"
        jobs = store.scheduled_jobs()
        assert jobs["reconcile:leaditio"]["last_summary"] == run["summary"]
        assert jobs["prune"]["last_summary"].startswith("removed 0 events older than 30 days")
        store.dispose()
