"""The harness's read-only view of the engine's ledger (PostgreSQL or SQLite).

Used to notice finished runs while a workload runs (one small query every ``poll``
seconds; a PostgreSQL read ends with ROLLBACK so it adds no commit) and, afterwards, to
read each run's ledger timestamps: ``created_at`` (enqueue), ``started_at`` (claim) and
``ended_at`` (final write). Latencies are computed from these, never from sleeps.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

FINAL = ("Succeeded", "Failed", "Cancelled")
CHUNK = 1000


@dataclass(frozen=True)
class RunTiming:
    id: uuid.UUID
    status: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _timing(row: Sequence[Any]) -> RunTiming:
    """A run's timestamps from ``id, status, created_at, started_at, ended_at, ...``."""
    created = _aware(row[2])
    assert created is not None
    return RunTiming(
        id=_as_uuid(row[0]),
        status=row[1],
        created_at=created,
        started_at=_aware(row[3]),
        ended_at=_aware(row[4]),
    )


def _chunks(items: Sequence[uuid.UUID], size: int = CHUNK) -> Iterable[Sequence[uuid.UUID]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class LedgerProbe:
    """Read-only queries on the engine's tables; open with :meth:`open`."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.is_sqlite = database_url.startswith("sqlite")
        self._pg: psycopg.AsyncConnection[Any] | None = None
        self._sqlite: sqlite3.Connection | None = None
        self.queries = 0

    async def open(self) -> LedgerProbe:
        if self.is_sqlite:
            path = make_url(self.url).database
            # a plain connection that only reads (a read-only one cannot open a WAL
            # database once the engine, its last writer, has closed it)
            self._sqlite = await asyncio.to_thread(
                sqlite3.connect, str(path), check_same_thread=False, isolation_level=None
            )
        else:
            plain = make_url(self.url).set(drivername="postgresql")
            self._pg = await psycopg.AsyncConnection.connect(
                plain.render_as_string(hide_password=False), autocommit=False
            )
        return self

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
            self._pg = None
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None

    async def _select(self, pg_sql: str, sqlite_sql: str, params: Sequence[Any]) -> list[Any]:
        self.queries += 1
        if self._pg is not None:
            try:
                cur = await self._pg.execute(pg_sql, params)
                return list(await cur.fetchall())
            finally:
                await self._pg.rollback()
        assert self._sqlite is not None
        conn = self._sqlite

        def run() -> list[Any]:
            return list(conn.execute(sqlite_sql, params).fetchall())

        return await asyncio.to_thread(run)

    def _ids(self, ids: Sequence[uuid.UUID]) -> list[Any]:
        return [i.hex for i in ids] if self.is_sqlite else list(ids)

    async def _by_ids(
        self, head: str, column: str, ids: Sequence[uuid.UUID], tail: str = ""
    ) -> AsyncIterator[list[Any]]:
        """Rows of ``{head} WHERE {column} IN ids {tail}``, one list per chunk of ids."""
        for chunk in _chunks(ids):
            params = self._ids(chunk)
            marks = ",".join("?" * len(params))
            yield await self._select(
                f"{head} WHERE {column} = ANY(%s) {tail}",
                f"{head} WHERE {column} IN ({marks}) {tail}",
                params if self.is_sqlite else [params],
            )

    async def finished(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of ``ids`` are final now."""
        done: set[uuid.UUID] = set()
        async for rows in self._by_ids(
            "SELECT id FROM workflow_executions",
            "id",
            ids,
            "AND status IN ('Succeeded', 'Failed', 'Cancelled')",
        ):
            done.update(_as_uuid(r[0]) for r in rows)
        return done

    async def timings(self, ids: Sequence[uuid.UUID]) -> list[RunTiming]:
        out: list[RunTiming] = []
        cols = "id, status, created_at, started_at, ended_at"
        async for rows in self._by_ids(f"SELECT {cols} FROM workflow_executions", "id", ids):
            out.extend(_timing(r) for r in rows)
        return out

    async def runs_of(self, workflow_id: str) -> list[tuple[RunTiming, dict[str, Any]]]:
        """Every run of a workflow: its ledger timestamps and its trigger payload."""
        rows = await self._select(
            "SELECT id, status, created_at, started_at, ended_at, trigger "
            "FROM workflow_executions WHERE workflow_id = %s",
            "SELECT id, status, created_at, started_at, ended_at, trigger "
            "FROM workflow_executions WHERE workflow_id = ?",
            [workflow_id],
        )
        return [(_timing(r), json.loads(r[5]) if isinstance(r[5], str) else r[5]) for r in rows]

    async def step_rows(self, ids: Sequence[uuid.UUID]) -> dict[str, int]:
        """Attempt rows of these runs by status."""
        counts: dict[str, int] = {}
        async for rows in self._by_ids(
            "SELECT status, count(*) FROM action_executions", "execution_id", ids, "GROUP BY status"
        ):
            for status, count in rows:
                counts[status] = counts.get(status, 0) + int(count)
        return counts

    async def first_error(self, ids: Sequence[uuid.UUID]) -> Any:
        """The error of one failed run among ``ids`` (for the report), or None."""
        async for rows in self._by_ids(
            "SELECT error FROM workflow_executions",
            "id",
            ids,
            "AND status <> 'Succeeded' LIMIT 1",
        ):
            if rows:
                return rows[0][0]
        return None
