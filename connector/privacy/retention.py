"""Retention (POPIA s14): personal data kept no longer than delivery needs, then replaced by markers.

`apply_retention` is the one entry point: `connector db prune` calls it on demand, and the worker's
scheduler once a day (the `retention` job, connector.worker.jobs: one process at a time). An event is erased `privacy.keep_personal_data` after its last delivery finished
(delivered, skipped, superseded), a dead letter `privacy.keep_dead_letters` after it died; never
while a delivery of it is pending.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from connector.runtime import Runtime
from connector.store import Store

log = logging.getLogger("connector.privacy")
DAILY = 86400.0


@dataclass
class RetentionReport:
    events: int
    places: dict[str, int] = field(default_factory=dict)


def apply_retention(runtime_or_store: Runtime | Store, now: float | None = None, *, dry_run: bool = False,
                    keep_personal_data: float | None = None, keep_dead_letters: float | None = None
                    ) -> RetentionReport:
    """Erase what is past its keep; with a bare Store the keeps must be given (they are settings)."""
    now = time.time() if now is None else now
    if isinstance(runtime_or_store, Runtime):
        store, privacy = runtime_or_store.store, runtime_or_store.config.privacy
        keep_personal_data = privacy.keep_personal_data if keep_personal_data is None else keep_personal_data
        keep_dead_letters = privacy.keep_dead_letters if keep_dead_letters is None else keep_dead_letters
    else:
        store = runtime_or_store
    if keep_personal_data is None or keep_dead_letters is None:
        raise ValueError("apply_retention on a bare Store needs keep_personal_data and keep_dead_letters")
    counts = store.privacy.retention(now, keep_personal_data, keep_dead_letters, dry_run=dry_run)
    if not dry_run:
        store.privacy.note_retention_run(now)
    events = counts.pop("events erased", 0)
    return RetentionReport(events, counts)
