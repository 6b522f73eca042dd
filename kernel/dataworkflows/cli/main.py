"""The ``dataworkflows`` command line. Built by :func:`build_cli`, never at import time.

The commands live in modules by responsibility (:mod:`~dataworkflows.cli.server`,
:mod:`~dataworkflows.cli.workflows`, :mod:`~dataworkflows.cli.database`,
:mod:`~dataworkflows.cli.resources`, :mod:`~dataworkflows.cli.credentials`,
:mod:`~dataworkflows.cli.templates`,
:mod:`~dataworkflows.cli.plugin_kit`); importing them
is cheap, and each command imports the database layer or the web framework when it runs.
Plugins' commands (``register_commands``) are added only when the CLI needs them: to list
the commands (``--help``) or to run a command the kernel does not have. So ``dataworkflows
run`` loads the plugins once (in its kernel), and ``--help`` imports no plugin's SDK as long
as plugins import their SDKs lazily (README, "Writing a plugin").
"""

from __future__ import annotations

from typing import Any

import click

from dataworkflows import __version__
from dataworkflows.cli.common import HelpGroup, settings_or_fail


class CommandLine(HelpGroup):
    """The top-level group: the kernel's commands, plus the plugins' on first need."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plugin_commands_added = False

    def add_plugin_commands(self) -> None:
        """Call every plugin's ``register_commands`` once; a command named like one of the
        kernel's is ignored, and plugins that fail to load are a warning, not an error."""
        if self.plugin_commands_added:
            return
        self.plugin_commands_added = True
        from dataworkflows.plugins import manager

        try:
            settings = settings_or_fail()
            plugin_set = manager.load_plugins(
                allow=settings.load_plugins, modules=settings.plugin_modules, registries=False
            )
        except (manager.PluginError, click.ClickException) as exc:
            click.echo(f"warning: plugins not loaded: {exc}", err=True)
            return
        kernel_commands = dict(self.commands)
        plugin_set.hook.register_commands(cli=self)
        for name, command in kernel_commands.items():
            if self.commands.get(name) is not command:
                click.echo(
                    f"warning: a plugin's command {name!r} is ignored: the kernel has one",
                    err=True,
                )
                self.commands[name] = command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and not self.plugin_commands_added:
            self.add_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command


def build_cli() -> click.Group:
    """The CLI group with the kernel's commands and every plugin's ``register_commands``."""
    from dataworkflows.cli.commands import command
    from dataworkflows.cli.credentials import register_credential_commands
    from dataworkflows.cli.database import db
    from dataworkflows.cli.ledger import ledger
    from dataworkflows.cli.plugin_kit import plugin_group
    from dataworkflows.cli.resources import register_resource_commands
    from dataworkflows.cli.server import serve, worker
    from dataworkflows.cli.templates import register_template_commands
    from dataworkflows.cli.tokens import tokens
    from dataworkflows.cli.workflows import apply, plugins_cmd, run, validate

    @click.group(cls=CommandLine, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="dataworkflows")
    def cli() -> None:
        """DataWorkflows: run JSON-defined workflows made of plugin actions."""

    commands = (
        *(serve, worker, db, ledger, plugins_cmd, plugin_group, apply, run, validate, command),
        tokens,
    )
    for each in commands:
        cli.add_command(each)
    register_credential_commands(cli)
    register_resource_commands(cli)
    register_template_commands(cli)
    return cli


def main() -> None:
    build_cli()(prog_name="dataworkflows")


if __name__ == "__main__":
    main()
