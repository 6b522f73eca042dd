"""The web console: server-rendered pages for workflows, runs, dead letters, plugins and
credentials at ``/`` (docs/console.md).

A kernel package, its own layer above :mod:`dataworkflows.api`: it reads through the
kernel's services (``kernel.service``, ``kernel.triggers``, ``kernel.credentials``) exactly
as the API's handlers do, and scopes every page to the same request identity
(:func:`dataworkflows.api.middleware.tenant` / ``principal``). It is not a plugin because
the plugin API (:mod:`dataworkflows.plugin_api`) offers no reads of workflows, versions,
audit rows, runs, dead letters or credentials, and a plugin must never read the tables.

``setup_console(app)`` mounts it on an app built by ``create_app``; ``dataworkflows serve``
and the ``api_factory`` test fixture do so. Each route's required role is declared in one
table, :data:`dataworkflows.console.routes.CONSOLE_ROUTES`.
"""

from dataworkflows.console.routes import CONSOLE_ROUTES, setup_console

__all__ = ["CONSOLE_ROUTES", "setup_console"]
