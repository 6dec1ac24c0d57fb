"""`connector webhooks register` and `connector stats`: a marketplace account, from the terminal.

Generic over `MarketplaceApi.register_webhook` / `stats`: any marketplace whose client implements
them works here; the others say plainly that their API has no such call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from connector import yamlfile
from connector.cli.app import Context, console, fail, main, pass_ctx
from connector.errors import ConfigError, ConfigProblem, ConnectorError
from connector.sources.base import MarketplaceApi


def source_api(ctx: Context, source: str) -> MarketplaceApi:
    """The API client of a configured source, or a clear exit (unknown source, no API, no key)."""
    if source not in ctx.config.sources:
        fail(f"no source named '{source}'{yamlfile.did_you_mean(source, ctx.config.sources)} "
             f"(configured: {', '.join(ctx.config.sources)})")
    try:
        return ctx.runtime.marketplaces[source].api()
    except NotImplementedError as exc:
        fail(str(exc))
    except (ConfigError, ConfigProblem) as exc:
        fail(escape(f"configuration problem: {exc}"))


@contextmanager
def calling(ctx: Context, source: str) -> Iterator[MarketplaceApi]:
    """A source's API client for one command: its failures become clear exits, and it is closed."""
    api = source_api(ctx, source)
    try:
        yield api
    except NotImplementedError as exc:
        fail(str(exc))
    except ConnectorError as exc:
        fail(escape(exc.describe()), code=1)
    finally:
        api.close()


@main.group()
def webhooks() -> None:
    """Tell a marketplace where to send its webhooks."""


@webhooks.command("register")
@click.option("--source", "-s", required=True, help="The configured source (e.g. leaditio).")
@click.option("--url", required=True,
              help="The public HTTPS address of this connector's receiver, e.g. https://app.example.com; "
                   "/webhooks/<source> is added when missing.")
@click.option("--event", "events", multiple=True,
              help="Event type to subscribe to (repeatable; default: the source's `events:`, else all).")
@pass_ctx
def register(ctx: Context, source: str, url: str, events: tuple[str, ...]) -> None:
    """Register this connector's webhook URL and secret (the source's first secret) with the marketplace."""
    target = url.rstrip("/")
    if "/webhooks/" not in target:
        target = f"{target}/webhooks/{source}"
    secret = ctx.config.sources[source].secret_values()[0]
    chosen = list(events) or ctx.runtime.marketplaces[source].webhook_events()
    with calling(ctx, source) as api:
        answer = api.register_webhook(target, secret, chosen)
    shown = {k: v for k, v in answer.items() if "secret" not in k.lower()}
    console.print(f"registered {target} for {', '.join(chosen)}", highlight=False)
    for key, value in shown.items():
        console.print(f"  {key}: {value}", highlight=False)


@main.command()
@click.option("--source", "-s", required=True, help="The configured source (e.g. leaditio).")
@click.option("--json", "as_json", is_flag=True, help="Print the marketplace's answer as JSON (for scripts).")
@pass_ctx
def stats(ctx: Context, source: str, as_json: bool) -> None:
    """Account statistics from the marketplace: leads received, conversion, quota, plan."""
    with calling(ctx, source) as api:
        answer = api.stats()
    if as_json:
        click.echo(json.dumps(answer, indent=2, sort_keys=True))
        return
    table = Table("statistic", "value", title=f"{source} account")
    for key, value in answer.items():
        table.add_row(key.replace("_", " "), _cell(value))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "-" if value is None else str(value)
