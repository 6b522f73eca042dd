"""Time partitions of a partitioned PostgreSQL ledger: listing them and creating them
ahead (docs/partitioning.md); :mod:`dataworkflows.ledger.partition_drop` drops them.

A partition holds the runs whose id (a UUIDv7) falls in ``[start, end)`` of time, in
the three tables at once: ``<table>_pYYYYMMDD`` (the day it starts, UTC). Ranges are
aligned to multiples of the interval since the Unix epoch; the interval is whatever the
existing partitions use (``dataworkflows ledger partition --enable --interval-days``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from dataworkflows.common.ids import uuid7_floor
from dataworkflows.ledger.partition_layout import PARTITIONED, is_partitioned

#: partitions kept ready beyond the current one
AHEAD = 2
#: how long maintenance waits for a table lock before giving up until the next cycle
LOCK_TIMEOUT = "200ms"
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
