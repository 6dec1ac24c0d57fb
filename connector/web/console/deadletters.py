"""Console pages about dead letters: filtered by destination, error code and date, and retried.

A retry is two steps: the chosen dead letters go to a confirmation page that says how many will be
sent again (those still dead), and only its own form requeues them (`Store.requeue`, the same call
as `connector deadletters retry`), each due now with a fresh attempt count.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import flash, redirect, render_template, request, url_for

from connector.store.schema import DEAD
from connector.web.console import bp, runtime

LISTED = 200
CHOSEN_MAX = LISTED  # a retry takes at most the dead letters one page lists


def _day(text: str | None, *, end: bool = False) -> float | None:
    """`2026-05-20` -> the start of that day in UTC (of the next day for an `until`), or None."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        return None
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return (start + timedelta(days=1) if end else start).timestamp()


def _filters() -> dict[str, str]:
    return {key: request.args.get(key, "").strip() for key in ("destination", "error_code", "since", "until")}


def _ids(values: list[str]) -> list[int]:
    return sorted({int(v) for v in values if v.isdigit()})[:CHOSEN_MAX]


@bp.get("/deadletters")
def deadletters() -> Any:
    rt = runtime()
    chosen = _filters()
    problems = [f"{key} is not a date (YYYY-MM-DD)" for key in ("since", "until")
                if chosen[key] and _day(chosen[key]) is None]
    rows = rt.store.deliveries_query(
        state=DEAD, destination=chosen["destination"] or None, limit=LISTED,
        error_codes=[chosen["error_code"]] if chosen["error_code"] else (),
        since=_day(chosen["since"]), until=_day(chosen["until"], end=True))
    for row in rows:
        row["last_error"] = rt.redactor(row["last_error"] or "")
    return render_template("console/deadletters.html", rows=rows, chosen=chosen, problems=problems,
                           destinations=list(rt.config.destinations), listed=LISTED)


@bp.post("/deadletters/retry")
def retry() -> Any:
    """The confirmation: how many of the chosen ones are still dead, and so will go."""
    which = "listed" if request.form.get("which") == "all" else "id"
    ids = _ids(request.form.getlist(which))
    still_dead = [row for row in (runtime().store.delivery(i) for i in ids) if row and row["state"] == DEAD]
    by_destination: dict[str, int] = {}
    for row in still_dead:
        by_destination[row["destination"]] = by_destination.get(row["destination"], 0) + 1
    return render_template("console/retry.html", ids=[row["id"] for row in still_dead], by_destination=by_destination,
                           chosen=len(ids))


@bp.post("/deadletters/retry/confirm")
def retry_confirmed() -> Any:
    ids = _ids(request.form.getlist("id"))
    count = runtime().store.requeue(delivery_ids=ids, state=DEAD) if ids else 0
    flash(f"{count} dead letter{'s' if count != 1 else ''} queued again: the worker sends {'them' if count != 1 else 'it'} now.")
    return redirect(url_for("console.deadletters"))
