"""The run ledger: every write a run makes goes through :class:`RunLedger`.

Durable-write budget per run (see DESIGN.md, "Performance"): one transaction to enqueue
(execution row + ``RunQueued``), one to claim and start it (``Running`` + ``RunStarted``),
one per step attempt (attempt row + its events), and the run's end rides in the
transaction of its last step. Keep it that way: this class is the one seam where
batching can be added later without touching callers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from dataworkflows.clock import Clock
from dataworkflows.db.database import Database
from dataworkflows.db.models import (
    FINAL_RUN_STATUSES,
    action_executions,
    execution_events,
    workflow_executions,
)
from dataworkflows.events import EventType, RunEvent

log = logging.getLogger(__name__)


@dataclass
class ClaimedRun:
    """A run this process owns while it executes it."""

    id: uuid.UUID
    workflow_id: str
    workflow_version: int
    trigger: dict[str, Any]
    tenant_id: str
    principal: str | None
    correlation_id: str | None
    next_sequence: int
    started_at: datetime

    @property
    def id_str(self) -> str:
        return str(self.id)


@dataclass(frozen=True)
class StepRecord:
    """One attempt of one node, as written to ``action_executions``."""

    node_id: str
    action_type: str
    attempt: int
    status: str
    parameters: dict[str, Any] | None
    outputs: dict[str, Any] | None
    error: dict[str, Any] | None
    started_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class RunFinish:
    """The end of a run, written together with the step that caused it."""

    status: str  # Succeeded | Failed | Cancelled
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class NewEvent:
    type: EventType
    node_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


_STEP_EVENT = {
    "Succeeded": EventType.STEP_SUCCEEDED,
    "Failed": EventType.STEP_FAILED,
    "TimedOut": EventType.STEP_FAILED,
    "RetriableFailure": EventType.STEP_RETRYING,
    "Skipped": EventType.STEP_SKIPPED,
    "Cancelled": EventType.STEP_CANCELLED,
}
_RUN_EVENT = {
    "Succeeded": EventType.RUN_SUCCEEDED,
    "Failed": EventType.RUN_FAILED,
    "Cancelled": EventType.RUN_CANCELLED,
}


class RunLedger:
    """Writes and reads of runs, steps and events."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        observe: Callable[[RunEvent], None] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self._observe = observe
        self._finished: dict[uuid.UUID, list[asyncio.Future[str]]] = {}

    # -- enqueue --------------------------------------------------------------------------

    async def enqueue(
        self,
        *,
        workflow_id: str,
        workflow_version: int,
        trigger: dict[str, Any],
        request_id: str | None,
        tenant_id: str = "default",
        principal: str | None = None,
        correlation_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Record a ``Pending`` run. Returns (execution row, created).

        The same ``request_id`` for the same workflow returns the existing run and creates
        nothing (``created`` is False), also under concurrent calls.
        """
        execution_id = uuid.uuid4()
        now = self.clock.now()
        values = {
            "id": execution_id,
            "workflow_id": workflow_id,
            "workflow_version": workflow_version,
            "request_id": request_id or str(execution_id),
            "status": "Pending",
            "trigger": trigger,
            "error": None,
            "tenant_id": tenant_id,
            "principal": principal,
            "correlation_id": correlation_id,
            "created_at": now,
            "started_at": None,
            "ended_at": None,
        }
        stmt = (
            self.db.insert(workflow_executions)
            .values(values)
            .on_conflict_do_nothing(index_elements=["workflow_id", "request_id"])
            .returning(workflow_executions.c.id)
        )
        async with self.db.begin() as conn:
            inserted = (await conn.execute(stmt)).scalar_one_or_none()
            if inserted is not None:
                event = NewEvent(EventType.RUN_QUEUED, payload={"version": workflow_version})
                await conn.execute(
                    execution_events.insert(), [_event_row(execution_id, 1, event, now)]
                )
                return values, True
        existing = await self.get_execution_by_request(workflow_id, values["request_id"])
        if existing is None:  # pragma: no cover - would need the row deleted in between
            raise RuntimeError("request id conflict but no existing execution found")
        return existing, False

    # -- claim ----------------------------------------------------------------------------

    async def claim(self) -> ClaimedRun | None:
        """Take the oldest ``Pending`` run and mark it ``Running``, or return None.

        Atomic on both backends: a conditional UPDATE under ``BEGIN IMMEDIATE`` on SQLite,
        ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two workers never claim the same run.
        """
        t = workflow_executions
        pick = select(t.c.id).where(t.c.status == "Pending").order_by(t.c.created_at).limit(1)
        if not self.db.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        now = self.clock.now()
        async with self.db.begin() as conn:
            row = (
                await conn.execute(
                    update(t)
                    .where(t.c.id == pick.scalar_subquery(), t.c.status == "Pending")
                    .values(status="Running", started_at=now)
                    .returning(
                        t.c.id,
                        t.c.workflow_id,
                        t.c.workflow_version,
                        t.c.trigger,
                        t.c.tenant_id,
                        t.c.principal,
                        t.c.correlation_id,
                    )
                )
            ).one_or_none()
            if row is None:
                return None
            last = (
                await conn.execute(
                    select(func.max(execution_events.c.sequence)).where(
                        execution_events.c.execution_id == row.id
                    )
                )
            ).scalar_one()
            run = ClaimedRun(
                id=row.id,
                workflow_id=row.workflow_id,
                workflow_version=row.workflow_version,
                trigger=row.trigger,
                tenant_id=row.tenant_id,
                principal=row.principal,
                correlation_id=row.correlation_id,
                next_sequence=(last or 0) + 1,
                started_at=now,
            )
            recorded = await self._insert_events(conn, run, [NewEvent(EventType.RUN_STARTED)], now)
        self._emit(run, recorded)
        return run

    # -- steps and the end of a run -------------------------------------------------------

    async def record_step(
        self, run: ClaimedRun, step: StepRecord, finish: RunFinish | None = None
    ) -> None:
        """Write one attempt (and, if given, the end of the run) in one transaction."""
        now = self.clock.now()
        events = [
            NewEvent(
                _STEP_EVENT[step.status],
                step.node_id,
                {"attempt": step.attempt, "status": step.status}
                | ({"error": step.error} if step.error else {}),
            )
        ]
        if finish is not None:
            events.append(_finish_event(finish))
        async with self.db.begin() as conn:
            await conn.execute(
                action_executions.insert(),
                [
                    {
                        "id": uuid.uuid4(),
                        "execution_id": run.id,
                        "node_id": step.node_id,
                        "action_type": step.action_type,
                        "attempt": step.attempt,
                        "status": step.status,
                        "parameters": step.parameters,
                        "outputs": step.outputs,
                        "error": step.error,
                        "started_at": step.started_at,
                        "ended_at": step.ended_at,
                    }
                ],
            )
            recorded = await self._insert_events(conn, run, events, now)
            if finish is not None:
                await self._finish(conn, run, finish, now)
        self._emit(run, recorded)
        if finish is not None:
            self._resolve(run.id, finish.status)

    async def finish(self, run: ClaimedRun, finish: RunFinish) -> None:
        """End a run without a step (e.g. a definition that can no longer be loaded)."""
        now = self.clock.now()
        async with self.db.begin() as conn:
            recorded = await self._insert_events(conn, run, [_finish_event(finish)], now)
            await self._finish(conn, run, finish, now)
        self._emit(run, recorded)
        self._resolve(run.id, finish.status)

    async def _finish(self, conn: Any, run: ClaimedRun, finish: RunFinish, now: datetime) -> None:
        t = workflow_executions
        result = await conn.execute(
            update(t)
            .where(t.c.id == run.id, t.c.status == "Running")
            .values(status=finish.status, error=finish.error, ended_at=now)
        )
        if result.rowcount != 1:
            # A final run never changes: whoever got here second loses, with all its writes.
            raise StaleRunError(f"run {run.id} is no longer Running; its end was not recorded")

    async def _insert_events(
        self, conn: Any, run: ClaimedRun, events: Iterable[NewEvent], now: datetime
    ) -> list[RunEvent]:
        rows, recorded = [], []
        for event in events:
            seq = run.next_sequence
            run.next_sequence += 1
            rows.append(_event_row(run.id, seq, event, now))
            recorded.append(
                RunEvent(
                    execution_id=run.id_str,
                    workflow_id=run.workflow_id,
                    sequence=seq,
                    type=event.type,
                    created_at=now,
                    node_id=event.node_id,
                    payload=event.payload,
                )
            )
        if rows:
            await conn.execute(execution_events.insert(), rows)
        return recorded

    def _emit(self, run: ClaimedRun, events: list[RunEvent]) -> None:
        if self._observe is None:
            return
        for event in events:
            try:
                self._observe(event)
            except Exception:
                log.exception("an on_run_event observer failed (run %s)", run.id)

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

    async def get_execution(self, execution_id: uuid.UUID) -> dict[str, Any] | None:
        t = workflow_executions
        async with self.db.connect() as conn:
            row = (await conn.execute(select(t).where(t.c.id == execution_id))).one_or_none()
        return dict(row._mapping) if row else None

    async def get_execution_by_request(
        self, workflow_id: str, request_id: str
    ) -> dict[str, Any] | None:
        t = workflow_executions
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(t).where(t.c.workflow_id == workflow_id, t.c.request_id == request_id)
                )
            ).one_or_none()
        return dict(row._mapping) if row else None

    async def list_actions(self, execution_id: uuid.UUID) -> list[dict[str, Any]]:
        t = action_executions
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(t)
                .where(t.c.execution_id == execution_id)
                .order_by(t.c.started_at, t.c.node_id, t.c.attempt)
            )
        return [dict(r._mapping) for r in rows]

    async def list_events(
        self, execution_id: uuid.UUID, after: int = 0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        t = execution_events
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(t)
                .where(t.c.execution_id == execution_id, t.c.sequence > after)
                .order_by(t.c.sequence)
                .limit(limit)
            )
        return [dict(r._mapping) for r in rows]


class StaleRunError(RuntimeError):
    """A worker tried to change a run that is already final (or no longer its own)."""


def _finish_event(finish: RunFinish) -> NewEvent:
    payload = {"status": finish.status} | ({"error": finish.error} if finish.error else {})
    return NewEvent(_RUN_EVENT[finish.status], payload=payload)


def _event_row(
    execution_id: uuid.UUID, sequence: int, event: NewEvent, now: datetime
) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "sequence": sequence,
        "type": str(event.type),
        "node_id": event.node_id,
        "payload": event.payload,
        "created_at": now,
    }
