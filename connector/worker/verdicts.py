"""What became of one delivery, as the Verdict the store settles: delivered (when, and its speed to
lead), skipped, retried after a backoff, or dead. Each verdict is counted in /metrics and logged, and an
error is redacted before it is stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from connector.backoff import backoff
from connector.config import WorkerConfig
from connector.errors import ConnectorError, Retryable, Skip
from connector.metrics import DELIVERY_OUTCOMES
from connector.store import Claimed, Verdict
from connector.store.schema import DEAD, DELIVERED, PENDING, SKIPPED, STALE
from connector.timeutil import parse_iso

log = logging.getLogger("connector.worker")
Redact = Callable[[str], str]


def written(item: Claimed, now: float | None = None) -> dict[str, float]:
    """When the CRM took `item`, and for a lead's first delivery to the destination its speed to lead: from
    the marketplace's delivery (the lead's `delivered_at`, else the event time) to now, never below 0."""
    now = time.time() if now is None else now
    if item.known:
        return {"written_at": now}
    delivered = item.lead.get("delivered_at")
    start = parse_iso(delivered) if isinstance(delivered, str) else None
    return {"written_at": now, "speed_to_lead": max(0.0, now - (item.occurred_at if start is None else start))}


def failed(item: Claimed, error: ConnectorError | None, settings: WorkerConfig, redactor: Redact) -> Verdict:
    """A failed delivery's verdict: skipped, retried after a backoff (or when the CRM said), or dead once
    retrying has gone on past `retry_horizon` or the error is permanent."""
    assert error is not None
    if isinstance(error, Skip):
        return verdict(item, SKIPPED, redactor, error=error.describe(), code=error.code)
    if isinstance(error, Retryable):
        now = time.time()
        first = item.first_failed_at or now
        attempts = item.attempts + 1
        if now - first >= settings.retry_horizon:
            return verdict(item, DEAD, redactor, error=f"gave up after {attempts} attempts: {error.describe()}",
                           code=error.code, attempts=attempts, first_failed_at=first)
        wait = backoff(attempts, settings.backoff_base, settings.backoff_max)
        if error.retry_after is not None:
            wait = max(error.retry_after, 0.0)
        return verdict(item, PENDING, redactor, error=error.describe(), code=error.code, attempts=attempts,
                       first_failed_at=first, next_attempt_at=now + wait)
    return verdict(item, DEAD, redactor, error=error.describe(), code=error.code, attempts=item.attempts + 1)


def verdict(item: Claimed, state: str, redactor: Redact, *, error: str | None = None, code: str | None = None,
            **extra: Any) -> Verdict:
    """Counted in /metrics and logged; the error stored is redacted (`status` and `deadletters` show it)."""
    DELIVERY_OUTCOMES.labels(item.destination, "retry" if state == PENDING else state).inc()
    log.log(logging.INFO if state in (DELIVERED, SKIPPED, STALE) else logging.WARNING,
            "delivery %s of %s (%s) to %s: %s%s", item.delivery_id, item.lead_key, item.event_type,
            item.destination, state if state != PENDING else "will retry", f": {error}" if error else "",
            extra={"delivery_id": item.delivery_id, "event_id": item.event_id, "lead_key": item.lead_key,
                   "event_type": item.event_type, "destination": item.destination,
                   "outcome": "retry" if state == PENDING else state})
    if error is None:
        return Verdict(item, state, **extra)
    # stored, and shown by `status` and `deadletters`: no secret, email or phone
    return Verdict(item, state, last_error=redactor(error)[:4000], last_error_code=(code or "")[:100] or None,
                   **extra)
