"""The work of ``dataworkflows ledger partition`` (kept apart from the click wiring)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click

from dataworkflows.ledger import partition_layout, partitions

#: days per partition when ``--enable`` is given no ``--interval-days``
DEFAULT_INTERVAL_DAYS = 7


async def partition_command(
    kernel: Any, action: str | None, interval_days: int | None, since: datetime | None
) -> dict[str, Any]:
    """Enable, disable or (``action`` None) only list; ``since`` also creates partitions
    from that day on. Returns the partitions afterwards."""
    db = kernel.db
    if db.is_sqlite:
        raise click.ClickException(
            "partitioning is for PostgreSQL; on SQLite the pruner deletes in batches"
            " (see docs/partitioning.md for VACUUM)"
        )
    now = datetime.now(UTC)
    skipped: list[str] = []
    async with db.begin() as conn:
        try:
            if action == "enable":
                await conn.run_sync(partition_layout.enable)
            elif action == "disable":
                await conn.run_sync(partition_layout.disable)
        except partition_layout.PartitioningError as exc:
            raise click.ClickException(str(exc)) from None
        partitioned = await conn.run_sync(partition_layout.is_partitioned)
        if partitioned:
            existing = await conn.run_sync(partitions.list_partitions)
            interval = partitions.interval_of(existing) or timedelta(
                days=interval_days or DEFAULT_INTERVAL_DAYS
            )
            start = since.replace(tzinfo=UTC) if since is not None else now
            if since is not None and start > now:
                raise click.ClickException("--from is a day in the past (or today)")
            _created, skipped = await conn.run_sync(
                partitions.create_partitions,
                min(start, now),
                now + partitions.AHEAD * interval,
                interval,
            )
        elif since is not None:
            raise click.ClickException("the ledger is not partitioned (--enable first)")
    return await status(db, skipped)


async def status(db: Any, skipped: list[str] | None = None) -> dict[str, Any]:
    """``{"partitioned", "intervalDays", "partitions": [{name, start, end}], "skipped"}``."""
    async with db.connect() as conn:
        if not await conn.run_sync(partition_layout.is_partitioned):
            return {"partitioned": False, "intervalDays": None, "partitions": []}
        existing = await conn.run_sync(partitions.list_partitions)
    interval = partitions.interval_of(existing)
    return {
        "partitioned": True,
        "intervalDays": interval.days if interval is not None else None,
        "partitions": [
            {"name": p.suffix, "start": p.start.isoformat(), "end": p.end.isoformat()}
            for p in existing
        ],
        "skipped": skipped or [],
    }
