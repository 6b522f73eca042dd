"""The ``dataworkflows`` command line. Built by :func:`build_cli`, never at import time."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from dataworkflows import __version__
from dataworkflows.cli.event_loop import loop_factory, loop_name
from dataworkflows.common.errors import ApiError
from dataworkflows.settings import Settings, SettingsError


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _new_loop(settings: Settings) -> asyncio.AbstractEventLoop:
    try:
        return loop_factory(settings)()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _read_json(source: str, what: str) -> Any:
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


def _fail(exc: ApiError) -> click.ClickException:
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
            rows.append((name, _first_sentence(command.get_short_help_str(limit=10_000))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _first_sentence(text: str) -> str:
    """Up to the first ". " (help texts' first sentence), without reST literals."""
    text = text.replace("``", "`")
    head, dot, _rest = text.partition(". ")
    return head + ("." if dot else "")


def build_cli() -> click.Group:
    """The CLI group with the kernel's commands and every plugin's ``register_commands``."""

    @click.group(cls=HelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="dataworkflows")
    def cli() -> None:
        """DataWorkflows: run JSON-defined workflows made of plugin actions."""

    @cli.command()
    @click.option("--host", default=None, help="Interface to bind (default 127.0.0.1).")
    @click.option("--port", type=int, default=None, help="Port (default 8080).")
    @click.option("--no-worker", is_flag=True, help="Serve the API only; run no embedded worker.")
    def serve(host: str | None, port: int | None, no_worker: bool) -> None:
        """Serve the HTTP API with an embedded worker (database: DATAWORKFLOWS_DATABASE_URL)."""
        from aiohttp import web

        from dataworkflows.api import create_app
        from dataworkflows.kernel import SchemaOutOfDate

        settings = _settings(host=host, port=port)
        _configure_logging(settings)
        loop = _new_loop(settings)
        asyncio.set_event_loop(loop)
        kernel = _make_kernel(settings)
        app = create_app(kernel, run_worker=not no_worker)
        app.on_startup.append(_start_template_workers)
        banner = (
            f"DataWorkflows {__version__} on http://{settings.host}:{settings.port} "
            f"(database {kernel.db.engine.url.render_as_string()}, "
            f"{len(kernel.plugins.actions)} action types, {loop_name(loop)} event loop)"
        )
        try:
            web.run_app(
                app,
                loop=loop,
                host=settings.host,
                port=settings.port,
                # aiohttp calls this once the socket is bound: the banner is never a lie
                print=lambda _message: click.echo(banner),
                # the access log is written outside the request's context: log the echoed id
                access_log_format='%a "%r" %s %b %Tfs cid=%{Correlation-Id}o',
            )
        except SchemaOutOfDate as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise click.ClickException(
                    f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
                ) from None
            raise click.ClickException(
                f"port {settings.port} on {settings.host} is already in use: choose another "
                "with --port or DATAWORKFLOWS_PORT"
            ) from None

    @cli.command()
    @click.option("--concurrency", type=int, default=None, help="Runs executed at once.")
    def worker(concurrency: int | None) -> None:
        """Run a worker that executes queued runs from the database.

        SIGTERM or Ctrl-C: stop claiming, let runs in flight finish within
        DATAWORKFLOWS_SHUTDOWN_GRACE seconds, release the rest to other workers, exit 0.
        A second signal (more than 2 s after the first: a signal delivered to the whole
        process group arrives twice) exits at once, like a kill (leases then expire and
        other workers recover the runs).
        """
        settings = _settings(worker_concurrency=concurrency)
        _configure_logging(settings)
        with asyncio.Runner(loop_factory=lambda: _new_loop(settings)) as runner:
            runner.run(_worker_main(settings))

    @cli.group()
    def db() -> None:
        """Database schema commands."""

    @db.command("upgrade")
    @click.option("--revision", default="heads", show_default=True)
    def db_upgrade(revision: str) -> None:
        """Migrate the database to the latest schema."""
        from dataworkflows.db import migrate
        from dataworkflows.secrets.keys import SecretKeyError

        settings = _settings()
        try:
            migrate.upgrade(settings.database_url, revision)
        except (SecretKeyError, RuntimeError) as exc:  # a data migration that needs the key
            raise click.ClickException(str(exc)) from None
        click.echo(
            f"database at {', '.join(sorted(migrate.current_revisions(settings.database_url)))}"
        )

    @db.command("downgrade")
    @click.argument("revision")
    def db_downgrade(revision: str) -> None:
        """Migrate the database down to REVISION ("base" removes every table)."""
        from dataworkflows.db import migrate
        from dataworkflows.secrets.keys import SecretKeyError

        try:
            migrate.downgrade(_settings().database_url, revision)
        except (SecretKeyError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"database downgraded to {revision}")

    @db.command("current")
    def db_current() -> None:
        """Show the database's schema revision and whether it is up to date."""
        from dataworkflows.db import migrate

        url = _settings().database_url
        current = migrate.current_revisions(url)
        state = "up to date" if current == migrate.head_revisions() else "NOT up to date"
        click.echo(f"{', '.join(sorted(current)) or '(empty)'} ({state})")

    @cli.command("plugins")
    @click.option("--all", "show_all", is_flag=True, help="Include the kernel's default plugins.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON (with parameter schemas).")
    def plugins_cmd(show_all: bool, as_json: bool) -> None:
        """List installed plugins with their action and trigger types."""
        from dataworkflows.plugins.manager import PluginError, load_plugins

        settings = _settings()
        try:
            plugin_set = load_plugins(allow=settings.load_plugins, modules=settings.plugin_modules)
        except PluginError as exc:
            raise click.ClickException(str(exc)) from None
        described = plugin_set.describe(include_defaults=show_all)
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

    @cli.command()
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    def apply(file: Path) -> None:
        """Create the workflow in FILE, or add it as a new version, and publish it."""
        definition = _read_json(f"@{file}", "workflow file")
        settings = _settings()

        async def main() -> dict[str, Any]:
            kernel = _make_kernel(settings)
            await _start(kernel)
            try:
                return await kernel.service.apply(definition, actor="cli")
            finally:
                await kernel.close()

        try:
            view = asyncio.run(main())
        except ApiError as exc:
            raise _fail(exc) from None
        click.echo(f"{view['id']}: version {view['currentVersion']} is {view['status']}")

    @cli.command()
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--trigger", "trigger_src", help="Trigger JSON, or @FILE.")
    @click.option(
        "--request", "request_src", help="An execute request ({trigger, requestId}) JSON, or @FILE."
    )
    @click.option(
        "--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait."
    )
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
        definition = _read_json(f"@{file}", "workflow file")
        request: dict[str, Any] = {}
        if request_src:
            request = _read_json(request_src, "request")
            if not isinstance(request, dict):
                raise click.ClickException("the request must be a JSON object")
        if trigger_src:
            request["trigger"] = _read_json(trigger_src, "trigger")
        settings = _settings()
        try:
            status, execution = asyncio.run(
                _run(settings, definition, request, timeout, publish=publish)
            )
        except ApiError as exc:
            raise _fail(exc) from None
        except TimeoutError as exc:
            raise click.ClickException(f"gave up waiting: {exc}") from None
        _print_ledger(execution)
        if status != "Succeeded":
            sys.exit(1)

    @cli.command()
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    def validate(file: Path) -> None:
        """Check the workflow in FILE as a publish would; print every problem (exit 1)."""
        definition = _read_json(f"@{file}", "workflow file")
        settings = _settings()
        kernel = _make_kernel(settings)  # for the installed plugins; no database is opened
        try:
            kernel.service.validate(definition)
        except ApiError as exc:
            raise _fail(exc) from None
        click.echo(f"{file}: valid")

    from dataworkflows.cli.credentials import register_credential_commands
    from dataworkflows.cli.resources import register_resource_commands

    register_credential_commands(cli)
    register_resource_commands(cli)

    from dataworkflows.plugins.manager import PluginError, load_plugins

    try:
        settings = _settings()
        plugin_set = load_plugins(allow=settings.load_plugins, modules=settings.plugin_modules)
    except (PluginError, click.ClickException) as exc:
        click.echo(f"warning: plugins not loaded: {exc}", err=True)
    else:
        plugin_set.hook.register_commands(cli=cli)
    return cli


#: seconds within which a repeated SIGTERM/SIGINT counts as the same stop request
DUPLICATE_SIGNAL_WINDOW = 2.0


async def _worker_main(settings: Settings) -> None:
    import os
    import signal

    kernel = _make_kernel(settings)
    await _start(kernel)
    await kernel.templates.pool.start()  # fork before claiming runs, not during them
    loop = asyncio.get_running_loop()
    first_signal: float | None = None

    def on_signal() -> None:
        nonlocal first_signal
        now = loop.time()
        if first_signal is not None:
            # A signal sent to a whole process group (systemd, a shell, `uv run` forwarding
            # it to its child) arrives twice at once: that is still the first request.
            if now - first_signal < DUPLICATE_SIGNAL_WINDOW:
                return
            click.echo("second signal: exiting now", err=True)
            os._exit(1)
        first_signal = now
        click.echo("stopping: no new runs; waiting for runs in flight", err=True)
        kernel.worker.request_stop(settings.shutdown_grace)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    click.echo(
        f"worker {kernel.worker.owner} started (concurrency {settings.worker_concurrency})",
        err=True,
    )
    try:
        await kernel.worker.run()
    finally:
        await kernel.close()
    click.echo("worker stopped", err=True)


async def _start_template_workers(app: Any) -> None:
    """Fork the template worker processes before the first request (docs/semantics.md)."""
    from dataworkflows.api.keys import kernel_key

    await app[kernel_key].templates.pool.start()


async def _start(kernel: Any) -> None:
    from dataworkflows.kernel import SchemaOutOfDate

    try:
        await kernel.start()
    except SchemaOutOfDate as exc:
        await kernel.close()
        raise click.ClickException(str(exc)) from None


def _make_kernel(settings: Settings, **kwargs: Any) -> Any:
    from dataworkflows.kernel import Kernel
    from dataworkflows.plugins.manager import PluginError

    try:
        return Kernel(settings, **kwargs)
    except PluginError as exc:
        raise click.ClickException(str(exc)) from None


class _Progress:
    """An ``on_run_event`` observer that prints the run's events as they happen."""

    def __init__(self) -> None:
        from dataworkflows.hookspecs import hookimpl

        self.execution_id: str | None = None

        @hookimpl
        def on_run_event(event: Any) -> None:
            if self.execution_id is not None and event.execution_id != self.execution_id:
                return
            print_event(event.sequence, str(event.type), event.node_id, event.payload)

        self.on_run_event = on_run_event


def print_event(sequence: int, type_: str, node_id: str | None, payload: dict[str, Any]) -> None:
    """One line of a run's progress on stderr: ``[  3] StepSucceeded node (attempt 1)``."""
    where = f" {node_id}" if node_id else ""
    extra = ""
    if "attempt" in payload:
        extra = f" (attempt {payload['attempt']})"
    if payload.get("error"):
        extra += f": {payload['error'].get('message', '')}"
    click.echo(f"  [{sequence:>3}] {type_}{where}{extra}", err=True)


async def _run(
    settings: Settings,
    definition: Any,
    request: dict[str, Any],
    timeout: float,
    *,
    publish: bool = False,
) -> tuple[str, dict[str, Any]]:
    progress = _Progress()
    kernel = _make_kernel(settings, extra_plugins=[progress])
    await _start(kernel)
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
        import uuid

        status = await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"]), timeout)
        return status, await kernel.service.get_execution(summary["executionId"])
    finally:
        await kernel.close()


def _print_ledger(execution: dict[str, Any]) -> None:
    click.echo(
        f"\nrun {execution['id']}  {execution['workflowId']} v{execution['workflowVersion']}  "
        f"{execution['status']}"
    )
    header = ("node", "action", "attempt", "status", "ms", "outputs / error")
    rows = []
    for a in execution["actions"]:
        from datetime import datetime

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


def _configure_logging(settings: Settings) -> None:
    """Every log line carries the correlation id and execution id it belongs to."""
    from dataworkflows.common import logcontext

    logcontext.install()
    logging.basicConfig(level=settings.log_level.upper(), format=logcontext.LOG_FORMAT)


def main() -> None:
    build_cli()(prog_name="dataworkflows")


if __name__ == "__main__":
    main()
