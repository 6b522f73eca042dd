"""The run ledger: every write a run makes goes through :class:`RunLedger`.

Durable-write budget per run (see DESIGN.md, "Performance"): one transaction to enqueue
(execution row + ``RunQueued``, the workflow's published version read in it), one to claim
and start it (``Running`` + ``RunStarted``), one per step attempt (attempt row + its
events), and the run's end rides in the transaction of its last step. Concurrent runs share
these transactions (group commit, :mod:`dataworkflows.ledger.group_commit`): enqueues with
enqueues, claims with claims, step writes with step writes — so under load a run costs
well under one commit, while each caller still returns only after its own rows are durable.
This class is the one seam where writes are batched; callers never see it.

The class is assembled from three modules by responsibility: enqueue and requeue
(:mod:`dataworkflows.ledger.enqueue`), reads and waiting (:mod:`dataworkflows.ledger.reads`)
and, here, claims, step writes, leases and cancellation; its records, errors and row
builders live in :mod:`dataworkflows.ledger.records` and are importable from here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, tuple_, update

from dataworkflows.common.clock import Clock
from dataworkflows.db.database import Database
from dataworkflows.db.models import (
    dead_letters,
    execution_events,
    workflow_executions,
)
from dataworkflows.db.transient import is_data_error, retry_transient
from dataworkflows.events import EventType, RunEvent
from dataworkflows.ledger import statements as sql
from dataworkflows.ledger.enqueue import LedgerEnqueues
from dataworkflows.ledger.group_commit import GroupCommit
from dataworkflows.ledger.reads import LedgerReads
from dataworkflows.ledger.records import (
    _CANCELLED_ERROR,
    CANCEL_CHANNEL,
    RUNS_CHANNEL,
    AlreadyRequeued,
    ClaimedRun,
    Enqueued,
    NewEvent,
    RequestIdReused,
    RunFinish,
    RunIsFinal,
    StaleRunError,
    StepRecord,
    UnwritableRecord,
    UnwritableValue,
    WorkflowNotRunnable,
    _action_row,
    _db_message,
    _EnqueueRequest,
    _event_row,
    _finish_event,
    _finish_key,
    _redacted,
    _run_event,
    _step_event,
    _StepWrite,
    check_json,
    check_step,
)
from dataworkflows.ledger.resources import insert_links, link_rows
from dataworkflows.secrets.redaction import Redactor
from dataworkflows.secrets.redaction import redactor as process_redactor

log = logging.getLogger(__name__)


class RunLedger(LedgerEnqueues, LedgerReads):
    """Writes and reads of runs, steps and events."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        observe: Callable[[RunEvent], None] | None = None,
        *,
        lease_seconds: float = 30.0,
        max_recoveries: int = 3,
        queue_limit: int = 1024,
        redactor: Redactor | None = None,
    ) -> None:
        self.db = db
        #: the kernel's secrets, removed from what is written (default: the process-wide)
        self.redactor = redactor if redactor is not None else process_redactor
        self.clock = clock
        self._observe = observe
        self.lease = timedelta(seconds=lease_seconds)
        self.max_recoveries = max_recoveries
        self._finished: dict[uuid.UUID, list[asyncio.Future[str]]] = {}
        #: runs this process executes, so a cancel request can reach them at once
        self.local_runs: dict[uuid.UUID, ClaimedRun] = {}
        #: group commit of enqueues and of step writes (see enqueue, record_steps)
        self._enqueues: GroupCommit[_EnqueueRequest, Enqueued | None] = GroupCommit(
            self._write_enqueues,
            name="ledger-enqueue",
            max_batch=min(64, queue_limit),
            max_pending=queue_limit,
        )
        self._step_writes: GroupCommit[_StepWrite, list[RunEvent] | StaleRunError] = GroupCommit(
            self._write_batch,
            name="ledger-flush",
            max_batch=min(64, queue_limit),
            max_pending=queue_limit,
        )
        self._claim_statement = sql.claim_statement(skip_locked=not db.is_sqlite)
        self._enqueue_statement = sql.enqueue_statement(db)

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
                )
                if row.cancel_requested:
                    run.cancel_requested.set()
                if run.recovered:
                    event = NewEvent(
                        EventType.RUN_RESUMED,
                        payload={"recoveryCount": row.recovery_count, "owner": owner},
                    )
                else:
                    event = NewEvent(EventType.RUN_STARTED, payload={"owner": owner})
                numbered = self._number_events(run, [event], now)
                run.claimed_sequence = run.next_sequence
                events.append(_event_row(run.id, numbered[0].sequence, event, now))
                claimed.append(run)
                recorded.append((run, numbered))
            if events:
                await conn.execute(sql.INSERT_EVENTS, events)
        for _run, numbered in recorded:
            self._emit_events(numbered)
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

    # -- steps and the end of a run -------------------------------------------------------

    async def record_step(
        self, run: ClaimedRun, step: StepRecord, finish: RunFinish | None = None
    ) -> None:
        """Write one attempt (and, if given, the end of the run) in one transaction."""
        await self.record_steps(run, [step], finish)

    async def record_steps(
        self, run: ClaimedRun, steps: Sequence[StepRecord], finish: RunFinish | None = None
    ) -> None:
        """Write attempts (and, if given, the end of the run), durably, before returning.

        Raises :class:`StaleRunError`, writing nothing for this run, when this claim no
        longer holds the run (its lease was taken over) or the run is already final.

        Group commit: writes that arrive while another is being committed share the next
        transaction (steps of *different* runs; a run's own writes are sequential). Every
        caller still returns only after its rows are committed, so nothing that depends on
        a step starts before the step is durable.
        """
        # secrets handed to actions never reach the ledger (dataworkflows.secrets.redaction)
        steps = [_redacted(step, self.redactor) for step in steps]
        if finish is not None and finish.error:
            finish = replace(finish, error=self.redactor.redact(finish.error))
        # checked before joining a batch: a value of this run cannot fail another run's write
        for step in steps:
            check_step(step)
        if finish is not None:
            try:
                check_json(finish.error, "$.error")
            except UnwritableValue as exc:
                raise UnwritableRecord(exc.path, exc.message) from None
        write = _StepWrite(run, steps, finish, base=run.next_sequence)
        try:
            recorded = await self._step_writes.submit(write)
        except Exception as exc:
            run.next_sequence = write.base  # nothing of it was written
            if not is_data_error(exc):
                raise
            raise UnwritableRecord(
                "$", f"the database refused the run's step rows: {_db_message(exc)}"
            ) from exc
        self._emit_events(recorded)
        if finish is not None:
            self._resolve(run.id, finish.status)

    async def _write_batch(self, batch: list[_StepWrite]) -> list[list[RunEvent] | StaleRunError]:
        """One transaction for many runs' writes; each run is fenced on its own.

        Re-entrant (group commit may call it again with the same writes, see
        :mod:`dataworkflows.ledger.group_commit`): each write is numbered from its own base again,
        and a write that an earlier attempt did commit — its COMMIT answer was lost with the
        connection — is recognised by its events and not written twice.
        """
        results: list[list[RunEvent] | StaleRunError] = [[] for _ in batch]
        unsure = [write for write in batch if write.attempted]
        for write in batch:
            write.attempted = True
            write.run.next_sequence = write.base
        async with self.db.begin() as conn:
            now = self.clock.now()  # inside the transaction: after the write lock is held
            written: dict[uuid.UUID, list[RunEvent]] = {}
            if unsure:
                written = await self._already_written(conn, unsure)
            todo: list[tuple[int, _StepWrite]] = []
            for index, write in enumerate(batch):
                events_of = written.get(write.run.id)
                if events_of is not None:
                    write.run.next_sequence = events_of[-1].sequence + 1
                    results[index] = events_of
                else:
                    todo.append((index, write))
            # Fence every run of the batch: one UPDATE for the runs that go on (extend the
            # lease), one per distinct end for the runs that end (usually all Succeeded).
            groups: dict[str, tuple[RunFinish | None, list[ClaimedRun]]] = {}
            for _index, write in todo:
                key = "" if write.finish is None else _finish_key(write.finish)
                groups.setdefault(key, (write.finish, []))[1].append(write.run)
            held: set[uuid.UUID] = set()
            for finish, runs in groups.values():
                held.update(await self._fence_many(conn, runs, now, finish))
            actions: list[dict[str, Any]] = []
            links: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            dead: list[dict[str, Any]] = []
            for index, write in todo:
                run, steps, finish = write.run, write.steps, write.finish
                if run.id not in held:
                    results[index] = StaleRunError.for_claim(run)
                    continue
                actions.extend(_action_row(run, step) for step in steps)
                for step in steps:
                    links.extend(
                        link_rows(
                            step.links,
                            workflow_id=run.workflow_id,
                            tenant_id=run.tenant_id,
                            execution_id=run.id,
                            node_id=step.node_id,
                            now=now,
                        )
                    )
                new = [_step_event(step) for step in steps]
                if finish is not None:
                    new.append(_finish_event(finish))
                    if finish.dead_letter:
                        dead.append(self._dead_letter_row(run, finish, now))
                recorded = self._number_events(run, new, now)
                events.extend(
                    _event_row(run.id, e.sequence, n, now)
                    for e, n in zip(recorded, new, strict=True)
                )
                results[index] = recorded
            if actions:
                await conn.execute(sql.INSERT_ACTIONS, actions)
            if links:
                await insert_links(conn, self.db, links)
            if events:
                await conn.execute(sql.INSERT_EVENTS, events)
            if dead:
                await conn.execute(dead_letters.insert(), dead)
        return results

    async def _already_written(
        self, conn: Any, writes: list[_StepWrite]
    ) -> dict[uuid.UUID, list[RunEvent]]:
        """The events of ``writes`` that an earlier attempt committed, by run."""
        t = execution_events
        firsts = {write.run.id: write for write in writes}
        rows = await conn.execute(
            select(t)
            .where(
                t.c.execution_id.in_(list(firsts)),
                t.c.sequence >= min(write.base for write in writes),
            )
            .order_by(t.c.execution_id, t.c.sequence)
        )
        found: dict[uuid.UUID, list[RunEvent]] = {}
        for row in rows:
            write = firsts[row.execution_id]
            if row.sequence >= write.base:
                found.setdefault(row.execution_id, []).append(
                    _run_event(write.run.workflow_id, row._mapping)
                )
        return found

    async def finish(self, run: ClaimedRun, finish: RunFinish) -> None:
        """End a run without a step (e.g. a definition that can no longer be loaded)."""
        await self.record_steps(run, [], finish)

    async def _fence_many(
        self, conn: Any, runs: Sequence[ClaimedRun], now: datetime, finish: RunFinish | None
    ) -> set[uuid.UUID]:
        """First statement of every write of claimed runs: prove each lease is still ours.

        Matches a run only while it is ``Running`` under its claim's fencing token, so a
        zombie worker (its lease taken over) or a write after the end changes nothing.
        Extends the leases, or ends the runs with ``finish``. Returns the ids still held; a
        run missing from it must have nothing of its own written in this transaction (its
        caller gets :class:`StaleRunError`).
        """
        claims = [(run.id, run.fencing_token) for run in runs]
        if finish is None:
            statement = sql.FENCE_ONGOING
            params: dict[str, Any] = {"p_claims": claims, "p_lease_until": now + self.lease}
        else:
            statement = sql.FENCE_FINISH
            params = {
                "p_claims": claims,
                "p_status": finish.status,
                "p_error": finish.error,
                "p_now": now,
            }
        return {row.id for row in await conn.execute(statement, params)}

    def _number_events(
        self, run: ClaimedRun, events: Iterable[NewEvent], now: datetime
    ) -> list[RunEvent]:
        recorded = []
        for event in events:
            recorded.append(
                RunEvent(
                    execution_id=run.id_str,
                    workflow_id=run.workflow_id,
                    sequence=run.next_sequence,
                    type=event.type,
                    created_at=now,
                    node_id=event.node_id,
                    payload=event.payload,
                )
            )
            run.next_sequence += 1
        return recorded

    def _emit_events(self, events: Iterable[RunEvent]) -> None:
        """Hand committed events to the observer (``on_run_event``), in sequence order.

        Called once per committed write, after its COMMIT, on every path that writes events.
        """
        if self._observe is None:
            return
        for event in events:
            try:
                self._observe(event)
            except Exception:
                log.exception("an on_run_event observer failed (run %s)", event.execution_id)

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

    async def request_cancel(self, execution_id: uuid.UUID) -> str:
        """Cancel a run. Returns its status afterwards (``Cancelled`` or ``Running``).

        A ``Pending`` run is cancelled at once and never starts. A ``Running`` run gets its
        ``cancel_requested`` flag; the worker holding it (in this or any process) stops its
        in-flight steps and ends it ``Cancelled``. A final run raises :class:`RunIsFinal`.
        """
        t = workflow_executions
        recorded: RunEvent | None = None
        async with self.db.begin() as conn:
            now = self.clock.now()  # inside the transaction: after the write lock is held
            cancelled = (
                await conn.execute(
                    update(t)
                    .where(t.c.id == execution_id, t.c.status == "Pending")
                    .values(status="Cancelled", ended_at=now, error=_CANCELLED_ERROR)
                    .returning(t.c.workflow_id)
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
                event = NewEvent(EventType.RUN_CANCELLED, payload={"status": "Cancelled"})
                row = _event_row(execution_id, (last or 0) + 1, event, now)
                await conn.execute(sql.INSERT_EVENTS, [row])
                recorded = _run_event(cancelled.workflow_id, row)
                status = "Cancelled"
            else:
                row = (
                    await conn.execute(
                        update(t)
                        .where(t.c.id == execution_id, t.c.status == "Running")
                        .values(cancel_requested=True)
                        .returning(t.c.status)
                    )
                ).one_or_none()
                if row is None:
                    current = (
                        await conn.execute(select(t.c.status).where(t.c.id == execution_id))
                    ).scalar_one_or_none()
                    if current is None:
                        raise LookupError(str(execution_id))
                    raise RunIsFinal(current)
                await self._notify(conn, CANCEL_CHANNEL, str(execution_id))
                status = "Running"
        if recorded is not None:
            self._emit_events([recorded])
            self._resolve(execution_id, "Cancelled")
        else:
            local = self.local_runs.get(execution_id)
            if local is not None:
                local.cancel_requested.set()
        return status


#: the ledger's API: records and errors are defined in dataworkflows.ledger.records
__all__ = [
    "CANCEL_CHANNEL",
    "RUNS_CHANNEL",
    "AlreadyRequeued",
    "ClaimedRun",
    "Enqueued",
    "NewEvent",
    "RequestIdReused",
    "RunFinish",
    "RunIsFinal",
    "RunLedger",
    "StaleRunError",
    "StepRecord",
    "UnwritableRecord",
    "UnwritableValue",
    "WorkflowNotRunnable",
    "check_json",
    "check_step",
]
