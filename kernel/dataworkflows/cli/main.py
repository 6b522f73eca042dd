"""The ``dataworkflows`` command line. Built by :func:`build_cli`, never at import time.

The commands live in modules by responsibility (:mod:`~dataworkflows.cli.server`,
:mod:`~dataworkflows.cli.workflows`, :mod:`~dataworkflows.cli.database`,
:mod:`~dataworkflows.cli.resources`, :mod:`~dataworkflows.cli.credentials`); importing them
is cheap, and each command imports the database layer or the web framework when it runs.
"""

from __future__ import annotations

import click

from dataworkflows import __version__
from dataworkflows.cli.common import HelpGroup, settings_or_fail


def build_cli() -> click.Group:
    """The CLI group with the kernel's commands and every plugin's ``register_commands``."""
    from dataworkflows.cli.credentials import register_credential_commands
    from dataworkflows.cli.database import db
    from dataworkflows.cli.resources import register_resource_commands
    from dataworkflows.cli.server import serve, worker
    from dataworkflows.cli.workflows import apply, plugins_cmd, run, validate

    @click.group(cls=HelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="dataworkflows")
    def cli() -> None:
        """DataWorkflows: run JSON-defined workflows made of plugin actions."""

    for command in (serve, worker, db, plugins_cmd, apply, run, validate):
        cli.add_command(command)
    register_credential_commands(cli)
    register_resource_commands(cli)

    from dataworkflows.plugins.manager import PluginError, load_plugins

    try:
        settings = settings_or_fail()
        plugin_set = load_plugins(allow=settings.load_plugins, modules=settings.plugin_modules)
    except (PluginError, click.ClickException) as exc:
        click.echo(f"warning: plugins not loaded: {exc}", err=True)
    else:
        plugin_set.hook.register_commands(cli=cli)
    return cli


def main() -> None:
    build_cli()(prog_name="dataworkflows")


if __name__ == "__main__":
    main()
