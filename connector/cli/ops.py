"""Operating the connector from a terminal: status, dead letters, replay, test leads, CRM setup."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import requests
from rich.markup import escape
from rich.table import Table

from connector.cli.app import Context, console, fail, main, pass_ctx
from connector.durations import seconds
from connector.errors import ConfigError, ConnectorError
from connector.rotation import labels, signals
from connector.store.schema import DEAD, STATES
from connector.timeutil import age, duration, iso, parse_iso


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Queue depth, deliveries by state per destination, oldest pending age, paused and failing destinations."""
    try:
        report = ctx.store.status()
    except ctx.store.database_errors as exc:
        cause = getattr(exc, "orig", None) or exc
        fail(f"database unavailable: {type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0]}", code=1)
    redact = ctx.runtime.redactor  # reasons stored before redaction existed, or by an older version
    for pause in report["pauses"].values():
        pause["reason"] = redact(pause["reason"] or "")
    for health in report["health"].values():
        health["last_error"] = redact(health["last_error"] or "")
    report["reconcile"] = ctx.store.latest_reconcile_runs()
    report["scheduled_jobs"] = ctx.store.scheduled_jobs()
    window = ctx.config.alerts.secret_unused_after
    now = time.time()
    secrets = signals(labels(ctx.config), ctx.store.secret_usage(window), now, window)
    report["secrets"] = [{"source": s.source, "secret": s.number, "label": s.label, "last_used": iso(s.last_used),
                          "uses_in_window": s.recent_uses, "window_seconds": window,
                          "safe_to_retire": s.safe_to_retire, "why": s.why} for s in secrets]
    if as_json:
        click.echo(redact(json.dumps(report, indent=2, default=str)))
        return
    console.print(f"events stored: {report['events']}   queue depth: {report['queue_depth']}   "
                  f"oldest pending: {age(report['oldest_pending_age'])}")
    table = Table("destination", *STATES, "oldest pending", "state")
    now = time.time()
    for name in ctx.config.destinations:
        counts = report["destinations"].get(name, {})
        pause = report["pauses"].get(name)
        health = report["health"].get(name)
        note = "[green]ok[/]"
        if health:
            retry = f", next try in {age(max(0.0, health['next_try'] - now))}" if health["next_try"] else ""
            note = (f"[red]failing since {iso(health['failing_since'])} ({health['failures']} failures in a row"
                    f"{retry}): {escape(health['last_error'])}[/]")
        elif pause and pause["until"] > now:
            note = f"[red]paused {age(pause['until'] - now)} ({pause['kind']}): {escape(pause['reason'])}[/]"
        table.add_row(name, *[str(counts.get(s, 0)) for s in STATES], age(counts.get("oldest_pending_age")), note)
    console.print(table)
    keys = Table("source", "webhook secret", "last used", f"uses in {duration(window)}", "retire?",
                 title="webhook secrets (which one verifies the marketplace's webhooks)")
    for signal in secrets:
        verdict = "[green]safe to retire[/]" if signal.safe_to_retire else "keep"
        keys.add_row(escape(signal.source), f"#{signal.number} {escape(signal.label)}", iso(signal.last_used) or "-",
                     str(signal.recent_uses), f"{verdict}: {escape(signal.why)}")
    console.print(keys)
    for line in schedule_lines(ctx, report["reconcile"], report["scheduled_jobs"], now):
        console.print(line, highlight=False)
    privacy = report.get("privacy") or {}
    skipped = privacy.get("skipped") or {}
    if skipped or privacy.get("erased_events") or privacy.get("tombstones"):
        erased = ", ".join(f"{n} by {why}" for why, n in sorted((privacy.get("erased_events") or {}).items()))
        last = privacy.get("last_retention")
        console.print(f"privacy: not delivered {skipped.get('opted_out', 0)} (opted out), "
                      f"{skipped.get('forgotten', 0)} (forgotten person); events erased: {erased or 'none'}; "
                      f"people forgotten: {privacy.get('tombstones', 0)} hashes; last retention run: "
                      f"{iso(last) if last else 'never'}", highlight=False)


def schedule_lines(ctx: Context, runs: dict[str, dict[str, Any]], jobs: dict[str, dict[str, Any]],
                   now: float) -> list[str]:
    """One line per source with a reconcile run or schedule (its last run and what it found), one per other job."""
    lines = []
    for name, source in ctx.config.sources.items():
        run, job = runs.get(name), jobs.get(f"reconcile:{name}")
        if run is None and source.reconcile is None:
            continue
        every = f"every {age(source.reconcile.every)}" if source.reconcile else "not scheduled"
        if run is None:
            lines.append(f"reconcile {name} ({every}): no run yet")
            continue
        when = f"{age(now - run['started_at'])} ago ({run['trigger']})"
        if run["state"] == "running":
            lines.append(f"reconcile {name} ({every}): running since {when}")
            continue
        colour = "red" if run["state"] == "failed" else "yellow" if run["missing"] else "green"
        nxt = f"; next in {age(max(0.0, job['next_run_at'] - now))}" if job and source.reconcile else ""
        lines.append(f"reconcile {name} ({every}): last run {when}: [{colour}]{escape(run['summary'] or '')}[/]{nxt}")
    for key, job in sorted(jobs.items()):
        if key.startswith("reconcile:"):
            continue
        last = (f"last run {age(now - job['last_started_at'])} ago: {escape(job['last_summary'] or '')}"
                if job["last_started_at"] else "no run yet")
        lines.append(f"{key}: {last}; next in {age(max(0.0, job['next_run_at'] - now))}")
    return lines


@main.group()
def deadletters() -> None:
    """Leads a CRM refused: list them, see why, send them again."""


class When(click.ParamType):
    """A moment: an ISO 8601 date or time (UTC unless it says), or a duration ago (`90m`, `3d`)."""

    name = "when"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        at = parse_iso(str(value))
        if at is not None:
            return at
        try:
            return time.time() - seconds(str(value))
        except ValueError:
            self.fail(f"'{value}' is neither a date or time (2026-05-20, 2026-05-20T10:00Z) nor a duration ago "
                      f"(90m, 3d)", param, ctx)


def dead_filters(command: Callable[..., None]) -> Callable[..., None]:
    """The options that choose dead letters, shared by `list` and `retry`."""
    for option in reversed([
        click.option("--destination", "-d", default=None),
        click.option("--error-code", "error_codes", multiple=True,
                     help="Only dead letters with this error code (repeatable), as `list` shows it."),
        click.option("--since", type=When(), default=None,
                     help="Only those that became dead letters at or after this: a date, a time, or e.g. 3d (ago)."),
        click.option("--until", type=When(), default=None, help="Only those before this (same forms as --since)."),
    ]):
        command = option(command)
    return command


def _dead(ctx: Context, destination: str | None, error_codes: tuple[str, ...], since: float | None,
          until: float | None, limit: int | None) -> list[dict[str, Any]]:
    rows = ctx.store.deliveries_query(state=DEAD, destination=destination, limit=limit, error_codes=error_codes,
                                      since=since, until=until)
    redact = ctx.runtime.redactor
    return [{"id": r["id"], "destination": r["destination"], "lead": r["lead_key"], "event": r["event_type"],
             "attempts": r["attempts"], "when": iso(r["updated_at"]), "error_code": r["last_error_code"],
             "error": redact(r["last_error"] or "")} for r in rows]


@deadletters.command("list")
@dead_filters
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def list_(ctx: Context, destination: str | None, error_codes: tuple[str, ...], since: float | None,
          until: float | None, limit: int, as_json: bool) -> None:
    """Dead letters, newest first."""
    rows = _dead(ctx, destination, error_codes, since, until, limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("id", "destination", "lead", "event", "attempts", "when", "code", "error")
    for r in rows:
        table.add_row(str(r["id"]), r["destination"], r["lead"], r["event"], str(r["attempts"]), r["when"] or "",
                      escape(r["error_code"] or ""), escape(r["error"][:120]))
    console.print(table if rows else "no dead letters")


@deadletters.command()
@click.argument("delivery_id", type=int)
@pass_ctx
def show(ctx: Context, delivery_id: int) -> None:
    """Everything about one delivery: the CRM's message and the lead as received."""
    row = ctx.store.delivery(delivery_id)
    if row is None:
        fail(f"no delivery {delivery_id}")
    console.print(f"delivery {row['id']} of {row['lead_key']} to {row['destination']}: [bold]{row['state']}[/] "
                  f"after {row['attempts']} attempts")
    console.print(f"event {row['event_id']} {row['event_type']} from {row['source']} ({row['origin']}), "
                  f"received {iso(row['received_at'])}")
    if row["stated_occurred_at"] is not None:
        console.print(f"event time {iso(row['stated_occurred_at'])} as sent: further ahead of its receipt than "
                      f"server.event_time_tolerance, so the receipt time used instead, "
                      f"{iso(row['event_occurred_at'])}", highlight=False)
    if row["last_error"]:
        console.print(f"[red]error[/] {row['last_error_code'] or ''}: {escape(ctx.runtime.redactor(row['last_error']))}",
                      highlight=False)
    console.print_json(row["lead_json"])


@deadletters.command()
@click.argument("delivery_ids", type=int, nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every dead letter the filters choose (all of them without any).")
@dead_filters
@click.option("--dry-run", is_flag=True, help="Say how many would go, and which, without queueing them.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def retry(ctx: Context, delivery_ids: tuple[int, ...], all_: bool, destination: str | None,
          error_codes: tuple[str, ...], since: float | None, until: float | None, dry_run: bool,
          as_json: bool) -> None:
    """Send dead letters again (after fixing the mapping or the CRM): ids, or --all with filters."""
    filtered = bool(destination or error_codes or since is not None or until is not None)
    if not delivery_ids and not all_:
        fail("name delivery ids, or use --all (with --destination, --error-code, --since, --until to choose)")
    chosen = [r["id"] for r in _dead(ctx, destination, error_codes, since, until, limit=None)]
    if delivery_ids:
        wanted = set(delivery_ids)
        chosen = [i for i in chosen if i in wanted]
    if dry_run:
        if as_json:
            click.echo(json.dumps({"dry_run": True, "count": len(chosen), "delivery_ids": chosen}))
            return
        shown = ", ".join(map(str, chosen[:50])) + (" ..." if len(chosen) > 50 else "")
        console.print(f"{len(chosen)} dead letters would be queued again" + (f": {shown}" if chosen else "")
                      + ("" if filtered or delivery_ids else " (every dead letter)"), highlight=False)
        return
    erased = ctx.store.privacy.erased_deliveries(chosen)
    if erased:
        console.print(f"{len(erased)} of them cannot be sent again: their personal data was erased (retention or "
                      f"forget): {', '.join(map(str, sorted(erased)[:20]))}", highlight=False)
    count = ctx.store.requeue(delivery_ids=chosen, state=DEAD) if chosen else 0
    if as_json:
        click.echo(json.dumps({"dry_run": False, "count": count, "delivery_ids": chosen}))
        return
    console.print(f"{count} dead letters queued again")


@main.command()
@click.option("--lead", "lead_id", default=None, help="Re-deliver this lead's newest event.")
@click.option("--event", "event_id", type=int, default=None, help="Re-deliver this stored event.")
@click.option("--source", "-s", default=None, help="With --lead: the source it came from.")
@click.option("--destination", "-d", default=None, help="Only to this destination.")
@click.option("--force", is_flag=True, help="Send even if a newer event of the lead was already applied.")
@pass_ctx
def replay(ctx: Context, lead_id: str | None, event_id: int | None, source: str | None,
           destination: str | None, force: bool) -> None:
    """Re-deliver a lead or an event to its destinations."""
    if bool(lead_id) == bool(event_id):
        fail("give exactly one of --lead or --event")
    ids = ctx.store.replay_ids(event_id=event_id, source=source, lead_id=lead_id, destination=destination)
    if not ids:
        fail("nothing to replay: no such lead or event with deliveries", code=1)
    erased = ctx.store.privacy.erased_deliveries(ids)
    if erased:
        at, why = next(iter(erased.values()))
        fail(f"cannot replay: this event's personal data was erased ({why}, {iso(at)}); only the lead's marketplace "
             "can send it again", code=1)
    count = ctx.store.requeue(delivery_ids=ids, force=force)
    console.print(f"{count} deliveries queued again; the worker sends them shortly")


@main.command("send-test")
@click.option("--url", required=True, help="Where the connector listens, e.g. https://app.example.com")
@click.option("--source", "-s", default=None, help="Which configured source to sign as (default: the first).")
@click.option("--payload", type=click.Path(exists=True, dir_okay=False), help="Body to send (default: a sample).")
@pass_ctx
def send_test(ctx: Context, url: str, source: str | None, payload: str | None) -> None:
    """POST a correctly signed sample lead to a deployment, as the marketplace would."""
    source = source or next(iter(ctx.config.sources))
    if source not in ctx.config.sources:
        fail(f"no source named '{source}'")
    marketplace = ctx.runtime.marketplaces[source]
    body = Path(payload).read_bytes() if payload else json.dumps(marketplace.sample_payload()).encode()
    target = url.rstrip("/")
    if "/webhooks/" not in target:
        target = f"{target}/webhooks/{source}"
    signature = marketplace.sign(ctx.config.sources[source].secret_values()[0], body)
    try:
        answer = requests.post(target, data=body, timeout=15, headers={
            "Content-Type": "application/json", marketplace.signature_header: signature})
    except requests.RequestException as exc:
        fail(f"could not reach {target}: {exc}", code=1)
    console.print(f"POST {target} -> HTTP {answer.status_code}")
    console.print(answer.text.strip(), highlight=False)
    if not answer.ok:
        raise SystemExit(1)


@main.group()
def crm() -> None:
    """Prepare a CRM for the connector."""


@crm.command()
@click.argument("destination")
@pass_ctx
def setup(ctx: Context, destination: str) -> None:
    """Create what the mapping needs in the CRM (e.g. HubSpot custom properties); safe to repeat."""
    if destination not in ctx.config.destinations:
        # `crm setup hubspot` also works when the destination's type is what was named
        matches = [n for n, d in ctx.config.destinations.items() if d.type == destination]
        if len(matches) != 1:
            fail(f"no destination named '{destination}'")
        destination = matches[0]
    try:
        mapping = ctx.runtime.mapping(destination) if ctx.config.destinations[destination].mapping else None
        done = ctx.runtime.destination(destination).setup(mapping)
    except NotImplementedError as exc:
        fail(str(exc))
    except ConnectorError as exc:
        fail(exc.describe(), code=1)
    except ConfigError as exc:
        fail(str(exc))
    for line in done or ["nothing to do: everything already exists"]:
        console.print(f"- {line}", highlight=False)
