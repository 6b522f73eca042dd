"""``dataworkflows credentials ...``: the encrypted credential store from the command line.

Kept apart from :mod:`dataworkflows.secrets.credentials` so that building the CLI (``--help``)
does not import the database layer: each command imports what it needs when it runs.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from dataworkflows.secrets.credentials import CredentialStore


def register_credential_commands(cli: click.Group) -> None:
    """Add ``dataworkflows credentials ...`` to the CLI (called by ``build_cli``)."""

    @cli.group("credentials")
    def credentials_group() -> None:
        """Encrypted credentials (key: DATAWORKFLOWS_SECRET_KEY)."""

    @credentials_group.command("generate-key")
    def generate_key_cmd() -> None:
        """Print a new random key for DATAWORKFLOWS_SECRET_KEY."""
        from dataworkflows.secrets.keys import generate_key

        click.echo(generate_key())

    @credentials_group.command("set")
    @click.argument("name")
    @click.option("--tenant", default="default", show_default=True)
    @click.option("--description", default=None)
    @click.option("--allowed-host", "allowed_hosts", multiple=True, help="Repeatable.")
    @click.option(
        "--from-env", "from_env", metavar="VAR", help="Read the secret from this variable."
    )
    def set_cmd(
        name: str,
        tenant: str,
        description: str | None,
        allowed_hosts: tuple[str, ...],
        from_env: str | None,
    ) -> None:
        """Create or replace credential NAME. The secret is read from --from-env, else
        from standard input (first line), else asked for without echo."""
        import sys

        if from_env:
            if from_env not in os.environ:
                raise click.ClickException(f"environment variable {from_env} is not set")
            secret = os.environ[from_env]
        elif not sys.stdin.isatty():
            secret = sys.stdin.readline().rstrip("\r\n")
        else:
            secret = click.prompt("secret", hide_input=True, confirmation_prompt=True)

        async def work(store: CredentialStore) -> tuple[dict[str, Any], bool]:
            return await store.put(
                tenant,
                name,
                secret,
                description=description,
                allowed_hosts=list(allowed_hosts) or None,
                actor="cli",
            )

        row, created = _with_store(work)
        click.echo(
            f"{'created' if created else 'replaced'} credential {row['name']} "
            f"(tenant {row['tenant_id']}, key {row['key_id']})"
        )

    @credentials_group.command("list")
    @click.option("--tenant", default="default", show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def list_cmd(tenant: str, as_json: bool) -> None:
        """List a tenant's credentials (never their secrets)."""

        async def work(store: CredentialStore) -> list[dict[str, Any]]:
            return await store.list(tenant)

        from dataworkflows.secrets.credentials import credential_view

        views = [credential_view(r) for r in _with_store(work)]
        if as_json:
            click.echo(json.dumps(views, indent=2))
        elif not views:
            click.echo(f"no credentials for tenant {tenant}")
        for view in [] if as_json else views:
            hosts = ", ".join(view["allowedHosts"]) or "any host"
            click.echo(f"{view['name']}  (key {view['keyId']}; {hosts})")

    @credentials_group.command("delete")
    @click.argument("name")
    @click.option("--tenant", default="default", show_default=True)
    def delete_cmd(name: str, tenant: str) -> None:
        """Delete credential NAME."""

        async def work(store: CredentialStore) -> bool:
            return await store.delete(tenant, name)

        if not _with_store(work):
            raise click.ClickException(f"no credential {name!r} for tenant {tenant!r}")
        click.echo(f"deleted credential {name} (tenant {tenant})")

    @credentials_group.command("re-encrypt")
    def re_encrypt_cmd() -> None:
        """Re-encrypt every stored credential with the first key of DATAWORKFLOWS_SECRET_KEY.

        Rotation: set DATAWORKFLOWS_SECRET_KEY="new,old", run this, then remove the old key.
        Exits 1 if some credential could not be decrypted with any key.
        """

        async def work(kernel: Any) -> tuple[dict[str, Any], ...]:
            return (
                await kernel.credentials.store.re_encrypt(),
                await kernel.triggers.re_encrypt(),
                await kernel.service.re_encrypt(),
            )

        summary, triggers, definitions = _with_kernel(work, entrypoints=True)
        click.echo(
            f"credentials: {summary['reencrypted']} re-encrypted, {summary['current']} already "
            f"current, {len(summary['failed'])} failed (of {summary['total']})"
        )
        click.echo(
            f"trigger secrets: {triggers['reencrypted']} triggers re-encrypted, "
            f"{triggers['current']} already current, {len(triggers['failed'])} failed, "
            f"{len(triggers['unknownType'])} of a type not installed (of {triggers['total']})"
        )
        click.echo(
            f"secret parameters: {definitions['reencrypted']} workflow versions re-encrypted, "
            f"{definitions['current']} already current, {len(definitions['failed'])} failed "
            f"(of {definitions['total']})"
        )
        for failure in summary["failed"]:
            click.echo(f"  {failure['tenantId']}/{failure['name']}: {failure['error']}", err=True)
        for failure in triggers["failed"]:
            click.echo(f"  trigger {failure['id']}: {failure['error']}", err=True)
        for failure in definitions["failed"]:
            click.echo(f"  workflow version {failure['id']}: {failure['error']}", err=True)
        for trigger_id in triggers["unknownType"]:
            click.echo(
                f"  trigger {trigger_id}: its type's plugin is not installed, so its secret "
                "fields are unknown; install it and run this again",
                err=True,
            )
        if summary["failed"] or triggers["failed"] or definitions["failed"]:
            raise SystemExit(1)


def _with_store(work: Any) -> Any:
    """Run ``await work(store)`` against the configured database."""
    return _with_kernel(lambda kernel: work(kernel.credentials.store))


def _with_kernel(work: Any, *, entrypoints: bool = False) -> Any:
    """Run ``await work(kernel)`` against the configured database (``entrypoints``: load
    the installed plugins, e.g. for their trigger schemas)."""
    import asyncio

    from dataworkflows.common.errors import ApiError
    from dataworkflows.kernel import Kernel, SchemaOutOfDate
    from dataworkflows.plugins.manager import PluginError
    from dataworkflows.secrets.keys import SecretKeyError
    from dataworkflows.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None

    async def main() -> Any:
        kernel = Kernel(settings, entrypoints=entrypoints)
        try:
            await kernel.start()
            return await work(kernel)
        finally:
            await kernel.close()

    try:
        return asyncio.run(main())
    except (SchemaOutOfDate, SecretKeyError, PluginError) as exc:
        raise click.ClickException(str(exc)) from None
    except ApiError as exc:
        raise click.ClickException(f"{exc.message} [{exc.code}]") from None
