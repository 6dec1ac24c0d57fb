"""`connector explain LEAD`: one lead's story for the person a sales rep asks."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from connector.cli.app import Context, console, fail, main, pass_ctx
from connector.explain import DECISIONS, Story, build
from connector.timeutil import duration, iso


@main.command()
@click.argument("lead_id")
@click.option("--source", "-s", default=None, help="Only events from this source (a name under sources:).")
@click.option("--json", "as_json", is_flag=True, help="The same story as one JSON document.")
@click.option("--show-personal", is_flag=True,
              help="Show field values as mapped (phone, email); by default they are redacted.")
@pass_ctx
def explain(ctx: Context, lead_id: str, source: str | None, as_json: bool, show_personal: bool) -> None:
    """Every decision about one lead, in time order: events, routes, attempts, and the mapped fields."""
    history = ctx.store.lead_history(lead_id, source)
    if not history.events:
        where = f" from {source}" if source else ""
        fail(f"no lead {lead_id}{where} is stored (it never arrived, or was pruned)", code=1)
    story = build(ctx.runtime, lead_id, history, show_personal=show_personal)
    if as_json:
        click.echo(json.dumps(story.to_json(), indent=2, default=str))
        return
    show(story)


def esc(value: object) -> str:
    return escape(str(value))


def show(story: Story) -> None:
    """Every value is escaped: a redacted `[phone]` or a lead's own brackets are text, not console markup."""
    console.print(f"[bold]lead {esc(story.lead_id)}[/] from {esc(', '.join(story.sources))}", highlight=False)
    for event in story.events:
        console.print(f"\n{esc(iso(event.received_at))}  event {esc(event.id)} [bold]{esc(event.event_type)}[/] by {esc(event.origin)}, "
                      f"verified by {esc(event.verified_by)}", highlight=False)
        if event.stated_occurred_at is not None:
            console.print(f"  event time {esc(iso(event.stated_occurred_at))} as sent lay too far ahead of its receipt "
                          f"(server.event_time_tolerance): used {esc(iso(event.occurred_at))} instead", highlight=False)
        else:
            console.print(f"  event time {esc(iso(event.occurred_at))}", highlight=False)
        for route in event.routes:
            verb = "took it" if route.took else "did not take it"
            console.print(f"  route to {esc(route.destination)} {esc(verb)}" + ("" if route.took else f": {esc(route.why)}"),
                          highlight=False)
        for delivery in event.deliveries:
            console.print(f"  delivery {esc(delivery.id)} to {esc(delivery.destination)}: [bold]{esc(delivery.state)}[/]"
                          + (f", CRM record {esc(delivery.crm_id)}" if delivery.crm_id else ""), highlight=False)
            if delivery.speed_to_lead is not None:
                console.print(f"    speed to lead: in the CRM {esc(duration(delivery.speed_to_lead))} after "
                              f"{esc(event.source)} delivered it", highlight=False)
            for attempt in delivery.attempts:
                request = attempt.request or {}
                sent = (f" ({'update' if request.get('update') else 'create'}, batch of {request['batch']})"
                        if "batch" in request else "")
                console.print(f"    {esc(iso(attempt.at))}  {esc(attempt.worker)}{esc(sent)}: {esc(attempt.text)}", highlight=False)
            if not delivery.attempts and delivery.last_error:
                console.print(f"    {esc(delivery.last_error)}", highlight=False)
    console.print(f"\n[dim]{esc(story.duplicates)}[/]", highlight=False)
    for note in story.notes:
        console.print(f"[yellow]note:[/] {esc(note)}", highlight=False)
    for name, crm_id in story.crm_ids.items():
        console.print(f"CRM record in {esc(name)}: {esc(crm_id)}", highlight=False)
    for fieldset in story.fields:
        how = "as decided when sent" if fieldset.recorded else "worked out now; not sent yet"
        title = (f"{esc(fieldset.destination)}: event {esc(fieldset.event_id)} as "
                 f"{'an update' if fieldset.update else 'a new record'} ({esc(how)})")
        if fieldset.problem:
            console.print(f"\n{title}: the mapping cannot map it: {esc(fieldset.problem)}", highlight=False)
            continue
        table = Table("field", "value", "policy", "decision", title=title)
        for f in fieldset.fields:
            decision = DECISIONS.get(f.decision, f.decision) + (f" ({f.note})" if f.note else "")
            table.add_row(esc(f.name), "" if f.value is None else esc(str(f.value)), f.policy, esc(decision))
        console.print(table)
