"""The jobs the worker runs on its scheduler (connector.worker.schedule): one line each to add another.

- `reconcile:<source>`: for each source with `reconcile: {every, window, grace}`, a reconcile run
  (connector.backfill.reconcile) over the window.
- `prune`: `db prune` every `worker.prune_every` (events older than `server.dedupe_days`).
- `retention`: once a day, personal data past `privacy.keep_personal_data` / `keep_dead_letters`
  replaced by markers (connector.privacy.retention; POPIA s14).
"""

from __future__ import annotations

from functools import partial

from connector.backfill.reconcile import Reconcile
from connector.config import ReconcileConfig
from connector.privacy.retention import apply_retention
from connector.runtime import Runtime
from connector.worker.schedule import Job

RETENTION_EVERY = 86400.0


def scheduled_jobs(runtime: Runtime) -> list[Job]:
    config = runtime.config
    jobs = [Job(f"reconcile:{name}", source.reconcile.every, partial(reconcile, runtime, name, source.reconcile))
            for name, source in config.sources.items() if source.reconcile is not None]
    if config.worker.prune_every:
        jobs.append(Job("prune", config.worker.prune_every, partial(prune, runtime)))
    jobs.append(Job("retention", RETENTION_EVERY, partial(retention, runtime)))
    return jobs


def reconcile(runtime: Runtime, source: str, settings: ReconcileConfig) -> str:
    api = runtime.marketplaces[source].api()
    try:
        gap = Reconcile(runtime, source, api, window=settings.window, grace=settings.grace,
                        trigger="schedule").reconcile()
    finally:
        api.close()
    if gap.error:
        raise RuntimeError(gap.summary())  # recorded as failed; the run itself is in reconcile_runs
    return gap.summary()


def prune(runtime: Runtime) -> str:
    days = runtime.config.server.dedupe_days
    removed = runtime.store.prune(days * 86400)
    return f"removed {removed} events older than {days} days"


def retention(runtime: Runtime) -> str:
    report = apply_retention(runtime)
    places = ", ".join(f"{place}: {n}" for place, n in report.places.items() if n)
    return f"personal data of {report.events} events replaced by markers" + (f" ({places})" if places else "")
