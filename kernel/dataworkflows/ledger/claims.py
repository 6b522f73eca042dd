"""Claims, leases and cancellation: how workers take runs and keep them.

A worker claims ``Pending`` runs (and runs whose lease expired) with one conditional
update, renews the leases of what it holds on a heartbeat, and releases what it cannot
finish. A run recovered more than ``max_recoveries`` times goes to the dead letters. A
cancel request ends a ``Pending`` run at once and flags a ``Running`` one for its worker.
Mixed into :class:`~dataworkflows.ledger.run_ledger.RunLedger`.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, tuple_, update

from dataworkflows.common.clock import Clock
from dataworkflows.db.database import Database
from dataworkflows.db.models import (
    FINAL_RUN_STATUSES,
    execution_events,
    workflow_executions,
)
from dataworkflows.db.transient import retry_transient
from dataworkflows.events import EventType, RunEvent
from dataworkflows.ledger import statements as sql
from dataworkflows.ledger.children import descendants_to_cancel
from dataworkflows.ledger.records import (
    _CANCELLED_ERROR,
    CANCEL_CHANNEL,
    RUNS_CHANNEL,
    ClaimedRun,
    NewEvent,
    RunFinish,
    RunIsFinal,
    _event_row,
    _run_event,
    run_started_payload,
)
from dataworkflows.measurements import Measure

log = logging.getLogger(__name__)


class LedgerClaims:
    """Claims, leases, release and cancellation of runs (part of the run ledger)."""

    db: Database
    clock: Clock
    lease: timedelta
    max_recoveries: int
    _claim_statement: Any
    # and, from the other parts of RunLedger: _number_events, _emit_events, _measure (step
    # writes), _notify (enqueue) and _resolve (reads)

    # -- claim ----------------------------------------------------------------------------

    async def claim(self, owner: str = "local") -> ClaimedRun | None:
        """Take the oldest claimable run and mark it ``Running`` under a lease, or return None.

        Claimable: ``Pending``, or ``Running`` whose lease has expired (its worker died or
        stalled). Atomic on both backends — a conditional UPDATE under ``BEGIN IMMEDIATE``
        on SQLite, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL — so two workers never hold the
        same run. Every claim increases the run's fencing token. A run recovered more than
        ``max_recoveries`` times comes back with :attr:`ClaimedRun.recovery_count` over the
        limit: the conductor records its lost attempt and moves it to the dead letters
        (:meth:`is_over_recovery_limit`).
        """
        runs = await self.claim_many(owner, 1)
        return runs[0] if runs else None

    def is_over_recovery_limit(self, run: ClaimedRun) -> bool:
        """True when the run was taken over from stopped workers too often."""
        return run.recovery_count > self.max_recoveries

    def dead_letter_finish(self, run: ClaimedRun) -> RunFinish:
        """The end of a run that keeps stopping its worker (see :meth:`claim`)."""
        reason = (
            f"the run was recovered {run.recovery_count} times (limit {self.max_recoveries}): "
            "a step keeps stopping its worker"
        )
        error = {"code": "recovery_limit", "message": reason, "recoveries": run.recovery_count}
        return RunFinish("Failed", error, dead_letter=True)

    async def claim_many(self, owner: str, limit: int) -> list[ClaimedRun]:
        """Claim up to ``limit`` runs in one transaction (see :meth:`claim`).

        A transient database error is retried on a fresh connection. (Should the server
        have committed a claim whose answer was lost, that run is taken over when its lease
        expires, as after a crash.)
        """
        return await retry_transient(lambda: self._claim_batch(owner, limit), what="claim")

    async def _claim_batch(self, owner: str, limit: int) -> list[ClaimedRun]:
        claimed: list[ClaimedRun] = []
        recorded: list[tuple[ClaimedRun, list[RunEvent]]] = []
        async with self.db.begin() as conn:
            now = self.clock.now()  # inside the transaction: after the write lock is held
            rows = (
                await conn.execute(
                    self._claim_statement,
                    {
                        "p_now": now,
                        "p_owner": owner,
                        "p_lease_until": now + self.lease,
                        "p_limit": limit,
                    },
                )
            ).all()
            if not rows:
                # nothing claimed: roll back rather than commit an empty transaction
                await conn.rollback()
                return []
            rows.sort(key=lambda r: r.created_at)
            # A first claim (fencing token 1) follows only RunQueued (sequence 1): nothing
            # else writes events for a run that never ran. Others read where they stopped.
            resumed = [r.id for r in rows if r.fencing_token > 1]
            last_seq: dict[uuid.UUID, int] = {}
            if resumed:
                last_seq = dict(
                    (
                        await conn.execute(
                            select(
                                execution_events.c.execution_id,
                                func.max(execution_events.c.sequence),
                            )
                            .where(execution_events.c.execution_id.in_(resumed))
                            .group_by(execution_events.c.execution_id)
                        )
                    ).all()
                )
            events: list[dict[str, Any]] = []
            for row in rows:
                run = ClaimedRun(
                    id=row.id,
                    workflow_id=row.workflow_id,
                    workflow_version=row.workflow_version,
                    trigger=row.trigger,
                    tenant_id=row.tenant_id,
                    principal=row.principal,
                    correlation_id=row.correlation_id,
                    next_sequence=last_seq.get(row.id, 1) + 1,
                    started_at=row.started_at,
                    fencing_token=row.fencing_token,
                    recovered=row.fencing_token > 1,
                    recovery_count=row.recovery_count,
                    trace_context=row.trace_context,
                    parent_id=row.parent_execution_id,
                    root_id=row.root_execution_id,
                    depth=row.depth,
                    wakes_parent=row.wakes_parent,
                )
                if row.cancel_requested:
                    run.cancel_requested.set()
                if run.recovered:
                    event = NewEvent(
                        EventType.RUN_RESUMED,
                        payload=run_started_payload(
                            run, {"recoveryCount": row.recovery_count, "owner": owner}
                        ),
                    )
                else:
                    event = NewEvent(
                        EventType.RUN_STARTED, payload=run_started_payload(run, {"owner": owner})
                    )
                numbered = self._number_events(run, [event], now)
                run.claimed_sequence = run.next_sequence
                events.append(_event_row(run.id, numbered[0].sequence, event, now))
                claimed.append(run)
                recorded.append((run, numbered))
            if events:
                await conn.execute(sql.INSERT_EVENTS, events)
        for _run, numbered in recorded:
            self._emit_events(numbered)
        waits = tuple(
            max(0.0, (now - row.created_at).total_seconds())
            for row in rows
            if row.fencing_token == 1 and row.created_at is not None
        )
        self._measure(Measure.CLAIM_LATENCY, waits)
        return claimed

    def _dead_letter_row(self, run: ClaimedRun, finish: RunFinish, now: datetime) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(),
            "execution_id": run.id,
            "workflow_id": run.workflow_id,
            "tenant_id": run.tenant_id,
            "reason": (finish.error or {}).get("message", "dead letter"),
            "details": {"recoveries": run.recovery_count, "limit": self.max_recoveries},
            "created_at": now,
        }

    # -- leases ---------------------------------------------------------------------------

    async def renew(self, owner: str, runs: list[ClaimedRun]) -> list[ClaimedRun]:
        """Extend the leases of ``runs``; returns the ones whose lease was lost.

        Also delivers cancel requests: a run whose ``cancel_requested`` flag is set in the
        database gets its :attr:`ClaimedRun.cancel_requested` event set.
        """
        if not runs:
            return []
        t = workflow_executions

        async def renew_once() -> list[Any]:
            async with self.db.begin() as conn:
                now = self.clock.now()
                return list(
                    await conn.execute(
                        update(t)
                        .where(
                            # the claim, not only the owner: a run this worker claimed again
                            # after losing it must not keep the old claim alive
                            tuple_(t.c.id, t.c.fencing_token).in_(
                                [(r.id, r.fencing_token) for r in runs]
                            ),
                            t.c.status == "Running",
                            t.c.lease_owner == owner,
                        )
                        .values(lease_expires_at=now + self.lease)
                        .returning(t.c.id, t.c.fencing_token, t.c.cancel_requested)
                    )
                )

        rows = await retry_transient(renew_once, what="lease renewal")
        held = {row.id: row for row in rows}
        lost = []
        for run in runs:
            row = held.get(run.id)
            if row is None or row.fencing_token != run.fencing_token:
                lost.append(run)
            elif row.cancel_requested:
                run.cancel_requested.set()
        if lost:
            self._measure(Measure.FENCING_REJECTED, (float(len(lost)),), stage="renewal")
        return lost

    async def release(self, owner: str, runs: list[ClaimedRun]) -> None:
        """Give runs back (graceful shutdown): another worker may claim them at once."""
        if not runs:
            return
        t = workflow_executions

        async def release_once() -> None:
            async with self.db.begin() as conn:
                now = self.clock.now()
                for run in runs:
                    await conn.execute(
                        update(t)
                        .where(
                            t.c.id == run.id,
                            t.c.status == "Running",
                            t.c.fencing_token == run.fencing_token,
                        )
                        .values(lease_owner=None, lease_expires_at=now)
                    )
                await self._notify(conn, RUNS_CHANNEL, "")

        await retry_transient(release_once, what="releasing runs")

    # -- cancellation ---------------------------------------------------------------------

    async def request_cancel(
        self, execution_id: uuid.UUID, flagged: list[uuid.UUID] | None = None
    ) -> str:
        """Cancel a run and the runs it started that have not ended (its subworkflows, the
        whole subtree). Returns the run's status afterwards (``Cancelled`` or ``Running``).

        A ``Pending`` run is cancelled at once and never starts. A ``Running`` run gets its
        ``cancel_requested`` flag; the worker holding it stops its in-flight steps and ends
        it ``Cancelled`` (other processes hear of it by ``NOTIFY`` or at their next
        heartbeat; in this one the caller tells the worker: :meth:`Worker.cancel_requested
        <dataworkflows.engine.worker.Worker.cancel_requested>`). A ``Waiting`` run (parked
        on a child) gets the flag and is made ``Pending``: a worker resumes it and ends it
        ``Cancelled``. A final run raises :class:`RunIsFinal`. The descendants are flagged
        in the same transaction, deepest first. ``flagged`` (if given) receives the ids of
        the runs that got the flag (so that the caller can tell this process's worker).
        """
        t = workflow_executions
        recorded: list[RunEvent] = []
        async with self.db.begin() as conn:
            now = self.clock.now()  # inside the transaction: after the write lock is held
            current = (
                await conn.execute(select(t.c.status).where(t.c.id == execution_id))
            ).scalar_one_or_none()
            if current is None:
                raise LookupError(str(execution_id))
            if current in FINAL_RUN_STATUSES:
                raise RunIsFinal(current)
            status = "Running"
            for run_id in [*await descendants_to_cancel(conn, execution_id), execution_id]:
                event = await self._cancel_one(conn, run_id, now, flagged)
                if event is not None:
                    recorded.append(event)
                    if run_id == execution_id:
                        status = "Cancelled"
                elif run_id == execution_id:
                    final = (
                        await conn.execute(select(t.c.status).where(t.c.id == run_id))
                    ).scalar_one()
                    if final in FINAL_RUN_STATUSES:  # it ended in between
                        raise RunIsFinal(final)
        if recorded:
            self._emit_events(recorded)
            for event in recorded:
                self._resolve(uuid.UUID(event.execution_id), "Cancelled")
        return status

    async def _cancel_one(
        self,
        conn: Any,
        execution_id: uuid.UUID,
        now: datetime,
        flagged: list[uuid.UUID] | None = None,
    ) -> RunEvent | None:
        """Cancel one run in the caller's transaction: end a ``Pending`` one (returns its
        ``RunCancelled`` event), flag a ``Running`` or ``Waiting`` one (and wake the latter)."""
        t = workflow_executions
        cancelled = (
            await conn.execute(
                update(t)
                .where(t.c.id == execution_id, t.c.status == "Pending")
                .values(status="Cancelled", ended_at=now, error=_CANCELLED_ERROR)
                .returning(
                    t.c.workflow_id, t.c.correlation_id, t.c.parent_execution_id, t.c.wakes_parent
                )
            )
        ).one_or_none()
        if cancelled is not None:
            last = (
                await conn.execute(
                    select(func.max(execution_events.c.sequence)).where(
                        execution_events.c.execution_id == execution_id
                    )
                )
            ).scalar_one()
            event = NewEvent(
                EventType.RUN_CANCELLED,
                payload={"status": "Cancelled", "correlationId": cancelled.correlation_id},
            )
            row = _event_row(execution_id, (last or 0) + 1, event, now)
            await conn.execute(sql.INSERT_EVENTS, [row])
            if cancelled.wakes_parent and cancelled.parent_execution_id is not None:
                await conn.execute(sql.WAKE_PARENTS, {"p_ids": [cancelled.parent_execution_id]})
                await self._notify(conn, RUNS_CHANNEL, "")
            return _run_event(cancelled.workflow_id, row)
        found = (
            await conn.execute(
                update(t)
                .where(t.c.id == execution_id, t.c.status.in_(("Running", "Waiting")))
                .values(
                    cancel_requested=True,
                    status=case((t.c.status == "Waiting", "Pending"), else_=t.c.status),
                )
                .returning(t.c.id)
            )
        ).one_or_none()
        if found is not None:
            if flagged is not None:
                flagged.append(execution_id)
            await self._notify(conn, CANCEL_CHANNEL, str(execution_id))
            await self._notify(conn, RUNS_CHANNEL, "")
        return None
