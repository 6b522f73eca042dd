"""``webhook``: start runs from HTTP calls to ``POST /hooks/{triggerId}``.

Entry point only: the hooks import :mod:`dataworkflows_webhook.trigger` (pydantic models)
when the kernel asks for the types and :mod:`dataworkflows_webhook.delivery` (the handler;
aiohttp) when it mounts the route; the trigger module's names are importable from here on
first use.
"""

from __future__ import annotations

from typing import Any

from dataworkflows import hookimpl, lazy_attributes

__getattr__ = lazy_attributes(__name__, "dataworkflows_webhook.trigger")

#: the plugin-API versions this plugin works with (README, "Plugin API versions")
dataworkflows_api = ">=1.2,<2"  # 1.2: check_rate_limit (rateLimit)
#: what it registers (type: title), so `dataworkflows plugins` need not import it;
#: `dataworkflows plugins --check` compares this with the classes
dataworkflows_actions = {}
dataworkflows_triggers = {
    "webhook": "Start runs from HTTP calls to /hooks/{triggerId} (HMAC-SHA256, dedup)"
}


@hookimpl
def register_triggers(register: Any) -> None:
    from dataworkflows_webhook.trigger import Webhook

    register(Webhook)


@hookimpl
def register_routes(app: Any, kernel: Any) -> None:
    from dataworkflows import requires
    from dataworkflows_webhook.delivery import make_handler
    from dataworkflows_webhook.trigger import ROUTE

    # no API token: a delivery is authenticated by its HMAC signature (docs/auth.md)
    app.router.add_post(ROUTE, requires("public")(make_handler(kernel)))
