"""Dropping whole time partitions whose every run the retention policy deletes
(docs/partitioning.md, "Maintenance").

Per range that ended, in three steps, none of which holds a lock the engine's
statements wait on for longer than :data:`LOCK_TIMEOUT`:

1. **check** (a plain read): every run in the range is one the policy deletes — the same
   SELECT the batched deletes use (final, past its age or count, no dead letter waiting);
   otherwise the range is left to the batched deletes. No table lock: a statement of the
   engine that is not by run id (the claim) locks every partition, so even a lock that
   only keeps writers out would stall it for as long as the check took.
2. **release** what other tables hold for those runs, as the foreign keys' ``ON DELETE``
   would (delete, or set null) and their request ids: paced chunks of
   :data:`CHUNK` rows, each its own short transaction (the runs are past retention; a
   reader may see one without its variables before it goes).
3. **drop**, in one transaction under ``lock_timeout``: lock the three parent tables,
   check again what could have changed since step 1 (a run not final, a dead letter
   waiting; both through indexes), release what step 2 may have missed, drop the
   attempt and event partitions, detach and drop the run partition. A lock not granted
   in time is tried again :data:`LOCK_ATTEMPTS` times, then left to the next cycle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text

from dataworkflows.ledger.partition_layout import PARTITIONED, is_partitioned
from dataworkflows.ledger.partitions import LOCK_TIMEOUT, Partition, list_partitions

#: tries of step 3 per partition and cycle when a lock is not granted, and the pause
LOCK_ATTEMPTS = 3
LOCK_RETRY_PAUSE = 0.5
#: rows per transaction of step 2
CHUNK = 5000
_FINAL = ("Succeeded", "Failed", "Cancelled")

Pause = Callable[[float], Awaitable[None]]


async def drop_prunable(
    db: Any,
    doomed: Any,
    now: datetime,
    empty_before: datetime | None,
    pause: Pause | None = None,
) -> list[tuple[Partition, dict[str, int]]]:
    """Drop every partition that ended before ``now`` and whose runs are all in
    ``doomed`` (a SELECT of run ids the policy deletes); per dropped partition, the rows
    it held per table. An empty partition goes only if it ended before ``empty_before``
    (None: never), older than anything the policy keeps. ``pause(seconds the chunk
    took)`` is awaited between the chunks of step 2."""
    if db.is_sqlite:
        return []
    async with db.connect() as conn:
        if not await conn.run_sync(is_partitioned):
            return []
        # never a range new runs may still enter (their ids are taken from the wall clock)
        ended = min(now, datetime.now(UTC))
        candidates = [p for p in await conn.run_sync(list_partitions) if p.end <= ended]
    dropped = []
    for part in candidates:
        empty_ok = empty_before is not None and part.end <= empty_before
        async with db.connect() as conn:
            rows = await _check(conn, part, doomed, empty_ok)
        if rows is None:
            continue
        await _release_in_chunks(db, part, pause)
        if await _drop_with_retries(db, part):
            dropped.append((part, rows))
    return dropped


async def _check(conn: Any, part: Partition, doomed: Any, empty_ok: bool) -> dict[str, int] | None:
    """Step 1: the rows of the range per table, or None if a run in it is kept."""
    runs = PARTITIONED[0][0]
    in_range = (runs.c.id >= part.low, runs.c.id < part.high)
    total = (
        await conn.execute(select(func.count()).select_from(runs).where(*in_range))
    ).scalar_one()
    if total == 0 and not empty_ok:
        return None
    ids = doomed.where(*in_range).subquery()  # the range only: one partition scanned
    outer = runs.alias("run")  # an anti-join: a million ids fit no hashed NOT IN
    kept = await conn.execute(
        select(outer.c.id)
        .select_from(outer.outerjoin(ids, ids.c.id == outer.c.id))
        .where(outer.c.id >= part.low, outer.c.id < part.high, ids.c.id.is_(None))
        .limit(1)
    )
    if kept.first() is not None:
        return None
    rows = {runs.name: int(total)}
    for table, _key in PARTITIONED[1:]:
        count = await conn.exec_driver_sql(f"SELECT count(*) FROM {table.name}{part.suffix}")
        rows[table.name] = int(count.scalar_one())
    return rows


async def _references(conn: Any) -> list[tuple[str, str, str]]:
    """``(table, column, action)`` of each foreign key of another table to runs, and the
    request ids (``"c"``: delete, ``"n"``: set null)."""
    found = await conn.exec_driver_sql(
        "SELECT c.conrelid::regclass::text, a.attname, c.confdeltype FROM pg_constraint c"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
        " WHERE c.contype = 'f' AND c.confrelid = to_regclass('workflow_executions')"
        " AND c.conparentid = 0 ORDER BY 1"
    )
    return [*(tuple(r) for r in found.all()), ("execution_requests", "execution_id", "c")]


def _release_sql(table: str, column: str, action: str, limit: int | None) -> str:
    rows = f"{column} >= :low AND {column} < :high"
    if limit is not None:
        rows = f"ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {rows} LIMIT {limit}))"
    if action == "n":
        return f"UPDATE {table} SET {column} = NULL WHERE {rows}"
    return f"DELETE FROM {table} WHERE {rows}"


async def _release_in_chunks(db: Any, part: Partition, pause: Pause | None) -> None:
    """Step 2."""
    bounds = {"low": part.low, "high": part.high}
    async with db.connect() as conn:
        references = await _references(conn)
    for table, column, action in references:
        statement = text(_release_sql(table, column, action, CHUNK))
        while True:
            started = time.monotonic()
            async with db.begin() as conn:
                done = (await conn.execute(statement, bounds)).rowcount
            if done < CHUNK:
                break
            took = time.monotonic() - started
            await (pause(took) if pause is not None else asyncio.sleep(0))


async def _drop_with_retries(db: Any, part: Partition) -> bool:
    """Step 3, tried again while a lock is not granted in time; whether it dropped."""
    for attempt in range(LOCK_ATTEMPTS):
        try:
            async with db.begin() as conn:
                return await _drop(conn, part)
        except Exception as exc:
            if "does not exist" in str(exc):  # another pruner dropped it
                return False
            if "lock timeout" not in str(exc):
                raise
        if attempt + 1 < LOCK_ATTEMPTS:
            await asyncio.sleep(LOCK_RETRY_PAUSE)
    return False


async def _drop(conn: Any, part: Partition) -> bool:
    runs = PARTITIONED[0][0]
    bounds = {"low": part.low, "high": part.high}
    await conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    names = ", ".join(t.name for t, _ in PARTITIONED)
    await conn.exec_driver_sql(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
    # what could have changed since the check: a run not final, a dead letter waiting
    final = ", ".join(f"'{s}'" for s in _FINAL)
    changed = await conn.execute(
        text(
            "(SELECT 1 FROM workflow_executions WHERE id >= :low AND id < :high"
            f" AND status NOT IN ({final}) LIMIT 1)"
            " UNION ALL (SELECT 1 FROM dead_letters WHERE execution_id >= :low"
            " AND execution_id < :high AND requeued_at IS NULL LIMIT 1)"
        ),
        bounds,
    )
    if changed.first() is not None:
        return False
    for table, column, action in await _references(conn):
        await conn.execute(text(_release_sql(table, column, action, None)), bounds)
    for table, _key in PARTITIONED[1:]:
        await conn.exec_driver_sql(f"DROP TABLE {table.name}{part.suffix}")
    await conn.exec_driver_sql(f"ALTER TABLE {runs.name} DETACH PARTITION {runs.name}{part.suffix}")
    await conn.exec_driver_sql(f"DROP TABLE {runs.name}{part.suffix}")
    return True
