"""``create_app(kernel)``: the aiohttp application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from dataworkflows.api.command_routes import command_routes
from dataworkflows.api.connector_routes import connector_routes
from dataworkflows.api.errors import error_middleware
from dataworkflows.api.keys import ApiServices, kernel_key
from dataworkflows.api.middleware import setup_api
from dataworkflows.api.openapi import openapi_routes
from dataworkflows.api.rate_limit_middleware import rate_limit_middleware
from dataworkflows.api.routes import routes
from dataworkflows.api.run_routes import run_routes
from dataworkflows.api.stream_routes import stream_routes
from dataworkflows.api.template_routes import template_routes
from dataworkflows.api.trigger_routes import trigger_routes

#: Route tables of the kernel's feature areas; each module adds its own ``RouteTableDef``.
ROUTE_TABLES = [
    routes,
    run_routes,
    command_routes,
    stream_routes,
    trigger_routes,
    connector_routes,
    template_routes,
    openapi_routes,
]


def create_app(
    kernel: ApiServices, *, run_worker: bool = True, run_scheduler: bool = True
) -> web.Application:
    """Build the web application around a (not yet started) kernel.

    The app's ``cleanup_ctx`` starts the kernel (migrating SQLite), runs the embedded worker
    when ``run_worker`` is true, the scheduler loop (time-based triggers) and the
    background pruner (retention) when ``run_scheduler`` is true, and closes everything on shutdown.
    """
    app = web.Application(
        middlewares=[error_middleware], client_max_size=kernel.settings.max_body_bytes
    )
    app[kernel_key] = kernel
    setup_api(app)  # Correlation-Id, common headers, Idempotency-Key (docs/api.md)
    app.middlewares.append(rate_limit_middleware)  # 429 per tenant / principal (limits.md)
    for table in ROUTE_TABLES:
        app.add_routes(table)
    kernel.plugins.hook.register_routes(app=app, kernel=kernel.plugin_api)

    async def kernel_ctx(app: web.Application) -> AsyncIterator[None]:
        await kernel.start()
        if run_worker:
            kernel.start_worker()
        if run_scheduler:
            kernel.start_scheduler()
            kernel.start_pruner()
        yield
        await kernel.close()

    app.cleanup_ctx.append(kernel_ctx)

    async def end_streams(app: web.Application) -> None:
        kernel.events.close_streams()  # before the server waits for its handlers

    app.on_shutdown.append(end_streams)
    return app
