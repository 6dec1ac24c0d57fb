"""Reconcile: prove that every lead a marketplace delivered over a window reached us, and recover the rest.

Webhooks get lost before they reach us (a marketplace outage, a deploy at the wrong second, DNS). Leaditio
and LeadOS list every delivered lead in their API, so a reconcile run pages that list over the window
(`date_from`/`date_to`, then each lead's own `delivered_at`), asks the store which leads it holds
(`Store.known_leads`) and fetches the detail only of those it lacks, which then go through the same
pipeline as a backfilled lead (events with origin "reconcile", routed, queued, delivered by the worker).

It *is* the backfill engine (`Backfill`), told three things: a lead we hold is never fetched again
(updates are the webhooks' business), no checkpoint (a run is short and always covers the whole window),
and the list is cut to the window. Cost: one list call per page of the window, plus one detail call per
missing lead, through the same API client and rate budget as backfill.

Each run (not a dry run) is recorded in `reconcile_runs`
(`connector_reconcile_recovered_total` is read from there), and a run that found a gap or failed is
announced through the alerter.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from connector.backfill.announce import reconcile_alert
from connector.backfill.engine import Backfill
from connector.backfill.records import Counts, Job, Result
from connector.errors import ConfigProblem
from connector.lead import InboundEvent
from connector.runtime import Runtime
from connector.sources.base import ListedPage, MarketplaceApi, event_time

log = logging.getLogger("connector.reconcile")


def day(at: float | None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at)) if at is not None else "an unknown day"


def moment(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


@dataclass
class Gap:
    """What one reconcile run found: the leads delivered in the window that never reached us, and their fate."""

    source: str
    window_from: float
    window_to: float
    dry_run: bool
    listed: int = 0  # leads the marketplace lists as delivered in the window
    missing: dict[str, float | None] = field(default_factory=dict)  # lead id -> delivered at, never received
    recovered: int = 0  # of the missing, fetched and queued (0 in a dry run)
    gone: int = 0  # of the missing, deleted before their detail could be read (404)
    failed: int = 0  # of the missing, refused by the API
    requests: int = 0  # API requests this run made
    error: str | None = None  # why the run stopped early
    run_id: int | None = None  # its row in reconcile_runs (None: a dry run)
    counts: Counts = field(default_factory=Counts)

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        """The gap in words: "3 leads delivered on 2026-05-20 never reached us by webhook: recovered"."""
        window = f"between {moment(self.window_from)} and {moment(self.window_to)}"
        if not self.missing:
            found = (f"all {self.listed} lead{'s' if self.listed != 1 else ''} {self.source} delivered {window} "
                     "reached us by webhook" if self.listed else f"{self.source} lists no lead delivered {window}")
            return found + (f"; the run stopped early: {self.error}" if self.error else "")
        by_day = Counter(day(at) for at in self.missing.values())
        if len(by_day) == 1:
            when = f"on {next(iter(by_day))}"
        else:
            parts = [f"{d} ({n})" for d, n in sorted(by_day.items())]
            when = "on " + ", ".join(parts[:-1]) + " and " + parts[-1]
        count = len(self.missing)
        text = f"{count} lead{'s' if count != 1 else ''} delivered {when} never reached us by webhook"
        if self.dry_run:
            return text + ": not recovered (dry run; run without --dry-run to recover them)"
        if self.error:
            return text + f": {self.recovered} recovered before the run stopped ({self.error})"
        if self.recovered == count:
            return text + ": recovered"
        lost = []
        if self.gone:
            lost.append(f"{self.gone} deleted by the marketplace before they could be fetched")
        if self.failed:
            lost.append(f"{self.failed} refused by its API")
        return text + f": {self.recovered} recovered" + (f", {', '.join(lost)}" if lost else "")

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "window_from": moment(self.window_from), "window_to": moment(self.window_to),
                "dry_run": self.dry_run, "listed": self.listed, "missing": len(self.missing),
                "missing_ids": sorted(self.missing), "recovered": self.recovered, "gone": self.gone,
                "failed": self.failed, "requests": self.requests, "error": self.error, "ok": self.ok,
                "run_id": self.run_id, "summary": self.summary()}


class Reconcile(Backfill):
    """One reconcile run of one source over `window` seconds back from now (less `grace`)."""

    origin = "reconcile"
    checkpointed = False

    def __init__(self, runtime: Runtime, source: str, api: MarketplaceApi, *, window: float, grace: float = 0.0,
                 dry_run: bool = False, trigger: str = "command", now: float | None = None):
        marketplace = runtime.marketplaces.get(source)
        if marketplace is None:
            raise ConfigProblem(f"no source named '{source}'")
        if not marketplace.lists_leads:
            raise ConfigProblem(f"{source}: the {marketplace.name} API has no list of delivered leads to "
                                "reconcile with (Leaditio and LeadOS have one); its leads arrive by webhook only",
                                code="no_lead_list")
        now = time.time() if now is None else now
        self.window_from, self.window_to = now - window, now - grace
        job = Job(source, {"date_from": day(self.window_from), "date_to": day(self.window_to)})
        super().__init__(runtime, job, api, dry_run=dry_run)
        self.trigger = trigger
        self._missing: dict[str, float | None] = {}

    def reconcile(self) -> Gap:
        """Run, record, count and announce; a failure of the store propagates (after recording it)."""
        gap = Gap(self.job.source, self.window_from, self.window_to, self.dry_run)
        if not self.dry_run:
            gap.run_id = self.store.start_reconcile_run(self.job.source, self.trigger, self.window_from,
                                                        self.window_to)
        try:
            result = self.run(restart=True)
        except Exception as exc:
            gap.error = f"{type(exc).__name__}: {self.runtime.redactor(str(exc))[:300]}"
            self._record(gap)
            raise
        self._fill(gap, result)
        self._record(gap)
        if not self.dry_run and (gap.missing or gap.error):
            self._alert(gap)
        log.info("reconcile %s: %s", gap.source, gap.summary())
        return gap

    def _fill(self, gap: Gap, result: Result) -> None:
        c = result.counts
        gap.counts, gap.listed, gap.missing = c, c.listed, dict(self._missing)
        gap.gone, gap.failed, gap.requests = c.gone, c.failed, result.requests
        gap.recovered = 0 if self.dry_run else c.enqueued + c.unrouted
        gap.error = self.runtime.redactor(result.error) if result.error else None

    def _record(self, gap: Gap) -> None:
        if gap.run_id is None:
            return
        self.store.finish_reconcile_run(gap.run_id, listed=gap.listed, missing=len(gap.missing),
                                        recovered=gap.recovered, state="failed" if gap.error else "ok",
                                        error=gap.error, summary=gap.summary(), missing_ids=sorted(gap.missing))

    def _alert(self, gap: Gap) -> None:
        alerter = self.runtime.alerter
        if alerter is None:
            return
        try:
            alerter.announce(reconcile_alert(gap.source, gap.summary(), error=gap.error, missing=sorted(gap.missing)))
        except Exception:  # the run is recorded; a channel that is down must not make it fail
            log.exception("could not send the reconcile alert")

    # --- how reconcile differs from backfill (hooks of the engine) -----------------------------
    def _announce(self, result: Result) -> None:
        """Reconcile announces its gap itself (see `reconcile`), not as a backfill."""

    def _pages(self, state: dict[str, Any]) -> Iterator[ListedPage]:
        """The list cut to the window: the API filters by day, the window ends at a moment."""
        for page in super()._pages(state):
            yield replace(page, leads=[lead for lead in page.leads if self._in_window(lead)])

    def _in_window(self, listed: dict[str, Any]) -> bool:
        at = event_time(listed.get("delivered_at"), listed.get("created_at"))
        return at is None or self.window_from <= at <= self.window_to

    def _needs_fetch(self, listed: dict[str, Any], stored: dict[str, Any]) -> bool:
        return False  # we hold it: it arrived; newer versions are the webhooks' (or a backfill's) business

    def _missing_destinations(self, stored_leads: list[dict[str, Any]], counts: Counts,
                              first_pass: bool) -> list[tuple[InboundEvent, list[str], bytes]]:
        if first_pass:
            counts.already_present += len(stored_leads)
        return []  # a lead that arrived was routed when it did

    def _fetched(self, listed: dict[str, Any], stored: dict[str, Any] | None, future: Future[InboundEvent | None],
                 state: dict[str, Any], counts: Counts) -> tuple[InboundEvent, list[str], bytes] | None:
        self._missing[str(listed["id"])] = event_time(listed.get("delivered_at"), listed.get("created_at"))
        return super()._fetched(listed, stored, future, state, counts)
