"""The Store's methods for reconcile runs and the scheduled jobs' rows (`status`, alerts, the console).

Bound in the Store's class body (`Store.reconcile_runs` is `reconciles.reconcile_runs`), each is one
transaction around the SQL in runs.py; taking a job (the lock) is joblock.py's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connector.store import runs

if TYPE_CHECKING:
    from connector.store import Store


def start_reconcile_run(store: Store, source: str, trigger: str, window_from: float, window_to: float) -> int:
    with store._tx() as conn:
        return runs.start_run(conn, source, trigger, window_from, window_to)


def finish_reconcile_run(store: Store, run_id: int, **outcome: Any) -> None:
    """`outcome`: listed, missing, recovered, state, error (redacted), summary, missing_ids."""
    with store._tx() as conn:
        runs.finish_run(conn, run_id, **outcome)


def reconcile_runs(store: Store, source: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The newest reconcile runs first (of one source, or all): for `status`, alerts and a console."""
    with store._tx() as conn:
        return runs.recent_runs(conn, source, limit)


def latest_reconcile_runs(store: Store, finished: bool = False) -> dict[str, dict[str, Any]]:
    with store._tx() as conn:
        return runs.latest_runs(conn, finished)


def reconcile_recovered_totals(store: Store) -> dict[str, int]:
    with store._tx() as conn:
        return runs.recovered_totals(conn)


def scheduled_jobs(store: Store) -> dict[str, dict[str, Any]]:
    with store._tx() as conn:
        return runs.jobs(conn)
