"""Request-wide behaviour of the HTTP API (docs/api.md): correlation ids, the common
request headers, and idempotency keys.

Middleware order (outermost first), installed by :func:`setup_api`::

    correlation_middleware   binds Correlation-Id for logs; the header goes on every response
    trace_context_middleware binds the W3C traceparent / tracestate (api/trace_middleware.py)
    error_middleware         every error → {code, message, details}
    auth_middleware          who is calling and may they (api/auth.py, docs/auth.md)
    api_middleware           checks X-Principal / X-Audit-Note /
                             Idempotency-Key and query values, then replays or records
                             POST and PATCH responses by Idempotency-Key
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from typing import Any

from aiohttp import web

from dataworkflows.api.auth import auth_middleware, identity, setup_auth
from dataworkflows.api.errors import Handler, error_middleware
from dataworkflows.api.idempotency import (
    MAX_KEY_LENGTH,
    IdempotencyStore,
    InProgress,
    KeyReused,
    Replay,
    Reserved,
    fingerprint,
)
from dataworkflows.api.keys import kernel_key
from dataworkflows.api.trace_middleware import trace_context_middleware
from dataworkflows.common import logcontext
from dataworkflows.common.errors import BadRequest, Conflict, Unprocessable
from dataworkflows.service.api_tokens import TokenStore

log = logging.getLogger(__name__)

CORRELATION_HEADER = "Correlation-Id"
_RequestKey = getattr(web, "RequestKey", None)  # aiohttp >= 3.12
#: request key of the request's correlation id (accepted or generated)
CORRELATION_KEY: Any = (
    _RequestKey("dataworkflows_correlation_id", str)
    if _RequestKey is not None
    else "dataworkflows.correlation_id"
)
idempotency_key = web.AppKey("dataworkflows_idempotency", IdempotencyStore)

#: 1-200 visible ASCII characters (ids: tenant, correlation id)
_ID = re.compile(r"[\x21-\x7e]{1,200}")
_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # MAX_KEY_LENGTH
#: visible ASCII and spaces (names and notes)
_TEXT = re.compile(r"[\x20-\x7e]*")
MAX_NOTE = 1000
#: methods whose responses an Idempotency-Key replays
IDEMPOTENT_METHODS = ("POST", "PATCH")


def correlation_id(request: web.Request) -> str | None:
    """The request's correlation id (set by :func:`correlation_middleware`)."""
    value = request.get(CORRELATION_KEY)
    return str(value) if value else None


def tenant(request: web.Request) -> str:
    """The caller's tenant: from its token in strict mode, from ``X-Tenant-Id`` (``default``
    when absent) in loose mode (:func:`dataworkflows.api.auth.identity`)."""
    return identity(request).tenant


def principal(request: web.Request) -> str | None:
    """The caller: the token's subject in strict mode, ``X-Principal`` in loose mode."""
    return identity(request).principal


def audit_note(request: web.Request) -> str | None:
    """The ``X-Audit-Note`` header (None when absent or empty)."""
    return request.headers.get("X-Audit-Note") or None


@web.middleware
async def correlation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Accept a ``Correlation-Id`` (or ``X-Correlation-Id``) or generate one, and bind it
    for every log line written while the request is handled. A value that is not 1-200
    visible ASCII characters is replaced by a generated one."""
    given = request.headers.get(CORRELATION_HEADER) or request.headers.get("X-Correlation-Id")
    value = given if given and _ID.fullmatch(given) else uuid.uuid4().hex
    request[CORRELATION_KEY] = value
    with logcontext.bind(correlation_id=value):
        response = await handler(request)
        log.debug("%s %s -> %s", request.method, request.path, response.status)
        return response


async def _echo_correlation_id(request: web.Request, response: web.StreamResponse) -> None:
    value = request.get(CORRELATION_KEY)
    if value:
        response.headers[CORRELATION_HEADER] = value


def _check_headers(request: web.Request) -> None:
    checks = (  # X-Tenant-Id: checked by the auth middleware
        ("X-Principal", _TEXT, "at most 200 printable ASCII characters"),
        ("X-Audit-Note", _TEXT, f"at most {MAX_NOTE} printable ASCII characters"),
    )
    limits = {"X-Principal": 200, "X-Audit-Note": MAX_NOTE}
    for name, pattern, rule in checks:
        value = request.headers.get(name)
        if value and (not pattern.fullmatch(value) or len(value) > limits.get(name, 200)):
            raise BadRequest(
                f"header {name} must be {rule}",
                code="invalid_header",
                details={"header": name},
            )
    for name, value in request.query.items():
        if "\x00" in value or "\x00" in name:
            raise Unprocessable(
                "query parameters must not contain NUL characters",
                code="invalid_query",
                details={"parameter": name.replace("\x00", "")},
            )


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/") or request.match_info.http_exception is not None:
        return await handler(request)
    _check_headers(request)
    key = request.headers.get("Idempotency-Key")
    if key is None or request.method not in IDEMPOTENT_METHODS:
        return await handler(request)
    if not _KEY.fullmatch(key):
        raise BadRequest(
            f"header Idempotency-Key must be 1-{MAX_KEY_LENGTH} visible ASCII characters",
            code="invalid_header",
            details={"header": "Idempotency-Key"},
        )
    return await _idempotent(request, handler, key)


async def _idempotent(request: web.Request, handler: Handler, key: str) -> web.StreamResponse:
    store = request.app[idempotency_key]
    body = await request.read()  # cached: the handler reads it again
    the_tenant = tenant(request)
    outcome = await store.reserve(
        the_tenant,
        key,
        fingerprint(request.method, request.path_qs, body),
        request.method,
        request.path,
    )
    if isinstance(outcome, Replay):
        headers = {**outcome.headers, "Idempotent-Replayed": "true"}
        if outcome.body is None:
            return web.Response(status=outcome.status, headers=headers)
        return web.json_response(outcome.body, status=outcome.status, headers=headers)
    if isinstance(outcome, KeyReused):
        raise Unprocessable(
            "this Idempotency-Key was already used for a different request; use a new key "
            "for a new request",
            code="idempotency_key_reused",
            details={"originalMethod": outcome.method, "originalPath": outcome.path},
        )
    if isinstance(outcome, InProgress):
        raise Conflict(
            "a request with this Idempotency-Key is still being processed; retry later",
            code="idempotency_in_progress",
        )
    assert isinstance(outcome, Reserved)
    try:
        response = await handler(request)
    except BaseException:
        await asyncio.shield(store.release(the_tenant, key, outcome.token))
        raise
    stored = _storable(response)
    if stored is None:
        await store.release(the_tenant, key, outcome.token)
    else:
        await store.complete(the_tenant, key, outcome.token, **stored)
    return response


def _storable(response: web.StreamResponse) -> dict[str, Any] | None:
    """What to replay from a successful JSON (or empty) response; None: do not store."""
    if response.status >= 400 or not isinstance(response, web.Response):
        return None
    raw = response.body
    if raw is None or raw == b"":
        body = None
    elif isinstance(raw, bytes) and response.content_type == "application/json":
        body = json.loads(raw)
    else:
        return None
    headers = {name: response.headers[name] for name in ("Location",) if name in response.headers}
    return {"status": response.status, "body": body, "headers": headers}


def setup_api(app: web.Application) -> None:
    """Install the middlewares above (around the app's ``error_middleware``), the
    idempotency store and the ``Correlation-Id`` response header. Call once from
    ``create_app`` after the kernel is set on the app."""
    kernel = app[kernel_key]
    logcontext.install()
    middlewares = app.middlewares
    position = middlewares.index(error_middleware) if error_middleware in middlewares else 0
    middlewares.insert(position, correlation_middleware)
    middlewares.insert(position, trace_context_middleware)  # W3C traceparent of the request
    middlewares.append(auth_middleware)  # who calls, may they (docs/auth.md)
    middlewares.append(api_middleware)
    app[idempotency_key] = IdempotencyStore(
        kernel.db,
        kernel.clock,
        ttl_seconds=kernel.settings.idempotency_ttl_seconds,
        lock_seconds=kernel.settings.idempotency_lock_seconds,
    )
    app.on_response_prepare.append(_echo_correlation_id)
    setup_auth(app, kernel.settings, TokenStore(kernel.db, kernel.clock))
