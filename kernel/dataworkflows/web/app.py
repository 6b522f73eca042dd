"""``create_app(kernel)``: the aiohttp application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from dataworkflows.kernel import Kernel
from dataworkflows.web.errors import error_middleware
from dataworkflows.web.keys import kernel_key
from dataworkflows.web.routes import routes

#: Route tables of the kernel's feature areas; each module adds its own ``RouteTableDef``.
ROUTE_TABLES = [routes]


def create_app(kernel: Kernel, *, run_worker: bool = True) -> web.Application:
    """Build the web application around a (not yet started) kernel.

    The app's ``cleanup_ctx`` starts the kernel (migrating SQLite), runs the embedded worker
    when ``run_worker`` is true, and closes everything on shutdown.
    """
    app = web.Application(
        middlewares=[error_middleware], client_max_size=kernel.settings.max_body_bytes
    )
    app[kernel_key] = kernel
    for table in ROUTE_TABLES:
        app.add_routes(table)
    kernel.plugins.hook.register_routes(app=app, kernel=kernel.plugin_api)

    async def kernel_ctx(app: web.Application) -> AsyncIterator[None]:
        await kernel.start()
        if run_worker:
            kernel.start_worker()
        yield
        await kernel.close()

    app.cleanup_ctx.append(kernel_ctx)
    return app
