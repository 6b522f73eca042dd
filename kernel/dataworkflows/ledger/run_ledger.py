"""The run ledger: every write a run makes goes through :class:`RunLedger`.

Durable-write budget per run (see DESIGN.md, "Performance"): one transaction to enqueue
(execution row + ``RunQueued``, the workflow's published version read in it), one to claim
and start it (``Running`` + ``RunStarted``), one per step attempt (attempt row + its
events), and the run's end rides in the transaction of its last step. Concurrent runs share
these transactions (group commit, :mod:`dataworkflows.ledger.group_commit`): enqueues with
enqueues, claims with claims, step writes with step writes — so under load a run costs
well under one commit, while each caller still returns only after its own rows are durable.
This class is the one seam where writes are batched; callers never see it.

The class is assembled from four modules by responsibility: enqueue and requeue
(:mod:`dataworkflows.ledger.enqueue`), claims, leases and cancellation
(:mod:`dataworkflows.ledger.claims`), reads and waiting (:mod:`dataworkflows.ledger.reads`)
and, here, step writes and the end of a run; its records, errors and row builders live in
:mod:`dataworkflows.ledger.records` and are importable from here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from dataworkflows.common.clock import Clock
from dataworkflows.common.redaction import Redactor
from dataworkflows.common.redaction import redactor as process_redactor
from dataworkflows.db.database import Database
from dataworkflows.db.models import (
    dead_letters,
    execution_events,
)
from dataworkflows.db.transient import is_data_error
from dataworkflows.events import RunEvent
from dataworkflows.ledger import statements as sql
from dataworkflows.ledger.children import LedgerChildren
from dataworkflows.ledger.claims import LedgerClaims
from dataworkflows.ledger.enqueue import LedgerEnqueues
from dataworkflows.ledger.fairness import TenantCaps
from dataworkflows.ledger.group_commit import GroupCommit
from dataworkflows.ledger.reads import LedgerReads
from dataworkflows.ledger.records import (
    CANCEL_CHANNEL,
    RUNNING,
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
from dataworkflows.ledger.variables import check_variables, variable_rows
from dataworkflows.measurements import EngineMeasurement, Measure

log = logging.getLogger(__name__)


class RunLedger(LedgerClaims, LedgerEnqueues, LedgerReads, LedgerChildren):
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
        measure: Callable[[EngineMeasurement], None] | None = None,
        tenant_caps: TenantCaps | None = None,
    ) -> None:
        self.db = db
        #: per-tenant concurrency caps (None: no tenant has one); see ledger/fairness.py
        self.tenant_caps = tenant_caps
        #: the ``on_engine_measurement`` observer (None: nobody listens, nothing is built)
        self._measurer = measure
        #: the kernel's secrets, removed from what is written (default: the process-wide)
        self.redactor = redactor if redactor is not None else process_redactor
        self.clock = clock
        self._observe = observe
        self.lease = timedelta(seconds=lease_seconds)
        self.max_recoveries = max_recoveries
        self._finished: dict[uuid.UUID, list[asyncio.Future[str]]] = {}
        #: group commit of enqueues and of step writes (see enqueue, record_steps)
        self._enqueues: GroupCommit[_EnqueueRequest, Enqueued | None] = GroupCommit(
            self._write_enqueues,
            name="ledger-enqueue",
            max_batch=min(64, queue_limit),
            max_pending=queue_limit,
            on_batch=self._batch_observer("ledger-enqueue"),
        )
        self._step_writes: GroupCommit[_StepWrite, list[RunEvent] | StaleRunError] = GroupCommit(
            self._write_batch,
            name="ledger-flush",
            max_batch=min(64, queue_limit),
            max_pending=queue_limit,
            on_batch=self._batch_observer("ledger-flush"),
        )
        self._claim_statement = sql.claim_statement(skip_locked=not db.is_sqlite, caps=tenant_caps)
        self._enqueue_statement = sql.enqueue_statement(db)
        self._upsert_variables = sql.upsert_variables_statement(db)

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
        # secrets handed to actions never reach the ledger (dataworkflows.common.redaction)
        steps = [_redacted(step, self.redactor) for step in steps]
        if finish is not None and finish.error:
            finish = replace(finish, error=self.redactor.redact(finish.error))
        # checked before joining a batch: a value of this run cannot fail another run's write
        for step in steps:
            check_step(step)
            check_variables(step)
        if finish is not None:
            try:
                check_json(finish.error, "$.error")
            except UnwritableValue as exc:
                raise UnwritableRecord(exc.path, exc.message) from None
        write = _StepWrite(run, steps, finish, base=run.next_sequence)
        for step in steps:
            # an attempt that has a Running row keeps its id: its next row replaces it
            row_id = run.running_rows.get((step.node_id, step.attempt))
            if row_id is not None:
                write.replaces.append(row_id)
            write.row_ids.append(row_id or uuid.uuid4())
        try:
            recorded = await self._step_writes.submit(write)
        except Exception as exc:
            run.next_sequence = write.base  # nothing of it was written
            if isinstance(exc, StaleRunError):
                self._measure(Measure.FENCING_REJECTED, (1.0,), stage="write")
            if not is_data_error(exc):
                raise
            raise UnwritableRecord(
                "$", f"the database refused the run's step rows: {_db_message(exc)}"
            ) from exc
        for step, row_id in zip(steps, write.row_ids, strict=True):
            if step.status == RUNNING:
                run.running_rows[(step.node_id, step.attempt)] = row_id
            else:
                run.running_rows.pop((step.node_id, step.attempt), None)
        self._emit_events(recorded)
        if finish is not None:
            if finish.dead_letter:
                self._measure(Measure.DEAD_LETTERED, (1.0,), workflow_id=run.workflow_id)
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
            # waited-on children that end here wake their parents in the same transaction
            parents = {
                write.run.parent_id
                for _index, write in todo
                if write.finish is not None
                and write.run.wakes_parent
                and write.run.parent_id is not None
                and write.run.id in held
            }
            if parents:
                await conn.execute(sql.WAKE_PARENTS, {"p_ids": sorted(parents)})
                await self._notify(conn, RUNS_CHANNEL, "")
            actions: list[dict[str, Any]] = []
            links: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            dead: list[dict[str, Any]] = []
            variables: list[dict[str, Any]] = []
            replaced: list[uuid.UUID] = []
            replaced_runs: set[uuid.UUID] = set()
            for index, write in todo:
                run, steps, finish = write.run, write.steps, write.finish
                if run.id not in held:
                    results[index] = StaleRunError.for_claim(run)
                    continue
                actions.extend(
                    _action_row(run, step, row_id)
                    for step, row_id in zip(steps, write.row_ids, strict=True)
                )
                replaced.extend(write.replaces)
                if write.replaces:
                    replaced_runs.add(run.id)
                variables.extend(variable_rows(run, steps, now))
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
                    new.append(_finish_event(finish, run.correlation_id))
                    if finish.dead_letter:
                        dead.append(self._dead_letter_row(run, finish, now))
                recorded = self._number_events(run, new, now)
                events.extend(
                    _event_row(run.id, e.sequence, n, now)
                    for e, n in zip(recorded, new, strict=True)
                )
                results[index] = recorded
            if replaced:  # Running rows: their attempt's row takes their place (same id)
                await conn.execute(
                    sql.DELETE_ACTIONS, {"p_ids": replaced, "p_runs": sorted(replaced_runs)}
                )
            if actions:
                await conn.execute(sql.INSERT_ACTIONS, actions)
            if links:
                await insert_links(conn, self.db, links)
            if events:
                await conn.execute(sql.INSERT_EVENTS, events)
            if dead:
                await conn.execute(dead_letters.insert(), dead)
            if variables:  # ctx.set_variable: with the step that set them, no extra write
                await conn.execute(self._upsert_variables, variables)
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
                    action_type=event.action_type,
                    duration_seconds=event.duration_seconds,
                )
            )
            run.next_sequence += 1
        return recorded

    def publish_live(self, run: ClaimedRun, step: StepRecord) -> None:
        """Tell observers at once that ``step`` (a ``Running`` attempt) began; no write.

        A live ``StepStarted`` (``durable`` False, the sequence of the run's last durable
        event): see :class:`~dataworkflows.events.RunEvent`. Its payload also names the
        step's ``actionType`` (a durable event's does not: the attempt's row has it).
        """
        event = _step_event(step)
        self._emit_events(
            [
                RunEvent(
                    execution_id=run.id_str,
                    workflow_id=run.workflow_id,
                    sequence=run.next_sequence - 1,
                    type=event.type,
                    created_at=step.started_at or self.clock.now(),
                    node_id=event.node_id,
                    payload={**event.payload, "actionType": step.action_type},
                    durable=False,
                    action_type=event.action_type,
                )
            ]
        )

    def _measure(self, name: Measure, values: tuple[float, ...], **labels: str) -> None:
        """Hand one measurement to the ``on_engine_measurement`` observer, if any."""
        if self._measurer is None or not values:
            return
        try:
            self._measurer(EngineMeasurement(name, values, labels))
        except Exception:
            log.exception("an on_engine_measurement observer failed (%s)", name)

    def _batch_observer(self, writer: str) -> Callable[[int], None] | None:
        """The group commit's ``on_batch``: one measurement per committed batch."""
        if self._measurer is None:
            return None
        return lambda size: self._measure(Measure.GROUP_COMMIT_BATCH, (float(size),), writer=writer)

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


#: the ledger's API: records and errors are defined in dataworkflows.ledger.records
__all__ = [
    "CANCEL_CHANNEL",
    "RUNNING",
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
