"""Every kernel route's OpenAPI operation (``OPERATIONS``), as the document shows it.

Built from the kernel's route tables (:data:`~dataworkflows.api.app.ROUTE_TABLES`) and each
handler's ``@spec``; the tests walk it to check every route (tenancy, the document).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web

from dataworkflows.api.app import ROUTE_TABLES
from dataworkflows.api.openapi import operation, served_routes
from dataworkflows.api.route_spec import spec_of


@cache
def kernel_operations() -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path) → operation of every route of the kernel's own route tables."""
    app = web.Application()
    for table in ROUTE_TABLES:
        app.add_routes(table)
    operations = {}
    for route in served_routes(app):
        declared = spec_of(route.handler)
        if declared is not None:
            path = route.resource.canonical  # type: ignore[union-attr]
            operations[(route.method, path)] = operation(route.method, path, declared)
    return operations


def __getattr__(name: str) -> Any:
    """``OPERATIONS``: :func:`kernel_operations`, computed on first use."""
    if name == "OPERATIONS":
        return kernel_operations()
    raise AttributeError(name)
