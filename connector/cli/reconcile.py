"""`connector reconcile`: did every lead the marketplace delivered reach us? Recover those that did not.

Exits 0 once the run is done, whatever it found (a gap is news, not a failure: it is recovered, recorded
and alerted); 1 when it could not finish (the API down after retries, credentials), 2 for a usage error.
"""

from __future__ import annotations

import json
import sys

import click
from rich.markup import escape

from connector.backfill.reconcile import Reconcile
from connector.cli.app import Context, console, fail, main, pass_ctx
from connector.cli.marketplace import source_api
from connector.cli.run import warn_if_ephemeral
from connector.durations import seconds
from connector.errors import ConfigProblem

DEFAULT_WINDOW = "48h"


@main.command()
@click.option("--source", "-s", required=True, help="The configured source to reconcile (e.g. leaditio).")
@click.option("--since", default=None, metavar="DURATION",
              help=f"How far back to look, e.g. 48h, 7d (default: the source's reconcile.window, else {DEFAULT_WINDOW}).")
@click.option("--dry-run", is_flag=True, help="Say what is missing (fetching it to check), record and queue nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON document.")
@pass_ctx
def reconcile(ctx: Context, source: str, since: str | None, dry_run: bool, as_json: bool) -> None:
    """Compare the leads a marketplace delivered with those that arrived, and queue the missing ones.

    Pages the marketplace's list of delivered leads over the window (one API call per page), fetches only
    the leads we never received (one call each) and queues them for the source's routes like a backfill.
    Leads delivered in the last `reconcile.grace` (default 2m) are left to their webhook. The worker also
    runs this on a schedule: `reconcile: {every: 15m, window: 48h}` under the source.
    """
    if source in ctx.config.sources and not ctx.runtime.marketplaces[source].lists_leads:
        name = ctx.config.sources[source].marketplace
        fail(f"{source}: the {name} API has no list of delivered leads to reconcile with (Leaditio and LeadOS "
             "have one); its leads arrive by webhook only")
    settings = ctx.config.sources[source].reconcile if source in ctx.config.sources else None
    try:
        window = seconds(since) if since else (settings.window if settings else seconds(DEFAULT_WINDOW))
    except ValueError as exc:
        fail(f"--since: {exc}")
    if window <= 0:
        fail("--since must be longer than 0")
    warn_if_ephemeral(ctx)
    api = source_api(ctx, source)
    ctx.store.upgrade()
    try:
        runner = Reconcile(ctx.runtime, source, api, window=window, grace=settings.grace if settings else 120.0,
                           dry_run=dry_run)
        gap = runner.reconcile()
    except ConfigProblem as exc:
        fail(escape(str(exc)))
    finally:
        api.close()
    if as_json:
        click.echo(json.dumps(gap.as_dict(), indent=2))
    else:
        colour = "green" if not gap.missing else "yellow"
        console.print(f"[{colour}]{escape(gap.summary())}[/]", highlight=False)
        console.print(f"{gap.listed} listed, {len(gap.missing)} missing, {gap.recovered} recovered; "
                      f"{gap.requests} API requests" + (" (dry run: nothing written)" if dry_run else ""),
                      highlight=False)
        if gap.missing:
            console.print("missing: " + ", ".join(sorted(gap.missing)[:20])
                          + (f" and {len(gap.missing) - 20} more" if len(gap.missing) > 20 else ""), highlight=False)
    if gap.error:
        if not as_json:
            console.print(f"[red]stopped:[/] {escape(gap.error)}\nfix that, then run the same command again",
                          highlight=False)
        sys.exit(1)
