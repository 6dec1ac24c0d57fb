"""`connector backfill`: load a marketplace's historical leads into the queue, resumably.

On a terminal it draws a progress bar; without one (a Heroku one-off dyno, CI) it logs a line every
`--log-every` seconds. It ends with a summary and exits non-zero if anything failed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from datetime import datetime
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from connector import yamlfile
from connector.backfill import Backfill, Job, Result
from connector.backfill import Progress as Step
from connector.cli.app import Context, console, err_console, fail, main, pass_ctx
from connector.cli.marketplace import source_api
from connector.cli.run import warn_if_ephemeral
from connector.errors import ConfigProblem
from connector.logs import setup_logging
from connector.timeutil import age

log = logging.getLogger("connector.backfill")
DATE = click.DateTime(formats=["%Y-%m-%d"])


def eta_seconds(step: Step) -> float | None:
    """Time left if the API key's rate limit is the only brake: leads left x requests per lead / rate."""
    if not step.total or not step.rate:
        return None
    left = max(0, step.total - step.done)
    seen = step.counts.listed + step.counts.rechecked
    per_lead = (step.counts.fetched + step.counts.gone + step.counts.pages) / seen if seen else 1.01
    return left * per_lead / step.rate


def describe(step: Step) -> str:
    total = f"/{step.total}" if step.total is not None else ""
    percent = f" ({100 * step.done / step.total:.0f}%)" if step.total else ""
    eta = eta_seconds(step)
    return (f"{step.done}{total} leads{percent}, {step.counts.fetched} fetched, {step.counts.already_present} "
            f"already present, {step.counts.enqueued} enqueued, {step.counts.failed} failed; "
            f"{step.requests} API requests; ETA {age(eta) if eta is not None else 'unknown'}"
            + (f" (pass {step.passes})" if step.passes > 1 else ""))


class LogProgress:
    """Without a terminal: one log line every `every` seconds (and none for short runs)."""

    def __init__(self, source: str, every: float):
        self.source, self.every = source, every
        self._next = time.monotonic() + every

    def __call__(self, step: Step) -> None:
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every
            log.info("backfill %s: %s", self.source, describe(step))


class BarProgress:
    """On a terminal: a rich progress bar with leads done, rate and the rate-limit ETA."""

    def __init__(self, source: str):
        self.started = time.monotonic()
        self.bar = Progress(TextColumn(f"[bold]backfill {source}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[detail]}"), console=console, transient=False)
        self.task: TaskID = self.bar.add_task("leads", total=None, detail="listing…")

    def __enter__(self) -> BarProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def __call__(self, step: Step) -> None:
        elapsed = max(0.001, time.monotonic() - self.started)
        eta = eta_seconds(step)
        detail = (f"{step.requests / elapsed:.1f} req/s, {step.counts.fetched} fetched, "
                  f"{step.counts.already_present} present, ETA {age(eta) if eta is not None else '?'}")
        self.bar.update(self.task, completed=step.done, total=step.total, detail=detail)


@main.command()
@click.option("--source", "-s", required=True, help="The configured source to backfill (e.g. leaditio).")
@click.option("--from", "date_from", type=DATE, default=None, help="Leads delivered on or after this date (YYYY-MM-DD).")
@click.option("--to", "date_to", type=DATE, default=None, help="Leads delivered on or before this date (YYYY-MM-DD).")
@click.option("--vertical", default=None, help="Only this vertical (Leaditio: solar, insurance, financial, property).")
@click.option("--score-tier", default=None, help="Only this score tier (Leaditio: hot, warm, qualified).")
@click.option("--suburb", default=None, help="Only this suburb, e.g. Sandton.")
@click.option("--destination", "-d", "destinations", multiple=True,
              help="Only to this destination (repeatable; default: wherever the source's routes send leads).")
@click.option("--dry-run", is_flag=True, help="List and fetch, map a sample, write nothing.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after this many leads (run again to go on).")
@click.option("--restart", is_flag=True, help="Ignore an unfinished checkpoint and start from the first page.")
@click.option("--progress/--no-progress", "bar", default=None,
              help="Progress bar (default: on a terminal) or periodic log lines.")
@click.option("--log-every", type=float, default=30.0, show_default=True, metavar="SECONDS",
              help="Without a progress bar: seconds between progress lines.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary as one JSON document (no progress bar or progress lines).")
@pass_ctx
def backfill(ctx: Context, source: str, date_from: datetime | None, date_to: datetime | None, vertical: str | None,
             score_tier: str | None, suburb: str | None, destinations: tuple[str, ...], dry_run: bool,
             limit: int | None, restart: bool, bar: bool | None, log_every: float, as_json: bool) -> None:
    """Queue a marketplace's historical leads for your destinations, inside the API's rate limit.

    Safe to run again (no duplicates; leads already stored cost no detail request) and to interrupt
    (the next run with the same filters resumes where this one stopped).
    """
    if date_from and date_to and date_from > date_to:
        fail("--from is after --to")
    for name in destinations:
        if name not in ctx.config.destinations:
            fail(f"no destination named '{name}'{yamlfile.did_you_mean(name, ctx.config.destinations)} "
                 f"(configured: {', '.join(ctx.config.destinations)})")
    use_bar = not as_json and (console.is_terminal if bar is None else bar)
    if not use_bar and not as_json:  # log lines go to stdout: not into a JSON document
        setup_logging()
    warn_if_ephemeral(ctx)
    api = source_api(ctx, source)
    store = ctx.store
    store.upgrade()
    job = Job(source, {"date_from": date_from.date().isoformat() if date_from else None,
                       "date_to": date_to.date().isoformat() if date_to else None,
                       "vertical": vertical, "score_tier": score_tier, "suburb": suburb},
              list(destinations) or None)
    saved = None if dry_run or restart else store.checkpoint(source, job.key)
    if saved and not saved["done"]:
        (err_console if as_json else console).print(f"resuming backfill {job.key} from its checkpoint of {age(time.time() - saved['updated_at'])} "
                      "ago (--restart starts over)", highlight=False)
    try:
        runner = Backfill(ctx.runtime, job, api, limit=limit, dry_run=dry_run)
    except ConfigProblem as exc:
        fail(escape(str(exc)))
    try:
        if use_bar:
            with BarProgress(source) as progress:
                runner.on_progress = progress
                result = runner.run(restart=restart)
        else:
            runner.on_progress = LogProgress(source, log_every)
            log.info("backfill %s started (job %s, filters %s)", source, job.key, job.filters or "none")
            result = runner.run(restart=restart)
    except NotImplementedError as exc:  # a marketplace with no lead list (LeadNod)
        fail(str(exc))
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted[/]: the pages finished so far are saved; run the same command "
                      "again to resume (the page in progress is read again)", highlight=False)
        sys.exit(130)
    finally:
        api.close()
    if as_json:
        click.echo(json.dumps({**dataclasses.asdict(result), "ok": result.ok}, indent=2, default=str))
    else:
        report(result)
    if not result.ok:
        sys.exit(1)


def report(result: Result) -> None:
    """The summary table, dry-run samples, warnings and what to do next."""
    c = result.counts
    title = f"backfill {result.job.source}" + (" (dry run: nothing written)" if result.dry_run else "")
    table = Table("", "leads", title=title, show_header=False)
    rows: list[tuple[str, Any]] = [
        ("listed", c.listed), ("fetched (detail requests)", c.fetched), ("already present", c.already_present),
        ("would be enqueued" if result.dry_run else "enqueued", c.enqueued),
        ("deliveries", c.deliveries),
        ("skipped", f"{c.skipped} ({c.gone} gone before detail, {c.unrouted} routed nowhere)"),
        ("failed", c.failed),
    ]
    if c.rechecked:
        rows.append(("rechecked (list moved)", c.rechecked))
    if result.dry_run:
        rows.append(("mapping errors", c.mapping_errors))
    rows += [("list pages", c.pages), ("API requests (this run)", result.requests),
             ("429 answers (this run)", result.rate_limited)]
    for label, value in rows:
        table.add_row(label, str(value))
    console.print(table)
    for sample in result.samples:
        head = f"sample → {sample.destination}: {sample.lead_id} ({sample.event_type})"
        if sample.error:
            console.print(f"[red]{escape(head)}: {escape(sample.error)}[/]", highlight=False)
        else:
            console.print(escape(head), highlight=False)
            console.print_json(data=sample.values)
    if result.failed_ids:
        console.print(f"[red]leads the API refused:[/] {', '.join(result.failed_ids)}", highlight=False)
    for note in result.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if result.error:
        console.print(f"[red]stopped:[/] {escape(result.error)}\nfix that, then run the same command again: it "
                      "resumes from the last saved page", highlight=False)
    elif not result.done and result.dry_run:
        console.print("dry run stopped at --limit", highlight=False)
    elif not result.done:
        console.print("stopped at --limit; run the same command again to continue", highlight=False)
    elif result.ok:
        console.print("[green]done[/]" + (" (nothing written)" if result.dry_run else
                                           "; the worker delivers the enqueued leads"), highlight=False)
