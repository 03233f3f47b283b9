"""``idp legacy``: operators' commands for legacy users."""

from __future__ import annotations

import csv

import click
from flask.cli import with_appcontext

from ..extensions import db_session


@click.group("legacy", help="Legacy users (agreement usernames from before the Connect login).")
def legacy_group():
    pass


@legacy_group.command("import", help="Import legacy users from a CSV file with the header "
                                     "agreement_number,agreement_name,product,username,email,role,legacy_hash. "
                                     "Safe to run again: unchanged rows change nothing.")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Check and count, but write nothing.")
@with_appcontext
def legacy_import(path, dry_run):
    from . import service

    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip().lower() for name in reader.fieldnames or []]
        missing = [c for c in service.COLUMNS if c not in header]
        if missing:
            raise click.ClickException(f"the header lacks {', '.join(missing)}; expected {','.join(service.COLUMNS)}")
        reader.fieldnames = header
        # Row numbers as a spreadsheet shows them: the header is row 1.
        rows = ((reader.line_num, row) for row in reader)
        try:
            summary = service.import_rows(db_session(), rows, dry_run=dry_run)
        except (csv.Error, UnicodeDecodeError) as error:
            raise click.ClickException(f"{path} is not readable as UTF-8 CSV: {error}") from None
    prefix = "would have " if dry_run else ""
    click.echo(f"{prefix}created {summary.created}, updated {summary.updated}, unchanged {summary.unchanged}, "
               f"rejected {len(summary.rejected)}; agreements created {summary.agreements_created}")
    for number, reason in summary.rejected:
        click.echo(f"row {number}: rejected: {reason}")
