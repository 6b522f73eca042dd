"""Rate limits: token buckets per key, shared by every process on PostgreSQL.

A :class:`Limit` is a rate (requests per second) and a burst (how many may come at once
after a quiet spell). Buckets are kept as GCRA's *theoretical arrival time* (``tat``):
each request moves it on by ``1 / rate``; a request passes while ``tat - now`` stays
within ``burst / rate``. Its answer is None (pass) or the seconds until one would pass
(``Retry-After``).

Where the buckets live:

* **PostgreSQL** (:class:`SharedBuckets`): one row per key in ``rate_limit_buckets``,
  taken by one ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` on the database's clock, so
  every API process draws from the same bucket. To keep a busy key from costing one write
  per request, a process takes a *reservation* of up to ``rate x reserve_seconds``
  requests at once and spends it locally for at most ``reserve_seconds``; what it has not
  spent by then is dropped (the limit errs on the side of refusing). Concurrent requests
  of one key in a process wait for one reservation rather than each sending a statement,
  and after a refusal the process answers 429 locally until the ``Retry-After`` it got.
* **SQLite** (:class:`LocalBuckets`): in this process's memory (one engine process).

See docs/limits.md.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import bindparam, case, func, literal_column
from sqlalchemy.dialects.postgresql import insert as pg_insert

from dataworkflows.db.database import Database
from dataworkflows.db.limit_models import rate_limit_buckets
from dataworkflows.db.transient import retry_transient


@dataclass(frozen=True)
class Limit:
    """``per_second`` requests per second on average, up to ``burst`` at once."""

    per_second: float
    burst: int

    @classmethod
    def of(cls, per_second: float, burst: int) -> Limit | None:
        """The limit of two settings, or None when ``per_second`` is 0 (no limit). A burst
        of 0 means one second's worth of requests (at least 1)."""
        if per_second <= 0:
            return None
        return cls(per_second, burst if burst > 0 else max(1, math.ceil(per_second)))

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second

    def as_json(self) -> dict[str, Any]:
        return {"perSecond": self.per_second, "burst": self.burst}


class Buckets(Protocol):
    """Where buckets live: grant up to ``wanted`` requests of ``key`` now."""

    async def reserve(self, key: str, wanted: int, limit: Limit) -> tuple[int, float]:
        """``(granted, retry_after)``: how many passed (0 to ``wanted``) and, when none
        did, the seconds until one would."""
        ...


def _grant(tat: float, now: float, wanted: int, limit: Limit) -> tuple[int, float, float]:
    """GCRA for ``wanted`` requests: ``(granted, new tat, retry_after)``."""
    start = max(tat, now)
    room = math.floor((now + limit.burst * limit.interval - start) / limit.interval + 1e-9)
    granted = max(0, min(wanted, room))
    if granted:
        return granted, start + granted * limit.interval, 0.0
    return 0, tat, max(0.0, start - limit.burst * limit.interval + limit.interval - now)


class LocalBuckets:
    """Buckets in this process's memory (SQLite: one engine process)."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}

    async def reserve(self, key: str, wanted: int, limit: Limit) -> tuple[int, float]:
        now = time.monotonic()
        granted, tat, retry_after = _grant(self._tat.get(key, now), now, wanted, limit)
        self._tat[key] = tat
        return granted, retry_after


def _shared_statement() -> Any:
    """One upsert that grants up to ``p_wanted`` requests of ``p_key`` on the database's
    clock and returns ``granted``, ``tat`` and ``updated_at`` (now)."""
    b = rate_limit_buckets
    interval = bindparam("p_interval", type_=b.c.tat.type)
    tolerance = bindparam("p_tolerance", type_=b.c.tat.type)
    wanted = bindparam("p_wanted", type_=b.c.granted.type)
    now = literal_column("extract(epoch from clock_timestamp())::float8")
    insert = pg_insert(b).values(
        key=bindparam("p_key", type_=b.c.key.type),
        tat=now + func.least(wanted, bindparam("p_burst", type_=b.c.granted.type)) * interval,
        granted=func.least(wanted, bindparam("p_burst", type_=b.c.granted.type)),
        updated_at=now,
    )
    current = insert.excluded.updated_at
    start = func.greatest(b.c.tat, current)
    room = func.floor((current + tolerance - start) / interval + 1e-9)
    granted = func.greatest(0, func.least(wanted, room))
    return insert.on_conflict_do_update(
        index_elements=[b.c.key],
        set_={
            "granted": granted,
            "tat": case((granted > 0, start + granted * interval), else_=b.c.tat),
            "updated_at": current,
        },
    ).returning(b.c.granted, b.c.tat, b.c.updated_at)


class SharedBuckets:
    """Buckets in the ``rate_limit_buckets`` table (PostgreSQL: shared by all processes)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._statement = _shared_statement()

    async def reserve(self, key: str, wanted: int, limit: Limit) -> tuple[int, float]:
        params = {
            "p_key": key,
            "p_wanted": wanted,
            "p_burst": limit.burst,
            "p_interval": limit.interval,
            "p_tolerance": limit.burst * limit.interval,
        }

        async def once() -> Any:
            async with self.db.begin() as conn:
                return (await conn.execute(self._statement, params)).one()

        row = await retry_transient(once, what="rate limit")
        if row.granted > 0:
            return int(row.granted), 0.0
        start = max(row.tat, row.updated_at)
        return 0, max(0.0, start - limit.burst * limit.interval + limit.interval - row.updated_at)


@dataclass
class _Local:
    """What this process holds of one key: a reservation, or a refusal until a time."""

    left: int = 0
    until: float = 0.0
    refused_until: float = 0.0
    lock: asyncio.Lock | None = None


class RateLimiter:
    """Checks requests against limits; one per process (the kernel's ``rate_limits``)."""

    def __init__(self, buckets: Buckets, *, reserve_seconds: float = 0.0) -> None:
        self.buckets = buckets
        self.reserve_seconds = max(0.0, reserve_seconds)
        self._local: dict[str, _Local] = {}

    @classmethod
    def for_database(cls, db: Database, *, reserve_seconds: float) -> RateLimiter:
        """Shared buckets on PostgreSQL (with reservations), local ones on SQLite."""
        if db.is_sqlite:
            return cls(LocalBuckets())
        return cls(SharedBuckets(db), reserve_seconds=reserve_seconds)

    async def check(self, key: str, limit: Limit) -> float | None:
        """Take one request of ``key``: None when it may pass, else the seconds until one
        would (for ``Retry-After``)."""
        local = self._local.get(key)
        if local is None:
            local = self._local[key] = _Local(lock=asyncio.Lock())
            if len(self._local) > 100_000:  # keys come and go (principals): forget old ones
                self._forget()
        now = time.monotonic()
        if local.left > 0 and now < local.until:
            local.left -= 1
            return None
        if now < local.refused_until:
            return local.refused_until - now
        assert local.lock is not None
        async with local.lock:  # one reservation at a time per key in this process
            now = time.monotonic()
            if local.left > 0 and now < local.until:
                local.left -= 1
                return None
            wanted = max(1, min(limit.burst, math.floor(limit.per_second * self.reserve_seconds)))
            granted, retry_after = await self.buckets.reserve(key, wanted, limit)
            now = time.monotonic()
            if granted == 0:
                local.refused_until = now + retry_after
                return retry_after
            local.left, local.until = granted - 1, now + self.reserve_seconds
            return None

    async def check_rate(self, key: str, per_second: float, burst: int) -> float | None:
        """:meth:`check` with the limit as numbers (``PluginAPI.check_rate_limit``)."""
        limit = Limit.of(per_second, burst)
        return None if limit is None else await self.check(key, limit)

    def _forget(self) -> None:
        now = time.monotonic()
        for key in [
            k
            for k, v in self._local.items()
            if v.until <= now and v.refused_until <= now and not v.lock.locked()  # type: ignore[union-attr]
        ]:
            del self._local[key]
