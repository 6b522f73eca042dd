"""Authentication and roles of every request (docs/auth.md).

:func:`auth_middleware` finds what the matched route declared
(:func:`dataworkflows.common.access.access_of`; undeclared: ``admin``), establishes who is
calling and puts it on the request as ``request[IDENTITY_KEY]`` (the key is the string
``"identity"`` on aiohttp < 3.12), an :class:`~dataworkflows.common.access.Identity` with
``tenant``, ``principal``, ``role``, ``method`` and ``token_id``. Handlers read it with
:func:`identity`; every tenant-scoped read and write takes the tenant from there.

* ``public`` routes (``/health``, the OpenAPI document, webhooks that check their own
  signature) are served to anyone, with no identity.
* ``strict`` mode: ``Authorization: Bearer <token>``, an API token (``dwt_...``) or a JWT;
  tenant, principal and role come from it, never from headers. An ``X-Tenant-Id`` that
  names another tenant is a 403 (``tenant_mismatch``); ``X-Principal`` is ignored.
* ``loose`` mode: a bearer token, if sent, is checked as in strict mode; without one the
  caller is whoever ``X-Tenant-Id`` (``default`` when absent) and ``X-Principal`` say,
  with the ``admin`` role.
* ``scrape`` routes (``/metrics``) take ``DATAWORKFLOWS_SCRAPE_TOKEN`` in strict mode.
* The web console's session: a browser that signed in (``/login``) sends its token in the
  ``dw_session`` cookie (HttpOnly, SameSite=Strict). The cookie counts for console routes
  (their forms carry a double-submit token) and for reads (``GET``/``HEAD``: the live
  stream), never for an API write, which needs the ``Authorization`` header. An
  unauthenticated console page redirects to ``/login``. Static files are public.

401 answers carry ``WWW-Authenticate: Bearer``; a refused request has changed nothing.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any
from urllib.parse import quote

from aiohttp import web

from dataworkflows.api.errors import Handler
from dataworkflows.common.access import (
    DEFAULT_ACCESS,
    PUBLIC,
    SCRAPE,
    TENANT_PATTERN,
    Identity,
    access_of,
    role_allows,
    valid_tenant,
)
from dataworkflows.common.errors import BadRequest, Forbidden, Unauthorized
from dataworkflows.service.api_tokens import TOKEN_PREFIX, TokenStore
from dataworkflows.service.jwt_verifier import JwtVerifier
from dataworkflows.settings import Settings

log = logging.getLogger(__name__)

#: the cookie that carries a console session's token (set by the console's sign-in)
SESSION_COOKIE = "dw_session"
#: name prefix of the console's routes (they are HTML, not API)
CONSOLE_NAME_PREFIX = "console."

_RequestKey = getattr(web, "RequestKey", None)  # aiohttp >= 3.12
#: request key of the caller's :class:`Identity` (set before the handler runs)
IDENTITY_KEY: Any = _RequestKey("identity", Identity) if _RequestKey is not None else "identity"


class Authenticator:
    """The mode and the credential checkers of one application."""

    def __init__(self, settings: Settings, tokens: TokenStore) -> None:
        self.mode = settings.effective_auth_mode
        self.tokens = tokens
        self.jwt = JwtVerifier(settings)
        self.scrape_token = settings.scrape_token

    async def authenticate(self, request: web.Request, level: str) -> Identity:
        """Who is calling a route that needs ``level``; raises 400/401/403/503."""
        claimed = request.headers.get("X-Tenant-Id")
        if claimed and not valid_tenant(claimed):
            raise BadRequest(
                f"header X-Tenant-Id must match {TENANT_PATTERN} (a letter or digit, then up "
                "to 63 letters, digits, '_' or '-')",
                code="invalid_header",
                details={"header": "X-Tenant-Id", "pattern": TENANT_PATTERN},
            )
        bearer = _bearer(request, strict=self.mode == "strict") or _session(request)
        if level == SCRAPE:
            return self._scrape(bearer)
        if bearer is None:
            if self.mode == "strict":
                raise Unauthorized(
                    "this route needs a bearer token: send 'Authorization: Bearer <token>' "
                    "with an API token or a JWT (docs/auth.md)",
                    details={"requiredRole": level},
                )
            found = _from_headers(request)
        else:
            found = await self._verify(bearer)
            if claimed and claimed != found.tenant:
                raise Forbidden(
                    "X-Tenant-Id names another tenant than the token's: leave it out or "
                    "send the token's own",
                    code="tenant_mismatch",
                )
        if not role_allows(found.role, level):
            raise Forbidden(
                f"this route needs the role {level!r} (or higher); the credential has "
                f"{found.role!r}",
                details={"requiredRole": level, "role": found.role},
            )
        return found

    async def verify(self, bearer: str) -> Identity:
        """The identity of an API token or JWT; raises 401 (or 503: JWKS unreachable)."""
        return await self._verify(bearer)

    async def _verify(self, bearer: str) -> Identity:
        if bearer.startswith(TOKEN_PREFIX):
            found = await self.tokens.verify(bearer)
            if found is None:
                raise Unauthorized(
                    "the API token is unknown, expired or revoked", code="invalid_token"
                )
            return found
        return await self.jwt.verify(bearer)

    def _scrape(self, bearer: str | None) -> Identity:
        scrape = Identity(tenant="*", principal="scrape", role="viewer", method="scrape")
        if self.mode == "loose" and bearer is None:
            return scrape
        if not self.scrape_token:
            raise Unauthorized(
                "this route takes the scrape token, and DATAWORKFLOWS_SCRAPE_TOKEN is not set",
                code="scrape_token_not_configured",
            )
        if bearer is None or not hmac.compare_digest(bearer.encode(), self.scrape_token.encode()):
            raise Unauthorized(
                "this route needs 'Authorization: Bearer <DATAWORKFLOWS_SCRAPE_TOKEN>'",
                code="invalid_token",
            )
        return scrape


def _bearer(request: web.Request, *, strict: bool) -> str | None:
    """The bearer token sent, if any. Loose mode ignores other schemes (a proxy's Basic)."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" and not strict:
        return None
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized(
            "the Authorization header must be 'Bearer <token>'", code="invalid_token"
        )
    return value.strip()


def is_console(request: web.Request) -> bool:
    """Whether the request matched one of the web console's routes."""
    name = request.match_info.route.name
    return bool(name and name.startswith(CONSOLE_NAME_PREFIX))


def _session(request: web.Request) -> str | None:
    """The console session's token: for reads and console routes, not for API writes."""
    value = request.cookies.get(SESSION_COOKIE)
    if not value or not (request.method in ("GET", "HEAD") or is_console(request)):
        return None
    return value


def _from_headers(request: web.Request) -> Identity:
    """Loose mode's identity: the X-Tenant-Id / X-Principal headers, role ``admin``."""
    tenant = request.headers.get("X-Tenant-Id") or "default"  # checked by the caller
    principal = request.headers.get("X-Principal") or None
    return Identity(tenant=tenant, principal=principal, role="admin", method="headers")


def route_access(request: web.Request) -> str | None:
    """What the matched route needs (None: no route matched, the router answers)."""
    match = request.match_info
    if match.http_exception is not None:
        return None
    if isinstance(match.route.resource, web.StaticResource):
        return PUBLIC  # the console's style sheets and scripts
    return access_of(match.handler) or DEFAULT_ACCESS


def identity(request: web.Request) -> Identity:
    """The caller of a route that needs a role (set by :func:`auth_middleware`)."""
    found = request.get(IDENTITY_KEY)
    if found is None:  # a public route asked: a programming error, refuse
        raise Unauthorized("this route has no authenticated caller")
    return found  # type: ignore[no-any-return]


auth_key = web.AppKey("dataworkflows_auth", Authenticator)


def setup_auth(app: web.Application, settings: Settings, tokens: TokenStore) -> None:
    """Put the :class:`Authenticator` on the app; warn at start-up in loose mode. The
    caller installs :func:`auth_middleware` (after the error middleware)."""
    app[auth_key] = authenticator = Authenticator(settings, tokens)

    async def warn_if_loose(_app: web.Application) -> None:
        if authenticator.mode == "loose":
            log.warning(
                "auth mode is 'loose': callers are whoever the X-Tenant-Id and X-Principal "
                "headers say, with the admin role; set DATAWORKFLOWS_AUTH_MODE=strict and use "
                "API tokens or JWTs before exposing this server (docs/auth.md)"
            )

    app.on_startup.append(warn_if_loose)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate and authorise the request before its handler (see the module)."""
    level = route_access(request)
    if level is None or level == PUBLIC:
        return await handler(request)
    try:
        request[IDENTITY_KEY] = await request.app[auth_key].authenticate(request, level)
    except Unauthorized as exc:
        if is_console(request) and request.method == "GET":  # a page: sign in first
            location = f"/login?next={quote(request.path_qs, safe='')}"
            return web.Response(status=303, headers={"Location": location})
        return web.json_response(
            exc.body(), status=exc.status, headers={"WWW-Authenticate": 'Bearer realm="api"'}
        )
    return await handler(request)
