"""`connector mappings check|preview|schema`: for the CRM admin editing a mapping file."""

from __future__ import annotations

import json
from pathlib import Path

import click

from connector.cli.app import Context, console, fail, main, pass_ctx
from connector.config import json_schema as config_json_schema
from connector.errors import ConfigError, Permanent
from connector.lead import mapping_input
from connector.mapping.spec import json_schema
from connector.sources import InvalidPayload

SCHEMA_FILE = Path("mappings/mapping.schema.json")
CONFIG_SCHEMA_FILE = Path("config.schema.json")


@main.group()
def mappings() -> None:
    """Check, preview and describe the YAML field mappings."""


@mappings.command()
@click.option("--destination", "-d", multiple=True, help="Only this destination (repeatable).")
@click.option("--against-crm", is_flag=True, help="Also ask the CRM whether every field exists and fits.")
@pass_ctx
def check(ctx: Context, destination: tuple[str, ...], against_crm: bool) -> None:
    """Load every mapping and report each mistake with file, line and field."""
    names = list(destination) or list(ctx.config.destinations)
    problems = 0
    for name in names:
        if name not in ctx.config.destinations:
            fail(f"no destination named '{name}'")
        try:
            mapping = ctx.runtime.mapping(name)
        except ConfigError as exc:
            problems += 1
            console.print(f"[red]✗[/] {name}: {exc}", highlight=False)
            continue
        routed = {ctx.config.sources[r.source].marketplace for r in ctx.config.routes if r.destination == name}
        for warning in mapping.unfed_fields(routed):
            console.print(f"[yellow]![/] {name}: {warning}", highlight=False)
        found = ctx.runtime.destination(name).check_against_crm(mapping) if against_crm else []
        if found:
            problems += len(found)
            console.print(f"[red]✗[/] {name} ({mapping.path}):", highlight=False)
            for line in found:
                console.print(f"    - {line}", highlight=False)
        else:
            scope = " and the CRM agrees" if against_crm else ""
            console.print(f"[green]✓[/] {name}: {mapping.path} ({len(mapping.fields)} fields){scope}",
                          highlight=False)
    if problems:
        raise SystemExit(1)


@mappings.command()
@click.option("--destination", "-d", required=True, help="The destination whose mapping to use.")
@click.option("--payload", type=click.Path(exists=True, dir_okay=False),
              help="A webhook body (JSON) to map; default: the source's sample lead.")
@click.option("--source", "-s", default=None, help="The source the payload comes from (default: the first).")
@click.option("--event", default=None, help="Treat it as this event type (e.g. lead.updated).")
@pass_ctx
def preview(ctx: Context, destination: str, payload: str | None, source: str | None, event: str | None) -> None:
    """Print the exact record that would be sent for a lead."""
    config = ctx.config
    if destination not in config.destinations:
        fail(f"no destination named '{destination}'")
    source = source or next(iter(config.sources))
    if source not in config.sources:
        fail(f"no source named '{source}'")
    marketplace = ctx.runtime.marketplaces[source]
    body = Path(payload).read_bytes() if payload else json.dumps(marketplace.sample_payload()).encode()
    try:
        inbound = marketplace.parse(body)
        mapping = ctx.runtime.mapping(destination)
    except (InvalidPayload, ConfigError) as exc:
        fail(str(exc))
    document = mapping_input(inbound.lead, source=source, event=event or inbound.event_type,
                             marketplace=marketplace.name)
    try:
        mapped = mapping.apply(document)
    except Permanent as exc:  # a required field left empty: say which
        fail(str(exc), code=1)
    on_update = {k: v for k, v in mapped.values.items() if mapped.policies[k].value == "always"}
    shown = {"destination": destination, "type": config.destinations[destination].type,
             "record": mapped.values, "sent_on_update": on_update}
    if mapped.notes:  # fields a transform left empty (an invalid phone number, ...), and why
        shown["notes"] = mapped.notes
    console.print_json(json.dumps(shown, default=str))


@mappings.command()
@click.option("--write", is_flag=True, help=f"Write it to {SCHEMA_FILE} (or {CONFIG_SCHEMA_FILE}) instead of printing it.")
@click.option("--config-file", "of_config", is_flag=True, help="The schema of config.yaml instead of mapping files.")
def schema(write: bool, of_config: bool) -> None:
    """The JSON Schema of mapping files, or of the config file (editors use it for autocomplete)."""
    text = json.dumps(config_json_schema() if of_config else json_schema(), indent=2) + "\n"
    if write:
        target = CONFIG_SCHEMA_FILE if of_config else SCHEMA_FILE
        target.write_text(text)
        console.print(f"wrote {target}")
    else:
        click.echo(text, nl=False)
