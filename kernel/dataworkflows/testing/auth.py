"""Credentials for tests of strict mode (docs/auth.md, docs/testing.md)::

kernel = await kernel_factory(auth_mode="strict", jwt_secret=SECRET)
api = await api_factory(kernel)
token = await api_token(kernel, tenant="acme", role="editor")
await api.get("/api/v1/workflows", headers=bearer(token))
await api.get("/api/v1/workflows", headers=bearer(jwt_token(SECRET, tenant="acme")))
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import jwt

from dataworkflows.common.clock import Clock
from dataworkflows.service.api_tokens import TokenStore


async def api_token(
    kernel: Any,
    *,
    tenant: str,
    role: str,
    name: str = "test",
    expires_in: timedelta | None = None,
    clock: Clock | None = None,
) -> str:
    """A new API token of the kernel's database (``clock``: when it is made, e.g. a
    :class:`~dataworkflows.common.clock.FakeClock` in the past for an expired one)."""
    store = TokenStore(kernel.db, clock or kernel.clock)
    made = await store.create(tenant=tenant, role=role, name=name, expires_in=expires_in)
    return made.token


def jwt_token(
    key: Any,
    *,
    tenant: str,
    role: str = "admin",
    subject: str = "alice",
    audience: str | None = None,
    issuer: str | None = None,
    expires_in: float = 300,
    not_before_in: float | None = None,
    algorithm: str = "HS256",
    kid: str | None = None,
    **claims: Any,
) -> str:
    """A signed JWT with ``tenant``/``role`` claims (the default claim names), ``sub``,
    ``exp`` (``expires_in`` seconds from now; negative: already expired) and ``jti``."""
    now = time.time()
    payload: dict[str, Any] = {
        "sub": subject,
        "tenant": tenant,
        "role": role,
        "iat": int(now),
        "exp": int(now + expires_in),
        "jti": uuid.uuid4().hex,
        **claims,
    }
    if audience is not None:
        payload["aud"] = audience
    if issuer is not None:
        payload["iss"] = issuer
    if not_before_in is not None:
        payload["nbf"] = int(now + not_before_in)
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header of ``token``."""
    return {"Authorization": f"Bearer {token}"}
