"""Reading the ledger: runs, attempts and events, and waiting in this process until a
run is final. Part of :class:`~dataworkflows.ledger.run_ledger.RunLedger`, which inherits
:class:`LedgerReads`. Reads retry transient errors (:meth:`Database.read`).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import func, select

from dataworkflows.common.clock import Clock
from dataworkflows.db.database import Database
from dataworkflows.db.models import (
    FINAL_RUN_STATUSES,
    execution_events,
    run_variables,
    workflow_executions,
)
from dataworkflows.ledger.records import (
    _actions_of,
    _execution_of,
)
from dataworkflows.ledger.retention import table_sizes
from dataworkflows.measurements import QueueDepth, TableSize


class LedgerReads:
    """Reads of runs, attempts and events; waiting for a run's end."""

    db: Database
    clock: Clock
    _finished: dict[uuid.UUID, list[asyncio.Future[str]]]

    # -- waiting for runs (in this process) -----------------------------------------------

    def _resolve(self, execution_id: uuid.UUID, status: str) -> None:
        for future in self._finished.pop(execution_id, []):
            if not future.done():
                future.set_result(status)

    async def wait_until_final(
        self, execution_id: uuid.UUID, timeout: float = 30.0, poll: float = 0.5
    ) -> str:
        """Wait until a run is final; returns its status.

        Wakes at once when this process finishes the run, and re-reads the database every
        ``poll`` seconds for runs finished elsewhere. Raises ``TimeoutError``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            future: asyncio.Future[str] = loop.create_future()
            self._finished.setdefault(execution_id, []).append(future)
            row = await self.get_execution(execution_id)
            if row is None:
                raise LookupError(f"no execution {execution_id}")
            if row["status"] in FINAL_RUN_STATUSES:
                return str(row["status"])
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"run {execution_id} is still {row['status']}")
            try:
                return await asyncio.wait_for(asyncio.shield(future), min(poll, remaining))
            except TimeoutError:
                continue
            finally:
                waiters = self._finished.get(execution_id, [])
                if future in waiters:
                    waiters.remove(future)

    # -- reads ----------------------------------------------------------------------------

    async def get_execution(
        self, execution_id: uuid.UUID, *, replica: bool = False
    ) -> dict[str, Any] | None:
        """The run's row; ``replica``: may come from the read replica (see Database.read)."""
        return await self.db.read(lambda conn: _execution_of(conn, execution_id), replica=replica)

    async def get_execution_by_request(
        self, workflow_id: str, request_id: str
    ) -> dict[str, Any] | None:
        t = workflow_executions
        statement = select(t).where(t.c.workflow_id == workflow_id, t.c.request_id == request_id)

        async def query(conn: Any) -> dict[str, Any] | None:
            row = (await conn.execute(statement)).one_or_none()
            return dict(row._mapping) if row else None

        return await self.db.read(query)

    async def list_actions(self, execution_id: uuid.UUID) -> list[dict[str, Any]]:
        return await self.db.read(lambda conn: _actions_of(conn, execution_id))

    async def get_execution_with_actions(
        self, execution_id: uuid.UUID, *, logs: bool = False, replica: bool = False
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The run's row and its attempts, on one connection (None, [] if there is none);
        with ``logs`` their step log lines too; ``replica`` as for :meth:`get_execution`."""

        async def query(conn: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            row = await _execution_of(conn, execution_id)
            if row is None:
                return None, []
            return row, await _actions_of(conn, execution_id, logs=logs)

        return await self.db.read(query, replica=replica)

    async def list_variables(
        self, execution_id: uuid.UUID, *, replica: bool = False
    ) -> list[dict[str, Any]]:
        """The run's variables (``run_variables`` rows), by key; ``replica`` as for
        :meth:`get_execution`."""
        t = run_variables
        statement = select(t).where(t.c.execution_id == execution_id).order_by(t.c.key)

        async def query(conn: Any) -> list[dict[str, Any]]:
            return [dict(r._mapping) for r in await conn.execute(statement)]

        return await self.db.read(query, replica=replica)

    async def list_events(
        self, execution_id: uuid.UUID, after: int = 0, limit: int = 1000, *, replica: bool = False
    ) -> list[dict[str, Any]]:
        """The run's events after sequence ``after``; ``replica`` as for :meth:`get_execution`."""
        t = execution_events
        statement = (
            select(t)
            .where(t.c.execution_id == execution_id, t.c.sequence > after)
            .order_by(t.c.sequence)
            .limit(limit)
        )

        async def query(conn: Any) -> list[dict[str, Any]]:
            return [dict(r._mapping) for r in await conn.execute(statement)]

        return await self.db.read(query, replica=replica)

    async def table_sizes(self) -> list[TableSize]:
        """Rows and bytes of each ledger table (estimates on PostgreSQL; see
        :class:`~dataworkflows.measurements.TableSize`)."""
        return await table_sizes(self.db)

    async def queue_depth(self) -> QueueDepth:
        """Runs ``Pending`` and ``Running`` (every tenant), and how long the oldest
        ``Pending`` one has waited; one read (indexed by status)."""
        t = workflow_executions
        statement = (
            select(t.c.status, func.count(), func.min(t.c.created_at))
            .where(t.c.status.in_(("Pending", "Running")))
            .group_by(t.c.status)
        )

        async def query(conn: Any) -> list[Any]:
            return list(await conn.execute(statement))

        rows = {row[0]: row for row in await self.db.read(query, what="queue depth")}
        pending = rows.get("Pending")
        oldest = None
        if pending is not None and pending[2] is not None:
            oldest = max(0.0, (self.clock.now() - pending[2]).total_seconds())
        running = rows.get("Running")
        return QueueDepth(
            pending=int(pending[1]) if pending else 0,
            running=int(running[1]) if running else 0,
            oldest_pending_seconds=oldest,
        )
