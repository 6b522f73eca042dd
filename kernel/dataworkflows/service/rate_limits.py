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
import contextlib
import math
import time
from dataclasses import dataclass, field
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
    """Where buckets live."""

    async def reserve(self, wants: list[tuple[str, int, Limit]]) -> list[tuple[int, float]]:
        """Grant up to ``wanted`` requests of each ``(key, wanted, limit)`` now, in one
        step: per key ``(granted, retry_after)``, how many passed (0 to ``wanted``) and,
        when none did, the seconds until one would."""
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

    async def reserve(self, wants: list[tuple[str, int, Limit]]) -> list[tuple[int, float]]:
        now = time.monotonic()
        out = []
        for key, wanted, limit in wants:
            granted, tat, retry_after = _grant(self._tat.get(key, now), now, wanted, limit)
            self._tat[key] = tat
            out.append((granted, retry_after))
        return out


def _shared_statement(count: int) -> Any:
    """One upsert of ``count`` buckets (parameters ``p_key_<i>``, ``p_wanted_<i>``,
    ``p_burst_<i>``, ``p_interval_<i>``) that grants up to ``wanted`` requests of each on the
    database's clock; returns ``key``, ``granted``, ``tat`` and ``updated_at`` (now). The
    limit travels in the row (``interval_s``, ``burst``), so that each row of one
    statement can have its own."""
    b = rate_limit_buckets
    now = literal_column("extract(epoch from clock_timestamp())::float8")
    rows = []
    for i in range(count):
        wanted = bindparam(f"p_wanted_{i}", type_=b.c.granted.type)
        interval = bindparam(f"p_interval_{i}", type_=b.c.interval_s.type)
        rows.append(
            {
                "key": bindparam(f"p_key_{i}", type_=b.c.key.type),
                "tat": now + wanted * interval,
                "granted": wanted,
                "updated_at": now,
                "interval_s": interval,
                "burst": bindparam(f"p_burst_{i}", type_=b.c.burst.type),
            }
        )
    insert = pg_insert(b).values(rows)
    new = insert.excluded
    start = func.greatest(b.c.tat, new.updated_at)
    room = func.floor((new.updated_at + new.burst * new.interval_s - start) / new.interval_s + 1e-9)
    granted = func.greatest(0, func.least(new.granted, room))
    return insert.on_conflict_do_update(
        index_elements=[b.c.key],
        set_={
            "granted": granted,
            "tat": case((granted > 0, start + granted * new.interval_s), else_=b.c.tat),
            "updated_at": new.updated_at,
            "interval_s": new.interval_s,
            "burst": new.burst,
        },
    ).returning(b.c.key, b.c.granted, b.c.tat, b.c.updated_at)


class SharedBuckets:
    """Buckets in the ``rate_limit_buckets`` table (PostgreSQL: shared by all processes).

    The keys of one request (tenant and principal) are taken in one statement, in key
    order (two processes taking the same keys never wait on each other in a cycle)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._statements: dict[int, Any] = {}

    async def reserve(self, wants: list[tuple[str, int, Limit]]) -> list[tuple[int, float]]:
        ordered = sorted(wants, key=lambda want: want[0])
        statement = self._statements.get(len(ordered))
        if statement is None:
            statement = self._statements[len(ordered)] = _shared_statement(len(ordered))
        params: dict[str, Any] = {}
        for i, (key, wanted, limit) in enumerate(ordered):
            params |= {
                f"p_key_{i}": key,
                f"p_wanted_{i}": min(wanted, limit.burst),
                f"p_burst_{i}": limit.burst,
                f"p_interval_{i}": limit.interval,
            }

        async def once() -> dict[str, Any]:
            async with self.db.begin() as conn:
                return {row.key: row for row in await conn.execute(statement, params)}

        rows = await retry_transient(once, what="rate limit")
        out = []
        for key, _wanted, limit in wants:
            row = rows[key]
            if row.granted > 0:
                out.append((int(row.granted), 0.0))
            else:
                start = max(row.tat, row.updated_at)
                wait = start - limit.burst * limit.interval + limit.interval - row.updated_at
                out.append((0, max(0.0, wait)))
        return out


@dataclass
class _Local:
    """What this process holds of one key: a reservation, or a refusal until a time."""

    left: int = 0
    until: float = 0.0
    refused_until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def holds(self, now: float) -> bool:
        """True while a reservation of this process has requests left."""
        return self.left > 0 and now < self.until


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

    async def check(self, checks: list[tuple[str, Limit]]) -> tuple[int, float] | None:
        """Take one request from each ``(key, limit)``: None when it may pass all of them,
        else ``(index of the first check that refused, seconds until it would pass)``. A
        refused request takes nothing from the other buckets (what this process reserved
        for them stays for the next request). Keys that need a reservation are reserved
        in one statement."""
        locals_ = [self._entry(key) for key, _ in checks]
        while True:  # until every bucket holds a request at one instant, or one refuses
            now = time.monotonic()
            for index, local in enumerate(locals_):
                if not local.holds(now) and now < local.refused_until:
                    return index, local.refused_until - now
            needed = [i for i, local in enumerate(locals_) if not local.holds(now)]
            if not needed:
                for local in locals_:
                    local.left -= 1
                return None
            refused = await self._reserve(checks, locals_, needed)
            if refused is not None:
                return refused

    async def _reserve(
        self, checks: list[tuple[str, Limit]], locals_: list[_Local], needed: list[int]
    ) -> tuple[int, float] | None:
        """Reserve requests of the keys at ``needed`` (one statement), one reservation at
        a time per key in this process: a request that waited for another's reservation
        uses it instead of sending its own."""
        async with contextlib.AsyncExitStack() as stack:
            for i in sorted(needed, key=lambda i: checks[i][0]):
                await stack.enter_async_context(locals_[i].lock)
            now = time.monotonic()
            needed = [i for i in needed if not locals_[i].holds(now)]
            if not needed:
                return None
            wants = [
                (key, self._wanted(limit), limit) for key, limit in (checks[i] for i in needed)
            ]
            answers = await self.buckets.reserve(wants)
            now = time.monotonic()
            refused = None
            for i, (granted, retry_after) in zip(needed, answers, strict=True):
                local = locals_[i]
                if granted == 0:
                    local.refused_until = now + retry_after
                    refused = refused or (i, retry_after)
                else:
                    local.left, local.until = granted, now + max(self.reserve_seconds, 1e-3)
            return refused

    def _entry(self, key: str) -> _Local:
        local = self._local.get(key)
        if local is None:
            if len(self._local) >= 100_000:  # keys come and go (principals): forget old ones
                self._forget()
            local = self._local[key] = _Local()
        return local

    def _wanted(self, limit: Limit) -> int:
        """How many requests one reservation takes: ``rate x reserve_seconds``, at least 1,
        at most the burst."""
        return max(1, min(limit.burst, math.floor(limit.per_second * self.reserve_seconds)))

    async def check_rate(self, key: str, per_second: float, burst: int) -> float | None:
        """:meth:`check` with the limit as numbers (``PluginAPI.check_rate_limit``)."""
        limit = Limit.of(per_second, burst)
        refused = None if limit is None else await self.check([(key, limit)])
        return None if refused is None else refused[1]

    def _forget(self) -> None:
        now = time.monotonic()
        for key in [
            k
            for k, v in self._local.items()
            if v.until <= now and v.refused_until <= now and not v.lock.locked()
        ]:
            del self._local[key]
