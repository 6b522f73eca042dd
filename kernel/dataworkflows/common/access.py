"""Who may call a route: roles, the tenant id pattern, the authenticated identity, and the
one way every route (kernel, plugin, console) declares what it needs (docs/auth.md).

Roles are ordered: ``viewer`` < ``runner`` < ``editor`` < ``admin``; a role may do what
every lower role may. Besides roles a route may be ``public`` (``/health``, webhooks,
which check their own signature) or ``scrape`` (``/metrics``: process-wide figures of all
tenants, so it takes the operator's scrape token, not a tenant's).

A route declares its access where it is defined. Kernel routes pass ``role=`` to
:func:`dataworkflows.api.route_spec.spec`; any other handler (a plugin's, the console's)
is wrapped with :func:`requires`::

    from dataworkflows import requires

    @requires("viewer")
    async def my_page(request): ...

A route that declares nothing needs ``admin`` in strict mode (closed by default).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

#: the roles, lowest first
ROLES = ("viewer", "runner", "editor", "admin")
#: access levels that are not roles
PUBLIC = "public"
SCRAPE = "scrape"
ACCESS_LEVELS = (*ROLES, PUBLIC, SCRAPE)
#: what an undeclared route needs in strict mode
DEFAULT_ACCESS = "admin"

#: tenant ids: a letter or digit, then up to 63 letters, digits, ``_`` or ``-``
TENANT_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_TENANT = re.compile(TENANT_PATTERN)

_ATTRIBUTE = "__dataworkflows_access__"

H = TypeVar("H", bound=Callable[..., Any])


def valid_tenant(value: str) -> bool:
    """True when ``value`` matches :data:`TENANT_PATTERN`."""
    return bool(_TENANT.fullmatch(value))


def role_allows(role: str, required: str) -> bool:
    """True when ``role`` is ``required`` or a higher role (``required`` must be a role)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(required)


def check_access_level(level: str) -> str:
    """``level`` if it is one of :data:`ACCESS_LEVELS`; else ValueError."""
    if level not in ACCESS_LEVELS:
        raise ValueError(f"unknown access level {level!r}: expected one of {ACCESS_LEVELS}")
    return level


def requires(level: str) -> Callable[[H], H]:
    """Declare the role (or ``public`` / ``scrape``) a route handler needs; returns the
    handler itself, marked. Use it on handlers that do not go through ``spec``."""
    check_access_level(level)

    def mark(handler: H) -> H:
        setattr(handler, _ATTRIBUTE, level)
        return handler

    return mark


def access_of(handler: Any) -> str | None:
    """The access level a handler declared (:func:`requires` or ``spec(role=...)``), or
    None when it declared nothing."""
    return getattr(handler, _ATTRIBUTE, None)


@dataclass(frozen=True)
class Identity:
    """Who is calling: set on every authenticated request as ``request["identity"]``
    (:data:`dataworkflows.api.auth.IDENTITY_KEY`) before the handler runs.

    ``method``: ``token`` (an API token), ``jwt``, ``scrape`` (the metrics scrape token)
    or ``headers`` (loose mode: ``X-Tenant-Id`` / ``X-Principal``). ``token_id``: the API
    token's id, or the JWT's ``jti`` when it has one (rate limits key on it)."""

    tenant: str
    principal: str | None
    role: str
    method: str
    token_id: str | None = None
