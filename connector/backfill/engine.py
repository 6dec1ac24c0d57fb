"""Backfill: every historical lead of a marketplace, through the same queue as webhooks, resumable.

Works for any `MarketplaceApi`: it pages the marketplace's lead list, asks the store which leads it
already holds (`Store.known_leads`), fetches the full lead only where the list shows something we
do not have (`MarketplaceApi.needs_detail`), and records the events of each page together with a
checkpoint in one transaction (`Store.record_events(..., checkpoint=...)`). So:

- a crash, Ctrl-C or dyno restart loses at most the page in flight, and the next run resumes there;
- a re-run creates no duplicates (event keys come from the lead id and its content) and costs
  about one list call per 100 leads;
- memory holds one page, however many leads there are.

Events made here (origin "backfill"):
- `lead.new`: a lead we did not have, dated by the lead's own timestamps (delivered_at, created_at);
  also a lead we have whose routed destinations never got it (e.g. a CRM connected today): queued
  to those destinations only, from the stored copy, without an API call.
- `lead.updated`: a lead we have, but the list shows a newer version; dated when the backfill saw
  it, so the stale-update rule lets it replace the older copy and any later webhook still wins.

A list that moves under us (its total changes between pages: leads added or deleted) can shift
leads between pages; the backfill then makes another pass over the list (cheap: stored leads cost
no detail calls), at most `MAX_PASSES` in all. A page that repeats the previous one ends the pass
with a warning instead of looping.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, replace
from typing import Any

from connector.backfill.announce import backfill_alert
from connector.backfill.records import Counts, Job, Progress, Result, Sample, Stop
from connector.errors import ConfigProblem, ConnectorError, Permanent
from connector.intake import destinations_for
from connector.lead import InboundEvent, mapping_input
from connector.logs import redact
from connector.runtime import Runtime
from connector.sources.base import ListedPage, MarketplaceApi, event_time

log = logging.getLogger(__name__)

MAX_PASSES = 3
FAILED_IDS_KEPT = 50  # lead ids remembered in the checkpoint for the summary
STATE_VERSION = 1


class Backfill:
    # What a subclass (connector.backfill.reconcile) changes: the events' origin, and whether runs keep a
    # checkpoint to resume from (a reconcile run is short and always starts over).
    origin = "backfill"
    checkpointed = True

    def __init__(self, runtime: Runtime, job: Job, api: MarketplaceApi, *, limit: int | None = None,
                 dry_run: bool = False, sample_size: int = 3, concurrency: int | None = None,
                 on_progress: Callable[[Progress], None] | None = None):
        config = runtime.config
        if job.source not in config.sources:
            raise ConfigProblem(f"no source named '{job.source}'")
        for name in job.destinations or []:
            if name not in config.destinations:
                raise ConfigProblem(f"no destination named '{name}' (known: {', '.join(config.destinations)})")
        self.runtime = runtime
        self.config = config
        self.store = runtime.store
        self.job = job
        self.api = api
        client = getattr(api, "client", None)
        if client is not None:  # the key's budget keeps a reserve for live callers (connector.pacing)
            client.background = True
        self.limit = limit
        self.dry_run = dry_run
        self.sample_size = sample_size
        self.concurrency = concurrency or int(getattr(api, "detail_concurrency", 1) or 1)
        self.on_progress = on_progress
        self.marketplace = config.sources[job.source].marketplace
        self._routed_here = {r.destination for r in config.routes_for(job.source)}
        self._mappings: dict[str, Any] = {}
        self._handled = 0  # leads handled by this run (for --limit)
        self._samples: list[Sample] = []

    # --- the run --------------------------------------------------------------------------
    def run(self, *, restart: bool = False) -> Result:
        state, resumed = self._initial_state(restart)
        counts = Counts(**state["counts"])
        result = Result(self.job, counts, done=False, resumed=resumed, dry_run=self.dry_run,
                        passes=state["pass"], failed_ids=list(state["failed_ids"]))
        start_requests = self._api_counter("requests")
        start_429 = self._api_counter("rate_limited")
        executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="backfill-detail")
        try:
            self._passes(state, counts, result, executor)
        except Stop as exc:
            result.error = str(exc)
        except ConnectorError as exc:
            result.error = exc.describe()
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            result.requests = self._api_counter("requests") - start_requests
            result.rate_limited = self._api_counter("rate_limited") - start_429
            result.passes = state["pass"]
            result.failed_ids = list(state["failed_ids"])
            result.samples = self._samples
        self._announce(result)
        return result

    def _announce(self, result: Result) -> None:
        """A backfill that finished (or stopped on an error) tells the team once, through the alerter."""
        alerter = self.runtime.alerter
        if alerter is None or self.dry_run or (not result.done and result.error is None):
            return  # nothing configured, nothing written, or stopped at --limit (the operator is there)
        try:
            alerter.announce(backfill_alert(result))
        except Exception:  # an alert must never turn a finished backfill into a failed one
            log.exception("could not send the backfill alert")

    def _passes(self, state: dict[str, Any], counts: Counts, result: Result, executor: ThreadPoolExecutor) -> None:
        while True:
            finished = self._one_pass(state, counts, result, executor)
            if not finished:  # --limit reached: the checkpoint says where to go on
                return
            if state["list_changed"] and state["pass"] < MAX_PASSES:
                log.info("the lead list changed during pass %d (total %s); checking it once more",
                         state["pass"], state["total"])
                state.update({"pass": state["pass"] + 1, "resume": None, "last_ids": [], "list_changed": False,
                              "total": None, "done_in_pass": 0, "page_offset": 0})
                self._commit([], state, counts, done=False)
                continue
            if state["list_changed"]:
                # Usually new leads arriving (which webhooks bring anyway): worth saying, not a failure.
                result.notes.append(f"the lead list was still changing after {MAX_PASSES} passes; if leads "
                                    "were removed meanwhile, run the backfill again later to pick up any that moved")
            result.done = True
            self._commit([], state, counts, done=True)
            return

    def _one_pass(self, state: dict[str, Any], counts: Counts, result: Result, executor: ThreadPoolExecutor) -> bool:
        """Read the list from the checkpoint on; False when --limit stopped it early."""
        for page in self._pages(state):
            ids = [str(lead["id"]) for lead in page.leads]
            if ids and ids == state["last_ids"]:
                result.warnings.append(f"the list repeated a page (pass {state['pass']}, after "
                                       f"{state['done_in_pass']} leads): stopped this pass instead of looping; "
                                       "leads after it may be missing, run the backfill again later")
                log.warning("list page repeats the previous one; ending the pass")
                return True
            if page.total is not None:
                if state["total"] is not None and page.total != state["total"]:
                    state["list_changed"] = True
                state["total"] = page.total
            leads = page.leads
            offset = state.pop("page_offset", 0) or 0
            room = None if self.limit is None else self.limit - self._handled
            partial = room is not None and room < len(leads) - offset
            take = leads[: offset + room] if partial and room is not None else leads
            page_counts = Counts(pages=1)
            batch = self._handle(take, offset, state, page_counts, executor, counts)
            counts.add(page_counts)
            if partial:
                state["page_offset"] = len(take)  # resume re-reads this page and skips what is done
            else:
                state.update(resume=page.resume, last_ids=ids, page_offset=0)
            self._commit(batch, state, counts, done=False)
            if partial or (self.limit is not None and self._handled >= self.limit):
                return False  # the next run resumes here (one more list call if this was the last page)
        return True

    def _pages(self, state: dict[str, Any]) -> Iterator[ListedPage]:
        return self.api.pages(dict(self.job.filters), state["resume"])

    # --- one page -------------------------------------------------------------------------
    def _handle(self, leads: Sequence[dict[str, Any]], offset: int, state: dict[str, Any], counts: Counts,
                executor: ThreadPoolExecutor, job_counts: Counts) -> list[tuple[InboundEvent, list[str], bytes]]:
        ids = [str(lead["id"]) for lead in leads]
        known = self.store.known_leads(self.job.source, ids)
        already_done = set(ids[:offset]) & set(known)  # handled by the run that stopped mid-page
        batch: list[tuple[InboundEvent, list[str], bytes]] = []
        to_fetch: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        unchanged: list[dict[str, Any]] = []
        first_pass = state["pass"] == 1
        for index, listed in enumerate(leads):
            lead_id = str(listed["id"])
            if index < offset and lead_id in already_done:
                continue
            self._handled += 1
            if first_pass:
                counts.listed += 1
            else:
                counts.rechecked += 1
            stored = known.get(lead_id)
            if stored is not None and not self._needs_fetch(listed, stored):
                unchanged.append(stored)
            else:
                to_fetch.append((listed, stored))
        batch.extend(self._missing_destinations(unchanged, counts, first_pass))
        self._progress(state, counts, job_counts, len(unchanged))
        futures: list[Future[InboundEvent | None]] = [executor.submit(self.api.detail, listed)
                                                       for listed, _ in to_fetch]
        for (listed, stored), future in zip(to_fetch, futures, strict=True):
            item = self._fetched(listed, stored, future, state, counts)
            if item is not None:
                batch.append(item)
            self._progress(state, counts, job_counts, 1)
        return batch

    def _needs_fetch(self, listed: dict[str, Any], stored: dict[str, Any]) -> bool:
        """Whether a lead we hold must be fetched again (the list shows a newer version)."""
        return self.api.needs_detail(listed, stored)

    def _fetched(self, listed: dict[str, Any], stored: dict[str, Any] | None, future: Future[InboundEvent | None],
                 state: dict[str, Any], counts: Counts) -> tuple[InboundEvent, list[str], bytes] | None:
        lead_id = str(listed["id"])
        try:
            event = future.result()
        except Permanent as exc:
            if exc.status == 404:
                counts.skipped += 1
                counts.gone += 1
                return None
            counts.failed += 1
            if len(state["failed_ids"]) < FAILED_IDS_KEPT:
                state["failed_ids"].append(lead_id)
            log.error("lead %s: %s", lead_id, redact(exc.describe()))
            return None
        except ConnectorError as exc:  # credentials, or the API still failing after retries: stop here
            raise Stop(exc.describe()) from None
        if event is None:
            counts.skipped += 1
            counts.gone += 1
            return None
        counts.fetched += 1
        if stored is None:
            event = replace(event, event_type=self.api.new_event_type, origin=self.origin)
        else:
            event = replace(event, event_type=self.api.updated_event_type, origin=self.origin, occurred_at=time.time())
        return self._enqueue(event, self._targets(event), counts)

    def _missing_destinations(self, stored_leads: list[dict[str, Any]], counts: Counts,
                              first_pass: bool) -> list[tuple[InboundEvent, list[str], bytes]]:
        """Leads we hold with current data: queue them only to routed destinations that never had them."""
        if not stored_leads:
            return []
        have = self.store.delivered_destinations(self.job.source, [str(s["id"]) for s in stored_leads])
        out = []
        for stored in stored_leads:
            lead_id = str(stored["id"])
            occurred = event_time(stored.get("delivered_at"), stored.get("created_at")) or time.time()
            event = InboundEvent(source=self.job.source, event_key="", event_type=self.api.new_event_type, occurred_at=occurred,
                                 lead_id=lead_id, lead=stored, origin=self.origin)
            missing = [d for d in self._targets(event) if d not in have.get(lead_id, set())]
            if not missing:
                if first_pass:
                    counts.already_present += 1
                continue
            out.append(self._enqueue(event, missing, counts))
        return out

    def _targets(self, event: InboundEvent) -> list[str]:
        """The routed destinations; with --destination, those of them (a chosen one without a route: all)."""
        routed = destinations_for(self.config, event)
        if self.job.destinations is None:
            return routed
        return [d for d in self.job.destinations if d in routed or d not in self._routed_here]

    def _enqueue(self, event: InboundEvent, targets: list[str], counts: Counts,
                 ) -> tuple[InboundEvent, list[str], bytes]:
        digest = hashlib.sha256(json.dumps(event.lead, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        event = replace(event, event_key=f"{self.origin}:{event.lead_id}:{digest[:20]}:{','.join(sorted(targets))}")
        body = json.dumps({"origin": self.origin, "job": self.job.key, "destinations": sorted(targets),
                           "lead": event.lead}, sort_keys=True, separators=(",", ":")).encode()
        if not targets:
            counts.skipped += 1
            counts.unrouted += 1
        if self.dry_run:
            self._sample(event, targets, counts)
        return event, targets, body

    # --- writing ----------------------------------------------------------------------------
    def _commit(self, batch: list[tuple[InboundEvent, list[str], bytes]], state: dict[str, Any], counts: Counts,
                *, done: bool) -> None:
        """Record a page's events and the checkpoint after it in one transaction."""
        if self.dry_run:
            counts.enqueued += sum(1 for _, targets, _ in batch if targets)
            counts.deliveries += sum(len(targets) for _, targets, _ in batch)
            return
        state["counts"] = asdict(counts)
        checkpoint = (self.job.source, self.job.key, self.job.params, state, done) if self.checkpointed else None
        recorded = self.store.record_events(batch, checkpoint=checkpoint)
        for (_, targets, _), outcome in zip(batch, recorded, strict=True):
            if not targets:
                continue  # counted as unrouted already
            if outcome.duplicate:
                counts.skipped += 1
            else:
                counts.enqueued += 1
                counts.deliveries += outcome.deliveries
        if batch and checkpoint is not None:
            # Only now do we know what the store made of the page; a crash between the two writes
            # costs nothing but these counters.
            state["counts"] = asdict(counts)
            self.store.save_checkpoint(*checkpoint[:3], state, done)

    def _initial_state(self, restart: bool) -> tuple[dict[str, Any], bool]:
        fresh = {"version": STATE_VERSION, "pass": 1, "resume": None, "total": None, "last_ids": [],
                 "list_changed": False, "done_in_pass": 0, "page_offset": 0, "counts": asdict(Counts()),
                 "failed_ids": [], "started_at": time.time()}
        if self.dry_run or not self.checkpointed:
            return fresh, False
        saved = self.store.checkpoint(self.job.source, self.job.key)
        if restart or saved is None or saved["done"] or saved["state"].get("version") != STATE_VERSION:
            return fresh, False
        return {**fresh, **saved["state"]}, True

    # --- dry run ----------------------------------------------------------------------------
    def _sample(self, event: InboundEvent, targets: list[str], counts: Counts) -> None:
        document = mapping_input(event.lead, source=event.source, event=event.event_type,
                                 marketplace=self.marketplace)
        for name in targets:
            mapping = self._mapping(name)
            if mapping is None:
                continue
            try:
                values: dict[str, Any] | None = mask(mapping.apply(document).values)
                error = None
            except ConnectorError as exc:
                counts.mapping_errors += 1
                values, error = None, redact(exc.describe())
            errors = sum(1 for sample in self._samples if sample.error)
            if (error is None and len(self._samples) - errors < self.sample_size) or (error and errors < self.sample_size):
                self._samples.append(Sample(name, str(event.lead_id), event.event_type, values, error))

    def _mapping(self, name: str) -> Any:
        if name not in self._mappings:
            self._mappings[name] = self.runtime.mapping(name) if self.config.destinations[name].mapping else None
        return self._mappings[name]

    # --- progress -------------------------------------------------------------------------------
    def _progress(self, state: dict[str, Any], counts: Counts, job_counts: Counts, handled: int) -> None:
        state["done_in_pass"] = state.get("done_in_pass", 0) + handled
        if self.on_progress is None or handled == 0:
            return
        merged = Counts(**asdict(job_counts))
        merged.add(counts)
        rate = getattr(self.api, "rate", None)
        self.on_progress(Progress(done=state["done_in_pass"], total=state["total"], counts=merged,
                                  requests=self._api_counter("requests"), rate=rate, passes=state["pass"]))

    def _api_counter(self, name: str) -> int:
        client = getattr(self.api, "client", None)
        return int(getattr(getattr(client, "counters", None), name, 0) or 0)


def mask(values: dict[str, Any]) -> dict[str, Any]:
    """Mapped values with phone numbers and emails masked (dry-run output lands in logs)."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in values.items()}
