"""``dataworkflows plugins | apply | run | validate``: a workflow file from the command line,
and the plugins that give it its action types."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from dataworkflows.cli.common import (
    fail,
    make_kernel,
    print_event,
    print_ledger,
    read_json,
    settings_or_fail,
    start_kernel,
    with_kernel,
)
from dataworkflows.common.clock import iso_utc
from dataworkflows.settings import Settings

workflow_file = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))


@click.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="Include the kernel's default plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with parameter schemas).")
@click.option(
    "--check",
    is_flag=True,
    help="Load every installed plugin on its own and check its hooks, types, schemas and "
    "plugin-API version; exit 1 if any has a problem.",
)
def plugins_cmd(show_all: bool, as_json: bool, check: bool) -> None:
    """List installed plugins with their action and trigger types."""
    from dataworkflows.plugins.listing import describe_declared
    from dataworkflows.plugins.manager import PluginError, load_plugins

    settings = settings_or_fail()
    if check:
        check_plugins(settings.plugin_modules)
        return
    try:
        described = None
        if not as_json:  # the table: from what plugins declare, when all of them do
            light = load_plugins(
                allow=settings.load_plugins, modules=settings.plugin_modules, registries=False
            )
            described = describe_declared(light, include_defaults=show_all)
        if described is None:
            plugin_set = load_plugins(allow=settings.load_plugins, modules=settings.plugin_modules)
            described = plugin_set.describe(include_defaults=show_all, schemas=as_json)
    except PluginError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    if not described:
        click.echo("No plugins installed: no action types are available.")
        return
    for plugin in described:
        origin = f"{plugin['distribution'] or '-'} {plugin['version'] or ''}".rstrip()
        click.echo(f"{plugin['name']}  ({origin})")
        for action in plugin["actions"]:
            click.echo(f"    action   {action['type']:<28} {action['title']}")
        for trigger in plugin["triggers"]:
            click.echo(f"    trigger  {trigger['type']:<28} {trigger['title']}")


def check_plugins(modules: str | None) -> None:
    """``plugins --check``: every problem, with the plugin's distribution, and exit 1; or a
    table of the plugins and exit 0. Deprecation warnings are shown and do not fail."""
    from dataworkflows.hookspecs import PLUGIN_API_VERSION
    from dataworkflows.plugins.check import check_installed

    reports = check_installed(modules=modules)
    for report in reports:
        for warning in report.warnings:
            click.echo(f"warning: {report.origin}: {warning}", err=True)
    failed = [report for report in reports if report.problems]
    if failed:
        for report in failed:
            for problem in report.problems:
                click.echo(f"{report.origin}: {problem}")
        problems = sum(len(report.problems) for report in failed)
        click.echo(f"{problems} problem(s) in {len(failed)} of {len(reports)} plugin(s)", err=True)
        sys.exit(1)
    rows = [("plugin", "distribution", "version", "API", "actions", "triggers")]
    rows += [
        (
            r.info.name,
            r.info.distribution or "-",
            r.info.version or "-",
            r.api or "-",
            str(len(r.actions)),
            str(len(r.triggers)),
        )
        for r in reports
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    click.echo(
        f"{len(reports)} plugin(s) checked against plugin API {PLUGIN_API_VERSION}: no problems"
    )


@click.command()
@workflow_file
def apply(file: Path) -> None:
    """Create the workflow in FILE, or add it as a new version, and publish it."""
    definition = read_json(f"@{file}", "workflow file")
    view = with_kernel(lambda kernel: kernel.service.apply(definition, actor="cli"))
    click.echo(f"{view['id']}: version {view['currentVersion']} is {view['status']}")


@click.command()
@workflow_file
@click.option("--trigger", "trigger_src", help="Trigger JSON, or @FILE.")
@click.option(
    "--request", "request_src", help="An execute request ({trigger, requestId}) JSON, or @FILE."
)
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait.")
@click.option(
    "--publish", is_flag=True, help="Publish FILE first (like apply), then run that version."
)
def run(
    file: Path,
    trigger_src: str | None,
    request_src: str | None,
    timeout: float,
    publish: bool,
) -> None:
    """Test-run FILE here with a progress display, and print the run's ledger.

    The definition is validated and run without becoming the current version: what
    is live (the published version, its triggers, the workflow's name) does not change,
    and the run is marked as a test run. With --publish, FILE is published first.
    Exits 1 if the run does not succeed.
    """
    import asyncio

    from dataworkflows.common.errors import ApiError

    definition = read_json(f"@{file}", "workflow file")
    request: dict[str, Any] = {}
    if request_src:
        request = read_json(request_src, "request")
        if not isinstance(request, dict):
            raise click.ClickException("the request must be a JSON object")
    if trigger_src:
        request["trigger"] = read_json(trigger_src, "trigger")
    settings = settings_or_fail()
    try:
        status, execution = asyncio.run(
            _run(settings, definition, request, timeout, publish=publish)
        )
    except ApiError as exc:
        raise fail(exc) from None
    except TimeoutError as exc:
        raise click.ClickException(f"gave up waiting: {exc}") from None
    print_ledger(execution)
    if status != "Succeeded":
        sys.exit(1)


@click.command()
@workflow_file
def validate(file: Path) -> None:
    """Check the workflow in FILE as a publish would; print every problem (exit 1)."""
    from dataworkflows.common.errors import ApiError

    definition = read_json(f"@{file}", "workflow file")
    settings = settings_or_fail()
    kernel = make_kernel(settings)  # for the installed plugins; no database is opened
    try:
        kernel.service.validate(definition)
    except ApiError as exc:
        raise fail(exc) from None
    click.echo(f"{file}: valid")


class _Progress:
    """An ``on_run_event`` observer that prints the run's events as they happen."""

    def __init__(self) -> None:
        from dataworkflows.hookspecs import hookimpl

        self.execution_id: str | None = None

        @hookimpl
        def on_run_event(event: Any) -> None:
            if self.execution_id is not None and event.execution_id != self.execution_id:
                return
            payload = dict(event.payload)
            if not event.durable:  # a step that just began (live): since when
                payload["startedAt"] = iso_utc(event.created_at)
            print_event(
                event.sequence, str(event.type), event.node_id, payload, live=not event.durable
            )

        self.on_run_event = on_run_event


async def _run(
    settings: Settings,
    definition: Any,
    request: dict[str, Any],
    timeout: float,
    *,
    publish: bool = False,
) -> tuple[str, dict[str, Any]]:
    import uuid

    progress = _Progress()
    kernel = make_kernel(settings, extra_plugins=[progress])
    await start_kernel(kernel)
    try:
        if publish:
            view = await kernel.service.apply(definition, actor="cli")
            click.echo(
                f"{view['id']}: version {view['currentVersion']} is {view['status']}", err=True
            )
            summary, created = await kernel.service.execute(
                view["id"],
                trigger=request.get("trigger"),
                request_id=request.get("requestId"),
                principal="cli",
            )
        else:
            summary, created, version = await kernel.service.test_run(
                definition,
                trigger=request.get("trigger"),
                request_id=request.get("requestId"),
                actor="cli",
            )
            click.echo(
                f"test run of {definition['id']} version {version} (not published; "
                "--publish makes it the current version)",
                err=True,
            )
        progress.execution_id = summary["executionId"]
        click.echo(
            f"run {summary['executionId']} {'queued' if created else 'already exists'}", err=True
        )
        kernel.start_worker()
        status = await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"]), timeout)
        return status, await kernel.service.get_execution(summary["executionId"])
    finally:
        await kernel.close()
