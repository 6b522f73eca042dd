"""API tokens of strict mode (docs/auth.md): create (shown once), list, revoke, verify.

A token is ``dwt_`` + 43 characters of url-safe base64 (32 random bytes from the OS). The
database keeps only its SHA-256 (hex): a token is found by its hash, and the hash read back
is compared with :func:`hmac.compare_digest`, so no timing of the comparison tells a
caller how much of a guess was right. A revoked or expired token is refused with the same
answer as an unknown one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from dataworkflows.common.access import ROLES, Identity, valid_tenant
from dataworkflows.common.access import TENANT_PATTERN as TENANT_RULE
from dataworkflows.common.clock import Clock, iso_utc
from dataworkflows.common.errors import NotFound, Unprocessable
from dataworkflows.db.auth_models import ApiToken
from dataworkflows.db.database import Database

api_tokens = ApiToken.__table__
#: every API token starts with this (so that a leaked one is easy to find in logs and
#: secret scanners, and so that the API tells it from a JWT without parsing)
TOKEN_PREFIX = "dwt_"
TOKEN_BYTES = 32


def token_hash(token: str) -> str:
    """SHA-256 of ``token``, lower-case hex (what ``api_tokens.token_hash`` holds)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class NewToken:
    """A token just made: ``token`` is the secret, shown this once."""

    token: str
    view: dict[str, Any]


def token_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """What ``tokens list`` shows of a token row (never its hash)."""
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "tenantId": row["tenant_id"],
        "role": row["role"],
        "createdAt": iso_utc(row["created_at"]),
        "createdBy": row["created_by"],
        "expiresAt": iso_utc(row["expires_at"]),
        "revokedAt": iso_utc(row["revoked_at"]),
    }


class TokenStore:
    """The ``api_tokens`` table."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def create(
        self,
        *,
        tenant: str,
        role: str,
        name: str,
        expires_in: timedelta | None = None,
        created_by: str | None = None,
    ) -> NewToken:
        """A new token bound to ``tenant`` and ``role``; 422 for a bad tenant, role or
        name (and nothing is written)."""
        problems = []
        if not valid_tenant(tenant):
            problems.append(f"tenant {tenant!r} does not match {TENANT_RULE}")
        if role not in ROLES:
            problems.append(f"role {role!r} is not one of {', '.join(ROLES)}")
        if not name or len(name) > 200 or not name.isprintable():
            problems.append("name must be 1-200 printable characters")
        if expires_in is not None and expires_in <= timedelta(0):
            problems.append("expiry must be in the future")
        if problems:
            raise Unprocessable("; ".join(problems), code="invalid_token_request")
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        now = self.clock.now()
        values = {
            "id": uuid.uuid4(),
            "token_hash": token_hash(token),
            "tenant_id": tenant,
            "name": name,
            "role": role,
            "created_at": now,
            "created_by": created_by,
            "expires_at": now + expires_in if expires_in is not None else None,
            "revoked_at": None,
        }
        async with self.db.begin() as conn:
            await conn.execute(api_tokens.insert().values(**values))
        return NewToken(token, token_view(values))

    async def list(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every token (of ``tenant`` when given), oldest first."""
        query = select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.id)
        if tenant is not None:
            query = query.where(api_tokens.c.tenant_id == tenant)
        async with self.db.connect() as conn:
            return [token_view(row._mapping) for row in (await conn.execute(query)).all()]

    async def revoke(self, token_id: str) -> dict[str, Any]:
        """Revoke a token by id (revoking twice keeps the first time); 404 if unknown."""
        try:
            key = uuid.UUID(token_id)
        except ValueError:
            raise NotFound(f"no API token {token_id!r}", code="token_not_found") from None
        async with self.db.begin() as conn:
            await conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == key, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self.clock.now())
            )
            row = (await conn.execute(select(api_tokens).where(api_tokens.c.id == key))).first()
        if row is None:
            raise NotFound(f"no API token {token_id!r}", code="token_not_found")
        return token_view(row._mapping)

    async def verify(self, token: str) -> Identity | None:
        """The identity of a valid token: known, not revoked, not expired. None otherwise."""
        digest = token_hash(token)
        async with self.db.connect() as conn:
            row = (
                await conn.execute(select(api_tokens).where(api_tokens.c.token_hash == digest))
            ).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        now: datetime = self.clock.now()
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
            return None
        return Identity(
            tenant=row.tenant_id,
            principal=f"token:{row.name}",
            role=row.role,
            method="token",
            token_id=str(row.id),
        )
