"""Personal information: `forget` a person, `db rotate-key` and `db new-key` (docs/privacy.md)."""

from __future__ import annotations

import json

import click
from rich.table import Table

from connector.cli.app import Context, console, fail, main, pass_ctx
from connector.cli.run import db
from connector.privacy.forget import forget as forget_person
from connector.store import SealError


@main.command()
@click.option("--email", default=None, help="The person's email (any case, spaces around it ignored).")
@click.option("--phone", default=None, help="The person's phone in any form: 082 555 0101, +27825550101, 0027...")
@click.option("--lead", "lead_id", default=None, help="A lead id: that lead's person (by its email and phone).")
@click.option("--source", "-s", default=None, help="Only events from this source.")
@click.option("--reason", default="", help="Why (kept in the tombstone, e.g. a ticket number; no personal data).")
@click.option("--crm", is_flag=True, help="Also erase the person in each destination that can, and add the email "
                                          "to LeadOS's suppression list.")
@click.option("--dry-run", is_flag=True, help="Say what would be erased, per place, without erasing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def forget(ctx: Context, email: str | None, phone: str | None, lead_id: str | None, source: str | None, reason: str,
           crm: bool, dry_run: bool, as_json: bool) -> None:
    """Erase a person's personal information everywhere the connector keeps it (POPIA s24), leaving a tombstone."""
    if not (email or phone or lead_id):
        fail("give --email, --phone or --lead")
    if source and source not in ctx.config.sources:
        fail(f"no source named '{source}'")
    try:
        report = forget_person(ctx.runtime, email=email, phone=phone, lead_id=lead_id, source=source, reason=reason,
                               crm=crm, dry_run=dry_run)
    except SealError as exc:
        fail(str(exc), code=1)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        verb = "would erase" if dry_run else "erased"
        leads = ", ".join(f"{s}:{i}" for s, i in report.leads) or "none stored"
        console.print(f"found {report.events} events of {len(report.leads)} leads ({leads})"
                      + (f"; already forgotten {report.already_forgotten} time(s)" if report.already_forgotten else ""),
                      highlight=False)
        table = Table("place", f"rows {verb}")
        for place, count in report.places.items():
            table.add_row(place, str(count) + (" (holds no personal data)" if place == "lead state" else ""))
        console.print(table)
        for result in report.crm:
            colour = "red" if result.failed else "green" if result.status == "erased" else "yellow"
            console.print(f"[{colour}]{result.place}: {result.status}[/] {result.detail}", highlight=False)
        if dry_run:
            console.print("dry run: nothing was changed")
    if report.failed:
        raise SystemExit(1)


@db.command("rotate-key")
@click.option("--batch", default=500, show_default=True, help="Events re-encrypted per transaction.")
@pass_ctx
def rotate_key(ctx: Context, batch: int) -> None:
    """Re-encrypt every stored body and lead with the first of privacy.encryption_keys (plain ones too)."""
    try:
        count = ctx.store.privacy.rotate(batch)
    except (ValueError, SealError) as exc:
        fail(str(exc), code=1)
    console.print(f"{count} events encrypted with the first key of privacy.encryption_keys; older keys can go "
                  "once every process runs with the new list")


@db.command("new-key")
def new_key() -> None:
    """Print a new Fernet key for privacy.encryption_keys (keep it in the environment, not the file)."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())
