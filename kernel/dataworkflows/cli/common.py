"""What the CLI's command modules share: settings and errors as click errors, JSON input,
a kernel on the configured database, the help layout and the printing of runs.

Importing it is cheap (click and the settings): every command imports the database layer,
the web framework and the plugins only when it runs.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dataworkflows.cli.event_loop import loop_factory
from dataworkflows.settings import Settings, SettingsError

if TYPE_CHECKING:
    import asyncio

    from dataworkflows.common.errors import ApiError

T = TypeVar("T")


def settings_or_fail(**overrides: Any) -> Settings:
    """The settings from the environment; a bad one is a one-line click error."""
    try:
        return Settings.from_env(**overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def new_loop(settings: Settings) -> asyncio.AbstractEventLoop:
    try:
        return loop_factory(settings)()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def read_json(source: str, what: str) -> Any:
    """JSON text, or ``@path`` / a path to a file holding it."""
    text = source
    path = Path(source[1:] if source.startswith("@") else source)
    if source.startswith("@") or (not source.lstrip().startswith(("{", "[")) and path.is_file()):
        try:
            text = path.read_text()
        except OSError as exc:
            raise click.ClickException(f"cannot read {what} file {path}: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.ClickException(f"{what} is not valid JSON: {exc}") from None


def fail(exc: ApiError) -> click.ClickException:
    """An API error (code, details, every problem) as a click error."""
    message = f"{exc.message} [{exc.code}]"
    if exc.details:
        problems = exc.details.get("problems") if isinstance(exc.details, dict) else None
        if problems:
            message += "".join(f"\n  {p['path']}: {p['message']}" for p in problems)
        else:
            message += f"\n  details: {json.dumps(exc.details)}"
    return click.ClickException(message)


class HelpGroup(click.Group):
    """A command group whose command list shows each command's whole first sentence
    (click cuts it at the terminal width with "..."), and whose subgroups do the same."""

    group_class = type  # subgroups made with @group.group() are HelpGroups too

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            rows.append((name, first_sentence(command.get_short_help_str(limit=10_000))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def first_sentence(text: str) -> str:
    """Up to the first ". " (help texts' first sentence), without reST literals."""
    text = text.replace("``", "`")
    head, dot, _rest = text.partition(". ")
    return head + ("." if dot else "")


def make_kernel(settings: Settings, **kwargs: Any) -> Any:
    """A :class:`~dataworkflows.kernel.Kernel` (not started); plugin errors as click's."""
    from dataworkflows.kernel import Kernel
    from dataworkflows.plugins.manager import PluginError

    try:
        return Kernel(settings, **kwargs)
    except PluginError as exc:
        raise click.ClickException(str(exc)) from None


async def start_kernel(kernel: Any) -> None:
    """``await kernel.start()``; a database behind the code's schema is a click error."""
    from dataworkflows.kernel import SchemaOutOfDate

    try:
        await kernel.start()
    except SchemaOutOfDate as exc:
        await kernel.close()
        raise click.ClickException(str(exc)) from None


def with_kernel(action: Callable[[Any], Awaitable[T]]) -> T:
    """Start a kernel on the configured database, ``await action(kernel)``, close it; an
    API error is printed with its code (exit 1)."""
    import asyncio

    from dataworkflows.common.errors import ApiError

    settings = settings_or_fail()

    async def main() -> T:
        kernel = make_kernel(settings)
        await start_kernel(kernel)
        try:
            return await action(kernel)
        finally:
            await kernel.close()

    try:
        return asyncio.run(main())
    except ApiError as exc:
        raise fail(exc) from None


def configure_logging(settings: Settings) -> None:
    """Log lines on stderr as JSON lines, or for people on a terminal
    (``DATAWORKFLOWS_LOG_FORMAT``); every line of a run carries its ids."""
    from dataworkflows.common import logformat

    logformat.configure(settings.log_level, settings.log_format)


def print_event(
    sequence: int,
    type_: str,
    node_id: str | None,
    payload: dict[str, Any],
    *,
    live: bool = False,
) -> None:
    """One line of a run's progress on stderr: ``[  3] StepSucceeded node (attempt 1)``.

    A live event (not in the ledger, see :class:`~dataworkflows.events.RunEvent`) shows
    ``[  ~]`` instead of a sequence number; a ``StepStarted`` says since when it runs.
    """
    where = f" {node_id}" if node_id else ""
    extra = ""
    if "attempt" in payload:
        extra = f" (attempt {payload['attempt']})"
    if payload.get("startedAt"):
        extra += f" running since {payload['startedAt']}"
    if payload.get("error"):
        extra += f": {payload['error'].get('message', '')}"
    number = "  ~" if live else f"{sequence:>3}"
    click.echo(f"  [{number}] {type_}{where}{extra}", err=True)


def print_ledger(execution: dict[str, Any]) -> None:
    """A run and every attempt of its steps, as a table."""
    from datetime import datetime

    click.echo(
        f"\nrun {execution['id']}  {execution['workflowId']} v{execution['workflowVersion']}  "
        f"{execution['status']}"
    )
    header = ("node", "action", "attempt", "status", "ms", "outputs / error")
    rows = []
    for a in execution["actions"]:
        ms = ""
        if a["startedAt"] and a["endedAt"]:
            delta = datetime.fromisoformat(a["endedAt"]) - datetime.fromisoformat(a["startedAt"])
            ms = f"{delta.total_seconds() * 1000:.0f}"
        detail = json.dumps(a["outputs"]) if a["status"] == "Succeeded" else json.dumps(a["error"])
        rows.append((a["nodeId"], a["actionType"], str(a["attempt"]), a["status"], ms, detail))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        click.echo(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5]
        )
    if execution["error"]:
        click.echo(f"error: {json.dumps(execution['error'])}")
