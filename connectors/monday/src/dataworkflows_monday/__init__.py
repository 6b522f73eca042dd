"""monday.com connector: ``monday.get-items`` and ``monday.create-item`` (GraphQL API v2).

Entry point only: the hooks import :mod:`dataworkflows_monday.actions` (pydantic models;
aiohttp when a request is sent) when the kernel asks for the types, and its names are
importable from here on first use.
"""

from __future__ import annotations

from typing import Any

from dataworkflows import hookimpl, lazy_attributes

__getattr__ = lazy_attributes(__name__, "dataworkflows_monday.actions")

#: the plugin-API versions this plugin works with (README, "Plugin API versions")
dataworkflows_api = ">=1.1,<2"  # ctx.propagation_headers() is 1.1
#: what it registers (type: title), so `dataworkflows plugins` need not import it;
#: `dataworkflows plugins --check` compares this with the classes
dataworkflows_actions = {
    "monday.get-items": "Get items from a monday.com board",
    "monday.create-item": "Create an item on a monday.com board",
}
dataworkflows_triggers = {}


@hookimpl
def register_actions(register: Any) -> None:
    from dataworkflows_monday.actions import CreateItem, GetItems

    register(GetItems)
    register(CreateItem)
