"""API rate limits: per tenant and per principal (token), answered with 429 and
``Retry-After`` (docs/limits.md).

Every request under ``/api/`` takes one request from its tenant's bucket
(``DATAWORKFLOWS_RATE_LIMIT_TENANT_*``) and one from its principal's bucket within that
tenant (``DATAWORKFLOWS_RATE_LIMIT_PRINCIPAL_*``). Both are off by default. The buckets
are shared by all API processes on PostgreSQL (:mod:`dataworkflows.service.rate_limits`).
A refused request changes nothing: the handler does not run.
"""

from __future__ import annotations

import math

from aiohttp import web

from dataworkflows.api.auth import IDENTITY_KEY
from dataworkflows.api.errors import Handler, error_response
from dataworkflows.api.keys import kernel_key
from dataworkflows.service.rate_limits import Limit

#: what a request without a principal is limited as
ANONYMOUS = "-"


def rate_limit_identity(request: web.Request) -> tuple[str, str] | None:
    """``(tenant, principal key)`` a request is rate-limited as: the tenant of the caller's
    identity (:data:`~dataworkflows.api.auth.IDENTITY_KEY`, set by the auth middleware) and
    its API token's id — its principal when the credential has no id (a JWT without
    ``jti``, loose mode's ``X-Principal``), ``-`` without either. None for a request with
    no identity (a public route: the OpenAPI document), which these limits leave alone."""
    found = request.get(IDENTITY_KEY)
    if found is None:
        return None
    return found.tenant, found.token_id or found.principal or ANONYMOUS


def _too_many(scope: str, limit: Limit, retry_after: float) -> web.Response:
    seconds = max(1, math.ceil(retry_after))
    response = error_response(
        429,
        "rate_limited",
        f"too many requests for this {scope}: the limit is {limit.per_second:g} per second "
        f"with bursts of {limit.burst}; retry after {seconds} s",
        {"scope": scope, "limit": limit.as_json(), "retryAfterSeconds": seconds},
    )
    response.headers["Retry-After"] = str(seconds)
    return response


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """429 when the request's tenant or principal is over its limit (see the module)."""
    who = rate_limit_identity(request) if request.path.startswith("/api/") else None
    if who is None:
        return await handler(request)
    kernel = request.app[kernel_key]
    settings = kernel.settings
    the_tenant, the_principal = who
    # one check of both buckets: a request refused by either takes from neither
    checks = (
        (
            "principal",
            f"api:principal:{the_tenant}:{the_principal}",
            Limit.of(settings.rate_limit_principal_per_second, settings.rate_limit_principal_burst),
        ),
        (
            "tenant",
            f"api:tenant:{the_tenant}",
            Limit.of(settings.rate_limit_tenant_per_second, settings.rate_limit_tenant_burst),
        ),
    )
    active = [(scope, key, limit) for scope, key, limit in checks if limit is not None]
    if active:
        refused = await kernel.rate_limits.check([(key, limit) for _, key, limit in active])
        if refused is not None:
            index, retry_after = refused
            scope, _, limit = active[index]
            return _too_many(scope, limit, retry_after)
    return await handler(request)
