"""``dataworkflows tokens create|list|revoke``: API tokens of strict mode (docs/auth.md).

They open the database of ``DATAWORKFLOWS_DATABASE_URL`` directly: whoever can run them
can already read the database, so they need no token themselves.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import click

from dataworkflows.common.access import ROLES

_DURATION = re.compile(r"(\d+)([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``90m``, ``12h``, ``30d`` or ``2w`` as a timedelta; click error otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise click.BadParameter(
            f"{text!r}: expected a positive number and a unit, e.g. 90m, 12h, 30d or 2w"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _with_tokens(work: Any) -> Any:
    """Run ``await work(store)`` against the configured database."""
    from dataworkflows.cli.credentials import _with_kernel
    from dataworkflows.service.api_tokens import TokenStore

    return _with_kernel(lambda kernel: work(TokenStore(kernel.db, kernel.clock)))


@click.group("tokens")
def tokens() -> None:
    """API tokens for strict mode: each bound to one tenant and one role."""


@tokens.command("create")
@click.option("--tenant", required=True, help="The tenant the token acts for.")
@click.option("--role", required=True, type=click.Choice(ROLES), help="What it may do.")
@click.option("--name", required=True, help="What it is for (shown by `tokens list`).")
@click.option("--expires-in", default=None, help="e.g. 90m, 12h, 30d, 2w (default: never).")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its facts as JSON.")
def create_cmd(tenant: str, role: str, name: str, expires_in: str | None, as_json: bool) -> None:
    """Create a token and print it. It is shown this once: only its hash is stored."""
    expiry = parse_duration(expires_in) if expires_in is not None else None

    async def work(store: Any) -> Any:
        return await store.create(
            tenant=tenant, role=role, name=name, expires_in=expiry, created_by="cli"
        )

    made = _with_tokens(work)
    if as_json:
        click.echo(json.dumps({"token": made.token, **made.view}, indent=2))
        return
    click.echo(made.token)
    expires = made.view["expiresAt"] or "never"
    click.echo(
        f"token {made.view['id']} ({name}): tenant {tenant}, role {role}, expires {expires}; "
        "store it now, it is not shown again",
        err=True,
    )


@tokens.command("list")
@click.option("--tenant", default=None, help="Only this tenant's tokens.")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(tenant: str | None, as_json: bool) -> None:
    """List tokens (never the tokens themselves), revoked and expired ones too."""

    async def work(store: Any) -> Any:
        return await store.list(tenant)

    views = _with_tokens(work)
    if as_json:
        click.echo(json.dumps(views, indent=2))
        return
    if not views:
        click.echo("no API tokens" + (f" for tenant {tenant}" if tenant else ""))
    for view in views:
        state = f"revoked {view['revokedAt']}" if view["revokedAt"] else "active"
        click.echo(
            f"{view['id']}  {view['tenantId']}  {view['role']:<6}  {view['name']}  "
            f"(expires {view['expiresAt'] or 'never'}; {state})"
        )


@tokens.command("revoke")
@click.argument("token_id")
def revoke_cmd(token_id: str) -> None:
    """Revoke token TOKEN_ID (its id from `tokens list`): refused from now on."""

    async def work(store: Any) -> Any:
        return await store.revoke(token_id)

    view = _with_tokens(work)
    click.echo(f"revoked token {view['id']} ({view['name']}, tenant {view['tenantId']})")
