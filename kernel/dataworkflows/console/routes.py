"""The console's route table (:data:`CONSOLE_ROUTES`): every page and action with the role
it requires, and :func:`setup_console`, which mounts them, the templates and the static
files on the app.

Roles (:func:`_guarded` marks each handler with its route's role, which the auth
middleware checks, docs/auth.md): ``public`` signs in and out, ``viewer`` reads pages,
``runner`` starts, cancels and requeues runs and fires triggers, ``editor`` changes
workflows and triggers, ``admin`` manages credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Literal

import aiohttp_jinja2
import jinja2
from aiohttp import web

from dataworkflows.api.openapi import CONSOLE_NAME_PREFIX
from dataworkflows.common.access import requires
from dataworkflows.common.errors import ApiError
from dataworkflows.console import admin_pages, run_pages, session_pages, workflow_pages
from dataworkflows.console.rendering import STATIC_PREFIX, pretty, render, when

log = logging.getLogger(__name__)

Role = Literal["public", "viewer", "runner", "editor", "admin"]
PageHandler = Callable[[web.Request], Awaitable[web.Response]]


@dataclass(frozen=True)
class ConsoleRoute:
    """One console route: method, path, handler, route name and required role."""

    method: str
    path: str
    handler: PageHandler
    name: str
    role: Role


_WF = "/workflows/{workflow_id}"
_RUN = "/runs/{execution_id}"

#: Every console route and the role it requires (the single declaration of console roles).
CONSOLE_ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/login", session_pages.login_page, "login", "public"),
    ConsoleRoute("POST", "/login", session_pages.login_action, "login-submit", "public"),
    ConsoleRoute("POST", "/logout", session_pages.logout_action, "logout", "public"),
    ConsoleRoute("GET", "/", workflow_pages.workflows_page, "workflows", "viewer"),
    ConsoleRoute("GET", _WF, workflow_pages.workflow_page, "workflow", "viewer"),
    ConsoleRoute(
        "POST",
        _WF + "/{operation:publish|archive|rollback}",
        workflow_pages.lifecycle_action,
        "workflow-lifecycle",
        "editor",
    ),
    ConsoleRoute("POST", _WF + "/run", workflow_pages.run_action, "workflow-run", "runner"),
    ConsoleRoute(
        "POST",
        _WF + "/triggers/{trigger_id}/{operation:enable|disable}",
        workflow_pages.trigger_action,
        "trigger-switch",
        "editor",
    ),
    ConsoleRoute(
        "POST",
        _WF + "/triggers/{trigger_id}/{operation:fire}",
        workflow_pages.trigger_action,
        "trigger-fire",
        "runner",
    ),
    ConsoleRoute("GET", "/runs", run_pages.runs_page, "runs", "viewer"),
    ConsoleRoute("GET", _RUN, run_pages.run_page, "run", "viewer"),
    ConsoleRoute("GET", _RUN + "/live", run_pages.run_live_fragment, "run-live", "viewer"),
    ConsoleRoute("POST", _RUN + "/cancel", run_pages.cancel_action, "run-cancel", "runner"),
    ConsoleRoute("POST", _RUN + "/rerun", run_pages.rerun_action, "run-rerun", "runner"),
    ConsoleRoute("GET", "/dead-letters", run_pages.dead_letters_page, "dead-letters", "viewer"),
    ConsoleRoute(
        "POST",
        "/dead-letters/{dead_letter_id}/requeue",
        run_pages.requeue_action,
        "dead-letter-requeue",
        "runner",
    ),
    ConsoleRoute("GET", "/plugins", admin_pages.plugins_page, "plugins", "viewer"),
    ConsoleRoute("GET", "/credentials", admin_pages.credentials_page, "credentials", "viewer"),
    ConsoleRoute(
        "POST",
        "/credentials",
        admin_pages.create_credential_action,
        "credential-create",
        "admin",
    ),
    ConsoleRoute(
        "POST",
        "/credentials/{name}/rotate",
        admin_pages.rotate_credential_action,
        "credential-rotate",
        "admin",
    ),
    ConsoleRoute(
        "GET", "/api-reference", admin_pages.api_reference_page, "api-reference", "viewer"
    ),
)

#: prefix of every console resource name (the OpenAPI document leaves these routes out)
NAME_PREFIX = CONSOLE_NAME_PREFIX


def _guarded(route: ConsoleRoute) -> PageHandler:
    """The route's handler, marked with the role it needs (``route.role``, which the auth
    middleware checks before it runs), with errors shown as an HTML page of the same
    status."""

    async def handler(request: web.Request) -> web.Response:
        try:
            return await route.handler(request)
        except ApiError as exc:
            return render(
                request,
                "error.html",
                {"status": exc.status, "error": exc.body(), "pretty": pretty},
                status=exc.status,
            )

    handler.__doc__ = route.handler.__doc__
    handler.__name__ = route.handler.__name__
    return requires(route.role)(handler)


def setup_console(app: web.Application) -> None:
    """Mount the console on ``app`` (built by ``create_app``): templates, static files
    under ``/console-static`` and every route of :data:`CONSOLE_ROUTES`."""
    environment = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("dataworkflows.console", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["when"] = when
    environment.filters["pretty"] = pretty
    static = files("dataworkflows.console").joinpath("static")
    app.router.add_static(STATIC_PREFIX, str(static), name=NAME_PREFIX + "static")
    for route in CONSOLE_ROUTES:
        app.router.add_route(
            route.method, route.path, _guarded(route), name=NAME_PREFIX + route.name
        )
