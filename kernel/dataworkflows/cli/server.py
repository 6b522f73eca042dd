"""``dataworkflows serve`` and ``dataworkflows worker``: the long-running engine processes."""

from __future__ import annotations

import errno
import logging
from typing import Any

import click

from dataworkflows import __version__
from dataworkflows.cli.common import (
    configure_logging,
    make_kernel,
    new_loop,
    settings_or_fail,
    start_kernel,
)
from dataworkflows.cli.event_loop import loop_name
from dataworkflows.settings import Settings, SettingsError

log = logging.getLogger("dataworkflows.worker")

#: seconds within which a repeated SIGTERM/SIGINT counts as the same stop request
DUPLICATE_SIGNAL_WINDOW = 2.0


@click.command()
@click.option("--host", default=None, help="Interface to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8080).")
@click.option("--no-worker", is_flag=True, help="Serve the API only; run no worker at all.")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Worker processes started beside the API (default: the CPU cores on PostgreSQL, "
    "0 on SQLite). 0: one worker inside the API process.",
)
@click.option(
    "--allow-loose-public",
    is_flag=True,
    default=None,
    help="Serve loose auth mode on a non-loopback address (DATAWORKFLOWS_ALLOW_LOOSE_PUBLIC).",
)
def serve(
    host: str | None,
    port: int | None,
    no_worker: bool,
    workers: int | None,
    allow_loose_public: bool | None,
) -> None:
    """Serve the HTTP API with its workers (database: DATAWORKFLOWS_DATABASE_URL).

    With --workers N (N > 0, PostgreSQL) the API process only takes requests and webhooks;
    N `dataworkflows worker` child processes execute the runs, are restarted with back-off
    if they crash, and drain on SIGTERM/Ctrl-C. With 0 the worker runs in the API process.
    """
    import asyncio

    from aiohttp import web

    from dataworkflows.api import create_app
    from dataworkflows.cli.supervisor import WorkersFailedToStart
    from dataworkflows.console import setup_console
    from dataworkflows.kernel import SchemaOutOfDate

    settings = settings_or_fail(host=host, port=port, allow_loose_public=allow_loose_public)
    refuse_loose_public(settings)
    configure_logging(settings)
    count = _worker_processes(settings, workers, no_worker)
    loop = new_loop(settings)
    asyncio.set_event_loop(loop)
    kernel = make_kernel(settings)
    try:
        app = create_app(kernel, run_worker=not no_worker and count == 0)
    except SettingsError as exc:  # e.g. an unreadable JWT key file
        raise click.ClickException(str(exc)) from None
    setup_console(app)  # the web console at / (docs/console.md)
    app.on_startup.append(_start_template_workers)
    if count:
        _supervise(app, count, settings)
    where = (
        "no worker" if no_worker else f"{count} worker processes" if count else "in-process worker"
    )
    banner = (
        f"DataWorkflows {__version__} on http://{settings.host}:{settings.port} "
        f"(database {kernel.db.engine.url.render_as_string()}, "
        f"{len(kernel.plugins.actions)} action types, {loop_name(loop)} event loop, {where})"
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
    except WorkersFailedToStart as exc:
        raise click.ClickException(f"the worker processes could not start: {exc}") from None
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise click.ClickException(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
            ) from None
        raise click.ClickException(
            f"port {settings.port} on {settings.host} is already in use: choose another "
            "with --port or DATAWORKFLOWS_PORT"
        ) from None


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: may resolve to anything


def refuse_loose_public(settings: Settings) -> None:
    """Loose mode trusts headers anyone can send: only on loopback unless told."""
    if settings.effective_auth_mode != "loose" or settings.allow_loose_public:
        return
    if not is_loopback(settings.host):
        raise click.ClickException(
            f"refusing to serve auth mode 'loose' on {settings.host}: anyone who can reach "
            "it would be any tenant. Use DATAWORKFLOWS_AUTH_MODE=strict with API tokens or "
            "JWTs (docs/auth.md), listen on 127.0.0.1, or pass --allow-loose-public "
            "(DATAWORKFLOWS_ALLOW_LOOSE_PUBLIC=true) if a proxy in front authenticates"
        )


def _worker_processes(settings: Settings, flag: int | None, no_worker: bool) -> int:
    """How many worker processes ``serve`` starts: the flag, else
    ``DATAWORKFLOWS_SERVE_WORKERS``, else the CPU cores (PostgreSQL) or 0 (SQLite)."""
    from dataworkflows.cli.supervisor import default_worker_count

    wanted = flag if flag is not None else settings.serve_workers
    if no_worker:
        if wanted:
            raise click.UsageError("--no-worker and --workers N (N > 0) contradict each other")
        return 0
    if settings.is_sqlite:
        if wanted:
            raise click.ClickException(
                f"--workers {wanted}: worker processes need PostgreSQL; a SQLite database is "
                "served by one process (--workers 0, the default on SQLite). See docs/scaling.md."
            )
        return 0
    return default_worker_count() if wanted is None else wanted


def _supervise(app: Any, count: int, settings: Settings) -> None:
    """Start ``count`` worker children once the API's kernel is up; stop them on shutdown."""
    from dataworkflows.cli.supervisor import WorkerSupervisor

    supervisor = WorkerSupervisor(count, grace=settings.shutdown_grace)

    async def start(_app: Any) -> None:
        await supervisor.start()

    async def stop(_app: Any) -> None:
        await supervisor.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)


@click.command()
@click.option("--concurrency", type=int, default=None, help="Runs executed at once.")
@click.option(
    "--ready-line",
    is_flag=True,
    hidden=True,
    help="Print a line on stdout once ready (for `serve --workers`).",
)
def worker(concurrency: int | None, ready_line: bool) -> None:
    """Run a worker that executes queued runs from the database.

    SIGTERM or Ctrl-C: stop claiming, let runs in flight finish within
    DATAWORKFLOWS_SHUTDOWN_GRACE seconds, release the rest to other workers, exit 0.
    A second signal (more than 2 s after the first: a signal delivered to the whole
    process group arrives twice) exits at once, like a kill (leases then expire and
    other workers recover the runs).
    """
    import asyncio

    settings = settings_or_fail(worker_concurrency=concurrency)
    configure_logging(settings)
    with asyncio.Runner(loop_factory=lambda: new_loop(settings)) as runner:
        runner.run(_worker_main(settings, ready_line=ready_line))


async def _worker_main(settings: Settings, *, ready_line: bool = False, clock: Any = None) -> None:
    """A worker process's life: start, claim and run until a signal, drain, close.

    ``clock``: the kernel's clock (None: the system clock); the multi-host test gives each
    simulated host a skewed one.
    """
    import asyncio
    import os
    import signal

    kernel = make_kernel(settings, clock=clock)
    await start_kernel(kernel)
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
            log.warning("second signal: exiting now")
            os._exit(1)
        first_signal = now
        log.info("stopping: no new runs; waiting for runs in flight")
        kernel.worker.request_stop(settings.shutdown_grace)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    # logged, not echoed: with DATAWORKFLOWS_LOG_FORMAT=json stderr is JSON lines only
    log.info("worker %s started (concurrency %d)", kernel.worker.owner, settings.worker_concurrency)
    kernel.engine_start()
    if ready_line:
        from dataworkflows.cli.supervisor import READY_LINE

        click.echo(f"{READY_LINE} {kernel.worker.owner}")
    try:
        await kernel.worker.run()
    finally:
        await kernel.close()
    log.info("worker stopped")


async def _start_template_workers(app: Any) -> None:
    """Fork the template worker processes before the first request (docs/semantics.md)."""
    from dataworkflows.api.keys import kernel_key

    await app[kernel_key].templates.pool.start()
