"""The worker: claims due deliveries, maps them, hands them to their destination, settles the result.

This is the only place that retries, pauses a destination or dead-letters a lead; destinations
and API clients only say what happened (connector.errors).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from connector.backoff import backoff
from connector.destinations import Destination
from connector.errors import (
    ConfigError,
    ConfigProblem,
    ConnectorError,
    Paced,
    Permanent,
    RateLimited,
    Retryable,
)
from connector.lead import mapping_input
from connector.mapping import Mapping
from connector.metrics import DELIVERY_OUTCOMES, SPEED_TO_LEAD
from connector.notify import Landed
from connector.records import MappedRecord, OutboundRecord, Outcome, field_decisions
from connector.runtime import Runtime
from connector.store import Claimed, Verdict
from connector.store.schema import DELIVERED, PENDING, STALE
from connector.store.wakeup import watch
from connector.timeutil import iso
from connector.worker import verdicts
from connector.worker.jobs import scheduled_jobs
from connector.worker.schedule import Scheduler
from connector.worker.verdicts import written

log = logging.getLogger("connector.worker")
OUTAGE = "outage"  # the pause kind of a destination whose deliveries keep failing (the circuit breaker)


@dataclass
class Work:
    """A claimed batch for one destination, and what delivering it needs."""

    destination: str
    mapping: Mapping
    items: list[Claimed]
    superseded: int  # settled stale by the claim
    resumed: bool  # a pause ran out just before: a success lifts it


class Worker:
    def __init__(self, runtime: Runtime, owner: str | None = None):
        self.runtime = runtime
        self.config = runtime.config
        self.store = runtime.store
        self.redactor = runtime.redactor
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._destinations: dict[str, Destination] = {}
        self._database_down = False
        self._last_failure: dict[str, str] = {}
        self._rest_until: dict[str, float] = {}  # destination -> when its shared rate budget has room again

    # --- one batch ------------------------------------------------------------------
    def run_once(self, name: str) -> int:
        """Deliver one batch to destination `name`; returns how many deliveries were settled."""
        work = self.take(name)
        return self.deliver(work) if work is not None else 0

    def take(self, name: str) -> Work | None:
        """Claim a batch for `name`: none while it is paused, one delivery (a probe) after an outage pause."""
        if self._resting(name):
            return None
        pause = self.store.pauses().get(name)
        if pause and pause["until"] > time.time():
            return None
        try:
            mapping = self.runtime.mapping(name)
        except ConfigError as exc:
            self._pause(name, self.config.worker.config_retry, "config", f"mapping error: {exc}")
            return None
        probing = bool(pause) and pause["kind"] == OUTAGE
        limit = 1 if probing else self.runtime.batch_size(name)
        batch = self.store.claim(name, limit, self.owner, self.config.worker.lease)
        for item in batch.superseded:
            DELIVERY_OUTCOMES.labels(name, STALE).inc()
            log.info("delivery %s of %s to %s: stale: event %s of this lead is newer (%s)", item.delivery_id,
                     item.lead_key, name, item.newer_event_id, item.reason,
                     extra={"delivery_id": item.delivery_id, "lead_key": item.lead_key, "destination": name,
                            "outcome": STALE})
        if not batch.claimed and not batch.superseded:
            return None
        return Work(name, mapping, batch.claimed, len(batch.superseded), resumed=pause is not None)

    def deliver(self, work: Work) -> int:
        """Map each lead on its own, send what mapped, settle every verdict; one lead's failure is its own."""
        verdicts: list[Verdict] = []
        records: list[OutboundRecord] = []
        by_id: dict[int, Claimed] = {c.delivery_id: c for c in work.items}
        fields: dict[int, dict[str, dict[str, str]]] = {}
        for item in work.items:
            try:
                mapped = self._map(item, work.mapping)
                fields[item.delivery_id] = field_decisions(mapped, item.known)
                records.append(self._address(item, mapped))
            except Permanent as exc:
                verdicts.append(self._failed(item, exc))
            except Exception as exc:  # a transform bug, say: only this lead waits for a fix, as a dead letter
                verdicts.append(self._failed(item, Permanent(
                    f"mapping {work.mapping.path.name} could not map this lead: {type(exc).__name__}: "
                    f"{self.redactor(str(exc))[:300]}", code="mapping_error")))
        if records:
            verdicts.extend(self._send(work, records, by_id))
        # the attempt history's summary of the request: names and decisions, never the lead's values
        verdicts = [dataclasses.replace(v, summary={
            "batch": len(records), "update": v.item.known, "mapping": work.mapping.path.name,
            "fields": fields.get(v.item.delivery_id, {})}) for v in verdicts]
        applied = self.store.settle(self.owner, verdicts)
        self._landed(work.destination, [v for v in verdicts if v.state == DELIVERED and v.item.delivery_id in applied])
        return len(work.items) + work.superseded

    def _landed(self, name: str, delivered: list[Verdict]) -> None:
        """After settling: a new lead's speed to lead into /metrics and its notice queued (connector.notify);
        neither can fail or hold up the delivery."""
        notifier = self.runtime.notifier
        for verdict in delivered:
            if verdict.speed_to_lead is None:
                continue  # an update: the lead landed before
            SPEED_TO_LEAD.labels(verdict.item.source, name).observe(verdict.speed_to_lead)
            if notifier is None:
                continue
            try:
                notifier.landed(Landed(verdict.item, verdict.crm_id, verdict.speed_to_lead,
                                       self._destination(name).record_url))
            except Exception:
                log.exception("queueing the speed-to-lead notice of delivery %s failed", verdict.item.delivery_id)

    def _map(self, item: Claimed, mapping: Mapping) -> MappedRecord:
        marketplace = self.config.sources[item.source].marketplace if item.source in self.config.sources else ""
        return mapping.apply(mapping_input(item.lead, source=item.source, event=item.event_type,
                                           marketplace=marketplace))

    @staticmethod
    def _address(item: Claimed, mapped: MappedRecord) -> OutboundRecord:
        return OutboundRecord(delivery_id=item.delivery_id, lead_key=item.lead_key, event_type=item.event_type,
                              values=mapped.values, policies=mapped.policies, known=item.known, crm_id=item.crm_id,
                              background=item.origin != "webhook")

    def _call(self, name: str, records: list[OutboundRecord]) -> list[Outcome]:
        """One Outcome per record. A batch that raises unexpectedly is split in halves, sent again, until
        the record behind it stands alone: the rest of the batch is delivered, that one retries."""
        try:
            outcomes = self._destination(name).send(records)
        except ConnectorError as exc:
            return [Outcome(r.delivery_id, error=exc) for r in records]
        except self.store.database_errors:  # the rate budget could not be read: the database is down
            raise
        except Exception as exc:  # a bug or an unexpected library error: keep the leads, find the one
            if len(records) > 1:
                log.warning("destination %s failed unexpectedly on a batch of %d (%s); sending it in halves to "
                            "find the lead behind it", name, len(records), type(exc).__name__)
                half = len(records) // 2
                return self._call(name, records[:half]) + self._call(name, records[half:])
            log.error("destination %s failed unexpectedly on delivery %s: %s: %s", name, records[0].delivery_id,
                      type(exc).__name__, exc)
            log.debug("the failure in full", exc_info=True)
            return [Outcome(records[0].delivery_id, error=Retryable(
                f"unexpected error: {type(exc).__name__}: {self.redactor(str(exc))[:500]}", code="unexpected"))]
        answered = {o.delivery_id for o in outcomes}
        return outcomes + [Outcome(r.delivery_id, error=Retryable("the destination gave no result for this record"))
                           for r in records if r.delivery_id not in answered]

    def _send(self, work: Work, records: list[OutboundRecord], by_id: dict[int, Claimed]) -> list[Verdict]:
        name = work.destination
        outcomes = self._call(name, records)
        verdicts = []
        paused = False
        for outcome in outcomes:
            item = by_id[outcome.delivery_id]
            if isinstance(outcome.error, Paced):  # nothing was sent: give it back, rest until the budget has room
                wait = outcome.error.retry_after or 0.0
                self._rest(name, wait)
                self.store.release(self.owner, [item.delivery_id], time.time() + wait)
            elif outcome.ok:
                verdicts.append(self._verdict(item, DELIVERED, crm_id=outcome.crm_id, **written(item)))
            elif isinstance(outcome.error, ConfigProblem | RateLimited) and (
                    isinstance(outcome.error, ConfigProblem) or outcome.error.pause_destination):
                if not paused:
                    self._pause_for(name, outcome.error)
                    paused = True
                self.store.release(self.owner, [item.delivery_id], time.time())
            else:
                verdicts.append(self._failed(item, outcome.error))
        outcomes = [o for o in outcomes if not isinstance(o.error, Paced)]
        if any(o.ok for o in outcomes):
            if self.store.record_success(name):
                log.warning("destination %s answers again: delivering at full speed", name)
            if work.resumed and not paused:
                self.store.unpause(name)  # the problem behind the (expired) pause is gone
        else:
            self._note_failures(name, outcomes, verdicts)
        return verdicts

    def _note_failures(self, name: str, outcomes: list[Outcome], verdicts: list[Verdict]) -> None:
        """Transient failures in a row make a destination failing; past the threshold it is paused and
        probed with one delivery at a time (a circuit breaker), with growing waits, until it answers."""
        transient = [o.error for o in outcomes if isinstance(o.error, Retryable) and not isinstance(o.error, RateLimited)]
        if not transient:
            return
        retries = [v.next_attempt_at for v in verdicts if v.state == PENDING and v.next_attempt_at is not None]
        last = self.redactor(transient[-1].describe())
        health = self.store.record_failures(name, len(transient), last, min(retries, default=None))
        threshold = self.config.worker.breaker_threshold
        if health["failures"] < threshold:
            return
        wait = backoff(health["failures"] - threshold + 1, self.config.worker.backoff_base,
                       self.config.worker.backoff_max)
        was_open = (self.store.pauses().get(name) or {}).get("kind") == OUTAGE
        if not was_open:
            log.error("destination %s failing since %s (%d failures in a row, last: %s): paused, then probed with "
                      "one delivery at a time until it answers", name, iso(health["failing_since"]),
                      health["failures"], last)
        self.store.pause(name, time.time() + wait, OUTAGE,
                         f"{health['failures']} failures in a row; probing with one delivery; last: {last}")
        self.store.set_next_try(name, time.time() + wait)

    # --- verdicts (verdicts.py) -------------------------------------------------------
    def _failed(self, item: Claimed, error: ConnectorError | None) -> Verdict:
        return verdicts.failed(item, error, self.config.worker, self.redactor)

    def _verdict(self, item: Claimed, state: str, **extra: Any) -> Verdict:
        return verdicts.verdict(item, state, self.redactor, **extra)

    def _pause_for(self, name: str, error: ConnectorError) -> None:
        if isinstance(error, RateLimited):
            wait = error.retry_after if error.retry_after is not None else self.config.worker.config_retry
            self._pause(name, wait, "rate_limit", error.describe())
        else:
            self._pause(name, self.config.worker.config_retry, "config", error.describe())

    def _pause(self, name: str, seconds: float, kind: str, reason: str) -> None:
        reason = self.redactor(reason)  # stored and shown by `status`: a CRM's 401 may quote the token
        log.error("destination %s paused for %.0fs (%s): %s", name, seconds, kind, reason,
                  extra={"destination": name, "outcome": "paused"})
        self.store.pause(name, time.time() + seconds, kind, reason)

    # --- resting while the shared rate budget is spent (connector.pacing) ---------------
    def _rest(self, name: str, seconds: float) -> None:
        self._rest_until[name] = max(self._rest_until.get(name, 0.0), time.time() + seconds)

    def _resting(self, name: str) -> bool:
        """The destination's budget said when it has room again: until then, no claim, no database."""
        return self._rest_until.get(name, 0.0) > time.time()

    def _idle_wait(self) -> float:
        """How long to sleep when no destination had work: the poll interval, or less if a rest ends first."""
        now = time.time()
        ends = [until - now for until in self._rest_until.values() if until > now]
        return max(0.001, min([self.config.worker.poll_interval, *ends]))

    def _destination(self, name: str) -> Destination:
        if name not in self._destinations:
            self._destinations[name] = self.runtime.destination(name)
        return self._destinations[name]

    # --- loops -----------------------------------------------------------------------
    def round(self, names: list[str]) -> int:
        """One pass over the destinations; never raises. With the database down it says so once, and
        once more when it is back, instead of a traceback per poll."""
        busy = 0
        for name in names:
            try:
                busy += self.run_once(name)
            except self.store.database_errors as exc:
                if not self._database_down:
                    cause = getattr(exc, "orig", None) or exc
                    log.error("database unavailable (%s: %s); deliveries wait until it answers",
                              type(cause).__name__, (str(cause).splitlines() or [""])[0])
                    self._database_down = True
                return 0
            except Exception as exc:  # a bug: this destination waits, the others go on
                text = f"{type(exc).__name__}: {exc}"
                if text != self._last_failure.get(name):
                    log.exception("delivering to %s failed unexpectedly; trying again", name)
                    self._last_failure[name] = text
                continue
            self._last_failure.pop(name, None)
        self._check_alerts()
        if self._database_down:
            log.warning("database reachable again; delivering")
            self._database_down = False
        return busy

    def _check_alerts(self) -> None:
        """Every `alerts.check_interval`, one thread per process compares the store with the states last
        alerted (connector.alerts); a failure here never stops delivery."""
        alerter = self.runtime.alerter
        if alerter is None or self._database_down:
            return
        try:
            alerter.maybe_check()
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if text != self._last_failure.get("alerts"):
                log.exception("checking alerts failed; trying again at the next check")
                self._last_failure["alerts"] = text

    def drain(self, destinations: Iterable[str] | None = None, timeout: float = 60.0) -> None:
        """Deliver until nothing falls due within `timeout` (tests, benchmarks, `worker --drain`)."""
        names = list(destinations or self.config.destinations)
        deadline = time.monotonic() + timeout
        wall_deadline = time.time() + timeout
        while time.monotonic() < deadline:
            if self.round(names) == 0:
                if self.store.due_count(names, before=wall_deadline) == 0:
                    return
                time.sleep(max(0.02, self._idle_wait()) if self._rest_until else 0.02)

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop`; idle, wait for the store's doorbell (a new delivery) or the next poll."""
        names = list(self.config.destinations)
        doorbell = self.store.doorbell
        while not stop.is_set():
            seen = doorbell.rings  # noted before the round: a ring during it is not missed
            if self.round(names) or stop.is_set():
                continue
            if self.config.worker.instant_wakeup:
                doorbell.wait(seen, self._idle_wait())
            else:
                stop.wait(self._idle_wait())
        self.close()

    def close(self) -> None:
        for destination in self._destinations.values():
            destination.close()


def run_workers(runtime: Runtime, threads: int, stop: threading.Event) -> list[threading.Thread]:
    """Start `threads` workers in this process, each with its own destination clients, and the scheduler
    thread for the scheduled jobs (reconcile, prune; connector.worker.jobs), if any are configured. They
    wake for new deliveries through the store's doorbell (and, on PostgreSQL, one LISTEN connection per
    process)."""
    base = f"{socket.gethostname()}:{os.getpid()}"
    watch(stop, runtime.store.doorbell)
    listener = runtime.store.listener() if runtime.config.worker.instant_wakeup else None
    if listener is not None:
        listener.start(stop)
    started = []
    for index in range(threads):
        worker = Worker(runtime, owner=f"{base}:{index}:{uuid.uuid4().hex[:4]}")
        thread = threading.Thread(target=worker.run, args=(stop,), name=f"worker-{index}", daemon=True)
        thread.start()
        started.append(thread)
    jobs = scheduled_jobs(runtime)
    if jobs:
        scheduler = Scheduler(runtime.store, jobs, f"{base}:scheduler:{uuid.uuid4().hex[:4]}",
                              redact=runtime.redactor)
        thread = threading.Thread(target=scheduler.run, args=(stop,), name="scheduler", daemon=True)
        thread.start()
        started.append(thread)
    return started


def drain_workers(runtime: Runtime, threads: int, timeout: float) -> None:
    """`worker --drain` with `threads` workers, each draining until nothing falls due (see Worker.drain)."""
    base = f"{socket.gethostname()}:{os.getpid()}"
    workers = [Worker(runtime, owner=f"{base}:{index}:{uuid.uuid4().hex[:4]}") for index in range(threads)]
    running = [threading.Thread(target=w.drain, kwargs={"timeout": timeout}, name=f"drain-{i}", daemon=True)
               for i, w in enumerate(workers)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    for worker in workers:
        worker.close()


__all__ = ["Worker", "drain_workers", "run_workers"]
