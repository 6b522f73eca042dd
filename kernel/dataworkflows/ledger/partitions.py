"""Time partitions of a partitioned PostgreSQL ledger: creating them ahead, dropping the
ones whose every run the retention policy no longer keeps (docs/partitioning.md).

A partition holds the runs whose id (a UUIDv7) falls in ``[start, end)`` of time, in
the three tables at once: ``<table>_pYYYYMMDD`` (the day it starts, UTC). Ranges are
aligned to multiples of the interval since the Unix epoch; the interval is whatever the
existing partitions use (``dataworkflows ledger partition --enable --interval-days``).

Dropping is all or nothing per range and never waits long for a lock: under
``lock_timeout`` it checks (holding the run partition against writes) that every run in
it is one the policy deletes — final, past its age or count, no dead letter waiting — and
then removes the rows of other tables that hang off those runs (as the foreign keys'
``ON DELETE`` would), drops the attempt and event partitions and detaches and drops the
run partition. A range with one run the policy keeps (in flight, failed and kept
longer, ...) is left to the batched deletes.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text

from dataworkflows.common.ids import uuid7_floor
from dataworkflows.ledger.partition_layout import PARTITIONED, is_partitioned

#: partitions kept ready beyond the current one
AHEAD = 2
#: how long maintenance waits for a table lock before giving up until the next cycle
LOCK_TIMEOUT = "200ms"
#: tries per partition and cycle when a lock is not granted, and the pause between them
LOCK_ATTEMPTS = 3
LOCK_RETRY_PAUSE = 0.5
_BOUND = re.compile(r"FROM \('([0-9a-f-]{36})'\) TO \('([0-9a-f-]{36})'\)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Partition:
    """One time range of the ledger (the same in the three tables)."""

    suffix: str
    start: datetime
    end: datetime

    @property
    def low(self) -> uuid.UUID:
        return uuid7_floor(self.start)

    @property
    def high(self) -> uuid.UUID:
        return uuid7_floor(self.end)


def _time_of(bound: uuid.UUID) -> datetime:
    return _EPOCH + timedelta(milliseconds=bound.int >> 80)


def list_partitions(conn: Any) -> list[Partition]:
    """The time partitions of ``workflow_executions``, oldest first (not the default)."""
    rows = conn.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass('workflow_executions')"
        )
    ).all()
    out = []
    for name, bound in rows:
        found = _BOUND.search(bound or "")
        if found:
            low, high = (uuid.UUID(v) for v in found.groups())
            suffix = name[len("workflow_executions") :]
            out.append(Partition(suffix, _time_of(low), _time_of(high)))
    return sorted(out, key=lambda p: p.start)


def interval_of(partitions: list[Partition]) -> timedelta | None:
    """The width of the newest partition (the interval new ones get)."""
    return partitions[-1].end - partitions[-1].start if partitions else None


def slot(moment: datetime, interval: timedelta) -> Partition:
    """The aligned range of ``interval`` that holds ``moment``."""
    width = interval.total_seconds()
    start = _EPOCH + timedelta(seconds=(moment - _EPOCH).total_seconds() // width * width)
    return Partition(f"_p{start:%Y%m%d}", start, start + interval)


def create_partitions(
    conn: Any, start: datetime, end: datetime, interval: timedelta
) -> tuple[list[str], list[str]]:
    """Create the missing partitions of every slot from the one of ``start`` to the one
    of ``end``; ``(created, skipped)`` suffixes. A slot whose range already has rows in
    the default partition (runs written before partitioning) is skipped: PostgreSQL
    would refuse it; its runs stay in the default partition."""
    if interval < timedelta(days=1) or interval.total_seconds() % 86400:
        raise ValueError("the partition interval is a whole number of days")
    existing = list_partitions(conn)
    created, skipped = [], []
    current = slot(start, interval)
    while current.start <= end:
        if not any(p.start < current.end and current.start < p.end for p in existing):
            if _default_has_rows(conn, current):
                skipped.append(current.suffix)
            else:
                for table, _key in PARTITIONED:
                    conn.exec_driver_sql(
                        f"CREATE TABLE {table.name}{current.suffix} PARTITION OF {table.name}"
                        f" FOR VALUES FROM ('{current.low}') TO ('{current.high}')"
                    )
                created.append(current.suffix)
        current = slot(current.end, interval)
    return created, skipped


def _default_has_rows(conn: Any, part: Partition) -> bool:
    for table, key in PARTITIONED:
        found = conn.exec_driver_sql(
            f"SELECT 1 FROM {table.name}_default WHERE {key} >= '{part.low}'"
            f" AND {key} < '{part.high}' LIMIT 1"
        )
        if found.first() is not None:
            return True
    return False


async def maintain(db: Any, now: datetime) -> list[str]:
    """Create the partitions up to :data:`AHEAD` intervals after ``now`` (wall time: run
    ids are taken from it); the suffixes created. A no-op unless partitioned; gives up
    quietly when a table lock is not granted within :data:`LOCK_TIMEOUT`."""
    if db.is_sqlite:
        return []
    try:
        async with db.begin() as conn:
            if not await conn.run_sync(is_partitioned):
                return []
            await conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            partitions = await conn.run_sync(list_partitions)
            interval = interval_of(partitions)
            if interval is None:
                return []
            created, _skipped = await conn.run_sync(
                create_partitions, now, now + AHEAD * interval, interval
            )
    except Exception as exc:
        if "lock timeout" not in str(exc):
            raise
        return []  # the engine held a table a moment too long: the next cycle
    return created


async def drop_prunable(
    db: Any, doomed: Any, now: datetime, empty_before: datetime | None
) -> list[tuple[Partition, dict[str, int]]]:
    """Drop every partition that ended before ``now`` and whose runs are all in
    ``doomed`` (a SELECT of run ids the policy deletes); per dropped partition, the rows
    it held per table. An empty partition goes only if it ended before ``empty_before``
    (None: never), older than anything the policy keeps. Ranges that cannot be dropped
    (a run kept, a lock not granted) are left to the batched deletes."""
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
        rows = await _drop_with_retries(db, part, doomed, empty_ok)
        if rows is not None:
            dropped.append((part, rows))
    return dropped


async def _drop_with_retries(
    db: Any, part: Partition, doomed: Any, empty_ok: bool
) -> dict[str, int] | None:
    """:func:`_drop_one` in its own transaction; a lock not granted in time is tried
    again :data:`LOCK_ATTEMPTS` times, :data:`LOCK_RETRY_PAUSE` seconds apart (the
    engine's transactions are short), then left to the next cycle."""
    for attempt in range(LOCK_ATTEMPTS):
        try:
            async with db.begin() as conn:
                return await _drop_one(conn, part, doomed, empty_ok)
        except Exception as exc:
            if "does not exist" in str(exc):  # another pruner dropped it
                return None
            if "lock timeout" not in str(exc):
                raise
        if attempt + 1 < LOCK_ATTEMPTS:
            await asyncio.sleep(LOCK_RETRY_PAUSE)
    return None


async def _drop_one(
    conn: Any, part: Partition, doomed: Any, empty_ok: bool
) -> dict[str, int] | None:
    runs, children = PARTITIONED[0][0], PARTITIONED[1:]
    await conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    # no run of the range changes while it is checked and dropped
    await conn.exec_driver_sql(f"LOCK TABLE {runs.name}{part.suffix} IN EXCLUSIVE MODE")
    in_range = (runs.c.id >= part.low, runs.c.id < part.high)
    ids = doomed.where(*in_range).subquery()  # the range only: one partition scanned
    total = (
        await conn.execute(select(func.count()).select_from(runs).where(*in_range))
    ).scalar_one()
    # an anti-join (not NOT IN: a million ids would not fit a hashed subplan)
    outer = runs.alias("run")
    kept = await conn.execute(
        select(outer.c.id)
        .select_from(outer.outerjoin(ids, ids.c.id == outer.c.id))
        .where(outer.c.id >= part.low, outer.c.id < part.high, ids.c.id.is_(None))
        .limit(1)
    )
    if kept.first() is not None or (total == 0 and not empty_ok):
        return None
    rows = {runs.name: int(total)}
    for table, _key in children:
        count = await conn.exec_driver_sql(f"SELECT count(*) FROM {table.name}{part.suffix}")
        rows[table.name] = int(count.scalar_one())
    await _release_references(conn, part)
    names = ", ".join(t.name for t, _ in PARTITIONED)
    await conn.exec_driver_sql(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
    for table, _key in children:
        await conn.exec_driver_sql(f"DROP TABLE {table.name}{part.suffix}")
    await conn.exec_driver_sql(f"ALTER TABLE {runs.name} DETACH PARTITION {runs.name}{part.suffix}")
    await conn.exec_driver_sql(f"DROP TABLE {runs.name}{part.suffix}")
    return rows


async def _release_references(conn: Any, part: Partition) -> None:
    """What the foreign keys of other tables to the range's runs would do on a DELETE
    (cascade: delete, set null: clear), and the runs' request ids."""
    references = await conn.exec_driver_sql(
        "SELECT c.conrelid::regclass::text, a.attname, c.confdeltype FROM pg_constraint c"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
        " WHERE c.contype = 'f' AND c.confrelid = to_regclass('workflow_executions')"
        " AND c.conparentid = 0"
    )
    bounds = {"low": part.low, "high": part.high}
    where = "{col} >= :low AND {col} < :high"
    for table, column, action in references.all():
        condition = where.format(col=column)
        if action == "n":
            sql = f"UPDATE {table} SET {column} = NULL WHERE {condition}"
        else:
            sql = f"DELETE FROM {table} WHERE {condition}"
        await conn.execute(text(sql), bounds)
    await conn.execute(
        text(f"DELETE FROM execution_requests WHERE {where.format(col='execution_id')}"), bounds
    )
