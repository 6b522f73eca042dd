"""Idempotency keys: a retried POST with the same ``Idempotency-Key`` replays the first
response instead of doing the work again (docs/api.md, "Idempotency").

Insert-first reservation, in the database, so it holds across server processes:

1. :meth:`IdempotencyStore.reserve` inserts ``(tenant, key)`` as ``pending`` in its own
   committed transaction. The primary key lets exactly one of any number of concurrent
   requests win; the others find the row:

   * ``done`` with the same request fingerprint → :class:`Replay` of the stored response;
   * any state with a different fingerprint → :class:`KeyReused` (the API answers 422);
   * ``pending`` with the same fingerprint → :class:`InProgress` (409, retry later).

2. The winner runs the request, then :meth:`complete` stores its status, body and
   ``Location`` (2xx responses only), or :meth:`release` deletes the reservation (an error
   response: the client may fix the request and retry with the same key).

A reservation whose server died is taken over once ``locked_until`` passes; a stored
response expires after the TTL (24 h by default) and the key may then be used afresh.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update

from dataworkflows.common.clock import Clock
from dataworkflows.common.jsonlimits import loads_limited
from dataworkflows.db.database import Database
from dataworkflows.db.lifecycle_models import idempotency_keys

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Reserved:
    """This request owns the key; finish with :meth:`IdempotencyStore.complete` or
    :meth:`IdempotencyStore.release`."""

    token: str


@dataclass(frozen=True)
class Replay:
    """The key was used for the same request before: answer with this response."""

    status: int
    body: Any
    headers: dict[str, str]


@dataclass(frozen=True)
class KeyReused:
    """The key was used for a different request (method, path, query or body)."""

    method: str
    path: str


@dataclass(frozen=True)
class InProgress:
    """The same request with this key is being processed right now."""


Outcome = Reserved | Replay | KeyReused | InProgress


def fingerprint(method: str, path_qs: str, body: bytes) -> str:
    """SHA-256 of the request: method, path with query, and the body — canonical JSON when
    it parses within the default JSON limits (so key order and whitespace do not matter),
    the raw bytes otherwise."""
    try:
        canonical = json.dumps(
            loads_limited(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, UnicodeDecodeError, RecursionError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path_qs.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyStore:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        ttl_seconds: float = 86400.0,
        lock_seconds: float = 60.0,
    ) -> None:
        self.db = db
        self.clock = clock
        self.ttl = timedelta(seconds=ttl_seconds)
        self.lock = timedelta(seconds=lock_seconds)
        self._last_purge: datetime | None = None

    async def reserve(
        self, tenant_id: str, key: str, fingerprint: str, method: str, path: str
    ) -> Outcome:
        """Claim ``key`` for this request, or say why not (see the module docstring)."""
        t = idempotency_keys
        now = self.clock.now()
        token = uuid.uuid4().hex
        fresh = {
            "fingerprint": fingerprint,
            "method": method,
            "path": path,
            "state": "pending",
            "lock_token": token,
            "locked_until": now + self.lock,
            "response_status": None,
            "response_body": None,
            "response_headers": None,
            "created_at": now,
            "expires_at": now + self.ttl,
        }
        async with self.db.begin() as conn:
            await self._purge(conn, now)
            inserted = (
                await conn.execute(
                    self.db.insert(t)
                    .values(tenant_id=tenant_id, key=key, **fresh)
                    .on_conflict_do_nothing(index_elements=["tenant_id", "key"])
                    .returning(t.c.key)
                )
            ).scalar_one_or_none()
            if inserted is not None:
                return Reserved(token)
            row = (
                await conn.execute(select(t).where(t.c.tenant_id == tenant_id, t.c.key == key))
            ).one_or_none()
            if row is None:  # deleted in between (released or purged): try again later
                return InProgress()
            stale = row.expires_at <= now or (row.state == "pending" and row.locked_until <= now)
            if stale:
                taken = await conn.execute(
                    update(t)
                    .where(
                        t.c.tenant_id == tenant_id,
                        t.c.key == key,
                        t.c.lock_token == row.lock_token,
                    )
                    .values(**fresh)
                )
                return Reserved(token) if taken.rowcount == 1 else InProgress()
            if row.fingerprint != fingerprint:
                return KeyReused(row.method, row.path)
            if row.state == "pending":
                return InProgress()
            return Replay(row.response_status, row.response_body, dict(row.response_headers or {}))

    async def complete(
        self,
        tenant_id: str,
        key: str,
        token: str,
        *,
        status: int,
        body: Any,
        headers: dict[str, str],
    ) -> None:
        """Store the response this key will replay."""
        t = idempotency_keys
        async with self.db.begin() as conn:
            await conn.execute(
                update(t)
                .where(t.c.tenant_id == tenant_id, t.c.key == key, t.c.lock_token == token)
                .values(
                    state="done",
                    response_status=status,
                    response_body=body,
                    response_headers=headers,
                )
            )

    async def release(self, tenant_id: str, key: str, token: str) -> None:
        """Forget the reservation (the request failed; nothing to replay)."""
        t = idempotency_keys
        async with self.db.begin() as conn:
            await conn.execute(
                delete(t).where(t.c.tenant_id == tenant_id, t.c.key == key, t.c.lock_token == token)
            )

    async def _purge(self, conn: Any, now: datetime) -> None:
        """Delete expired keys, at most once a minute per process (in the caller's txn)."""
        if self._last_purge is not None and now - self._last_purge < timedelta(minutes=1):
            return
        self._last_purge = now
        t = idempotency_keys
        await conn.execute(delete(t).where(t.c.expires_at <= now))
