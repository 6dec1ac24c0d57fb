"""A small scheduler inside the worker: jobs that run every so often, each by one process at a time.

Any number of worker processes, on any number of machines, run a `Scheduler` thread; the store decides
who runs a due job (`Store.take_job`: a PostgreSQL advisory lock, or on SQLite a lease row taken by
compare and set and renewed while the job runs), and records when it is next due. So each job runs once
per interval across them all, and a process that dies mid-run hands it over: on PostgreSQL at once (its
connection closes), on SQLite when its lease runs out.

The jobs themselves are listed in `connector.worker.jobs`; adding one is a `Job` there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from connector.store import JobClaim, Store

log = logging.getLogger("connector.schedule")
LEASE = 120.0  # SQLite: seconds a run is ours without renewal (renewed every third of it while running)
POLL = 5.0  # seconds between looks for due jobs


@dataclass(frozen=True)
class Job:
    """`run` does the work and returns one line for `status` (no personal data); raising marks it failed."""

    name: str  # unique: the key of its row in scheduled_jobs, e.g. "reconcile:leaditio"
    every: float  # seconds from the start of one run to the start of the next
    run: Callable[[], str]


class Scheduler:
    def __init__(self, store: Store, jobs: Sequence[Job], owner: str, *, lease: float = LEASE, poll: float = POLL,
                 redact: Callable[[str], str] = str):
        self.store, self.jobs, self.owner = store, list(jobs), owner
        self.lease, self.poll, self.redact = lease, poll, redact
        self._database_down = False

    def tick(self) -> list[str]:
        """Run every job that is due and that no other process runs; the names of those run here."""
        ran = []
        for job in self.jobs:
            claim = self.store.take_job(job.name, self.owner, self.lease)
            if claim is not None:
                self._run(job, claim)
                ran.append(job.name)
        return ran

    def _run(self, job: Job, claim: JobClaim) -> None:
        done = threading.Event()
        keeper = threading.Thread(target=self._keep, args=(job, claim, done), name=f"lease-{job.name}", daemon=True)
        keeper.start()
        try:
            summary, state = job.run(), "ok"
            log.info("scheduled job %s done: %s", job.name, summary)
        except Exception as exc:
            summary, state = self.redact(f"{type(exc).__name__}: {exc}")[:500], "failed"
            log.exception("scheduled job %s failed; it runs again in %.0fs", job.name, job.every)
        finally:
            done.set()
            keeper.join()
        if not claim.finish(claim.taken_at + job.every, state, summary):
            log.warning("scheduled job %s ran longer than its lease: another worker may have run it too", job.name)

    def _keep(self, job: Job, claim: JobClaim, done: threading.Event) -> None:
        """Renew the claim every third of the lease while the job runs."""
        while not done.wait(self.lease / 3):
            try:
                if not claim.renew():
                    log.warning("scheduled job %s: lost its lease (it ran too long or the database was away)",
                                job.name)
                    return
            except Exception as exc:
                log.warning("scheduled job %s: could not renew its lease: %s", job.name, type(exc).__name__)

    def run(self, stop: threading.Event) -> None:
        """The scheduler thread: look for due jobs every `poll` seconds until `stop`; never raises."""
        while not stop.is_set():
            try:
                self.tick()
                if self._database_down:
                    log.warning("database reachable again; scheduled jobs resume")
                    self._database_down = False
            except self.store.database_errors as exc:
                if not self._database_down:
                    cause = getattr(exc, "orig", None) or exc
                    log.error("database unavailable (%s); scheduled jobs wait", type(cause).__name__)
                    self._database_down = True
            except Exception:
                log.exception("the scheduler failed unexpectedly; trying again")
            stop.wait(self.poll)


__all__ = ["LEASE", "POLL", "Job", "Scheduler"]
