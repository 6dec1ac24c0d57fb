"""The worker: claims due deliveries, maps them, hands them to their destination, settles the result.

This is the only place that retries, pauses a destination or dead-letters a lead; destinations
and API clients only say what happened (connector.errors).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from connector.config import Config
from connector.destinations import Destination, OutboundRecord, Outcome
from connector.errors import (
    ConfigError,
    ConfigProblem,
    ConnectorError,
    Permanent,
    RateLimited,
    Retryable,
    Skip,
)
from connector.lead import mapping_input
from connector.mapping import Mapping
from connector.metrics import DELIVERY_OUTCOMES
from connector.store import Claimed, Store
from connector.store.schema import DEAD, DELIVERED, PENDING, SKIPPED, STALE

log = logging.getLogger("connector.worker")


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: ~base, 2*base, 4*base ... up to cap, each scaled by 0.5-1.0."""
    return min(cap, base * 2 ** max(0, attempt - 1)) * random.uniform(0.5, 1.0)


class MappingCache:
    """Reloads a destination's mapping when its file changes, so a fix resumes delivery by itself."""

    def __init__(self, config: Config, name: str):
        self.config, self.name = config, name
        self._stamp: tuple[float, int] | None = None
        self._result: Mapping | ConfigError | None = None

    def get(self) -> Mapping:
        path = self.config.resolve(self.config.destinations[self.name].mapping or "")
        try:
            stat = os.stat(path)
            stamp: tuple[float, int] | None = (stat.st_mtime, stat.st_size)
        except OSError:
            stamp = None
        if stamp is None or stamp != self._stamp:
            try:
                self._result = self.config.load_mapping(self.name)
            except ConfigError as exc:
                self._result = exc
            self._stamp = stamp
        if isinstance(self._result, ConfigError):
            raise self._result
        assert self._result is not None
        return self._result


class Worker:
    def __init__(self, config: Config, store: Store, owner: str | None = None):
        self.config = config
        self.store = store
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._destinations: dict[str, Destination] = {}
        self._mappings = {name: MappingCache(config, name) for name in config.destinations}

    # --- one batch ------------------------------------------------------------------
    def run_once(self, name: str) -> int:
        """Deliver one batch to destination `name`; returns how many deliveries were settled."""
        pause = self.store.pauses().get(name)
        if pause and pause["until"] > time.time():
            return 0
        try:
            mapping = self._mappings[name].get()
        except ConfigError as exc:
            self._pause(name, self.config.worker.config_retry, "config", f"mapping error: {exc}")
            return 0
        claimed = self.store.claim(name, self.config.batch_size(name), self.owner, self.config.worker.lease)
        if not claimed:
            return 0
        known = self.store.lead_states(name, [c.lead_key for c in claimed])
        verdicts: list[dict[str, Any]] = []
        records: list[OutboundRecord] = []
        by_id: dict[int, Claimed] = {c.delivery_id: c for c in claimed}
        for item in claimed:
            applied = known.get(item.lead_key)
            if applied and not item.force and item.occurred_at < applied[0]:
                verdicts.append(self._verdict(item, STALE, error="an event newer than this one was already applied"))
                continue
            try:
                records.append(self._record(item, mapping, applied))
            except Permanent as exc:
                verdicts.append(self._failed(item, exc))
        if records:
            verdicts.extend(self._send(name, records, by_id, was_paused=pause is not None))
        self.store.settle(self.owner, [v for v in verdicts if v])
        return len(claimed)

    def _record(self, item: Claimed, mapping: Mapping, applied: tuple[float, str | None] | None) -> OutboundRecord:
        marketplace = self.config.sources[item.source].marketplace if item.source in self.config.sources else ""
        mapped = mapping.apply(mapping_input(item.lead, source=item.source, event=item.event_type,
                                             marketplace=marketplace))
        return OutboundRecord(delivery_id=item.delivery_id, lead_key=item.lead_key, event_type=item.event_type,
                              values=mapped.values, policies=mapped.policies, known=applied is not None,
                              crm_id=applied[1] if applied else None)

    def _send(self, name: str, records: list[OutboundRecord], by_id: dict[int, Claimed],
              was_paused: bool) -> list[dict[str, Any]]:
        try:
            outcomes = self._destination(name).send(records)
        except ConnectorError as exc:
            outcomes = [Outcome(r.delivery_id, error=exc) for r in records]
        except Exception as exc:  # a bug or an unexpected library error: keep the lead, retry later
            log.exception("destination %s failed unexpectedly", name)
            outcomes = [Outcome(r.delivery_id, error=Retryable(f"unexpected error: {type(exc).__name__}: {exc}"))
                        for r in records]
        answered = {o.delivery_id for o in outcomes}
        outcomes += [Outcome(r.delivery_id, error=Retryable("the destination gave no result for this record"))
                     for r in records if r.delivery_id not in answered]
        verdicts = []
        paused = False
        for outcome in outcomes:
            item = by_id[outcome.delivery_id]
            if outcome.ok:
                verdicts.append(self._verdict(item, DELIVERED, crm_id=outcome.crm_id))
            elif isinstance(outcome.error, ConfigProblem | RateLimited) and (
                    isinstance(outcome.error, ConfigProblem) or outcome.error.pause_destination):
                if not paused:
                    self._pause_for(name, outcome.error)
                    paused = True
                self.store.release(self.owner, [item.delivery_id], time.time())
            else:
                verdicts.append(self._failed(item, outcome.error))
        if was_paused and not paused and any(o.ok for o in outcomes):
            self.store.unpause(name)  # the problem behind the (expired) pause is gone
        return verdicts

    # --- verdicts ---------------------------------------------------------------------
    def _failed(self, item: Claimed, error: ConnectorError | None) -> dict[str, Any]:
        assert error is not None
        if isinstance(error, Skip):
            return self._verdict(item, SKIPPED, error=error.describe(), code=error.code)
        if isinstance(error, Retryable):
            now = time.time()
            first = item.first_failed_at or now
            attempts = item.attempts + 1
            if now - first >= self.config.worker.retry_horizon:
                return self._verdict(item, DEAD, error=f"gave up after {attempts} attempts: {error.describe()}",
                                     code=error.code, attempts=attempts, first_failed_at=first)
            wait = backoff(attempts, self.config.worker.backoff_base, self.config.worker.backoff_max)
            if error.retry_after is not None:
                wait = max(error.retry_after, 0.0)
            return self._verdict(item, PENDING, error=error.describe(), code=error.code, attempts=attempts,
                                 first_failed_at=first, next_attempt_at=now + wait)
        return self._verdict(item, DEAD, error=error.describe(), code=error.code, attempts=item.attempts + 1)

    def _verdict(self, item: Claimed, state: str, *, error: str | None = None, code: str | None = None,
                 **extra: Any) -> dict[str, Any]:
        DELIVERY_OUTCOMES.labels(item.destination, "retry" if state == PENDING else state).inc()
        log.log(logging.INFO if state in (DELIVERED, SKIPPED, STALE) else logging.WARNING,
                "delivery %s of %s (%s) to %s: %s%s", item.delivery_id, item.lead_key, item.event_type,
                item.destination, state if state != PENDING else "will retry", f": {error}" if error else "")
        verdict: dict[str, Any] = {"delivery_id": item.delivery_id, "state": state, "destination": item.destination,
                                   "lead_key": item.lead_key, "occurred_at": item.occurred_at,
                                   "event_id": item.event_id, **extra}
        if error is not None:  # stored, and shown by `status` and `deadletters`: no secret, email or phone
            verdict.update(last_error=self.config.redactor(error)[:4000], last_error_code=(code or "")[:100] or None)
        return verdict

    def _pause_for(self, name: str, error: ConnectorError) -> None:
        if isinstance(error, RateLimited):
            wait = error.retry_after if error.retry_after is not None else self.config.worker.config_retry
            self._pause(name, wait, "rate_limit", error.describe())
        else:
            self._pause(name, self.config.worker.config_retry, "config", error.describe())

    def _pause(self, name: str, seconds: float, kind: str, reason: str) -> None:
        reason = self.config.redactor(reason)  # stored and shown by `status`: a CRM's 401 may quote the token
        log.error("destination %s paused for %.0fs (%s): %s", name, seconds, kind, reason)
        self.store.pause(name, time.time() + seconds, kind, reason)

    def _destination(self, name: str) -> Destination:
        if name not in self._destinations:
            self._destinations[name] = self.config.build_destination(name)
        return self._destinations[name]

    # --- loops -----------------------------------------------------------------------
    def drain(self, destinations: Iterable[str] | None = None, timeout: float = 60.0) -> None:
        """Deliver until nothing falls due within `timeout` (tests, benchmarks, `worker --drain`)."""
        names = list(destinations or self.config.destinations)
        deadline = time.monotonic() + timeout
        wall_deadline = time.time() + timeout
        while time.monotonic() < deadline:
            if sum(self.run_once(n) for n in names) == 0:
                if self.store.due_count(names, before=wall_deadline) == 0:
                    return
                time.sleep(0.02)

    def run(self, stop: threading.Event) -> None:
        names = list(self.config.destinations)
        while not stop.is_set():
            try:
                busy = sum(self.run_once(n) for n in names)
            except Exception:  # the database went away, say: keep the worker alive and try again
                log.exception("worker loop failed; retrying")
                busy = 0
            if not busy:
                stop.wait(self.config.worker.poll_interval)
        self.close()

    def close(self) -> None:
        for destination in self._destinations.values():
            destination.close()


def run_workers(config: Config, store: Store, threads: int, stop: threading.Event) -> list[threading.Thread]:
    """Start `threads` workers in this process; each has its own destination clients."""
    base = f"{socket.gethostname()}:{os.getpid()}"
    started = []
    for index in range(threads):
        worker = Worker(config, store, owner=f"{base}:{index}:{uuid.uuid4().hex[:4]}")
        thread = threading.Thread(target=worker.run, args=(stop,), name=f"worker-{index}", daemon=True)
        thread.start()
        started.append(thread)
    return started


__all__ = ["Worker", "backoff", "run_workers"]
