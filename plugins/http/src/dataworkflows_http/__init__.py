"""``http.request``: call any HTTP API from a workflow.

Entry point only: the hooks import :mod:`dataworkflows_http.action` (pydantic models;
aiohttp when a request is sent) when the kernel asks for the types, and its names are
importable from here on first use.
"""

from __future__ import annotations

from typing import Any

from dataworkflows import hookimpl, lazy_attributes

__getattr__ = lazy_attributes(__name__, "dataworkflows_http.action")

#: the plugin-API versions this plugin works with (README, "Plugin API versions")
dataworkflows_api = ">=1.1,<2"  # ctx.propagation_headers() is 1.1
#: what it registers (type: title), so `dataworkflows plugins` need not import it;
#: `dataworkflows plugins --check` compares this with the classes
dataworkflows_actions = {"http.request": "Call an HTTP API"}
dataworkflows_triggers = {}


@hookimpl
def register_actions(register: Any) -> None:
    from dataworkflows_http.action import HttpRequest

    register(HttpRequest)
