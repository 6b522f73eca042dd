"""``dataworkflows db ...``: the database schema (alembic migrations shipped with the kernel)."""

from __future__ import annotations

import click

from dataworkflows.cli.common import HelpGroup, settings_or_fail


@click.group(cls=HelpGroup)
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="heads", show_default=True)
def db_upgrade(revision: str) -> None:
    """Migrate the database to the latest schema."""
    from dataworkflows.db import migrate
    from dataworkflows.secrets.keys import SecretKeyError

    settings = settings_or_fail()
    try:
        migrate.upgrade(settings.database_url, revision)
    except (SecretKeyError, RuntimeError) as exc:  # a data migration that needs the key
        raise click.ClickException(str(exc)) from None
    click.echo(f"database at {', '.join(sorted(migrate.current_revisions(settings.database_url)))}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ("base" removes every table)."""
    from dataworkflows.db import migrate
    from dataworkflows.secrets.keys import SecretKeyError

    try:
        migrate.downgrade(settings_or_fail().database_url, revision)
    except (SecretKeyError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"database downgraded to {revision}")


@db.command("current")
def db_current() -> None:
    """Show the database's schema revision and whether it is up to date."""
    from dataworkflows.db import migrate

    url = settings_or_fail().database_url
    current = migrate.current_revisions(url)
    state = "up to date" if current == migrate.head_revisions() else "NOT up to date"
    click.echo(f"{', '.join(sorted(current)) or '(empty)'} ({state})")
